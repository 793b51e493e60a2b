//! The LiveReload server: one TCP port that answers `GET /livereload.js` with the client script
//! and upgrades every other request to a WebSocket speaking LiveReload protocol 7.
//!
//! Each connection has a thread of its own (owned, joined at stop) and a small bounded queue;
//! the watcher's side only ever `try_send`s into those queues, so a client that stalls, reads
//! nothing or sends garbage costs a bounded amount of memory and never holds up a save: when its
//! queue is full it is dropped.

use super::origin::Origins;
use crate::output::Log;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// The protocol every LiveReload client and extension asks for.
pub const PROTOCOL_7: &str = "http://livereload.com/protocols/official-7";
/// The client script served at `/livereload.js`.
pub const CLIENT_JS: &str = include_str!("client.js");

/// Most connections at once (browsers, tabs, extensions); more are closed at once.
const MAX_CLIENTS: usize = 64;
/// Messages waiting for one client; a client this far behind is dropped.
const QUEUE: usize = 16;
/// Refused origins named in the watcher's output; a page retrying one is named once.
const MOST_TOLD: usize = 32;
/// Largest HTTP request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection has to send its request head and finish the handshake.
const HANDSHAKE: Duration = Duration::from_secs(3);
/// Largest message or frame a client may send (hello and info are far smaller).
const MAX_MESSAGE: usize = 64 * 1024;
/// Most bytes buffered for a client that does not read.
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// How often an idle client's socket is read (for hello, pings, a close); messages to it do not wait for this.
const IDLE_READ: Duration = Duration::from_millis(200);
/// The same before its hello, so the handshake answer is quick.
const EARLY_READ: Duration = Duration::from_millis(10);
/// Most messages read from one client per pass, so a flood cannot starve its own queue.
const READS_PER_PASS: usize = 64;
/// A client whose socket has not taken our bytes for this long is dropped.
const STALLED: Duration = Duration::from_secs(5);

/// The clients that said hello, and what a newcomer must be told.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<Vec<(u64, SyncSender<String>)>>,
    /// The failure the page should show, sent to every client that connects while it stands.
    standing: Mutex<Option<String>>,
    /// Clients dropped because they fell behind.
    dropped: AtomicU64,
}

