//! A target as the receiver runs it: its action, its coalescer, the trailing action that a
//! settle window owes, and the ready check whose result waiting requests get.

use super::actions;
use super::coalesce::{Coalescer, Decision};
use super::ready::Outcome;
use crate::config::{ActionSpec, TargetSpec};
use crate::output::{Log, millis};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One named target.
pub struct Target {
    /// Its name, as requests give it.
    pub name: String,
    /// What it does, and how to know the app is back.
    pub spec: TargetSpec,
    /// The coalescer, and the number of actions started so far (their generations).
    state: Mutex<(Coalescer, u64)>,
    /// The results of the last actions, by generation: the action's error, or the check's outcome.
    results: Mutex<VecDeque<(u64, ActionResult)>>,
    finished: Condvar,
}

/// What an action came to: its own error, or (when a check is configured) the check's outcome.
pub type ActionResult = Result<Option<Outcome>, String>;

/// What one trigger came to.
pub struct Answer {
    /// Folded into an action under way or an open window.
    pub merged: bool,
    /// The action's result: at once for the leading edge, or (when waiting) the one that covered this trigger.
    pub result: ActionResult,
}

/// Nothing cancels actions and checks yet (the executor rewrite brings a shutdown flag).
static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the receiver: the state inside stays usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Target {
    /// A target with its own coalescer.
    pub fn new(name: String, spec: TargetSpec, coalescer: Coalescer) -> Target {
        Target {
            name,
            spec,
            state: Mutex::new((coalescer, 0)),
            results: Mutex::new(VecDeque::new()),
            finished: Condvar::new(),
        }
    }

    /// With a ready check, the longest a `wait` request can take: the action under way and its
    /// check, the settle window, then the trailing action that covers the request and its
    /// check, and a margin.
    pub fn wait_bound(&self) -> Option<Duration> {
        let check = self.spec.ready.as_ref()?;
        let action = match &self.spec.action {
            ActionSpec::Exec { timeout, .. } => *timeout,
            _ => Duration::ZERO,
        };
        Some((action + check.timeout) * 2 + lock(&self.state).0.settle() + Duration::from_secs(5))
    }

    /// Whether no action runs or is owed.
    pub fn idle(&self) -> bool {
        lock(&self.state).0.idle()
    }

    /// Handles one trigger: acts at once (leading edge), or merges it into the action under way
    /// or the open window, arranging the trailing action. With `wait`, returns only once the
    /// action that covers this trigger has been checked. `fields` and `describe` tell the
    /// request in the log.
    pub fn trigger(self: &Arc<Self>, log: Log, mut fields: Value, describe: &str, wait: bool) -> Answer {
        let (decision, generation) = {
            let mut state = lock(&self.state);
            let decision = state.0.on_trigger(Instant::now());
            if decision == Decision::Act {
                state.1 += 1;
            }
            // A merged trigger is covered by the next action to start: the trailing one.
            (decision, state.1 + u64::from(decision != Decision::Act))
        };
        let merged = decision != Decision::Act;
        let immediate = match decision {
            Decision::Act => self.act(log, fields, describe, generation),
            Decision::Merged { schedule } => {
                if let Some(at) = schedule {
                    self.schedule_trailing(log, at);
                }
                fields["merged"] = true.into();
                log.event("merged", &format!("{} merged ({describe})", self.name), fields);
                Ok(None)
            }
        };
        let result = match (self.wait_bound(), wait, immediate) {
            (Some(bound), true, Ok(_)) => self.wait_for(generation, bound),
            (_, _, immediate) => immediate,
        };
        Answer { merged, result }
    }

    /// Runs the action and logs it; then, after its ready check if it has one, opens the settle
    /// window and schedules the trailing action owed. Returns the action's own error.
    fn act(self: &Arc<Self>, log: Log, mut fields: Value, describe: &str, generation: u64) -> ActionResult {
        let follower = self.spec.ready.as_ref().map(|check| check.follow());
        let start = Instant::now();
        // Until the executor rewrite: nothing cancels, and the poke runs detached as it did before.
        let result = actions::run(&self.spec.action, &self.name, log, &NEVER).and_then(|ran| {
            let Some(poke) = ran.poke else { return Ok(()) };
            let name = self.name.clone();
            let spawned = std::thread::Builder::new().name("poke".into()).spawn(move || {
                let (elapsed, why) = poke.run(&|| false);
                actions::log_poke_end(log, &name, elapsed, why);
            });
            spawned.map(drop).map_err(|_| anyhow::anyhow!("cannot start the FIFO poke thread"))
        });
        let result = result.map_err(|err| format!("{err:#}"));
        let took = start.elapsed();
        fields["merged"] = false.into();
        fields["ms"] = (took.as_secs_f64() * 1000.0).into();
        match &result {
            Ok(()) => {
                let line = format!("{} {} ({describe}) in {}", self.name, self.spec.action, millis(took));
                log.event("reload", &line, fields);
            }
            Err(message) => {
                fields["error"] = message.clone().into();
                log.warn("reload_failed", &format!("{} failed ({describe}): {message}", self.name), fields);
            }
        }
        let answer = result.clone().map(|()| None);
        match (result, follower) {
            // With a check, the target stays busy until the app is back: a trailing action's
            // check must not take this reload's "ready" line for its own.
            (Ok(()), Some(follower)) => self.check(log, follower, start, generation),
            (result, _) => {
                self.finish(log);
                self.publish(generation, result.map(|()| None));
            }
        }
        answer
    }

    /// The action (and its check) is over: the settle window opens, and the trailing action owed is scheduled.
    fn finish(self: &Arc<Self>, log: Log) {
        if let Some(at) = lock(&self.state).0.on_done(Instant::now()) {
            self.schedule_trailing(log, at);
        }
    }

    /// Runs the ready check on a thread of its own, so the action's requester is not held up.
    fn check(self: &Arc<Self>, log: Log, follower: super::ready::LogFollower, start: Instant, generation: u64) {
        let target = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("ready".into()).spawn(move || {
            let Some(check) = &target.spec.ready else { return };
            let outcome = check.wait(follower, start, &NEVER);
            let fields = json!({"target": target.name, "ok": outcome.ok, "ms": outcome.ms, "error": outcome.error});
            if outcome.ok {
                log.event("ready", &format!("{} ready in {} ms", target.name, outcome.ms), fields);
            } else {
                let error = outcome.error.as_deref().unwrap_or("");
                log.warn("not_ready", &format!("{} NOT ready after {} ms: {error}", target.name, outcome.ms), fields);
            }
            target.finish(log);
            target.publish(generation, Ok(Some(outcome)));
        });
        if spawned.is_err() {
            self.finish(log);
            self.publish(generation, Err("cannot start the ready check".into()));
        }
    }

    fn publish(&self, generation: u64, result: ActionResult) {
        let mut results = lock(&self.results);
        results.push_back((generation, result));
        // Waiters look for recent generations only.
        while results.len() > 32 {
            results.pop_front();
        }
        self.finished.notify_all();
    }

    /// Waits (bounded) for the result of action `generation`.
    fn wait_for(&self, generation: u64, timeout: Duration) -> ActionResult {
        let deadline = Instant::now() + timeout;
        let mut results = lock(&self.results);
        loop {
            if let Some((_, result)) = results.iter().find(|(g, _)| *g == generation) {
                return result.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no result from {}'s reload within {} ms", self.name, timeout.as_millis()));
            }
            results = self.finished.wait_timeout(results, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Runs the trailing action of a settle window at `at`, on a thread of its own.
    fn schedule_trailing(self: &Arc<Self>, log: Log, at: Instant) {
        let target = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("trailing".into()).spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let generation = {
                let mut state = lock(&target.state);
                if !state.0.on_trailing_due(at) {
                    return;
                }
                state.1 += 1;
                state.1
            };
            // Its error has no requester to go back to: act() logs it, waiters get it.
            let fields = json!({"target": target.name, "trailing": true});
            let _ = target.act(log, fields, "trailing, for merged triggers", generation);
        });
        if spawned.is_err() {
            log.warn("error", "cannot start the trailing-action thread", json!({"error": "thread spawn failed"}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::ready::ReadyCheck;

    #[test]
    fn a_waiter_may_wait_for_two_actions_their_checks_and_the_window_between() {
        let check =
            |ms| ReadyCheck::new("/app.log".into(), Some("uwsgi"), None, None, None, Some(Duration::from_millis(ms)));
        let exec = ActionSpec::Exec { argv: vec!["true".into()], timeout: Duration::from_secs(2) };
        let target = |action: ActionSpec, ready| {
            let spec = TargetSpec { action, ready };
            Target::new("app".into(), spec, Coalescer::new(Duration::from_millis(200)))
        };
        let slow = target(exec, Some(check(3000).unwrap()));
        assert_eq!(slow.wait_bound(), Some(Duration::from_millis(2 * (2000 + 3000) + 200 + 5000)));
        let touch = target(ActionSpec::Touch { path: "/x".into() }, Some(check(40_000).unwrap()));
        assert_eq!(touch.wait_bound(), Some(Duration::from_millis(2 * 40_000 + 200 + 5000)));
        assert_eq!(target(ActionSpec::Touch { path: "/x".into() }, None).wait_bound(), None);
    }
}
