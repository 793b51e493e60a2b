//! The thread that runs a target's actions for its executor: the action, then its poke and its
//! ready check, one job at a time. A panic anywhere in a job is caught here and reported as an
//! `internal` failure, so the executor always hears how each job ended.

use super::executor::Failure;
#[cfg(unix)]
use super::refresh;
use super::{actions, after};
use crate::config::{ActionSpec, TargetSpec};
use crate::output::{Log, millis};
use crate::protocol::{ErrorCode, Ready};
use serde_json::{Value, json};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a poke lasts (the actions' own limit).
pub const POKE_LIMIT: Duration = Duration::from_secs(3);
/// The longest a chain reload is waited for (each worker imports the app in turn).
pub const CHAIN_LIMIT: Duration = Duration::from_secs(60);
/// How long a reload may take to bring uWSGI's new master back to its FIFO (a real Django app
/// imports for seconds before it reads it).
pub const READER_BACK_LIMIT: Duration = Duration::from_secs(30);
/// How long a stopping receiver waits for a worker to end before leaving it to the process exit.
const JOIN_LIMIT: Duration = Duration::from_secs(2);

/// One action to run.
pub struct Job {
    /// The executor's number for this action.
    pub generation: u64,
    /// Log fields of the request that caused it.
    pub fields: Value,
    /// The request in a few words, for the log line.
    pub describe: String,
    /// The files to refresh under the target's `root` first.
    pub files: Vec<String>,
}

/// What the worker tells its executor.
pub enum JobEnd {
    /// The action itself ended (a check may follow).
    Action(u64, Result<(), Failure>),
    /// The whole job ended: the target is free.
    Job(u64, Option<Ready>),
}

/// What runs an action: [`actions::run`], or a stand-in in the executor's unit tests.
pub type Act = fn(&ActionSpec, &str, Log, &AtomicBool) -> anyhow::Result<actions::Ran>;

/// Makes workers for one target (a fresh one replaces a worker given up on).
pub struct Spawner {
    /// Runs the action.
    pub act: Act,
    /// The target's name.
    pub name: String,
    /// What it does.
    pub spec: TargetSpec,
    /// Watched extensions: only such files are refreshed under `root`.
    pub extensions: Vec<String>,
    /// Where events go.
    pub log: Log,
    /// Set when the receiver stops: a running exec, check or poke ends early.
    pub cancel: Arc<AtomicBool>,
}

/// A running worker.
pub struct Handle {
    jobs: Option<Sender<Job>>,
    thread: JoinHandle<()>,
}

impl Spawner {
    /// Starts a worker that reports to `report`.
    pub fn spawn(&self, report: impl Fn(JobEnd) + Send + 'static) -> std::io::Result<Handle> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (name, spec, log, cancel) = (self.name.clone(), self.spec.clone(), self.log, Arc::clone(&self.cancel));
        let act = self.act;
        let extensions = self.extensions.clone();
        let thread = std::thread::Builder::new().name("worker".into()).spawn(move || {
            for job in rx {
                let generation = job.generation;
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    run(
                        act,
                        &Ctx { name: &name, spec: &spec, extensions: &extensions, log, cancel: &cancel },
                        job,
                        &report,
                    )
                }));
                if let Err(panic) = ran {
                    let message = format!("{name}: the action panicked: {}", panic_text(&*panic));
                    log.warn("error", &message, json!({"target": name, "error": message}));
                    report(JobEnd::Action(generation, Err(Failure::new(ErrorCode::Internal, message))));
                    report(JobEnd::Job(generation, None));
                }
            }
        })?;
        Ok(Handle { jobs: Some(jobs), thread })
    }
}

impl Handle {
    /// Hands a job over; `false` when the worker is gone.
    pub fn send(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Ends the worker after its current job and joins it, for at most [`JOIN_LIMIT`]: one
    /// stuck in a system call that never returns is left to the process exit, not waited on.
    pub fn finish(mut self) {
        self.jobs = None;
        let deadline = Instant::now() + JOIN_LIMIT;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "(no message)".into(),
    }
}

/// What a job runs with.
struct Ctx<'a> {
    name: &'a str,
    spec: &'a TargetSpec,
    extensions: &'a [String],
    log: Log,
    cancel: &'a AtomicBool,
}

/// Runs one job: refreshes the named files, runs the action, then what follows it until the
/// server can take the next one ([`after`]); reports both ends.
fn run(act: Act, ctx: &Ctx, job: Job, report: &dyn Fn(JobEnd)) {
    let Ctx { name, spec, extensions, log, cancel } = *ctx;
    let Job { generation, mut fields, describe, files } = job;
    #[cfg(not(unix))]
    let _ = (&files, extensions);
    #[cfg(unix)]
    if let Some(root) = &spec.root {
        let done = refresh::refresh(root, &files, extensions);
        let line = format!(
            "{name}: refreshed {} under {}, removed {} stale .pyc, skipped {}",
            crate::output::count(done.opened, "file", "files"),
            root.display(),
            done.removed,
            done.skipped
        );
        log.debug(&line);
        log.record(
            "refreshed",
            json!({"target": name, "opened": done.opened, "removed": done.removed, "skipped": done.skipped}),
        );
    }
    // Started before the action, so neither misses a line the reload writes at once.
    let ready = spec.ready.as_ref().map(|check| check.follow());
    let chain = after::chain_log(&spec.action, name, log);
    let start = Instant::now();
    let result = act(&spec.action, name, log, cancel).map_err(|err| format!("{err:#}"));
    let took = start.elapsed();
    fields["merged"] = false.into();
    fields["ms"] = (took.as_secs_f64() * 1000.0).into();
    match &result {
        Ok(_) => log.event("reload", &format!("{name} {} ({describe}) in {}", spec.action, millis(took)), fields),
        Err(message) => {
            fields["error"] = message.clone().into();
            log.warn("reload_failed", &format!("{name} failed ({describe}): {message}"), fields);
        }
    }
    let (ran, failure) = match result {
        Ok(ran) => (Some(ran), None),
        Err(message) => (None, Some(Failure::new(ErrorCode::ActionFailed, message))),
    };
    report(JobEnd::Action(generation, failure.map_or(Ok(()), Err)));
    let Some(ran) = ran else {
        report(JobEnd::Job(generation, None));
        return;
    };
    let outcome = after::follow(&after::Follow { name, spec, log, cancel }, ran, ready, chain, start);
    report(JobEnd::Job(generation, outcome));
}
