//! `touchwire demo`: the whole loop on loopback in one process. A sample git repository, a
//! receiver on an ephemeral port, the watcher on the sample, then a short script with timings:
//! a save, an atomic save, an ignored edit, a branch checkout. Then it keeps watching until
//! Ctrl-C. However it ends (done, an error, Ctrl-C or SIGTERM), it stops its watchers and its
//! receiver first, so that nothing is triggered or touched any more, then removes all it made.

use crate::cli::DemoArgs;
use crate::config::{ActionSpec, Config, Flags, defaults};
use crate::error::UsageError;
use crate::listen::Receiver;
use crate::output::{Log, millis};
use crate::watch::backend::Waker;
use crate::watch::delivery::{Delivery, Outcome, Settings};
use crate::watch::{Options as WatchOptions, Watcher};
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver as Channel, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Modules the `feature` branch adds, so its checkout changes many files at once.
const FEATURE_MODULES: usize = 40;

/// What the demo's main thread waits for.
enum Event {
    /// A trigger's result, from a watcher's delivery.
    Outcome(Box<Outcome>),
    /// A watcher ended by itself (its work tree went away, or it failed).
    Failed(anyhow::Error),
    /// Ctrl-C or SIGTERM.
    Interrupt,
}

/// How the demo ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The script ran to its end (`--once`).
    Done,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Runs the demo; with `--once` it ends after the script.
pub fn command(args: DemoArgs) -> Result<()> {
    // A mistake in the command line is told before anything is made or played.
    let live = live_dir(args.dir.as_deref(), args.once)?;
    let (events_tx, events) = channel();
    // Installed before anything is made, so that no Ctrl-C finds something to leave behind.
    let made: Arc<OnceLock<PathBuf>> = Arc::default();
    on_interrupt(events_tx.clone(), Arc::clone(&made))?;
    let scratch = tempfile::Builder::new().prefix("touchwire-demo-").tempdir().context("cannot create a temp dir")?;
    let _ = made.set(scratch.path().to_path_buf());
    // Declared after `scratch`, so that even a panic stops it before the directory goes.
    let mut demo = Demo { receiver: None, watchers: Vec::new(), events: events_tx };
    let ended = demo.play(scratch.path(), live.as_deref(), args.once, &events);
    let stopped = demo.stop();
    let path = scratch.path().display().to_string();
    let removed = scratch.close().with_context(|| format!("cannot remove the demo's temp directory {path}"));
    match ended {
        Err(err) => {
            // The error is what the user needs; a failed clean-up is said as well.
            for also in [stopped.err(), removed.err()].into_iter().flatten() {
                eprintln!("touchwire: {also:#}");
            }
            Err(err)
        }
        Ok(ended) => {
            stopped?;
            removed?;
            if ended == Ended::Interrupted {
                println!("\nstopped; removed {path}");
            }
            Ok(())
        }
    }
}

/// The directory the live part watches (`DIR`, checked by the parser: a directory in a git work
/// tree). `DIR` with `--once` is refused: see [`once_with_dir`].
fn live_dir(dir: Option<&Path>, once: bool) -> Result<Option<PathBuf>, UsageError> {
    let Some(dir) = dir else { return Ok(None) };
    once_with_dir(dir, once)?;
    Ok(Some(dir.to_path_buf()))
}

/// `demo DIR --once` is refused rather than run: the script always plays on the demo's own
/// sample repository (it checks out branches, which must never happen to the user's), and DIR
/// is watched only in the live part, which `--once` skips; so DIR would be silently ignored.
fn once_with_dir(dir: &Path, once: bool) -> Result<(), UsageError> {
    match once {
        false => Ok(()),
        true => Err(UsageError(format!(
            "cannot combine {dir} with --once: the script always plays on a sample repository of its own, and \
             DIR is watched only in the live part, which --once skips; drop --once to watch {dir} after the script, \
             or drop {dir} to play just the script",
            dir = dir.display()
        ))),
    }
}

