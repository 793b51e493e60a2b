//! Delivery of the watcher's triggers: one thread and one kept-open connection per remote,
//! re-authenticated on reconnect, with backoff. A guest that is down never stops the watcher;
//! a trigger that could not be delivered is reported with the remote and the reason, and when
//! it never reached the guest, it is owed: sent once the guest is back.

use super::debounce::Trigger;
use crate::client::{CallError, Connection, Credentials, code_of, remote_error};
use crate::output::Log;
use crate::protocol::{ErrorCode, Op, Reply, Request, escape_remote};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the guest's traceback says the failure is: now in [`crate::outcome`], with the rest of an outcome's wording.
pub use crate::outcome::failure_place;

/// Ping a kept connection this often, below the receiver's 10 s idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(4);
/// Most triggers waiting for a ready check at once; more go without waiting.
const MAX_WAITING: usize = 2;
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
    /// How many of the watcher's triggers this answers: triggers queued meanwhile go out as one;
    /// a catch-up of owed files answers none (so a consumer can tell when all it sent is answered).
    pub triggers: usize,
}

/// Hands triggers to every remote's delivery thread.
pub struct Delivery {
    remotes: Vec<Sender<Trigger>>,
    /// Each remote and its thread, which returns the files it could not deliver at stop.
    threads: Vec<(String, JoinHandle<Vec<String>>)>,
    /// Set when the watcher stops: what cannot reach a guest now is reported as lost, not owed.
    stopping: Arc<AtomicBool>,
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
    /// The host's work tree, to name a failing file of the guest's traceback by its path here.
    pub root: Option<PathBuf>,
}

impl Delivery {
    /// Starts one delivery thread per remote; each outcome is printed and, if given, sent to `outcomes`.
    pub fn start(remotes: &[String], settings: &Settings, outcomes: Option<Sender<Outcome>>) -> Result<Delivery> {
        let stopping = Arc::new(AtomicBool::new(false));
        let (mut senders, mut threads) = (Vec::new(), Vec::new());
        for remote in remotes {
            let (tx, rx) = channel();
            let mut link = Link {
                remote: remote.clone(),
                settings: settings.clone(),
                connection: None,
                waits: false,
                waiters: Vec::new(),
                down: None,
                owed: Arc::new(Owed {
                    files: Mutex::new(Vec::new()),
                    stopping: Arc::clone(&stopping),
                    unreachable_since_stop: AtomicBool::new(false),
                }),
            };
            let outcomes = outcomes.clone();
            let thread = std::thread::Builder::new()
                .name(format!("deliver {remote}"))
                .spawn(move || link.run(rx, outcomes))
                .with_context(|| format!("cannot start the delivery thread for {remote}"))?;
            senders.push(tx);
            threads.push((remote.clone(), thread));
        }
        Ok(Delivery { remotes: senders, threads, stopping })
    }

    /// Queues `trigger` for every remote.
    pub fn send(&self, trigger: &Trigger) {
        for remote in &self.remotes {
            let _ = remote.send(trigger.clone());
        }
    }

    /// Stops delivery: sends `last` (the changes the watcher still held) and what is owed to a
    /// guest, once, waits for every trigger under way (each bounded by its timeouts), and
    /// returns how many files never reached some guest (each reported already).
    pub fn finish(self, last: Option<Trigger>) -> Result<usize> {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(trigger) = &last {
            self.send(trigger);
        }
        drop(self.remotes);
        let mut lost = std::collections::BTreeSet::new();
        for (remote, thread) in self.threads {
            let files = thread.join().map_err(|_| {
                anyhow::anyhow!("the delivery thread for {remote} failed: changes may not have reached it")
            })?;
            lost.extend(files);
        }
        Ok(lost.len())
    }
}

/// One remote's connection state.
struct Link {
    remote: String,
    settings: Settings,
    connection: Option<Connection>,
    /// The guest's target has a ready check: triggers wait for it, each on a connection of its own.
    waits: bool,
    /// The threads of triggers waiting for their ready check.
    waiters: Vec<JoinHandle<()>>,
    /// While the remote is unreachable: when to try again, the current backoff, and why it failed.
    down: Option<(Instant, Duration, String)>,
    /// What the guest is owed, shared with the wait threads.
    owed: Arc<Owed>,
}

/// Files of triggers that could not reach a guest, sent when it is back.
struct Owed {
    files: Mutex<Vec<String>>,
    /// Set by the watcher's stop (shared by every remote's link).
    stopping: Arc<AtomicBool>,
    /// An attempt since the stop could not reach the guest: another one now would not either.
    unreachable_since_stop: AtomicBool,
}

