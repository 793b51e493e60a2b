//! One executor per target (DESIGN.md, "Coalescing (guest)"): a long-lived thread that alone owns
//! the target's coalescer and the requests waiting on it, and one worker thread it owns that runs
//! the action, the poke and the ready check. Connections hand triggers over a channel and get
//! their answer on a reply channel; nothing else touches the target's state, so nothing can leave
//! it busy: a panic in an action is caught by the worker, and a worker that overruns its bound is
//! given up on by the executor, which answers everyone and goes on with a fresh worker.

use super::coalesce::{Coalescer, Decision};
use super::worker::{self, Job, JobEnd};

use crate::config::{ActionSpec, TargetSpec};
use crate::output::Log;
use crate::protocol::{ErrorCode, Ready};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a trigger was not carried out, with the wire's code.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The machine word for the client.
    pub code: ErrorCode,
    /// For the person who saved.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

/// What one trigger came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Folded into an action under way or an open window (a promise: that action will run, or
    /// an error event says why not).
    pub merged: bool,
    /// The action's result; with a ready check and `wait`, the check's outcome.
    pub result: Result<Option<Ready>, Failure>,
}

/// A trigger, as a connection hands it over.
pub struct Trigger {
    /// Answer only once the ready check of the action covering this trigger has ended.
    pub wait: bool,
    /// Log fields of the request (peer, reason, files).
    pub fields: Value,
    /// The request in a few words, for the log line.
    pub describe: String,
    /// The files it names, relative to the work tree: refreshed under the target's `root`.
    pub files: Vec<String>,
    /// Where the answer goes. Bounded with room for one: the executor never blocks on it.
    pub reply: SyncSender<Answer>,
}

enum Message {
    Trigger(Trigger),
    /// From the worker: the action itself has ended (its check may still run).
    ActionEnded {
        generation: u64,
        result: Result<(), Failure>,
    },
    /// From the worker: the action, its poke and its check are over; the target is free.
    JobEnded {
        generation: u64,
        outcome: Option<Ready>,
    },
    /// Stop: run what is owed until `deadline`, then end.
    Stop {
        deadline: Instant,
    },
}

/// Where a target's triggers go; connections share it.
pub struct Executor {
    tx: Sender<Message>,
    wait_bound: Option<Duration>,
    action_bound: Duration,
}

/// The executor's thread, kept by the receiver alone to join it at stop.
pub struct Joiner(JoinHandle<()>);

impl Executor {
    /// Starts the executor of target `name`, and its worker.
    pub fn start(
        name: String,
        spec: TargetSpec,
        settle: Duration,
        extensions: Vec<String>,
        log: Log,
    ) -> std::io::Result<(Executor, Joiner)> {
        Executor::start_with(name, spec, settle, extensions, log, super::actions::run, OVERRUN)
    }

    /// [`Executor::start`] with the action runner and the overrun margin given (for tests).
    fn start_with(
        name: String,
        spec: TargetSpec,
        settle: Duration,
        extensions: Vec<String>,
        log: Log,
        act: worker::Act,
        overrun: Duration,
    ) -> std::io::Result<(Executor, Joiner)> {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let wait_bound = wait_bound(&spec, settle);
        let spec_action = spec.action.clone();
        let spawner = worker::Spawner {
            act,
            name: name.clone(),
            spec: spec.clone(),
            extensions,
            log,
            cancel: Arc::clone(&cancel),
        };
        let worker = spawner.spawn(report_to(tx.clone()))?;
        let state = State {
            name,
            spec,
            log,
            coalescer: Coalescer::new(settle),
            generation: 0,
            running: None,
            trailing: None,
            waiters: BTreeMap::new(),
            owed_files: Vec::new(),
            worker,
            spawner,
            tx: tx.clone(),
            abandoned: Vec::new(),
            stopping: None,
            cancel,
            overrun,
        };
        let thread = std::thread::Builder::new().name("executor".into()).spawn(move || state.run(rx))?;
        Ok((Executor { tx, wait_bound, action_bound: action_bound(&spec_action) }, Joiner(thread)))
    }

    /// Hands a trigger over; `false` when the executor is gone (the receiver is stopping).
    pub fn submit(&self, trigger: Trigger) -> bool {
        self.tx.send(Message::Trigger(trigger)).is_ok()
    }

    /// The longest a `wait` request may take, when the target has a ready check.
    pub fn wait_bound(&self) -> Option<Duration> {
        self.wait_bound
    }

    /// The longest the action itself may take (what a request without `wait` waits for).
    pub fn action_bound(&self) -> Duration {
        self.action_bound
    }