/// The first Ctrl-C (or SIGTERM) asks the main thread to stop; a second one quits at once,
/// removing what the demo made as well as it can.
fn on_interrupt(events: Sender<Event>, made: Arc<OnceLock<PathBuf>>) -> Result<()> {
    let count = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = events.send(Event::Interrupt);
            return;
        }
        if let Some(dir) = made.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("cannot install the Ctrl-C handler")
}

/// What runs while the demo plays: stopped, and joined, before its directory is removed.
struct Demo {
    /// The receiver's stop flag and thread.
    receiver: Option<(Arc<AtomicBool>, JoinHandle<Result<()>>)>,
    watchers: Vec<Watching>,
    /// Where the watchers' outcomes go.
    events: Sender<Event>,
}

impl Demo {
    /// The sample, the receiver, the watcher, the script, then (without `--once`) the live part
    /// until Ctrl-C: on the sample, or on `live`.
    fn play(&mut self, scratch: &Path, live: Option<&Path>, once: bool, events: &Channel<Event>) -> Result<Ended> {
        let repo_dir = scratch.join("shop");
        let repo = sample_repo(&repo_dir)?;
        let reload_file = scratch.join("app.reload");
        println!("touchwire demo: a sample Django-style app in {}", repo_dir.display());

        // Both sides' settings come from one configuration, as a guest's and a host's do: the
        // built-in defaults and the demo's own token, port and target.
        let token_file = scratch.join("token");
        crate::init::write_token(&token_file)?;
        let target = ActionSpec::Touch { path: reload_file.clone() };
        let flags = Flags {
            token_file: Some(token_file),
            listen: Some("127.0.0.1:0".into()),
            target: Some((defaults::TARGET_NAME.into(), target)),
            max_connections: Some(16),
            ..Flags::default()
        };
        let mut config = Config::defaults(&repo_dir);
        config.apply_flags(&flags);
        let quiet = Log { quiet: true, ..Log::default() };
        let (listen_options, _) = crate::listen::start::options(&config, false, quiet)?;
        let receiver = Receiver::bind(&config.listen.value, listen_options)?;
        let addr = receiver.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("demo receiver".into())
                .spawn(move || receiver.serve_until(&stop))
                .context("cannot start the demo's receiver")?
        };
        self.receiver = Some((stop, server));
        println!("guest side: touchwire listen on {addr}, target app touches {} (auth on)", reload_file.display());

        let (options, settings) = crate::watch::start::settings(&config, None, quiet)?;
        self.watch(&options, &addr, &settings)?;
        println!("host side: touchwire watch on the sample, sending to {addr}\n");

