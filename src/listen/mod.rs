//! The guest side: a std TCP listener speaking wire protocol v1, one thread per connection,
//! coalescing triggers per target and running the target's action.

pub mod actions;
pub mod coalesce;
pub mod start;

use crate::auth::{self, Token};
use crate::config::ActionSpec;
use crate::output::{Log, millis};
use crate::protocol::{self, Greeting, Incoming, MAX_LINE, Op, Reply, Request};
use anyhow::{Context, Result};
use coalesce::{Coalescer, Decision};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Everything the receiver needs, resolved from config and flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Named targets and what they do.
    pub targets: BTreeMap<String, ActionSpec>,
    /// Target of requests that name none.
    pub default_target: Option<String>,
    /// Shared token; `None` turns authentication off.
    pub token: Option<Token>,
    /// Coalescing window per target.
    pub settle: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// A connection that sends no complete request for this long is closed.
    pub read_timeout: Duration,
    /// Where events go.
    pub log: Log,
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    targets: BTreeMap<String, Arc<Target>>,
    default_target: Option<String>,
    token: Option<Token>,
    max_connections: usize,
    read_timeout: Duration,
    active: AtomicUsize,
    log: Log,
}

struct Target {
    name: String,
    action: ActionSpec,
    coalescer: Mutex<Coalescer>,
    /// Held while the action runs, so one target's actions never overlap.
    running: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the receiver: the state inside stays usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Receiver {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: &str, options: Options) -> Result<Receiver> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let targets = options
            .targets
            .into_iter()
            .map(|(name, action)| {
                let target = Target {
                    name: name.clone(),
                    action,
                    coalescer: Mutex::new(Coalescer::new(options.settle)),
                    running: Mutex::new(()),
                };
                (name, Arc::new(target))
            })
            .collect();
        let state = State {
            targets,
            default_target: options.default_target,
            token: options.token,
            max_connections: options.max_connections,
            read_timeout: options.read_timeout,
            active: AtomicUsize::new(0),
            log: options.log,
        };
        Ok(Receiver { listener, state: Arc::new(state) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().context("cannot read the bound address")
    }

    /// Serves connections forever.
    pub fn serve(self) -> Result<()> {
        for stream in self.listener.incoming() {
            match stream {
                Ok(stream) => self.accept(stream),
                Err(err) => {
                    // Out of file descriptors and the like: say so, breathe, carry on.
                    self.state.log.warn("error", &format!("accept failed: {err}"), json!({"error": err.to_string()}));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    fn accept(&self, stream: TcpStream) {
        let state = &self.state;
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        if state.active.load(Ordering::SeqCst) >= state.max_connections {
            let message = format!("busy: {} connections already open (limit); try again", state.max_connections);
            state.log.warn("rejected", &format!("{peer}: {message}"), json!({"peer": peer, "error": message}));
            reject(stream, &message);
            return;
        }
        state.active.fetch_add(1, Ordering::SeqCst);
        let worker = Arc::clone(state);
        let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
            let _slot = Slot(&worker.active);
            if let Err(err) = worker.serve_connection(stream, &peer) {
                worker.log.debug(&format!("{peer}: connection ended: {err}"));
            }
        });
        if spawned.is_err() {
            state.active.fetch_sub(1, Ordering::SeqCst);
            state.log.warn("error", "cannot start a connection thread", json!({"error": "thread spawn failed"}));
        }
    }
}

/// Frees a connection slot when the connection's thread ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reject(mut stream: TcpStream, message: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(protocol::to_line(&Reply::error(message)).as_bytes());
    close_gracefully(&stream);
}

/// Ends our side, then drains a little of what the peer still sends: closing a socket with unread
/// input sends a reset, which can destroy the error line before the peer reads it.
fn close_gracefully(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = std::io::copy(&mut stream.take(64 * 1024), &mut std::io::sink());
}

/// One line read from a connection.
enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes into `buf` (without the `\n`).
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let n = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Complete);
    }
    // No newline: either the cap cut the line, or the peer closed after a last unterminated line.
    Ok(if buf.len() > MAX_LINE { Line::TooLong } else { Line::Complete })
}

