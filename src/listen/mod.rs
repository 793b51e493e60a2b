//! The guest side: a std TCP listener speaking wire protocol v1, one thread per connection,
//! coalescing triggers per target and running the target's action.

pub mod actions;
pub mod coalesce;
mod connection;
pub mod ready;
pub mod start;
mod target;

use crate::auth::Token;
use crate::config::TargetSpec;
use crate::output::{Log, clean, summary};
use crate::protocol::{self, Admission, Health, Op, Reply, Request};
use anyhow::{Context, Result, bail};
use coalesce::Coalescer;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use target::Target;

/// Connections the kernel may queue for accept: a burst of a thousand must not be dropped unseen.
const BACKLOG: libc::c_int = 4096;

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
    /// Where events go.
    pub log: Log,
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: TcpListener,
    state: Arc<State>,
}

/// What every connection shares.
struct State {
    targets: BTreeMap<String, Arc<Target>>,
    default_target: Option<String>,
    token: Option<Token>,
    max_connections: usize,
    read_timeout: Duration,
    active: AtomicUsize,
    log: Log,
}

impl Receiver {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: &str, options: Options) -> Result<Receiver> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        // std listens with a backlog of 128: a burst beyond it is completed by the kernel and then
        // dropped unseen, so the client waits for a greeting that never comes, where it should get
        // one or a "busy" line. listen(2) again raises the backlog (the kernel caps it at somaxconn).
        // SAFETY: listen(2) on a socket this function owns; it touches no memory.
        if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("cannot set the listen backlog on {addr}: {err}");
        }
        let targets = options
            .targets
            .into_iter()
            .map(|(name, spec)| {
                let target = Target::new(name.clone(), spec, Coalescer::new(options.settle));
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

    /// A handle that tells, from another thread, whether every target is idle (nothing running,
    /// no trailing action owed): what a clean shutdown waits for.
    pub fn idle_probe(&self) -> impl Fn() -> bool + Send + 'static {
        let state = Arc::clone(&self.state);
        move || state.targets.values().all(|t| t.idle())
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
            connection::reject(stream, &message);
            return;
        }
        state.active.fetch_add(1, Ordering::SeqCst);
        let worker = Arc::clone(state);
        let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
            let _slot = Slot(&worker.active);
            if let Err(err) = connection::serve(&worker, stream, &peer) {
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

impl State {
    /// Answers one line; the flag says whether to close the connection afterwards.
    fn handle(&self, line: &[u8], nonce: &str, peer: &str) -> (Reply, bool) {
        match protocol::admit(line, nonce, self.token.as_ref()) {
            Admission::Ping { probe } => (self.ping(probe), false),
            Admission::Reload(request) => (self.reload(&request, peer), false),
            Admission::Refuse { code, error, close } => (Reply::error(code, error), close),
        }
    }

    fn ping(&self, probe: bool) -> Reply {
        Reply {
            ok: true,
            op: Some(Op::Ping.as_str().into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            targets: Some(self.targets.keys().cloned().collect()),
            default_target: self.default_target.clone(),
            health: Some(
                self.targets
                    .iter()
                    .map(|(name, t)| {
                        let (ok, detail) = probe.then(|| actions::probe(&t.spec.action)).unzip();
                        let health = Health {
                            ok,
                            detail,
                            ready_check: t.spec.ready.is_some(),
                            wait_ms: t.wait_bound().map(|bound| bound.as_millis() as u64),
                        };
                        (name.clone(), health)
                    })
                    .collect(),
            ),
            ..Reply::default()
        }
    }

    fn reload(&self, request: &Request, peer: &str) -> Reply {
        let known = || self.targets.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(name) = request.target.as_ref().or(self.default_target.as_ref()) else {
            return Reply::error(
                protocol::ErrorCode::UnknownTarget,
                format!("no target named and no default target (known: {})", known()),
            );
        };
        let Some(target) = self.targets.get(name) else {
            return Reply::error(
                protocol::ErrorCode::UnknownTarget,
                format!("unknown target {:?} (known: {})", clean(name), known()),
            );
        };
        let reason = request.reason.as_deref().unwrap_or("");
        let fields = json!({"peer": peer, "target": target.name, "reason": reason, "files": request.files});
        let describe = match request.files.as_slice() {
            [] => format!("{} from {peer}", clean(reason)),
            files => format!("{}: {} from {peer}", clean(reason), summary(files)),
        };
        let answer = target.trigger(self.log, fields, &describe, request.wait);
        match answer.result {
            Ok(ready) => Reply {
                ok: true,
                op: Some(Op::Reload.as_str().into()),
                target: Some(target.name.clone()),
                action: Some(target.spec.action.kind().into()),
                merged: Some(answer.merged),
                ready: if request.wait { ready } else { None },
                ..Reply::default()
            },
            Err(err) => Reply::error(protocol::ErrorCode::ActionFailed, err),
        }
    }
}