    /// Asks the executor to stop: a running exec, check or poke is cut short, an owed trailing
    /// action runs now, and the executor ends once the target is idle or `deadline` passes.
    pub fn stop(&self, deadline: Instant) {
        let _ = self.tx.send(Message::Stop { deadline });
    }
}

impl Joiner {
    /// Waits for the executor (and its worker) to end, after [`Executor::stop`].
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// How a worker's reports reach its executor.
fn report_to(tx: Sender<Message>) -> impl Fn(JobEnd) + Send + 'static {
    move |end| {
        let message = match end {
            JobEnd::Action(generation, result) => Message::ActionEnded { generation, result },
            JobEnd::Job(generation, outcome) => Message::JobEnded { generation, outcome },
        };
        // The executor gone means the receiver is stopping: nobody is left to tell.
        let _ = tx.send(message);
    }
}

/// With a ready check, the longest a `wait` request can take: the action under way and its
/// check, the settle window, then the trailing action that covers the request and its check,
/// and a margin.
pub fn wait_bound(spec: &TargetSpec, settle: Duration) -> Option<Duration> {
    let check = spec.ready.as_ref()?;
    Some((action_bound(&spec.action) + check.timeout) * 2 + settle + Duration::from_secs(5))
}

/// The longest an action itself can take, its poke included.
fn action_bound(action: &ActionSpec) -> Duration {
    match action {
        ActionSpec::Exec { timeout, .. } => *timeout,
        ActionSpec::Fifo { .. } => worker::POKE_LIMIT + worker::READER_BACK_LIMIT,
        _ => Duration::ZERO,
    }
}

/// Most file names kept for a trailing action to refresh (the rest of a storm is not worth it).
const MOST_OWED_FILES: usize = 1000;

/// Past its bound by this much, a job is given up on.
const OVERRUN: Duration = Duration::from_secs(5);

/// A request waiting for the action of one generation.
struct Waiter {
    reply: SyncSender<Answer>,
    merged: bool,
    /// Answered only at the end of the check (else at the end of the action).
    for_check: bool,
}

/// The job under way.
struct Running {
    generation: u64,
    /// Past this, the worker is given up on.
    deadline: Instant,
}

/// The executor's own state: owned by its thread alone.
struct State {
    name: String,
    spec: TargetSpec,
    log: Log,
    coalescer: Coalescer,
    generation: u64,
    running: Option<Running>,
    /// The instant a trailing action is due.
    trailing: Option<Instant>,
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// The files of merged triggers, for the trailing action to refresh.
    owed_files: Vec<String>,
    worker: worker::Handle,
    spawner: worker::Spawner,
    tx: Sender<Message>,
    /// Workers given up on: joined at the end if they have finished by then.
    abandoned: Vec<worker::Handle>,
    stopping: Option<Instant>,
    /// Shared with the workers: set at stop.
    cancel: Arc<AtomicBool>,
    /// Past its bound by this much, a job is given up on.
    overrun: Duration,
}