impl Hub {
    fn clients(&self) -> MutexGuard<'_, Vec<(u64, SyncSender<String>)>> {
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn standing(&self) -> MutexGuard<'_, Option<String>> {
        self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` for every client without waiting; returns how many got it. A client
    /// whose queue is full is dropped (its thread then closes the connection).
    pub fn broadcast(&self, message: &str) -> usize {
        let mut clients = self.clients();
        clients.retain(|(_, tx)| match tx.try_send(message.to_string()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        clients.len()
    }

    /// Sets (or clears) the failure shown to clients that connect from now on.
    pub fn stand(&self, failure: Option<String>) {
        *self.standing() = failure;
    }

    /// How many clients are connected and past their hello.
    pub fn len(&self) -> usize {
        self.clients().len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many clients were dropped for falling behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Who may open a WebSocket, and the refused origins already reported.
pub struct Gate {
    origins: Origins,
    log: Log,
    told: Mutex<BTreeSet<String>>,
}

impl Gate {
    /// Lets in what `origins` allows; says in `log` which origins it turned away.
    pub fn new(origins: Origins, log: Log) -> Gate {
        Gate { origins, log, told: Mutex::default() }
    }

    /// Whether a handshake with this `Origin` may go on; the first refusals of each origin are said.
    fn admits(&self, origin: Option<&str>) -> bool {
        if self.origins.allows(origin) {
            return true;
        }
        let origin = crate::output::clean(origin.unwrap_or_default());
        let mut told = self.told.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if told.len() < MOST_TOLD && told.insert(origin.clone()) {
            let line = format!(
                "LiveReload: refused a page from {origin} (only this machine's, private networks' and extensions' \
                 pages may follow saves; allow it with --livereload-origin HOST)"
            );
            self.log.warn("livereload_refused", &line, json!({"origin": origin}));
        }
        false
    }
}

/// The running server: its acceptor thread, which owns the connection threads.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and starts accepting.
    pub fn start(addr: &str, hub: Arc<Hub>, gate: Gate) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| {
            format!(
                "cannot serve LiveReload on {addr} (another LiveReload server? choose a port with --livereload=PORT)"
            )
        })?;
        let addr = listener.local_addr().context("cannot read the LiveReload address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("livereload".into())
            .spawn(move || accept(&listener, &hub, &Arc::new(gate), &flag))
            .context("cannot start the LiveReload thread")?;
        Ok(Server { addr, stop, acceptor: Some(acceptor) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection and joins every thread (each within its bounds).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(): a connection of our own wakes it.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = acceptor.join();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Accepts until stopped; each connection gets a thread, at most [`MAX_CLIENTS`] at once.
fn accept(listener: &TcpListener, hub: &Arc<Hub>, gate: &Arc<Gate>, stop: &Arc<AtomicBool>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            // Out of descriptors and the like: pause rather than spin.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        threads.retain(|thread| !thread.is_finished());
        if threads.len() >= MAX_CLIENTS {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            continue;
        }
        next_id += 1;
        let (id, hub, gate, stop) = (next_id, Arc::clone(hub), Arc::clone(gate), Arc::clone(stop));
        // A thread that cannot start costs this one connection only.
        if let Ok(thread) = std::thread::Builder::new()
            .name(format!("livereload {id}"))
            .spawn(move || serve(stream, id, &hub, &gate, &stop))
        {
            threads.push(thread);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// A stream that first gives back the bytes already read from it (the request head).
struct Replay {
    head: Vec<u8>,
    at: usize,
    stream: TcpStream,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.at);
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// One connection: the script, or a WebSocket client until it leaves, falls behind or we stop.
fn serve(stream: TcpStream, id: u64, hub: &Hub, gate: &Gate, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + HANDSHAKE;
    let Some(head) = read_head(&stream, deadline) else { return };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
        let _ = respond(&stream, "400 Bad Request", "text/plain", b"bad request\n");
        return;
    }
    let upgrade = request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let path = request.path.unwrap_or("/").split('?').next().unwrap_or("/");
    if !upgrade {
        let _ = match (request.method, path) {
            (Some("GET" | "HEAD"), "/livereload.js") => {
                respond(&stream, "200 OK", "application/javascript; charset=utf-8", CLIENT_JS.as_bytes())
            }
            // A page served by the guest loading a script from this machine's loopback: Chrome's
            // Private Network Access may ask first.
            (Some("OPTIONS"), _) => respond(&stream, "204 No Content", "text/plain", b""),
            _ => respond(&stream, "404 Not Found", "text/plain", b"touchwire serves /livereload.js and WebSockets\n"),
        };
        return;
    }
    let origin = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("origin"));
    if !gate.admits(origin.map(|h| String::from_utf8_lossy(h.value)).as_deref()) {
        let _ = respond(
            &stream,
            "403 Forbidden",
            "text/plain",
            b"touchwire: this page's origin may not follow saves (--livereload-origin)\n",
        );
        return;
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let replay = Replay { head, at: 0, stream };
    let Ok(mut socket) = tungstenite::accept_with_config(replay, Some(config)) else { return };
    if socket.get_ref().stream.set_nonblocking(true).is_err() {
        return;
    }
    talk(&mut socket, id, hub, stop);
    hub.clients().retain(|(client, _)| *client != id);
    let _ = socket.close(None);
    let _ = socket.flush();
}

/// Reads the request head (up to the blank line), within [`MAX_HEAD`] bytes and `deadline`.
fn read_head(mut stream: &TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read takes at least one byte or ends the loop; the head is at most MAX_HEAD bytes.
    while head.len() < MAX_HEAD {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        stream.set_read_timeout(Some(left)).ok()?;
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            let _ = stream.set_write_timeout(Some(HANDSHAKE));
            return Some(head);
        }
    }
    None
}

fn respond(mut stream: &TcpStream, status: &str, kind: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\n\
         Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Private-Network: true\r\n\
         Access-Control-Allow-Methods: GET\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// The WebSocket conversation: answer hello, then pass on what the hub queues.
fn talk(socket: &mut WebSocket<Replay>, id: u64, hub: &Hub, stop: &AtomicBool) {
    let (tx, rx): (SyncSender<String>, Receiver<String>) = sync_channel(QUEUE);
    let mut tx = Some(tx);
    let mut pending_since: Option<Instant> = None;
    let opened = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if tx.is_some() && opened.elapsed() > HANDSHAKE {
            // No hello: not a LiveReload client.
            return;
        }
        let tick = if tx.is_some() { EARLY_READ } else { IDLE_READ };
        match rx.recv_timeout(tick) {
            Ok(message) => {
                if !queue(socket, message) {
                    return;
                }
                // Whatever else is queued goes out in the same pass (bounded by the queue).
                while let Ok(message) = rx.try_recv() {
                    if !queue(socket, message) {
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The hub dropped us: this client fell behind.
            Err(RecvTimeoutError::Disconnected) if tx.is_none() => return,
            Err(RecvTimeoutError::Disconnected) => {}
        }
        for _ in 0..READS_PER_PASS {
            match socket.read() {
                Ok(Message::Text(text)) => {
                    if tx.is_some() && is_hello(&text) {
                        let hello = serde_json::json!({"command": "hello", "protocols": [PROTOCOL_7], "serverName": "touchwire"});
                        if !queue(socket, hello.to_string()) {
                            return;
                        }
                        // Only now may it be sent commands; with a failure standing, it learns it first.
                        let standing = hub.standing().clone();
                        if let Some(failure) = standing
                            && !queue(socket, failure)
                        {
                            return;
                        }
                        if let Some(tx) = tx.take() {
                            hub.clients().push((id, tx));
                        }
                    }
                    // Anything else (info, url, garbage) is ignored.
                }
                Ok(Message::Close(_)) => return,
                Ok(_) => {}
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        // What was queued above goes out now; a socket that takes nothing for long is a stalled client.
        match socket.flush() {
            Ok(()) => pending_since = None,
            Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::WouldBlock => {
                let since = *pending_since.get_or_insert_with(Instant::now);
                if since.elapsed() > STALLED {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Queues `message` on the socket: a full socket keeps it in tungstenite's bounded buffer, to go
/// out at a later flush; false when the connection is broken or that buffer is full.
fn queue(socket: &mut WebSocket<Replay>, message: String) -> bool {
    match socket.write(Message::text(message)) {
        Ok(()) => true,
        Err(tungstenite::Error::Io(err)) => err.kind() == ErrorKind::WouldBlock,
        Err(_) => false,
    }
}

/// Whether a client's message is a protocol 7 hello.
fn is_hello(text: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { return false };
    value["command"] == "hello"
        && value["protocols"].as_array().is_some_and(|protocols| protocols.iter().any(|p| p == PROTOCOL_7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_needs_protocol_7() {
        assert!(is_hello(r#"{"command":"hello","protocols":["http://livereload.com/protocols/official-7"]}"#));
        assert!(!is_hello(r#"{"command":"hello","protocols":["http://livereload.com/protocols/official-6"]}"#));
        assert!(!is_hello("garbage"));
    }

    #[test]
    fn a_full_queue_drops_the_client_not_the_message_to_others() {
        let hub = Hub::default();
        let (slow, _slow_rx) = sync_channel(1);
        let (fast, fast_rx) = sync_channel(4);
        hub.clients().push((1, slow));
        hub.clients().push((2, fast));
        assert_eq!(hub.broadcast("a"), 2);
        assert_eq!(hub.broadcast("b"), 1, "the client that read nothing is dropped");
        assert_eq!(hub.dropped(), 1);
        assert_eq!(fast_rx.try_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
