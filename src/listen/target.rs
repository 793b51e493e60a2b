//! A target as the receiver runs it: its action, its coalescer, and the trailing action that a
//! settle window owes.

use super::actions;
use super::coalesce::{Coalescer, Decision};
use crate::config::ActionSpec;
use crate::output::{Log, millis};
use anyhow::Result;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One named target.
pub struct Target {
    /// Its name, as requests give it.
    pub name: String,
    /// What it does.
    pub action: ActionSpec,
    coalescer: Mutex<Coalescer>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the receiver: the state inside stays usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Target {
    /// A target with its own coalescer.
    pub fn new(name: String, action: ActionSpec, coalescer: Coalescer) -> Target {
        Target { name, action, coalescer: Mutex::new(coalescer) }
    }

    /// Handles one trigger: acts at once (leading edge), or merges it into the action under way
    /// or the open window, arranging the trailing action. `fields` and `describe` tell the
    /// request in the log. Returns whether it was merged, and the action's error if it failed.
    pub fn trigger(self: &Arc<Self>, log: Log, mut fields: Value, describe: &str) -> (bool, Result<()>) {
        let decision = lock(&self.coalescer).on_trigger(Instant::now());
        match decision {
            Decision::Act => (false, self.act(log, fields, describe)),
            Decision::Merged { schedule } => {
                if let Some(at) = schedule {
                    self.schedule_trailing(log, at);
                }
                fields["merged"] = true.into();
                log.event("merged", &format!("{} merged ({describe})", self.name), fields);
                (true, Ok(()))
            }
        }
    }

    /// Runs the action, logs it, opens the settle window, and schedules the trailing action owed.
    fn act(self: &Arc<Self>, log: Log, mut fields: Value, describe: &str) -> Result<()> {
        let start = Instant::now();
        let result = actions::run(&self.action, &self.name, log);
        let took = start.elapsed();
        fields["merged"] = false.into();
        fields["ms"] = (took.as_secs_f64() * 1000.0).into();
        match &result {
            Ok(()) => {
                let line = format!("{} {} ({describe}) in {}", self.name, self.action, millis(took));
                log.event("reload", &line, fields);
            }
            Err(err) => {
                let message = format!("{err:#}");
                fields["error"] = message.clone().into();
                log.warn("reload_failed", &format!("{} failed ({describe}): {message}", self.name), fields);
            }
        }
        if let Some(at) = lock(&self.coalescer).on_done(Instant::now()) {
            self.schedule_trailing(log, at);
        }
        result
    }

    /// Runs the trailing action of a settle window at `at`, on a thread of its own.
    fn schedule_trailing(self: &Arc<Self>, log: Log, at: Instant) {
        let target = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("trailing".into()).spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if lock(&target.coalescer).on_trailing_due() {
                // Its error has no requester to go back to: act() logs it.
                let fields = json!({"target": target.name, "trailing": true});
                let _ = target.act(log, fields, "trailing, for merged triggers");
            }
        });
        if spawned.is_err() {
            log.warn("error", "cannot start the trailing-action thread", json!({"error": "thread spawn failed"}));
        }
    }
}