impl Owed {
    fn files(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a trigger got no answer.
struct Undelivered {
    error: String,
    /// The guest could not be reached, so the trigger never went out: it is owed. (A refusal,
    /// such as a wrong token, is no reason to try again; a request that went out unanswered may
    /// have reloaded the app, and must not be sent twice.)
    unreachable: bool,
}

impl Undelivered {
    /// A failure after the request went out, or one that trying again cannot fix.
    fn sent(error: String) -> Undelivered {
        Undelivered { error, unreachable: false }
    }

    /// A failure to reach the guest: unreachable unless the guest refused us.
    fn reaching(err: &anyhow::Error) -> Undelivered {
        Undelivered { error: format!("{err:#}"), unreachable: !crate::client::is_refusal(err) }
    }
}

impl Link {
    /// Delivers triggers until the watcher stops; returns the files that never reached the guest.
    fn run(&mut self, triggers: Receiver<Trigger>, outcomes: Option<Sender<Outcome>>) -> Vec<String> {
        let _ = self.connect();
        loop {
            let wait = match &self.down {
                Some((retry_at, _, _)) => retry_at.saturating_duration_since(Instant::now()).min(KEEPALIVE),
                None => KEEPALIVE,
            };
            match triggers.recv_timeout(wait) {
                Ok(mut trigger) => {
                    // Triggers that queued up while a slow guest answered, and those owed, go out as one.
                    let mut covers = 1;
                    while let Ok(next) = triggers.try_recv() {
                        trigger.files.extend(next.files);
                        covers += 1;
                    }
                    trigger.files.append(&mut self.owed.files());
                    trigger.files.sort();
                    trigger.files.dedup();
                    self.dispatch(trigger, covers, &outcomes);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.keepalive();
                    if self.connection.is_some() && !self.owed.files().is_empty() {
                        let files = std::mem::take(&mut *self.owed.files());
                        let line = format!("{} is back: sending the changes it missed", self.remote);
                        self.settings.log.event("catching_up", &line, json!({"remote": self.remote, "files": files}));
                        self.dispatch(Trigger { files, reason: "missed" }, 0, &outcomes);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Stopping: the triggers waiting for a ready check end within their bound; what is still
        // owed gets one last try, unless an attempt since the stop found the guest unreachable.
        for waiter in self.waiters.drain(..) {
            let _ = waiter.join();
        }
        let files = std::mem::take(&mut *self.owed.files());
        if !files.is_empty() && !self.owed.unreachable_since_stop.load(Ordering::SeqCst) {
            self.deliver(Trigger { files, reason: "missed" }, 0, outcomes.as_ref());
        } else {
            self.owed.files().extend(files);
        }
        std::mem::take(&mut *self.owed.files())
    }

    /// Sends `trigger`: waiting for the ready check on a thread of its own when the guest's
    /// target has one, else on the kept connection.
    fn dispatch(&mut self, trigger: Trigger, covers: usize, outcomes: &Option<Sender<Outcome>>) {
        self.waiters.retain(|waiter| !waiter.is_finished());
        // A guest that went away is tried on the kept connection first, which notices.
        let up = self.connection.as_ref().is_some_and(|c| !c.is_stale());
        if up && self.waits && self.waiters.len() < MAX_WAITING {
            self.deliver_and_wait(trigger, covers, outcomes.clone());
        } else {
            self.deliver(trigger, covers, outcomes.as_ref());
        }
    }

    /// Opens a connection and pings it, which also proves the token. Reports only changes
    /// between reachable and unreachable (or a new reason), not every attempt.
    fn connect(&mut self) -> Result<(), Undelivered> {
        let log = self.settings.log;
        let timeout = self.settings.timeout;
        let opened = Connection::open(&self.remote, &self.settings.credentials, timeout).and_then(|mut connection| {
            let pong = connection.request(Request { op: Some(Op::Ping), ..Request::default() }, timeout)?;
            Ok((connection, pong))
        });
        match opened {
            Ok((connection, pong)) => {
                let target = self.settings.target.clone().or(pong.default_target);
                let health = pong.health.unwrap_or_default();
                self.waits = target.and_then(|t| health.get(&t).and_then(|h| h.ready_check)).unwrap_or(false);
                self.connection = Some(connection);
                let remote = &self.remote;
                log.event("connected", &format!("connected to {remote}"), json!({"remote": remote}));
                self.down = None;
                Ok(())
            }
            Err(err) => {
                let failure = Undelivered::reaching(&err);
                let (backoff, known) = match &self.down {
                    Some((_, backoff, old)) => ((*backoff * 2).min(MAX_BACKOFF), *old == failure.error),
                    None => (Duration::from_millis(100), false),
                };
                if !known {
                    // A guest that answered was reached: say what it said, not that it is unreachable.
                    let line = self.down_line(&err, &failure);
                    log.warn("disconnected", &line, json!({"remote": self.remote, "error": failure.error}));
                }
                self.down = Some((Instant::now() + backoff, backoff, failure.error.clone()));
                Err(failure)
            }
        }
    }

    /// What to say when the guest cannot be used: a refusal (a wrong or missing token, another
    /// protocol) is said as one, with its fix, and without promising a retry that cannot help
    /// (the token is read once, when the watcher starts); anything else is retried.
    fn down_line(&self, err: &anyhow::Error, failure: &Undelivered) -> String {
        if !crate::client::is_refusal(err) {
            // A guest that answered was reached: say what it said, not that it is unreachable.
            return match remote_error(err) {
                Some(_) => format!("{}; will retry", failure.error),
                None => format!("cannot reach {}; will retry", failure.error),
            };
        }
        let token = remote_error(err).is_some_and(|r| r.code == ErrorCode::Unauthorized);
        if !token {
            return format!("refused: {}; changes are not sent to it", failure.error);
        }
        let file = match &self.settings.credentials.file {
            Some(path) => format!("put the guest's token in {}", path.display()),
            None => "pass the guest's token file with --token-file".to_string(),
        };
        format!(
            "refused: {}; changes are not sent to it: {file} (or point --token-file or \
             TOUCHWIRE_TOKEN_FILE at a copy of the guest's token file), then restart touchwire watch",
            failure.error
        )
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

    /// Sends `trigger` asking to wait for the ready check, on a connection of its own and a
    /// thread of its own: the next trigger is not held up, and the guest coalesces it.
    fn deliver_and_wait(&mut self, trigger: Trigger, covers: usize, outcomes: Option<Sender<Outcome>>) {
        let (remote, settings, owed) = (self.remote.clone(), self.settings.clone(), Arc::clone(&self.owed));
        let (fallback, sink) = (trigger.clone(), outcomes.clone());
        let spawned = std::thread::Builder::new().name("wait".into()).spawn(move || {
            let request = reload(&settings, &trigger, true);
            let result =
                wait_for_ready(&remote, &settings, &request).map_err(|failure| settle(failure, &trigger.files, &owed));
            let outcome = Outcome { remote, files: trigger.files, result, triggers: covers };
            super::cycle::round(settings.log, settings.target.as_deref(), &outcome, |log| {
                report(log, &settings, &outcome)
            });
            if let Some(tx) = outcomes {
                let _ = tx.send(outcome);
            }
        });
        match spawned {
            Ok(waiter) => self.waiters.push(waiter),
            // No thread to wait on: send it without waiting.
            Err(_) => self.deliver(fallback, covers, sink.as_ref()),
        }
    }

    /// Sends `trigger` on the kept connection and reports the outcome.
    fn deliver(&mut self, trigger: Trigger, covers: usize, outcomes: Option<&Sender<Outcome>>) {
        let request = reload(&self.settings, &trigger, false);
        let result = self.attempt(&request).map_err(|failure| settle(failure, &trigger.files, &self.owed));
        let outcome = Outcome { remote: self.remote.clone(), files: trigger.files, result, triggers: covers };
        let settings = &self.settings;
        super::cycle::round(settings.log, settings.target.as_deref(), &outcome, |log| report(log, settings, &outcome));
        if let Some(tx) = outcomes {
            let _ = tx.send(outcome);
        }
    }

    /// Sends `request`. A kept connection may have died since its last use: then one retry on a
    /// fresh connection, but never after the request went out unanswered (the action may be running).
    fn attempt(&mut self, request: &Request) -> Result<(Reply, Duration), Undelivered> {
        // Once a request went out on a connection that then failed, it may have run: nothing
        // after that makes it owed.
        let mut went_out = false;
        for _ in 0..2 {
            let fresh = self.connection.as_ref().is_none_or(Connection::is_stale);
            if fresh {
                self.connection = None;
                self.connect().map_err(|failure| match went_out {
                    true => Undelivered::sent(format!("{} (the reload may or may not have run)", failure.error)),
                    false => failure,
                })?;
            }
            let Some(connection) = &mut self.connection else { break };
            let start = Instant::now();
            match connection.call(request.clone(), self.settings.timeout) {
                Ok(reply) if delivered(&reply) => return Ok((reply, start.elapsed())),
                Ok(reply) => {
                    // With auth on, the receiver closes the connection after these.
                    if matches!(code_of(&reply), ErrorCode::Unauthorized | ErrorCode::BadRequest | ErrorCode::TooLong) {
                        self.connection = None;
                    }
                    return Err(Undelivered::sent(refused(&self.remote, &reply)));
                }
                Err(CallError::NoReply(err)) => {
                    self.connection = None;
                    let error = format!("{err:#}; the trigger was sent, the action may still be running");
                    return Err(Undelivered::sent(error));
                }
                Err(CallError::Garbled(err)) => {
                    // The receiver answered, so it had the trigger: sending it again would run the action twice.
                    self.connection = None;
                    return Err(Undelivered::sent(format!("{err:#}; the trigger was sent, it is not sent again")));
                }
                Err(CallError::NotSent(err)) => {
                    self.connection = None;
                    if fresh {
                        return Err(Undelivered { error: format!("{err:#}"), unreachable: true });
                    }
                }
                Err(CallError::Lost(err)) => {
                    self.connection = None;
                    if fresh {
                        return Err(Undelivered::sent(format!("{err:#}")));
                    }
                    went_out = true;
                }
            }
        }
        Err(Undelivered::sent(format!("{}: the connection failed twice", self.remote)))
    }
}

/// The reload request for `trigger`.
fn reload(settings: &Settings, trigger: &Trigger, wait: bool) -> Request {
    Request {
        op: Some(Op::Reload),
        target: settings.target.clone(),
        reason: Some(trigger.reason.into()),
        files: trigger.files.clone(),
        wait,
        ..Request::default()
    }
}

/// A reload that waits for the guest's ready check, on a connection of its own, as long as the
/// guest says that can take.
fn wait_for_ready(remote: &str, settings: &Settings, request: &Request) -> Result<(Reply, Duration), Undelivered> {
    let start = Instant::now();
    let timeout = settings.timeout;
    let mut connection =
        Connection::open(remote, &settings.credentials, timeout).map_err(|err| Undelivered::reaching(&err))?;
    let bound =
        connection.wait_bound(settings.target.as_deref(), timeout).map_err(|err| Undelivered::reaching(&err))?;
    match connection.call(request.clone(), bound + timeout) {
        Ok(reply) if delivered(&reply) => Ok((reply, start.elapsed())),
        Ok(reply) => Err(Undelivered::sent(refused(remote, &reply))),
        Err(CallError::NotSent(err)) => Err(Undelivered { error: format!("{err:#}"), unreachable: true }),
        Err(err) => Err(Undelivered::sent(format!("{err:#}"))),
    }
}

/// Whether the guest took the trigger: it succeeded, its action ran and the app did not come
/// back (`not_ready`), or its action failed (`action_failed`, `internal`: a gunicorn master that
/// died, a FIFO nobody reads). Each is a result to report as such ("reload failed"), not a
/// failure to deliver: sending it again cannot help.
fn delivered(reply: &Reply) -> bool {
    reply.ok
        || matches!(
            code_of(reply),
            ErrorCode::NotReady | ErrorCode::ActionFailed | ErrorCode::Internal | ErrorCode::Unknown
        )
}

/// The sentence for a trigger the guest answered with a failure.
fn refused(remote: &str, reply: &Reply) -> String {
    format!("{remote}: {}", escape_remote(reply.error.as_deref().unwrap_or("failed without saying why")))
}

/// The message for a trigger that got no answer; an unreachable guest is owed its files.
fn settle(failure: Undelivered, files: &[String], owed: &Owed) -> String {
    if !failure.unreachable {
        return failure.error;
    }
    {
        let mut owed_files = owed.files();
        owed_files.extend(files.iter().cloned());
        owed_files.sort();
        owed_files.dedup();
    }
    if owed.stopping.load(Ordering::SeqCst) {
        owed.unreachable_since_stop.store(true, Ordering::SeqCst);
        format!("{}; the watcher stopped before the guest was back", failure.error)
    } else {
        format!("{}; will send it when the guest is back", failure.error)
    }
}

/// One line per trigger and remote: delivered (and, with a ready check, whether the app came
/// back), or why not; the guest's log excerpt of a failed ready check follows with `-v`.
fn report(log: Log, settings: &Settings, outcome: &Outcome) {
    let rendered = crate::outcome::render(&crate::outcome::Input {
        command: crate::outcome::Command::Watch,
        remote: &outcome.remote,
        files: &outcome.files,
        result: outcome.result.as_ref().map(|(reply, rtt)| (reply, *rtt)).map_err(String::as_str),
        target: settings.target.as_deref(),
        root: settings.root.as_deref(),
    });
    // For tools that follow the `triggered` events: how many of them this answers, in order.
    let mut fields = rendered.fields;
    fields["triggers"] = json!(outcome.triggers);
    match rendered.kind.failed() {
        true => log.warn(rendered.event, &rendered.line, fields),
        false => log.event(rendered.event, &rendered.line, fields),
    }
    for excerpt in &rendered.excerpt {
        log.debug(excerpt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake;

    fn new_link(remote: &str) -> Link {
        Link {
            remote: remote.to_string(),
            settings: Settings {
                credentials: Credentials { token: None, file: None },
                target: None,
                timeout: Duration::from_millis(2000),
                log: Log { quiet: true, ..Log::default() },
                root: None,
            },
            connection: None,
            waits: false,
            waiters: Vec::new(),
            down: None,
            owed: Arc::new(Owed {
                files: Mutex::new(Vec::new()),
                stopping: Arc::new(AtomicBool::new(false)),
                unreachable_since_stop: AtomicBool::new(false),
            }),
        }
    }

    fn trigger() -> Trigger {
        Trigger { files: vec!["app/views.py".into()], reason: "save" }
    }

    #[test]
    fn an_over_long_reply_to_a_trigger_is_never_sent_again() {
        // Pings are answered; a reload gets a 5,000-byte line, as from a receiver without bounds.
        let (addr, reloads) = fake::receiver(fake::OPEN, |line| match line.contains("\"reload\"") {
            true => format!("{{\"ok\":false,\"code\":\"action_failed\",\"error\":\"{}\"}}\n", "x".repeat(5000)),
            false => format!("{}\n", fake::PONG),
        });
        let mut link = new_link(&addr);
        assert!(link.connect().is_ok(), "the kept connection is up, so a failure on it would be retried");
        let request = reload(&link.settings, &trigger(), false);
        let failure = link.attempt(&request).err().unwrap();
        assert_eq!(reloads.load(Ordering::SeqCst), 1, "sent once: {}", failure.error);
        assert!(!failure.unreachable, "not owed: {}", failure.error);
        let error = &failure.error;
        assert!(error.contains("longer than 4096 bytes") && error.contains("not sent again"), "{error}");
        assert!(link.connection.is_none());
        let said = settle(failure, &trigger().files, &link.owed);
        assert!(said.starts_with(&format!("{addr}: the receiver sent a line longer than 4096 bytes")), "{said}");
        assert!(link.owed.files().is_empty(), "nothing owed");
    }

    #[test]
    fn a_not_ready_answer_is_a_delivered_trigger_and_other_codes_are_failures() {
        let (addr, reloads) = fake::receiver(fake::OPEN, |line| {
            match line.contains("\"reload\"") {
            true => "{\"ok\":false,\"code\":\"not_ready\",\"target\":\"app\",\"error\":\"app did not come back\\n\\u001b[31mImportError\"}\n".into(),
            false => format!("{}\n", fake::PONG),
        }
        });
        let mut link = new_link(&addr);
        let request = reload(&link.settings, &trigger(), false);
        let (reply, _) = link.attempt(&request).ok().unwrap();
        assert_eq!(
            reply.not_ready().and_then(|r| r.error).as_deref(),
            Some("app did not come back\n\u{1b}[31mImportError")
        );
        assert_eq!(reloads.load(Ordering::SeqCst), 1);

        let (addr, _) = fake::receiver(fake::OPEN, |line| match line.contains("\"reload\"") {
            true => "{\"ok\":false,\"code\":\"unauthorized\",\"error\":\"\\u001b]0;owned\\u0007\"}\n".into(),
            false => format!("{}\n", fake::PONG),
        });
        let mut link = new_link(&addr);
        let failure = link.attempt(&request).err().unwrap();
        assert!(!failure.unreachable && link.connection.is_none());
        assert_eq!(failure.error, format!("{addr}: \\x1b]0;owned\\x07"));
    }
}
