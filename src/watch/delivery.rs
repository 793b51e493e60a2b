//! Delivery of the watcher's triggers: one thread and one kept-open connection per remote,
//! re-authenticated on reconnect, with backoff. A guest that is down never stops the watcher;
//! a trigger that could not be delivered is reported with the remote and the reason.

use super::debounce::Trigger;
use crate::client::{Connection, Credentials};
use crate::output::{Log, millis};
use crate::protocol::{Op, Reply, Request};
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
    pub fn start(remotes: &[String], settings: &Settings, outcomes: Option<Sender<Outcome>>) -> Delivery {
        let senders = remotes
            .iter()
            .map(|remote| {
                let (tx, rx) = channel();
                let mut link =
                    Link { remote: remote.clone(), settings: settings.clone(), connection: None, down: None };
                let outcomes = outcomes.clone();
                std::thread::Builder::new()
                    .name(format!("deliver {remote}"))
                    .spawn(move || link.run(rx, outcomes))
                    .map(|_| tx)
            })
            .filter_map(Result::ok)
            .collect();
        Delivery { remotes: senders }
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
    /// Since when, and until when we wait before trying again, while the remote is unreachable.
    down: Option<(Instant, Duration)>,
}

impl Link {
    fn run(&mut self, triggers: Receiver<Trigger>, outcomes: Option<Sender<Outcome>>) {
        let _ = self.connect();
        loop {
            match triggers.recv_timeout(KEEPALIVE) {
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

    /// Opens a connection; reports the change between reachable and unreachable once, not every time.
    fn connect(&mut self) -> Result<(), String> {
        let log = self.settings.log;
        match Connection::open(&self.remote, &self.settings.credentials, self.settings.timeout) {
            Ok(connection) => {
                self.connection = Some(connection);
                let remote = &self.remote;
                log.event("connected", &format!("connected to {remote}"), json!({"remote": remote}));
                self.down = None;
                Ok(())
            }
            Err(err) => {
                let message = format!("{err:#}");
                let backoff = self.down.map(|(_, b)| (b * 2).min(MAX_BACKOFF)).unwrap_or(Duration::from_millis(100));
                if self.down.is_none() {
                    log.warn(
                        "disconnected",
                        &format!("cannot reach {message}; will retry"),
                        json!({"remote": self.remote, "error": message}),
                    );
                }
                self.down = Some((Instant::now() + backoff, backoff));
                Err(message)
            }
        }
    }

    /// Pings an open connection, or retries a lost one when its backoff has passed.
    fn keepalive(&mut self) {
        match &mut self.connection {
            Some(connection) => {
                let ping = Request { op: Some(Op::Ping), ..Request::default() };
                if connection.call(ping, self.settings.timeout).is_err() {
                    self.connection = None;
                    let _ = self.connect();
                }
            }
            None if self.down.is_none_or(|(retry_at, _)| Instant::now() >= retry_at) => {
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

    /// Sends `request`; a kept connection may have died since its last use: one fresh retry, never more.
    fn attempt(&mut self, request: &Request) -> Result<(Reply, Duration), String> {
        let mut last_error = format!("{}: not connected", self.remote);
        for _ in 0..2 {
            if self.connection.as_ref().is_none_or(Connection::is_stale) {
                self.connection = None;
                self.connect()?;
            }
            let Some(connection) = &mut self.connection else { break };
            let start = Instant::now();
            match connection.call(request.clone(), self.settings.timeout) {
                Ok(reply) if reply.ok => return Ok((reply, start.elapsed())),
                Ok(reply) => {
                    let error = reply.error.unwrap_or_else(|| "failed without saying why".into());
                    return Err(format!("{}: {error}", self.remote));
                }
                Err(err) => {
                    last_error = format!("{err:#}");
                    self.connection = None;
                }
            }
        }
        Err(last_error)
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
                log.warn(
                    "undelivered",
                    &line,
                    json!({"remote": outcome.remote, "files": outcome.files, "ok": false, "error": error}),
                );
            }
        }
    }
}

/// The first few files and a count, for one log line.
pub fn summary(files: &[String]) -> String {
    const SHOWN: usize = 3;
    match files.len() {
        0 => "(rescan)".into(),
        n if n <= SHOWN => files.join(", "),
        n => format!("{} and {} more", files[..SHOWN].join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn summaries_show_a_few_files_and_a_count() {
        let files: Vec<String> = (1..=5).map(|i| format!("m{i}.py")).collect();
        assert_eq!(super::summary(&files[..1]), "m1.py");
        assert_eq!(super::summary(&files), "m1.py, m2.py, m3.py and 2 more");
        assert_eq!(super::summary(&[]), "(rescan)");
    }
}
