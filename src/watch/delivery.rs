//! Delivery of the watcher's triggers: one thread and one kept-open connection per remote,
//! re-authenticated on reconnect, with backoff. A guest that is down never stops the watcher;
//! a trigger that could not be delivered is reported with the remote and the reason.

use super::debounce::Trigger;
use crate::client::{CallError, Connection, Credentials};
use crate::output::{Log, millis, summary};
use crate::protocol::{Op, Reply, Request};
use anyhow::{Context, Result};
use serde_json::json;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// Ping a kept connection this often, below the receiver's 10 s idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(4);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The result of one trigger at one remote.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The remote it went to.
    pub remote: String,
    /// The files of the trigger.
    pub files: Vec<String>,
    /// The reply and round trip, or why it failed.
    pub result: Result<(Reply, Duration), String>,
}

/// Hands triggers to every remote's delivery thread.
pub struct Delivery {
    remotes: Vec<Sender<Trigger>>,
}

/// What a delivery thread needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Credentials for every remote.
    pub credentials: Credentials,
    /// Target named in requests (the guest's default when `None`).
    pub target: Option<String>,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// Where outcomes are printed.
    pub log: Log,
}

impl Delivery {
    /// Starts one delivery thread per remote; each outcome is printed and, if given, sent to `outcomes`.
    pub fn start(remotes: &[String], settings: &Settings, outcomes: Option<Sender<Outcome>>) -> Result<Delivery> {
        let mut senders = Vec::new();
        for remote in remotes {
            let (tx, rx) = channel();
            let mut link = Link { remote: remote.clone(), settings: settings.clone(), connection: None, down: None };
            let outcomes = outcomes.clone();
            std::thread::Builder::new()
                .name(format!("deliver {remote}"))
                .spawn(move || link.run(rx, outcomes))
                .with_context(|| format!("cannot start the delivery thread for {remote}"))?;
            senders.push(tx);
        }
        Ok(Delivery { remotes: senders })
    }

    /// Queues `trigger` for every remote.
    pub fn send(&self, trigger: &Trigger) {
        for remote in &self.remotes {
            let _ = remote.send(trigger.clone());
        }
    }
}

/// One remote's connection state.
struct Link {
    remote: String,
    settings: Settings,
    connection: Option<Connection>,
    /// While the remote is unreachable: when to try again, the current backoff, and why it failed.
    down: Option<(Instant, Duration, String)>,
}

