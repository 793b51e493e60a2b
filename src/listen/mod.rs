//! The guest side: a std TCP listener speaking wire protocol v1. The accept loop hands each
//! connection a slot ([`slots`]) and a thread ([`connection`]); each target's triggers go to its
//! one executor ([`executor`]), which alone decides (coalescing) and whose worker alone acts.
//! [`Receiver::serve_until`] stops accepting when told, lets the executors run what is owed
//! within a bound, and joins every thread it started.

pub mod actions;
mod after;
pub mod coalesce;
mod connection;
pub mod executor;
pub mod ready;
#[cfg(unix)]
pub mod refresh;
pub mod slots;
pub mod start;
#[cfg(unix)]
pub mod uwsgi;
mod worker;

use crate::auth::Token;
use crate::config::TargetSpec;
use crate::output::Log;
#[cfg(unix)]
use anyhow::bail;
use anyhow::{Context, Result};
use executor::Executor;
use serde_json::json;
use slots::{Admit, Slots};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections the kernel may queue for accept: a burst of a thousand must not be dropped unseen.
#[cfg(unix)]
const BACKLOG: libc::c_int = 4096;
/// A connection must send its first line within this (or the read timeout, if shorter): one
/// that has not proved the token holds its slot only briefly.
const FIRST_LINE: Duration = Duration::from_secs(2);
/// The longest a stopping receiver runs what is owed before it ends it.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
/// At stop, how long connections may take to write their last answers.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How often the accept loop looks at its stop flag.
#[cfg(unix)]
const STOP_POLL_MS: u16 = 100;

/// Everything the receiver needs, resolved from config and flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Named targets and what they do.
    pub targets: BTreeMap<String, TargetSpec>,
    /// Target of requests that name none.
    pub default_target: Option<String>,
    /// Shared token; `None` turns authentication off.
    pub token: Option<Token>,
    /// Coalescing window per target.
    pub settle: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Each request line must arrive whole within this time.
    pub read_timeout: Duration,
    /// Watched extensions: the only files refreshed under a target's `root`.
    pub extensions: Vec<String>,
    /// Where events go.
    pub log: Log,
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: TcpListener,
    state: Arc<State>,
    /// An open file kept spare: out of descriptors, it is closed to accept one more connection
    /// and tell it "busy", instead of leaving every newcomer without an answer.
    reserve: Option<File>,
    /// The executors' threads, joined at stop.
    joiners: Vec<executor::Joiner>,
    /// Said when serving starts (after the bound address, which is always the first line).
    cap_note: Option<String>,
}

/// A target: what it does, and the executor that does it.
struct Target {
    spec: TargetSpec,
    executor: Executor,
}

/// What every connection shares.
struct State {
    targets: BTreeMap<String, Target>,
    default_target: Option<String>,
    token: Option<Token>,
    read_timeout: Duration,
    first_line: Duration,
    slots: Mutex<Slots<TcpStream>>,
    /// Requests waiting for a ready check, and the most allowed: waiters never fill the cap.
    waiting: AtomicUsize,
    max_waiting: usize,
    log: Log,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the receiver: the bookkeeping inside stays usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why `addr` could not be bound, and what to do about it.
fn bind_failure(addr: &str, err: &std::io::Error) -> String {
    let port = addr.rsplit_once(':').map_or(addr, |(_, port)| port);
    let hint = match err.kind() {
        ErrorKind::AddrInUse => format!(
            ": another touchwire listen, or another program, uses port {port}; stop it or choose --addr HOST:PORT"
        ),
        ErrorKind::AddrNotAvailable => {
            ": that is not an address of this machine; bind 0.0.0.0 (every address) or one of its own".to_string()
        }
        ErrorKind::PermissionDenied => {
            format!(": port {port} may need privileges here; choose --addr HOST:PORT with a port above 1023")
        }
        _ => String::new(),
    };
    format!("cannot listen on {addr}: {err}{hint}")
}

impl Receiver {
    /// Binds `addr` (port 0 picks a free port) and starts one executor per target.
    pub fn bind(addr: &str, options: Options) -> Result<Receiver> {
        let listener = TcpListener::bind(addr).map_err(|err| anyhow::anyhow!(bind_failure(addr, &err)))?;
        // std listens with a backlog of 128: a burst beyond it is completed by the kernel and then
        // dropped unseen, so the client waits for a greeting that never comes, where it should get
        // one or a "busy" line. listen(2) again raises the backlog (the kernel caps it at somaxconn).
        // SAFETY: listen(2) on a socket this function owns; it touches no memory.
        #[cfg(unix)]
        if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("cannot set the listen backlog on {addr}: {err}");
        }
        listener.set_nonblocking(true).context("cannot make the listener non-blocking")?;
        let mut targets = BTreeMap::new();
        let mut joiners = Vec::new();
        for (name, spec) in options.targets {
            let (executor, joiner) =
                Executor::start(name.clone(), spec.clone(), options.settle, options.extensions.clone(), options.log)
                    .with_context(|| format!("cannot start the executor of target {name}"))?;
            targets.insert(name, Target { spec, executor });
            joiners.push(joiner);
        }
        let (max_connections, cap_note) = fit_to_open_files(options.max_connections.max(1));
        let state = State {
            targets,
            default_target: options.default_target,
            token: options.token,
            read_timeout: options.read_timeout,
            first_line: FIRST_LINE.min(options.read_timeout),
            slots: Mutex::new(Slots::new(max_connections)),
            waiting: AtomicUsize::new(0),
            max_waiting: (max_connections / 2).max(1),
            log: options.log,
        };
        Ok(Receiver { listener, state: Arc::new(state), reserve: spare_file(), joiners, cap_note })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().context("cannot read the bound address")
    }