        let script = Script { root: repo_dir.clone(), events };
        let ended = script.run(&repo)?;
        if ended == Ended::Interrupted || once {
            return Ok(ended);
        }
        let root = match live {
            Some(dir) => {
                // Only the saves in DIR are shown from here.
                if let Some(sample) = self.watchers.pop() {
                    sample.stop()?;
                }
                self.watch(&WatchOptions { dir: dir.to_path_buf(), ..options }, &addr, &settings)?;
                println!("\nNow live on {}: save any relevant file there. Ctrl-C to stop.", dir.display());
                dir.to_path_buf()
            }
            None => {
                println!("\nNow live: edit {} and save. Ctrl-C to stop.", repo_dir.join("app/views.py").display());
                repo_dir
            }
        };
        loop {
            match next(events, None)? {
                Next::Outcome(outcome) => println!("  {}", describe(&outcome, Some(&root))),
                Next::Interrupted => return Ok(Ended::Interrupted),
                Next::Quiet => {}
            }
        }
    }

    /// Starts a watcher with `options` delivering to `addr`, its outcomes sent to the main thread.
    fn watch(&mut self, options: &WatchOptions, addr: &str, settings: &Settings) -> Result<()> {
        let mut watcher = Watcher::start(options)?;
        let settings = Settings { root: Some(watcher.root().to_path_buf()), ..settings.clone() };
        let (tx, outcomes) = channel();
        let delivery = Delivery::start(&[addr.to_string()], &settings, Some(tx))?;
        let events = self.events.clone();
        let forwarder = std::thread::Builder::new()
            .name("demo outcomes".into())
            .spawn(move || {
                // Ends when the delivery has finished, or when nobody listens any more.
                for outcome in outcomes {
                    if events.send(Event::Outcome(Box::new(outcome))).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the demo's watcher")?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = watcher.waker();
        let (flag, events) = (Arc::clone(&stop), self.events.clone());
        let thread = std::thread::Builder::new().name("demo watcher".into()).spawn(move || {
            let ended = loop {
                let stepped = watcher.step(Duration::from_secs(3600));
                // Once stopping, nothing more is sent: the sample is about to be removed.
                if flag.load(Ordering::SeqCst) {
                    break Ok(());
                }
                match stepped {
                    Ok(triggers) => triggers.iter().for_each(|trigger| delivery.send(trigger)),
                    Err(err) => break Err(err),
                }
            };
            let finished = delivery.finish(None).map(|_| ());
            if let Err(err) = ended {
                let _ = events.send(Event::Failed(err));
            }
            finished
        });
        let thread = match thread {
            Ok(thread) => thread,
            Err(err) => {
                // The delivery went with the closure: the forwarder ends by itself.
                let _ = forwarder.join();
                return Err(err).context("cannot start the demo's watcher");
            }
        };
        self.watchers.push(Watching { stop, wake, thread, forwarder });
        Ok(())
    }

    /// Stops every watcher, then the receiver, and waits for each: from then on nothing touches
    /// the demo's directory. Idempotent.
    fn stop(&mut self) -> Result<()> {
        let mut first = None;
        for watching in self.watchers.drain(..) {
            if let Err(err) = watching.stop() {
                first.get_or_insert(err);
            }
        }
        if let Some((flag, thread)) = self.receiver.take() {
            flag.store(true, Ordering::SeqCst);
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    first.get_or_insert(err);
                }
                Err(_) => {
                    first.get_or_insert(anyhow!("the demo's receiver panicked"));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Demo {
    /// A demo left early (a panic) stops all the same.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One watcher of the demo and its threads.
struct Watching {
    stop: Arc<AtomicBool>,
    wake: Waker,
    thread: JoinHandle<Result<()>>,
    forwarder: JoinHandle<()>,
}

impl Watching {
    /// Wakes the watcher, which then ends its delivery; waits for both threads.
    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        (self.wake)();
        let finished = self.thread.join().map_err(|_| anyhow!("the demo's watcher panicked"))?;
        let _ = self.forwarder.join();
        finished
    }
}

/// What the main thread got.
enum Next {
    Outcome(Box<Outcome>),
    /// Nothing within the time given.
    Quiet,
    Interrupted,
}

/// The next event within `timeout` (`None`: however long it takes); a failed watcher is an error.
fn next(events: &Channel<Event>, timeout: Option<Duration>) -> Result<Next> {
    let event = match timeout {
        Some(timeout) => match events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => return Ok(Next::Quiet),
            Err(RecvTimeoutError::Disconnected) => return Err(anyhow!("the demo's watchers are gone")),
        },
        None => events.recv().map_err(|_| anyhow!("the demo's watchers are gone"))?,
    };
    match event {
        Event::Outcome(outcome) => Ok(Next::Outcome(outcome)),
        Event::Failed(err) => Err(err),
        Event::Interrupt => Ok(Next::Interrupted),
    }
}

/// The line `touchwire watch` prints for an outcome (without its clock), so the demo shows what
/// the real thing says: both come from [`crate::outcome::render`].
fn describe(outcome: &Outcome, root: Option<&Path>) -> String {
    crate::outcome::render(&crate::outcome::Input {
        command: crate::outcome::Command::Watch,
        remote: &outcome.remote,
        files: &outcome.files,
        result: outcome.result.as_ref().map(|(reply, rtt)| (reply, *rtt)).map_err(String::as_str),
        target: None,
        root,
    })
    .line
}

/// The line that closes a step of the script.
fn tally(triggers: usize) -> String {
    match triggers {
        0 => "  nothing sent: not a relevant change".into(),
        1 => "  1 trigger".into(),
        n => format!("  {n} triggers"),
    }
}

/// One step's change to the sample.
type Action<'a> = Box<dyn Fn() -> Result<()> + 'a>;

/// The scripted part: each step changes the sample and reports what reached the guest.
struct Script<'a> {
    root: PathBuf,
    events: &'a Channel<Event>,
}

impl Script<'_> {
    /// Plays the steps in order; a Ctrl-C ends it at once.
    fn run(&self, repo: &git2::Repository) -> Result<Ended> {
        let views = self.root.join("app/views.py");
        let (models, tmp) = (self.root.join("app/models.py"), self.root.join("app/.models.py.tmp"));
        let vendored = self.root.join("venv/lib/requests/api.py");
        let checkout_label = format!("4. git checkout feature ({} files change)", FEATURE_MODULES + 2);
        let steps: Vec<(&str, Action<'_>)> = vec![
            ("1. save app/views.py in place", Box::new(|| write(&views, "MESSAGE = 'saved'\n"))),
            (
                "2. atomic save of app/models.py (temp file renamed over it)",
                Box::new(|| {
                    write(&tmp, "ITEMS = ['saved']\n")?;
                    std::fs::rename(&tmp, &models).with_context(|| format!("cannot rename {}", tmp.display()))
                }),
            ),
            ("3. edit venv/lib/requests/api.py (ignored by .gitignore)", Box::new(|| write(&vendored, "# edited\n"))),
            (&checkout_label, Box::new(|| checkout(repo, "feature"))),
        ];
        for (label, action) in steps {
            if self.step(label, action)? == Ended::Interrupted {
                return Ok(Ended::Interrupted);
            }
        }
        Ok(Ended::Done)
    }

    /// Runs `action`, then collects every outcome until 600 ms pass with none.
    fn step(&self, label: &str, action: impl FnOnce() -> Result<()>) -> Result<Ended> {
        // Let the previous settle window close; a Ctrl-C meanwhile is answered at once.
        let pause = Instant::now() + Duration::from_millis(250);
        while let Some(left) = pause.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
            match next(self.events, Some(left))? {
                Next::Outcome(outcome) => println!("  {}", describe(&outcome, Some(&self.root))),
                Next::Interrupted => return Ok(Ended::Interrupted),
                Next::Quiet => break,
            }
        }
        println!("{label}");
        let start = Instant::now();
        action()?;
        let mut triggers = 0;
        loop {
            match next(self.events, Some(Duration::from_millis(600)))? {
                Next::Outcome(outcome) => {
                    triggers += 1;
                    let line = describe(&outcome, Some(&self.root));
                    println!("  {line}  ({} after the change)", millis(start.elapsed()));
                }
                Next::Interrupted => return Ok(Ended::Interrupted),
                Next::Quiet => break,
            }
        }
        println!("{}", tally(triggers));
        Ok(Ended::Done)
    }
}

fn write(path: &Path, content: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
}

/// A small app with an ignored `venv/`, committed on `main`, and a `feature` branch that changes
/// two modules and adds many. Checked out on `main`.
fn sample_repo(root: &Path) -> Result<git2::Repository> {
    let mut init = git2::RepositoryInitOptions::new();
    init.initial_head("main");
    let repo = git2::Repository::init_opts(root, &init).context("cannot create the sample repository")?;
    write(&root.join(".gitignore"), "venv/\n__pycache__/\n")?;
    write(&root.join("wsgi.py"), "from app.views import application\n")?;
    write(&root.join("app/__init__.py"), "")?;
    write(&root.join("app/views.py"), "MESSAGE = 'hello'\n")?;
    write(&root.join("app/models.py"), "ITEMS = []\n")?;
    write(&root.join("venv/lib/requests/api.py"), "# a vendored package\n")?;
    commit(&repo, "Sample app")?;
    repo.branch("feature", &repo.head()?.peel_to_commit()?, false)?;
    checkout(&repo, "feature")?;
    write(&root.join("app/views.py"), "MESSAGE = 'feature'\n")?;
    write(&root.join("app/models.py"), "ITEMS = ['feature']\n")?;
    for i in 0..FEATURE_MODULES {
        write(&root.join(format!("app/feature/part{i:02}.py")), &format!("PART = {i}\n"))?;
    }
    commit(&repo, "Feature")?;
    checkout(&repo, "main")?;
    Ok(repo)
}

fn commit(repo: &git2::Repository, message: &str) -> Result<()> {
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let signature = git2::Signature::now("touchwire demo", "demo@touchwire.invalid")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<_> = parent.iter().collect();
    repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).context("cannot commit")?;
    Ok(())
}