impl State {
    fn serve_connection(self: &Arc<Self>, stream: TcpStream, peer: &str) -> Result<()> {
        stream.set_read_timeout(Some(self.read_timeout))?;
        stream.set_write_timeout(Some(self.read_timeout))?;
        stream.set_nodelay(true)?;
        let nonce = auth::nonce()?;
        let mut writer = stream.try_clone()?;
        let greeting = Greeting { touchwire: protocol::VERSION, nonce: nonce.clone(), auth: self.token.is_some() };
        writer.write_all(protocol::to_line(&greeting).as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::with_capacity(256);
        loop {
            let (reply, close) = match read_line(&mut reader, &mut buf) {
                Ok(Line::Eof) => return Ok(()),
                Ok(Line::Complete) => self.handle(&buf, &nonce, peer),
                Ok(Line::TooLong) => (Reply::error(format!("line longer than {MAX_LINE} bytes")), true),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let ms = self.read_timeout.as_millis();
                    (Reply::error(format!("no complete request within {ms} ms; closing")), true)
                }
                Err(err) => return Err(err.into()),
            };
            if !reply.ok {
                let error = reply.error.as_deref().unwrap_or("");
                self.log.event("error", &format!("{peer}: {error}"), json!({"peer": peer, "error": error}));
            }
            writer.write_all(protocol::to_line(&reply).as_bytes())?;
            if close {
                close_gracefully(&writer);
                return Ok(());
            }
        }
    }

    /// Answers one line; the flag says whether to close the connection afterwards.
    fn handle(self: &Arc<Self>, line: &[u8], nonce: &str, peer: &str) -> (Reply, bool) {
        let request = match protocol::parse_line(line) {
            Incoming::Invalid(message) => return (Reply::error(message), false),
            Incoming::Legacy if self.token.is_some() => {
                let message =
                    "unauthorized: this receiver requires a token; plain lines are accepted only with auth off";
                return (Reply::error(message), true);
            }
            Incoming::Legacy => {
                Request { op: Some(Op::Reload), reason: Some("plain line".into()), ..Request::default() }
            }
            Incoming::Request(request) => {
                if let Some(token) = &self.token {
                    match &request.mac {
                        None => {
                            return (Reply::error("unauthorized: this receiver requires a token (no mac sent)"), true);
                        }
                        Some(mac) if !token.verify(nonce, mac) => {
                            return (Reply::error("unauthorized: wrong token (mac does not match)"), true);
                        }
                        Some(_) => {}
                    }
                }
                request
            }
        };
        match request.op {
            Some(Op::Ping) => (self.ping(), false),
            _ => (self.reload(&request, peer), false),
        }
    }

