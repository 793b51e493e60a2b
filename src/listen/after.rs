//! What follows an action until the server can take the next one (DESIGN.md, "Coalescing": a
//! trailing action must be one the server honours). Side by side, on threads this function
//! owns and joins: the poke (waking uWSGI's master), then after `r` the wait for the new master
//! to read its FIFO; after `c` the wait for uWSGI's "chain reloading complete"; and the ready
//! check, if the target has one.

use super::actions::{self, Ran};
use super::ready::{LogFollower, Outcome};
#[cfg(unix)]
use super::uwsgi;
#[cfg(unix)]
use super::worker::READER_BACK_LIMIT;
use crate::config::{ActionSpec, TargetSpec};
use crate::output::Log;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Who the job is for, and how to stop it.
pub struct Follow<'a> {
    /// The target's name.
    pub name: &'a str,
    /// What it does.
    pub spec: &'a TargetSpec,
    /// Where events go.
    pub log: Log,
    /// Set when the receiver stops.
    pub cancel: &'a AtomicBool,
}

/// For a chain reload (`c` to uWSGI's FIFO): the master's log, followed from now, where it says
/// when the chain is over; `None` (with a warning) when the master logs to no file.
#[cfg(not(unix))]
pub fn chain_log(_action: &ActionSpec, _name: &str, _log: Log) -> Option<LogFollower> {
    None
}

/// For a chain reload (`c` to uWSGI's FIFO): the master's log, followed from now, where it says
/// when the chain is over; `None` (with a warning) when the master logs to no file.
#[cfg(unix)]
pub fn chain_log(action: &ActionSpec, name: &str, log: Log) -> Option<LogFollower> {
    let ActionSpec::Fifo { path, command, .. } = action else { return None };
    if !command.contains('c') {
        return None;
    }
    let file = uwsgi::master_of(path).and_then(uwsgi::log_of);
    if file.is_none() {
        let line = format!(
            "{name}: cannot tell when uWSGI's chain reload ends (its master logs to no file: set `logto`); \
             a save during it may be ignored by uWSGI"
        );
        log.warn("warning", &line, json!({"target": name, "warning": "chain reload end unknown"}));
    }
    file.map(|file| LogFollower::start(&file))
}

/// Runs what follows a successful action; returns the ready check's outcome, if there is one.
pub fn follow(
    job: &Follow,
    ran: Ran,
    ready: Option<LogFollower>,
    chain: Option<LogFollower>,
    start: Instant,
) -> Option<Outcome> {
    let Follow { name, spec, log, cancel } = *job;
    #[cfg(not(unix))]
    let _ = chain;
    let checked = &AtomicBool::new(false);
    let chained = &AtomicBool::new(false);
    std::thread::scope(|scope| {
        #[cfg(unix)]
        let _chain = chain.map(|mut follower| {
            spawn(scope, "chain", job, move || {
                let (waited, done) = uwsgi::wait_for_chain(&mut follower, cancel, super::worker::CHAIN_LIMIT);
                chained.store(true, Ordering::SeqCst);
                let ms = waited.as_millis() as u64;
                let fields = json!({"target": name, "ms": ms, "done": done});
                match done {
                    true => log.event("chain_done", &format!("{name}: chain reload complete after {ms} ms"), fields),
                    false => {
                        log.warn("chain_done", &format!("{name}: no end of the chain reload after {ms} ms"), fields)
                    }
                }
            })
        });
        let _poke = ran.poke.map(|poke| {
            spawn(scope, "poke", job, move || {
                let stop = || {
                    checked.load(Ordering::SeqCst) || chained.load(Ordering::SeqCst) || cancel.load(Ordering::SeqCst)
                };
                let path = poke.path().to_path_buf();
                let (elapsed, why) = poke.run(&stop);
                let why = match why {
                    "stopped" if checked.load(Ordering::SeqCst) => "ready check ended",
                    "stopped" if chained.load(Ordering::SeqCst) => "chain reload over",
                    why => why,
                };
                actions::log_poke_end(log, name, elapsed, why);
                if why == "reader gone" {
                    reader_back(name, log, &path, cancel);
                }
            })
        });
        let outcome = match (&spec.ready, ready) {
            (Some(check), Some(follower)) => Some(told(name, log, check.wait(follower, start, cancel))),
            _ => None,
        };
        // Without a check the poke runs its own course (reader gone, chain over, or its limit).
        if outcome.is_some() {
            checked.store(true, Ordering::SeqCst);
        }
        outcome
    })
}

/// Starts `work` on a thread of `scope`; a thread that cannot start is said, and skipped.
fn spawn<'scope, F: FnOnce() + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    what: &str,
    job: &Follow,
    work: F,
) -> Option<std::thread::ScopedJoinHandle<'scope, ()>> {
    let spawned = std::thread::Builder::new().name(what.into()).spawn_scoped(scope, work);
    if let Err(err) = &spawned {
        let message = format!("{}: cannot start the {what} thread ({err}); the reload goes on without it", job.name);
        job.log.warn("error", &message, json!({"target": job.name, "error": message}));
    }
    spawned.ok()
}

/// After `r`: the reload is over once the new master reads its FIFO; a command written before
/// that would find no reader.
#[cfg(unix)]
fn reader_back(name: &str, log: Log, path: &std::path::Path, cancel: &AtomicBool) {
    let (waited, back) = actions::wait_for_reader(path, cancel, READER_BACK_LIMIT);
    let ms = waited.as_millis() as u64;
    let fields = json!({"target": name, "ms": ms, "back": back});
    match back {
        true => log.event("fifo_back", &format!("{name}: uWSGI reads its FIFO again after {ms} ms"), fields),
        false => {
            let line = format!("{name}: no process reads {} {ms} ms after the reload", path.display());
            log.warn("fifo_back", &line, fields)
        }
    }
}

/// Off Unix there is no FIFO to come back to (and no poke that could end with its reader gone).
#[cfg(not(unix))]
fn reader_back(_name: &str, _log: Log, _path: &std::path::Path, _cancel: &AtomicBool) {}

/// Logs how a ready check ended, and returns it.
fn told(name: &str, log: Log, outcome: Outcome) -> Outcome {
    let fields = json!({"target": name, "ok": outcome.ok, "ms": outcome.ms, "error": outcome.error});
    if outcome.ok {
        log.event("ready", &format!("{name} ready in {} ms", outcome.ms), fields);
    } else {
        let error = outcome.error.as_deref().unwrap_or("");
        log.warn("not_ready", &format!("{name} NOT ready after {} ms: {error}", outcome.ms), fields);
    }
    outcome
}