fn checkout(repo: &git2::Repository, branch: &str) -> Result<()> {
    let refname = format!("refs/heads/{branch}");
    let target = repo.revparse_single(&refname)?;
    repo.checkout_tree(&target, Some(git2::build::CheckoutBuilder::new().force()))
        .with_context(|| format!("cannot check out {branch}"))?;
    repo.set_head(&refname)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Ready, Reply};

    fn outcome(result: Result<Reply, &str>) -> Outcome {
        Outcome {
            remote: "127.0.0.1:9001".into(),
            files: vec!["app/views.py".into()],
            result: result.map(|reply| (reply, Duration::from_millis(3))).map_err(String::from),
            triggers: 1,
        }
    }

    /// The lines `touchwire watch` prints for the same outcomes (outcome.rs renders both).
    #[test]
    fn each_outcome_reads_as_watch_says_it() {
        let ok = Reply { ok: true, target: Some("app".into()), action: Some("touch".into()), ..Reply::default() };
        assert_eq!(
            describe(&outcome(Ok(ok.clone())), None),
            "app: app/views.py -> 127.0.0.1:9001 reloaded (touch) in 3.0 ms"
        );
        let merged = Reply { merged: Some(true), ..ok.clone() };
        assert_eq!(
            describe(&outcome(Ok(merged)), None),
            "app: app/views.py -> 127.0.0.1:9001 merged into a reload under way in 3.0 ms"
        );
        let back = Reply { ready: Some(Ready { ok: true, ms: 412, error: None }), ..ok.clone() };
        assert_eq!(describe(&outcome(Ok(back)), None), "app: app/views.py -> 127.0.0.1:9001 reloaded in 412 ms");
        let traceback = "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line 3, in <module>\n    import foo\nModuleNotFoundError: No module named 'foo'\n";
        let down = Reply { ready: Some(Ready { ok: false, ms: 300, error: Some(traceback.into()) }), ..ok };
        assert_eq!(
            describe(&outcome(Ok(down)), None),
            "app: reload failed at /srv/app/views.py:3 after 300 ms: ModuleNotFoundError: No module named 'foo' \
             (app/views.py -> 127.0.0.1:9001)"
        );
        let failed = Reply {
            ok: false,
            code: Some(ErrorCode::ActionFailed),
            error: Some("cannot touch /x\u{1b}[2J".into()),
            ..Reply::default()
        };
        let line = describe(&outcome(Ok(failed)), None);
        assert!(
            line.starts_with("app: reload failed: cannot touch /x")
                && line.ends_with(" (app/views.py -> 127.0.0.1:9001)"),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "what the receiver sent is escaped: {line:?}");
        assert_eq!(describe(&outcome(Err("refused")), None), "not delivered: app/views.py: refused");
    }

    #[test]
    fn a_step_ends_with_its_count_of_triggers() {
        assert_eq!(tally(0), "  nothing sent: not a relevant change");
        assert_eq!(tally(1), "  1 trigger");
        assert_eq!(tally(2), "  2 triggers");
    }

    #[test]
    fn a_dir_goes_with_the_live_part_only() {
        assert!(once_with_dir(Path::new("mine"), false).is_ok());
        let refused = once_with_dir(Path::new("mine"), true).unwrap_err().0;
        assert!(refused.starts_with("cannot combine mine with --once: "), "{refused}");
        assert!(refused.contains("drop --once to watch mine after the script"), "{refused}");
        assert!(live_dir(None, true).unwrap().is_none(), "--once alone is the plain script");
    }
}