    fn ping(&self) -> Reply {
        Reply {
            ok: true,
            op: Some(Op::Ping.as_str().into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            targets: Some(self.targets.keys().cloned().collect()),
            default_target: self.default_target.clone(),
            ..Reply::default()
        }
    }

    fn reload(self: &Arc<Self>, request: &Request, peer: &str) -> Reply {
        let known = || self.targets.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(name) = request.target.as_ref().or(self.default_target.as_ref()) else {
            return Reply::error(format!("no target named and no default target (known: {})", known()));
        };
        let Some(target) = self.targets.get(name) else {
            return Reply::error(format!("unknown target {name:?} (known: {})", known()));
        };
        let start = Instant::now();
        let decision = lock(&target.coalescer).on_trigger(start);
        let merged = matches!(decision, Decision::Merged { .. });
        let mut reply = Reply {
            ok: true,
            op: Some(Op::Reload.as_str().into()),
            target: Some(target.name.clone()),
            action: Some(target.action.kind().into()),
            merged: Some(merged),
            ..Reply::default()
        };
        let reason = request.reason.as_deref().unwrap_or("");
        let fields =
            json!({"peer": peer, "target": target.name, "reason": reason, "files": request.files, "merged": merged});
        match decision {
            Decision::Act => {
                let result = target.act(self.log);
                let took = start.elapsed();
                let mut fields = fields;
                fields["ms"] = json!(took.as_secs_f64() * 1000.0);
                let files = describe_files(&request.files);
                match result {
                    Ok(()) => {
                        let line = format!(
                            "{} {} ({reason}{files}) from {peer} in {}",
                            target.name,
                            target.action,
                            millis(took)
                        );
                        self.log.event("reload", &line, fields);
                    }
                    Err(err) => {
                        let message = format!("{err:#}");
                        fields["error"] = json!(message);
                        self.log.warn("reload_failed", &format!("{} failed: {message}", target.name), fields);
                        reply = Reply::error(message);
                    }
                }
            }
            Decision::Merged { schedule } => {
                self.log.event("merged", &format!("{} merged ({reason}) from {peer}", target.name), fields);
                if let Some(at) = schedule {
                    self.schedule_trailing(Arc::clone(target), at);
                }
            }
        }
        reply
    }

    /// Runs the trailing action of a settle window at `at`, if triggers were merged into it.
    fn schedule_trailing(self: &Arc<Self>, target: Arc<Target>, at: Instant) {
        let log = self.log;
        let spawned = std::thread::Builder::new().name("trailing".into()).spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if !lock(&target.coalescer).on_trailing_due(Instant::now()) {
                return;
            }
            let start = Instant::now();
            match target.act(log) {
                Ok(()) => {
                    let ms = start.elapsed().as_secs_f64() * 1000.0;
                    let line = format!(
                        "{} {} (trailing, merged triggers) in {}",
                        target.name,
                        target.action,
                        millis(start.elapsed())
                    );
                    log.event("reload", &line, json!({"target": target.name, "trailing": true, "ms": ms}));
                }
                Err(err) => {
                    let message = format!("{err:#}");
                    let fields = json!({"target": target.name, "trailing": true, "error": message});
                    log.warn("reload_failed", &format!("{} failed (trailing): {message}", target.name), fields);
                }
            }
        });
        if spawned.is_err() {
            self.log.warn("error", "cannot start the trailing-action thread", json!({"error": "thread spawn failed"}));
        }
    }
}

impl Target {
    fn act(&self, log: Log) -> Result<()> {
        let _running = lock(&self.running);
        actions::run(&self.action, &self.name, log)
    }
}

fn describe_files(files: &[String]) -> String {
    match files {
        [] => String::new(),
        [one] => format!(": {one}"),
        [first, rest @ ..] => format!(": {first} and {} more", rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for _ in 0..10 {
            match read_line(&mut reader, &mut buf).unwrap() {
                Line::Complete => out.push(String::from_utf8_lossy(&buf).into_owned()),
                Line::TooLong => out.push("<too long>".into()),
                Line::Eof => break,
            }
        }
        out
    }

    #[test]
    fn lines_are_split_and_a_last_unterminated_line_counts() {
        assert_eq!(lines(b"a\nbc\n\nlast"), vec!["a", "bc", "", "last"]);
    }

    #[test]
    fn the_line_cap_is_4096_bytes_without_the_newline() {
        let exact = [vec![b'x'; MAX_LINE], vec![b'\n']].concat();
        assert_eq!(lines(&exact)[0].len(), MAX_LINE);
        let over = [vec![b'x'; MAX_LINE + 1], vec![b'\n']].concat();
        assert_eq!(lines(&over)[0], "<too long>");
    }

    #[test]
    fn file_lists_are_summarised() {
        assert_eq!(describe_files(&[]), "");
        assert_eq!(describe_files(&["a.py".into()]), ": a.py");
        assert_eq!(describe_files(&["a.py".into(), "b.py".into(), "c.py".into()]), ": a.py and 2 more");
    }
}