impl State {
    fn run(mut self, rx: Receiver<Message>) {
        // Bounded: the loop ends at stop (after its deadline at the latest) or when every sender is gone.
        loop {
            let now = Instant::now();
            let wake =
                [self.trailing, self.running.as_ref().map(|r| r.deadline), self.stopping].into_iter().flatten().min();
            let message = match wake {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match message {
                Ok(Message::Trigger(trigger)) => self.on_trigger(trigger),
                Ok(Message::ActionEnded { generation, result }) => self.on_action_ended(generation, result),
                Ok(Message::JobEnded { generation, outcome }) => self.on_job_ended(generation, outcome),
                Ok(Message::Stop { deadline }) => {
                    self.stopping = Some(deadline);
                    // What runs now is cut short; what is owed still runs, until the deadline.
                    if self.running.is_some() {
                        self.cancel.store(true, Ordering::SeqCst);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            match (self.stopping, self.trailing) {
                // At stop what is owed runs now: the window's end is not worth waiting for.
                (Some(_), Some(at)) => self.on_time(at.max(now)),
                _ => self.on_time(now),
            }
            if let Some(deadline) = self.stopping
                && ((self.coalescer.idle() && self.running.is_none()) || Instant::now() >= deadline)
            {
                self.cancel.store(true, Ordering::SeqCst);
                break;
            }
        }
        self.finish();
    }

    fn on_trigger(&mut self, trigger: Trigger) {
        let Trigger { wait, mut fields, describe, files, reply } = trigger;
        if self.stopping.is_some() {
            let _ = reply.try_send(Answer {
                merged: false,
                result: Err(Failure::new(ErrorCode::Busy, "the receiver is stopping; try again when it is back")),
            });
            return;
        }
        let checked = wait && self.spec.ready.is_some();
        match self.coalescer.on_trigger(Instant::now()) {
            Decision::Act => {
                self.generation += 1;
                let waiter = Waiter { reply, merged: false, for_check: checked };
                self.waiters.entry(self.generation).or_default().push(waiter);
                self.start(fields, &describe, files);
            }
            Decision::Merged { schedule } => {
                if let Some(at) = schedule {
                    self.trailing = Some(at);
                }
                if self.owed_files.len() < MOST_OWED_FILES {
                    self.owed_files.extend(files);
                }
                fields["merged"] = true.into();
                self.log.event("merged", &format!("{} merged ({describe})", self.name), fields);
                if checked {
                    // Covered by the next action to start: the trailing one.
                    let waiter = Waiter { reply, merged: true, for_check: true };
                    self.waiters.entry(self.generation + 1).or_default().push(waiter);
                } else {
                    let _ = reply.try_send(Answer { merged: true, result: Ok(None) });
                }
            }
        }
    }

    /// Hands the action of the current generation to the worker.
    fn start(&mut self, fields: Value, describe: &str, mut files: Vec<String>) {
        files.sort();
        files.dedup();
        let generation = self.generation;
        let check = self.spec.ready.as_ref().map_or(Duration::ZERO, |c| c.timeout);
        let deadline = Instant::now() + action_bound(&self.spec.action) + check + self.overrun;
        self.running = Some(Running { generation, deadline });
        // A new job is never cut short by an earlier stop request, only by the stop deadline.
        self.cancel.store(false, Ordering::SeqCst);
        let job = Job { generation, fields, describe: describe.to_string(), files };
        if !self.worker.send(job) {
            // The worker is gone (it cannot be: it catches panics); start a new one for the next job.
            self.fail_job(generation, Failure::new(ErrorCode::Internal, "the action's worker thread is gone"));
        }
    }

    fn on_action_ended(&mut self, generation: u64, result: Result<(), Failure>) {
        if self.running.as_ref().map(|r| r.generation) != Some(generation) {
            return;
        }
        if result.is_err() {
            // Nothing follows a failed action (no poke, no check): the job is over now, and the
            // next trigger must not be merged into it. The worker's own end is then ignored.
            self.running = None;
            self.answer(generation, |_| true, result.map(|()| None));
            if let Some(at) = self.coalescer.on_failed(Instant::now()) {
                self.trailing = Some(at);
            }
            return;
        }
        self.answer(generation, |waiter| !waiter.for_check, Ok(None));
    }

    fn on_job_ended(&mut self, generation: u64, outcome: Option<Ready>) {
        if self.running.take_if(|r| r.generation == generation).is_none() {
            return;
        }
        self.answer(generation, |_| true, Ok(outcome));
        if let Some(at) = self.coalescer.on_done(Instant::now()) {
            self.trailing = Some(at);
        }
    }

    /// Answers the waiters of `generation` that `which` picks.
    fn answer(&mut self, generation: u64, which: impl Fn(&Waiter) -> bool, result: Result<Option<Ready>, Failure>) {
        let Some(waiters) = self.waiters.remove(&generation) else { return };
        let (now, later): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|w| which(w));
        for waiter in now {
            let _ = waiter.reply.try_send(Answer { merged: waiter.merged, result: result.clone() });
        }
        if !later.is_empty() {
            self.waiters.insert(generation, later);
        }
    }

    /// The trailing action when it is due; a job past its bound is given up on.
    fn on_time(&mut self, now: Instant) {
        if let Some(at) = self.trailing
            && now >= at
        {
            self.trailing = None;
            if self.coalescer.on_trailing_due(at) {
                self.generation += 1;
                let fields = json!({"target": self.name, "trailing": true});
                let files = std::mem::take(&mut self.owed_files);
                self.start(fields, "trailing, for merged triggers", files);
            }
        }
        if let Some(running) = &self.running
            && now >= running.deadline
        {
            let generation = running.generation;
            let message = format!(
                "{}'s action did not end within its bound; it is abandoned and the target takes the next reload",
                self.name
            );
            self.log.warn("error", &message, json!({"target": self.name, "error": message}));
            self.fail_job(generation, Failure::new(ErrorCode::Internal, message));
        }
    }

    /// Ends the job of `generation` with `failure`: its waiters are answered, the target is freed,
    /// and the worker (which may be stuck) is replaced.
    fn fail_job(&mut self, generation: u64, failure: Failure) {
        self.running = None;
        self.answer(generation, |_| true, Err(failure));
        match self.spawner.spawn(report_to(self.tx.clone())) {
            Ok(fresh) => self.abandoned.push(std::mem::replace(&mut self.worker, fresh)),
            Err(err) => {
                let message = format!("{}: cannot start a new worker thread: {err}", self.name);
                self.log.warn("error", &message, json!({"target": self.name, "error": message}));
            }
        }
        if let Some(at) = self.coalescer.on_failed(Instant::now()) {
            self.trailing = Some(at);
        }
    }

    /// Answers whoever still waits, and joins the workers that have ended.
    fn finish(mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters.into_values().flatten() {
            let failure = Failure::new(ErrorCode::Internal, "the receiver stopped before this reload finished");
            let _ = waiter.reply.try_send(Answer { merged: waiter.merged, result: Err(failure) });
        }
        if !self.coalescer.idle() {
            let message = format!("{}: stopped with a reload still owed", self.name);
            self.log.warn("error", &message, json!({"target": self.name, "error": message}));
        }
        self.worker.finish();
        for worker in self.abandoned {
            worker.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The executor with stand-in actions: real threads and channels, actions that count, panic
    //! or hang. Bounded waits only; nothing here asserts a duration.

    use super::*;
    use crate::listen::actions::Ran;
    use std::sync::atomic::AtomicUsize;

    fn spec() -> TargetSpec {
        TargetSpec { action: ActionSpec::Touch { path: "/nonexistent/x".into() }, ready: None, root: None }
    }

    fn quiet() -> Log {
        Log { quiet: true, ..Log::default() }
    }

    fn trigger(executor: &Executor) -> mpsc::Receiver<Answer> {
        let (reply, answer) = mpsc::sync_channel(1);
        let trigger = Trigger { wait: false, fields: json!({}), describe: "test".into(), files: Vec::new(), reply };
        assert!(executor.submit(trigger));
        answer
    }

    fn answer(rx: &mpsc::Receiver<Answer>) -> Answer {
        rx.recv_timeout(Duration::from_secs(10)).expect("no answer within 10 s")
    }

    #[test]
    fn a_panicking_action_is_answered_internal_and_the_target_takes_the_next_reload() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn act(_: &ActionSpec, _: &str, _: Log, _: &AtomicBool) -> anyhow::Result<Ran> {
            if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom");
            }
            Ok(Ran::default())
        }
        let (executor, joiner) =
            Executor::start_with("app".into(), spec(), Duration::from_millis(50), vec![], quiet(), act, OVERRUN)
                .unwrap();
        let first = answer(&trigger(&executor));
        assert_eq!(first.result.map_err(|f| f.code), Err(ErrorCode::Internal));
        let second = answer(&trigger(&executor));
        assert_eq!(second, Answer { merged: false, result: Ok(None) }, "no window after a failure: it acts");
        executor.stop(Instant::now() + Duration::from_secs(5));
        joiner.join();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_merged_trigger_is_a_promise_the_trailing_action_keeps_even_at_stop() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn act(_: &ActionSpec, _: &str, _: Log, _: &AtomicBool) -> anyhow::Result<Ran> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            Ok(Ran::default())
        }
        // A window far longer than the test: only the stop can make the trailing action run.
        let settle = Duration::from_secs(600);
        let (executor, joiner) =
            Executor::start_with("app".into(), spec(), settle, vec![], quiet(), act, OVERRUN).unwrap();
        assert!(!answer(&trigger(&executor)).merged);
        for _ in 0..5 {
            assert!(answer(&trigger(&executor)).merged);
        }
        executor.stop(Instant::now() + Duration::from_secs(5));
        joiner.join();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2, "the leading action and one trailing action");
    }

    #[test]
    fn an_action_that_never_ends_is_given_up_on_and_the_target_goes_on() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn act(_: &ActionSpec, _: &str, _: Log, cancel: &AtomicBool) -> anyhow::Result<Ran> {
            if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                // Hangs until the stop (bounded: the test's stop sets the flag).
                for _ in 0..30_000 {
                    if cancel.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(Ran::default())
        }
        let overrun = Duration::from_millis(100);
        let (executor, joiner) =
            Executor::start_with("app".into(), spec(), Duration::ZERO, vec![], quiet(), act, overrun).unwrap();
        let first = answer(&trigger(&executor));
        assert_eq!(first.result.map_err(|f| f.code), Err(ErrorCode::Internal), "given up on, and said so");
        let second = answer(&trigger(&executor));
        assert_eq!(second, Answer { merged: false, result: Ok(None) }, "a fresh worker runs the next one");
        executor.stop(Instant::now() + Duration::from_secs(5));
        joiner.join();
    }
}