    /// Warns, once, that the connection cap was lowered to fit the open-files limit: before
    /// serving at the latest, or earlier, for a caller with lines of its own to follow it.
    pub fn say_cap_note(&mut self) {
        if let Some(note) = self.cap_note.take() {
            self.state.log.warn("warning", &note, json!({"warning": note}));
        }
    }

    /// Serves connections until `stop` is set; then stops accepting, lets each target run what
    /// is owed (within [`SHUTDOWN_LIMIT`]), closes the connections and joins every thread.
    pub fn serve_until(mut self, stop: &AtomicBool) -> Result<()> {
        self.say_cap_note();
        let mut connections: Vec<JoinHandle<()>> = Vec::new();
        // Bounded by the stop flag, looked at every STOP_POLL_MS at least.
        while !stop.load(Ordering::SeqCst) {
            if !self.readable() {
                reap(&mut connections);
                continue;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(handle) = self.accept(stream, peer) {
                        connections.push(handle);
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::Interrupted => {}
                Err(err) if out_of_descriptors(&err) => self.out_of_files(&err),
                Err(err) => {
                    self.state.log.warn("error", &format!("accept failed: {err}"), json!({"error": err.to_string()}));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            reap(&mut connections);
        }
        self.stop(connections);
        Ok(())
    }

    /// Whether a connection waits to be accepted, after at most [`STOP_POLL_MS`].
    #[cfg(unix)]
    fn readable(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the listener this receiver owns.
        unsafe { libc::poll(&mut poll, 1, libc::c_int::from(STOP_POLL_MS)) == 1 }
    }

    /// Without poll(2) (Windows, where only the demo runs a receiver): a short pause, then the
    /// non-blocking accept says whether a connection waits.
    #[cfg(not(unix))]
    fn readable(&self) -> bool {
        std::thread::sleep(Duration::from_millis(5));
        true
    }

    /// Out of file descriptors: the spare one makes room to tell one newcomer "busy".
    fn out_of_files(&mut self, err: &std::io::Error) {
        let state = &self.state;
        state.log.warn("error", &format!("accept failed: {err}"), json!({"error": err.to_string()}));
        if self.reserve.take().is_some() {
            if let Ok((stream, _)) = self.listener.accept() {
                let message = "busy: the receiver is out of file descriptors; try again";
                connection::reject(stream, protocol_busy(message));
            }
            self.reserve = spare_file();
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Option<JoinHandle<()>> {
        let state = &self.state;
        // The accepted socket inherits nothing from the non-blocking listener on Linux; be sure.
        let _ = stream.set_nonblocking(false);
        let Ok(handle) = stream.try_clone() else {
            connection::reject(stream, protocol_busy("busy: cannot serve this connection now; try again"));
            return None;
        };
        let admitted = lock(&state.slots).admit(peer.ip(), handle);
        let id = match admitted {
            Admit::Accept(id) => id,
            Admit::Evict { id, victim } => {
                let message = "busy: this connection's slot was needed before its request was read; try again";
                connection::evict(victim, protocol_busy(message));
                id
            }
            Admit::Busy(why) => {
                let message = format!("busy: {why}; try again");
                state.log.warn(
                    "rejected",
                    &format!("{peer}: {message}"),
                    json!({"peer": peer.to_string(), "error": message}),
                );
                connection::reject(stream, protocol_busy(&message));
                return None;
            }
        };
        let worker = Arc::clone(state);
        let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
            let peer_text = peer.to_string();
            if let Err(err) = connection::serve(&worker, stream, &peer_text, id) {
                worker.log.debug(&format!("{peer_text}: connection ended: {err}"));
            }
            let _ = lock(&worker.slots).release(id);
        });
        match spawned {
            Ok(handle) => Some(handle),
            Err(err) => {
                // The stream went into the closure and is gone; the slot's handle is left to answer.
                let message = format!("cannot start a thread for this connection: {err}; try again");
                state.log.warn("error", &message, json!({"error": message}));
                if let Some(handle) = lock(&state.slots).release(id) {
                    connection::reject(
                        handle,
                        crate::protocol::Reply::error(crate::protocol::ErrorCode::Busy, message),
                    );
                }
                None
            }
        }
    }

    /// Stops: no more connections; executors run what is owed, then idle connections are closed
    /// and every thread is joined.
    fn stop(self, connections: Vec<JoinHandle<()>>) {
        let state = &self.state;
        drop(self.listener);
        state.log.warn("stopping", "stopping: finishing the reloads under way or owed first", json!({}));
        let deadline = Instant::now() + SHUTDOWN_LIMIT;
        // Idle connections end at once; one waiting for an answer still gets it.
        for handle in lock(&state.slots).handles() {
            let _ = handle.shutdown(Shutdown::Read);
        }
        for target in state.targets.values() {
            target.executor.stop(deadline);
        }
        // Each executor answers every request it holds before it ends.
        for joiner in self.joiners {
            joiner.join();
        }
        // A moment for the last answers to go out, then every connection is closed.
        let grace = Instant::now() + CLOSE_GRACE;
        while !connections.iter().all(JoinHandle::is_finished) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        for handle in lock(&state.slots).handles() {
            let _ = handle.shutdown(Shutdown::Both);
        }
        for connection in connections {
            let _ = connection.join();
        }
        let dropped = crate::output::dropped();
        if dropped > 0 {
            let line = format!("stopped; {dropped} log lines were lost (stdout or stderr closed or full)");
            state.log.warn("stopped", &line, json!({"dropped_lines": dropped}));
        } else {
            state.log.warn("stopped", "stopped", json!({}));
        }
    }
}

/// File descriptors a receiver needs besides one per connection (and its clone): listener,
/// spare, std streams, targets' files, exec pipes.
#[cfg(unix)]
const FD_OVERHEAD: u64 = 32;

/// The connection cap, lowered to what the open-files limit allows: past that limit a newcomer
/// would get no answer at all, where under the cap it is told "busy".
/// The descriptor kept spare for [`Receiver::out_of_files`].
fn spare_file() -> Option<File> {
    if cfg!(unix) { File::open("/dev/null").ok() } else { None }
}

/// Whether `err` says the process (or the system) has no file descriptor left.
fn out_of_descriptors(err: &std::io::Error) -> bool {
    #[cfg(unix)]
    return matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    #[cfg(not(unix))]
    {
        // Windows has no such limit to run into here.
        let _ = err;
        false
    }
}

/// Returns the cap and, when it was lowered, a warning to print.
#[cfg(not(unix))]
fn fit_to_open_files(cap: usize) -> (usize, Option<String>) {
    (cap, None)
}

/// Returns the cap and, when it was lowered, a warning to print.
#[cfg(unix)]
fn fit_to_open_files(cap: usize) -> (usize, Option<String>) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes one rlimit struct that this function owns.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return (cap, None);
    }
    // Each connection holds three descriptors: its stream, its writer and the clone its slot keeps.
    let room = usize::try_from(limit.rlim_cur.saturating_sub(FD_OVERHEAD) / 3).unwrap_or(usize::MAX).max(1);
    let note = (room < cap).then(|| {
        format!(
            "warning: the open-files limit ({}) allows {room} connections, not {cap}: serving at most {room} \
             (raise it with `ulimit -n`)",
            limit.rlim_cur
        )
    });
    (cap.min(room), note)
}

/// Joins the connection threads that have ended. When the last one has, the memory their
/// bursts left in the allocator's free lists is given back (a flood leaves no lasting cost).
fn reap(connections: &mut Vec<JoinHandle<()>>) {
    let before = connections.len();
    let mut i = 0;
    while i < connections.len() {
        if connections[i].is_finished() {
            let _ = connections.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
    if before > 0 && connections.is_empty() {
        trim_memory();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_memory() {
    // SAFETY: malloc_trim(3) only returns free heap memory to the OS.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_memory() {}

fn protocol_busy(message: &str) -> crate::protocol::Reply {
    crate::protocol::Reply::error(crate::protocol::ErrorCode::Busy, message)
}

/// A request that waits for a ready check holds one of a bounded number of places.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_failure_says_what_to_do() {
        let in_use = std::io::Error::from(ErrorKind::AddrInUse);
        let msg = bind_failure("127.0.0.1:9001", &in_use);
        assert!(msg.starts_with("cannot listen on 127.0.0.1:9001: "), "{msg}");
        assert!(
            msg.ends_with(
                "another touchwire listen, or another program, uses port 9001; stop it or choose --addr HOST:PORT"
            ),
            "{msg}"
        );
        let msg = bind_failure("[::1]:80", &std::io::Error::from(ErrorKind::PermissionDenied));
        assert!(msg.contains("port 80 may need privileges"), "{msg}");
        let msg = bind_failure("10.9.9.9:9001", &std::io::Error::from(ErrorKind::AddrNotAvailable));
        assert!(msg.contains("not an address of this machine"), "{msg}");
    }
}