impl Link {
    fn run(&mut self, triggers: Receiver<Trigger>, outcomes: Option<Sender<Outcome>>) {
        let _ = self.connect();
        loop {
            let wait = match &self.down {
                Some((retry_at, _, _)) => retry_at.saturating_duration_since(Instant::now()).min(KEEPALIVE),
                None => KEEPALIVE,
            };
            match triggers.recv_timeout(wait) {
                Ok(mut trigger) => {
                    // Triggers that queued up while a slow guest answered go out as one.
                    while let Ok(next) = triggers.try_recv() {
                        trigger.files.extend(next.files);
                        trigger.files.sort();
                        trigger.files.dedup();
                    }
                    let outcome = self.deliver(&trigger);
                    self.report(&outcome);
                    if let Some(tx) = &outcomes {
                        let _ = tx.send(outcome);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.keepalive(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Opens a connection and pings it, which also proves the token. Reports only changes
    /// between reachable and unreachable (or a new reason), not every attempt.
    fn connect(&mut self) -> Result<(), String> {
        let log = self.settings.log;
        let timeout = self.settings.timeout;
        let opened = Connection::open(&self.remote, &self.settings.credentials, timeout).and_then(|mut connection| {
            connection.request(Request { op: Some(Op::Ping), ..Request::default() }, timeout)?;
            Ok(connection)
        });
        match opened {
            Ok(connection) => {
                self.connection = Some(connection);
                let remote = &self.remote;
                log.event("connected", &format!("connected to {remote}"), json!({"remote": remote}));
                self.down = None;
                Ok(())
            }
            Err(err) => {
                let message = format!("{err:#}");
                let (backoff, known) = match &self.down {
                    Some((_, backoff, old)) => ((*backoff * 2).min(MAX_BACKOFF), *old == message),
                    None => (Duration::from_millis(100), false),
                };
                if !known {
                    let line = format!("cannot reach {message}; will retry");
                    log.warn("disconnected", &line, json!({"remote": self.remote, "error": message}));
                }
                self.down = Some((Instant::now() + backoff, backoff, message.clone()));
                Err(message)
            }
        }
    }

    /// Pings an open connection, or retries a lost one once its backoff has passed.
    fn keepalive(&mut self) {
        let timeout = self.settings.timeout;
        let ping = Request { op: Some(Op::Ping), ..Request::default() };
        let alive = self.connection.as_mut().map(|connection| connection.request(ping, timeout).is_ok());
        match alive {
            Some(true) => {}
            Some(false) => {
                self.connection = None;
                let _ = self.connect();
            }
            None if self.down.as_ref().is_none_or(|(retry_at, _, _)| Instant::now() >= *retry_at) => {
                let _ = self.connect();
            }
            None => {}
        }
    }

    fn deliver(&mut self, trigger: &Trigger) -> Outcome {
        let request = Request {
            op: Some(Op::Reload),
            target: self.settings.target.clone(),
            reason: Some(trigger.reason.into()),
            files: trigger.files.clone(),
            ..Request::default()
        };
        let result = self.attempt(&request);
        Outcome { remote: self.remote.clone(), files: trigger.files.clone(), result }
    }

    /// Sends `request`. A kept connection may have died since its last use: then one retry on a
    /// fresh connection, but never after the request went out unanswered (the action may be running).
    fn attempt(&mut self, request: &Request) -> Result<(Reply, Duration), String> {
        for _ in 0..2 {
            let fresh = self.connection.as_ref().is_none_or(Connection::is_stale);
            if fresh {
                self.connection = None;
                self.connect()?;
            }
            let Some(connection) = &mut self.connection else { break };
            let start = Instant::now();
            match connection.call(request.clone(), self.settings.timeout) {
                Ok(reply) if reply.ok => return Ok((reply, start.elapsed())),
                Ok(reply) => {
                    let error = reply.error.unwrap_or_else(|| "failed without saying why".into());
                    if error.starts_with("unauthorized") {
                        self.connection = None; // the receiver closes it
                    }
                    return Err(format!("{}: {error}", self.remote));
                }
                Err(CallError::NoReply(err)) => {
                    self.connection = None;
                    return Err(format!("{err:#}; the trigger was sent, the action may still be running"));
                }
                Err(CallError::Lost(err)) => {
                    self.connection = None;
                    if fresh {
                        return Err(format!("{err:#}"));
                    }
                }
            }
        }
        Err(format!("{}: the connection failed twice", self.remote))
    }

    fn report(&self, outcome: &Outcome) {
        let log = self.settings.log;
        let files = summary(&outcome.files);
        match &outcome.result {
            Ok((reply, rtt)) => {
                let target = reply.target.as_deref().unwrap_or("?");
                let what = if reply.merged == Some(true) {
                    "merged into a reload under way".to_string()
                } else {
                    format!("reloaded ({})", reply.action.as_deref().unwrap_or("?"))
                };
                let line = format!("{target}: {files} -> {} {what} in {}", outcome.remote, millis(*rtt));
                let fields = json!({"remote": outcome.remote, "files": outcome.files, "ok": true, "target": target,
                                    "merged": reply.merged, "ms": rtt.as_secs_f64() * 1000.0});
                log.event("trigger", &line, fields);
            }
            Err(error) => {
                let line = format!("not delivered: {files}: {error}");
                let fields = json!({"remote": outcome.remote, "files": outcome.files, "ok": false, "error": error});
                log.warn("undelivered", &line, fields);
            }
        }
    }
}
