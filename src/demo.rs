//! `touchwire demo`: the whole loop on loopback in one process. A sample git repository, a
//! receiver on an ephemeral port, the watcher on the sample, then a short script with timings:
//! a save, an atomic save, an ignored edit, a branch checkout. Then it keeps watching.

use crate::auth::{self, Token};
use crate::cli::DemoArgs;
use crate::client::Credentials;
use crate::config::ActionSpec;
use crate::listen::{Options as ListenOptions, Receiver};
use crate::output::summary;
use crate::output::{Log, millis};
use crate::protocol::escape_remote;
use crate::watch::delivery::{Delivery, Outcome, Settings};
use crate::watch::{Options as WatchOptions, Watcher};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver as Channel, channel};
use std::time::{Duration, Instant};

/// Modules the `feature` branch adds, so its checkout changes many files at once.
const FEATURE_MODULES: usize = 40;

/// Runs the demo; with `--once` it ends after the script.
pub fn command(args: DemoArgs) -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("touchwire-demo-").tempdir().context("cannot create a temp dir")?;
    let repo_dir = scratch.path().join("shop");
    let repo = sample_repo(&repo_dir)?;
    let reload_file = scratch.path().join("app.reload");
    println!("touchwire demo: a sample Django-style app in {}", repo_dir.display());

    let token = Token::new(&auth::random_hex(32)?)?;
    let quiet = Log { quiet: true, ..Log::default() };
    let receiver = Receiver::bind(
        "127.0.0.1:0",
        ListenOptions {
            targets: BTreeMap::from([("app".to_string(), ActionSpec::Touch { path: reload_file.clone() }.into())]),
            default_target: Some("app".into()),
            token: Some(token.clone()),
            settle: Duration::from_millis(200),
            max_connections: 16,
            read_timeout: Duration::from_secs(10),
            extensions: vec!["py".into()],
            log: quiet,
        },
    )?;
    let addr = receiver.local_addr()?.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || receiver.serve_until(&stop))
    };
    println!("guest side: touchwire listen on {addr}, target app touches {} (auth on)", reload_file.display());

    let settings = Settings {
        credentials: Credentials { token: Some(token), file: None },
        target: None,
        timeout: Duration::from_millis(1000),
        log: quiet,
        root: None,
    };
    let outcomes = start_watching(&repo_dir, &addr, &settings)?;
    println!("host side: touchwire watch on the sample, sending to {addr}\n");

    let script = Script { root: repo_dir.clone(), outcomes: &outcomes };
    script.run(&repo)?;

    if args.once {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        return server.join().map_err(|_| anyhow::anyhow!("the demo's receiver panicked"))?;
    }
    let live = match &args.dir {
        Some(dir) => {
            let dir = dir.canonicalize().with_context(|| format!("cannot watch {}", dir.display()))?;
            let outcomes = start_watching(&dir, &addr, &settings)?;
            println!("\nNow live on {}: save any relevant file there. Ctrl-C to stop.", dir.display());
            outcomes
        }
        None => {
            println!("\nNow live: edit {} and save. Ctrl-C to stop.", repo_dir.join("app/views.py").display());
            outcomes
        }
    };
    let scratch_path = scratch.path().to_path_buf();
    ctrlc::set_handler(move || {
        let _ = std::fs::remove_dir_all(&scratch_path);
        std::process::exit(0);
    })
    .context("cannot install the Ctrl-C handler")?;
    for outcome in live {
        println!("{}", describe(&outcome));
    }
    Ok(())
}

/// Starts a watcher on `dir` in its own thread, delivering to `addr`; returns the outcomes.
fn start_watching(dir: &Path, addr: &str, settings: &Settings) -> Result<Channel<Outcome>> {
    let options = WatchOptions {
        dir: dir.to_path_buf(),
        extensions: vec!["py".into()],
        tracked_only: false,
        debounce: Duration::from_millis(30),
        poll: None,
        log: settings.log,
    };
    let mut watcher = Watcher::start(&options)?;
    let (tx, outcomes) = channel();
    let delivery = Delivery::start(&[addr.to_string()], settings, Some(tx))?;
    std::thread::spawn(move || {
        while let Ok(triggers) = watcher.step(Duration::from_secs(3600)) {
            for trigger in triggers {
                delivery.send(&trigger);
            }
        }
    });
    Ok(outcomes)
}

/// One line for an outcome; what came from the receiver is escaped before it is printed.
fn describe(outcome: &Outcome) -> String {
    match &outcome.result {
        Ok((reply, rtt)) => match reply.not_ready() {
            Some(ready) => {
                let why = escape_remote(ready.error.as_deref().unwrap_or("")).lines().last().unwrap_or("").to_string();
                format!("  {}: reloaded app, but it did not come back: {why}", summary(&outcome.files))
            }
            None if reply.merged == Some(true) => {
                format!("  {}: merged into the reload under way ({})", summary(&outcome.files), millis(*rtt))
            }
            None => format!("  {}: reloaded app, acknowledged in {}", summary(&outcome.files), millis(*rtt)),
        },
        Err(error) => format!("  {}: not delivered: {}", summary(&outcome.files), escape_remote(error)),
    }
}

/// The scripted part: each step changes the sample and reports what reached the guest.
struct Script<'a> {
    root: PathBuf,
    outcomes: &'a Channel<Outcome>,
}

impl Script<'_> {
    fn run(&self, repo: &git2::Repository) -> Result<()> {
        self.step("1. save app/views.py in place", || write(&self.root.join("app/views.py"), "MESSAGE = 'saved'\n"))?;
        self.step("2. atomic save of app/models.py (temp file renamed over it)", || {
            let tmp = self.root.join("app/.models.py.tmp");
            write(&tmp, "ITEMS = ['saved']\n")?;
            std::fs::rename(&tmp, self.root.join("app/models.py")).context("rename")
        })?;
        self.step("3. edit venv/lib/requests/api.py (ignored by .gitignore)", || {
            write(&self.root.join("venv/lib/requests/api.py"), "# edited\n")
        })?;
        let label = format!("4. git checkout feature ({} files change)", FEATURE_MODULES + 2);
        self.step(&label, || checkout(repo, "feature"))?;
        Ok(())
    }

    /// Runs `action`, then collects every outcome until 600 ms pass with none.
    fn step(&self, label: &str, action: impl FnOnce() -> Result<()>) -> Result<()> {
        std::thread::sleep(Duration::from_millis(250)); // let the previous settle window close
        println!("{label}");
        let start = Instant::now();
        action()?;
        let mut triggers = 0;
        while let Ok(outcome) = self.outcomes.recv_timeout(Duration::from_millis(600)) {
            triggers += 1;
            println!("{}  ({} after the change)", describe(&outcome), millis(start.elapsed()));
        }
        if triggers == 0 {
            println!("  nothing sent: not a relevant change");
        } else {
            println!("  {triggers} trigger(s)");
        }
        Ok(())
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
