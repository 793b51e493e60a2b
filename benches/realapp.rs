//! A real Django project in a real guest (issue 14; DESIGN.md, "A real app, fast" and "What fast means here"):
//! from a save on the host to the new code served, for Django's own runserver reloader (on local disk, the blog
//! post's "virtually instantaneous" reference, and over the shared folder), uWSGI's own reloaders, touchwire's
//! actions and gunicorn; and whether the last of two quick saves is served by every worker.
//!
//! Run it as root: `cargo bench --bench realapp` (release build). `BENCH_RUNS=N` sets the measured saves per
//! setup (default 15), `BENCH_DOUBLE=N` the double-save trials per setup (default 20); `BENCH_RUNS=5
//! BENCH_DOUBLE=5` is a quick run (about 10 minutes). The report is Markdown on stdout, progress on stderr.
//!
//! The app is `wagtail start mysite` (Django, ~1,600 modules) in a virtualenv made by scripts/realapp-setup and
//! cached in ~/.cache/touchwire-realapp (the first run pip-installs Wagtail). `GET /marker/` answers `MARKER
//! PID` from `mysite/marker.py`. The guest is tests/util/guest.rs: a network namespace that sees the host's work
//! trees through sshfs from an sshd of our own in a host namespace (10.214.0.1 ↔ 10.214.0.2), as Lima mounts
//! them: no file events, sshfs's default attribute cache. The bench's main thread moves into the host namespace,
//! so its pollers and `touchwire send` run there; the servers and receivers run in the guest (runserver on
//! local disk runs in the host namespace, on the host's own copy).
//!
//! Each setup ([`Setup`]) has its own copy of the project (a git work tree), its own server and, where it has
//! one, its own receiver (`touchwire listen`, configured by the copy's shared `.touchwire.json`, with `root` so
//! the files a trigger names are refreshed in the guest). Setups are measured interleaved, round-robin, one save
//! each per round after a random pause of 0–1,000 ms. A save writes a new marker into `mysite/marker.py`, then
//! (touchwire setups) spawns `touchwire send --path mysite/marker.py`, as an editor's save hook does. Timed from
//! just before the write: the first answer with the new marker (a poller, every 10 ms, which also counts failed
//! requests: refused, timed out, non-200), and every worker serving it ([`WORKERS`] concurrent requests held
//! 300 ms, so each lands on another worker). Reloads per save are counted in the server's log.
//!
//! Needs root, iproute2, util-linux, openssh-server, openssh-client, sshfs, fuse3, uwsgi,
//! uwsgi-plugin-python3, python3-venv and git (scripts/test installs them). Only the namespace addresses are
//! contacted. Children are ended by their PIDs (with their process groups) when the bench ends, on errors and
//! Ctrl-C too; the mount and the namespaces go; every wait has a deadline.

mod common;
#[path = "../tests/util/guest.rs"]
mod guest;
#[path = "../tests/util/wagtail.rs"]
mod wagtail;

use anyhow::{Context, Result, anyhow, bail};
use common::{Samples, check_interrupted, load_average};
use guest::{GUEST_ADDR, Guest, HOST_ADDR, MountOptions};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// Workers of uWSGI and gunicorn (runserver has one process).
const WORKERS: usize = 2;
/// Longest wait for a first start, and for a save to be served.
const LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for the last of two saves to be served by every worker before the trial counts as lost.
const DOUBLE_LIMIT: Duration = Duration::from_secs(30);
/// The poller's interval.
const POLL: Duration = Duration::from_millis(10);
/// One request's deadline (a request queued while the app loads is answered after the load).
const REQUEST: Duration = Duration::from_secs(10);
/// Quiet after every worker serves a save, before the next: a trailing reload ends in it.
const SETTLE: Duration = Duration::from_millis(1500);
/// Longest random pause before a save.
const JITTER_MS: u32 = 1000;

fn main() {
    common::install_interrupt_handler();
    if let Err(err) = run() {
        eprintln!("bench realapp failed: {err:#}");
        std::process::exit(1);
    }
}

fn count(var: &str, default: usize) -> Result<usize> {
    match std::env::var(var) {
        Ok(text) => Ok(text.trim().parse::<usize>().with_context(|| format!("{var}={text:?} is not a number"))?.max(1)),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<()> {
    let (runs, doubles) = (count("BENCH_RUNS", 15)?, count("BENCH_DOUBLE", 20)?);
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("network namespaces, sshd and a FUSE mount need root: run it as root");
    }
    for tool in ["uwsgi", "git"] {
        if !guest::have(tool) {
            bail!("`{tool}` is not installed (scripts/test installs what this bench needs)");
        }
    }
    eprintln!("bench: scripts/realapp-setup (a first run pip-installs Wagtail)");
    let cache = wagtail::setup()?;
    let scratch = tempfile::Builder::new().prefix("touchwire-realapp").tempdir()?;
    let shared = scratch.path().join("host");
    std::fs::create_dir_all(&shared)?;
    std::fs::create_dir_all(scratch.path().join("xdg"))?;
    let mut guest = Guest::start("b", &shared, MountOptions::default())?;
    guest.enter_host()?;
    let mut rigs = Vec::new();
    for (index, setup) in Setup::ALL.into_iter().enumerate() {
        eprintln!("bench: starting {}", setup.label());
        rigs.push(Rig::start(&mut guest, &cache, scratch.path(), setup, index)?);
    }
    println!("# A real Django app in a guest over sshfs\n");
    println!(
        "Command: `BENCH_RUNS={runs} BENCH_DOUBLE={doubles} cargo bench --bench realapp` (release build, as root): \
         {runs} measured saves and {doubles} double-save trials per setup, interleaved.\n"
    );
    machine(&guest)?;
    let saves = measure(&guest, &rigs, runs)?;
    let trials = double_saves(&guest, &rigs, doubles)?;
    report(&rigs, &saves, &trials, runs);
    drop(rigs);
    drop(guest);
    eprintln!("bench: done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The setups
// ---------------------------------------------------------------------------------------------------------------

/// The ways of getting a save into the running app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `manage.py runserver` with its StatReloader, on the host's own disk: the reference.
    RunserverLocal,
    /// The same in the guest, on the sshfs mount.
    RunserverSshfs,
    /// uWSGI `--touch-reload FILE`; `touchwire listen --touch FILE` (so the save reaches it at once).
    UwsgiTouch,
    /// uWSGI `--py-autoreload 1`, nothing else.
    UwsgiPyAutoreload,
    /// uWSGI `--master-fifo FIFO --skip-atexit-teardown`; touchwire fifo `r` + poke (README's fast way).
    TouchwireFifo,
    /// touchwire's fast setup, as `touchwire init --uwsgi` prints it: uWSGI `--lazy-apps
    /// --skip-atexit-teardown`, the warm master (`shared-pyimport` of guest/touchwire_warm.py, which
    /// pre-imports everything outside the work tree), touchwire fifo `c` (chain reload) + poke.
    Fast,
    /// gunicorn `--workers 2 --pid PIDFILE`; `touchwire listen --signal HUP --pidfile PIDFILE`.
    GunicornHup,
    /// The same with the config `touchwire init --gunicorn` prints: an arbiter warmed by the helper.
    GunicornWarm,
}

impl Setup {
    const ALL: [Setup; 8] = [
        Setup::RunserverLocal,
        Setup::RunserverSshfs,
        Setup::UwsgiTouch,
        Setup::UwsgiPyAutoreload,
        Setup::TouchwireFifo,
        Setup::Fast,
        Setup::GunicornHup,
        Setup::GunicornWarm,
    ];

    fn label(self) -> &'static str {
        match self {
            Setup::RunserverLocal => "runserver, local disk",
            Setup::RunserverSshfs => "runserver, over sshfs",
            Setup::UwsgiTouch => "uWSGI touch-reload",
            Setup::UwsgiPyAutoreload => "uWSGI py-autoreload",
            Setup::TouchwireFifo => "touchwire fifo r + poke, skip-atexit-teardown",
            Setup::Fast => "touchwire fast: lazy-apps, skip-atexit-teardown, warm master, chain c + poke",
            Setup::GunicornHup => "gunicorn HUP (touchwire --signal HUP)",
            Setup::GunicornWarm => "gunicorn HUP, warm arbiter (touchwire init --gunicorn)",
        }
    }

    fn shown(self) -> &'static str {
        match self {
            Setup::RunserverLocal => {
                "host: `python manage.py runserver HOST:8100` in the host's work tree (StatReloader)"
            }
            Setup::RunserverSshfs => "guest: `python manage.py runserver GUEST:8101` on the mount (StatReloader)",
            Setup::UwsgiTouch => "uWSGI `--touch-reload FILE`; `touchwire listen` target `{\"touch\": FILE}`",
            Setup::UwsgiPyAutoreload => "uWSGI `--py-autoreload 1`, no touchwire",
            Setup::TouchwireFifo => {
                "uWSGI `--master-fifo FIFO --skip-atexit-teardown`; target `{\"fifo\": FIFO, \"command\": \"r\"}` \
                 (poke on)"
            }
            Setup::Fast => {
                "uWSGI `--master-fifo FIFO --lazy-apps --skip-atexit-teardown --env TOUCHWIRE_WARM_ROOT=TREE \
                 --shared-pyimport TREE/.git/touchwire/touchwire_warm.py` (the helper's default 10 s budget); target \
                 `{\"fifo\": FIFO, \"command\": \"c\"}` (poke on)"
            }
            Setup::GunicornHup => {
                "guest: `gunicorn --workers 2 --pid PIDFILE mysite.wsgi`; target `{\"pidfile\": PIDFILE, \"signal\": \
                 \"HUP\"}`"
            }
            Setup::GunicornWarm => {
                "guest: the same with `-c gunicorn.conf.py` as `touchwire init --gunicorn` prints it (its \
                 `on_starting` warms the arbiter with the helper)"
            }
        }
    }

    /// Whether a save is followed by `touchwire send --path`.
    fn touchwire(self) -> bool {
        matches!(
            self,
            Setup::UwsgiTouch | Setup::TouchwireFifo | Setup::Fast | Setup::GunicornHup | Setup::GunicornWarm
        )
    }

    fn workers(self) -> usize {
        match self {
            Setup::RunserverLocal | Setup::RunserverSshfs => 1,
            _ => WORKERS,
        }
    }

    /// A line of the server's log that marks one reload.
    fn reload_line(self) -> &'static str {
        match self {
            Setup::RunserverLocal | Setup::RunserverSshfs => "changed, reloading.",
            Setup::UwsgiTouch | Setup::UwsgiPyAutoreload | Setup::TouchwireFifo => "binary reloading uWSGI",
            Setup::Fast => "chain reload starting",
            Setup::GunicornHup | Setup::GunicornWarm => "Handling signal: hup",
        }
    }
}

/// One setup running: its work tree, its server, its receiver.
struct Rig {
    setup: Setup,
    index: usize,
    repo: PathBuf,
    http: SocketAddr,
    server: String,
    xdg: PathBuf,
    home: PathBuf,
}

impl Rig {
    fn start(guest: &mut Guest, cache: &wagtail::Cache, scratch: &Path, setup: Setup, index: usize) -> Result<Rig> {
        let n = index + 1;
        let repo = guest.shared.join(format!("site{n}"));
        let seen = guest.guest_path(&repo)?;
        let (fifo, touch, pidfile) = (
            guest.local(&format!("uwsgi{n}.fifo")),
            guest.local(&format!("app{n}.reload")),
            guest.local(&format!("gunicorn{n}.pid")),
        );
        let target = match setup {
            Setup::UwsgiTouch => json!({"touch": touch}),
            Setup::TouchwireFifo => json!({"fifo": fifo, "command": "r"}),
            Setup::Fast => json!({"fifo": fifo, "command": "c"}),
            Setup::GunicornHup | Setup::GunicornWarm => json!({"pidfile": pidfile, "signal": "HUP"}),
            _ => json!({"touch": touch}),
        };
        let addr = format!("{GUEST_ADDR}:{}", 9000 + n);
        let config = json!({
            "remote": addr, "listen": addr, "token_file": ".git/touchwire/token", "root": ".",
            "extensions": ["py", "html"], "targets": {"app": target}, "default_target": "app",
        });
        wagtail::new_repo(cache, &repo, &config, TOKEN)?;
        // The warm-master helper where `touchwire init --uwsgi`/`--gunicorn` writes it: next to the token.
        let helper = repo.join(".git/touchwire").join(touchwire::init::WARM_HELPER_NAME);
        std::fs::write(&helper, touchwire::init::WARM_HELPER)
            .with_context(|| format!("cannot write {}", helper.display()))?;
        let fast = touchwire::init::FastSetup {
            root: seen.display().to_string(),
            helper: guest.guest_path(&helper)?.display().to_string(),
            fifo: fifo.display().to_string(),
            logto: String::new(),
            pidfile: pidfile.display().to_string(),
        };
        let port = 8100 + index as u16;
        let http: SocketAddr = match setup {
            Setup::RunserverLocal => format!("{HOST_ADDR}:{port}"),
            _ => format!("{GUEST_ADDR}:{port}"),
        }
        .parse()?;
        let python = cache.venv.join("bin/python");
        let server = format!("server{n}");
        let cmd = match setup {
            Setup::RunserverLocal | Setup::RunserverSshfs => {
                let (mut cmd, dir) = if setup == Setup::RunserverLocal {
                    (guest.host(&python.to_string_lossy()), repo.clone())
                } else {
                    (guest.guest(&python.to_string_lossy()), seen.clone())
                };
                cmd.args(["-u", "manage.py", "runserver", &http.to_string()]).current_dir(dir);
                cmd.env("DJANGO_SETTINGS_MODULE", wagtail::SETTINGS);
                cmd
            }
            Setup::GunicornHup | Setup::GunicornWarm => {
                let mut cmd = guest.guest(&cache.venv.join("bin/gunicorn").to_string_lossy());
                if setup == Setup::GunicornWarm {
                    let conf = guest.local(&format!("gunicorn{n}.conf.py"));
                    std::fs::write(&conf, touchwire::init::gunicorn_conf(&fast))
                        .with_context(|| format!("cannot write {}", conf.display()))?;
                    cmd.arg("-c").arg(&conf);
                }
                cmd.args(["--workers", &WORKERS.to_string(), "--bind", &http.to_string(), "--pid"]).arg(&pidfile);
                cmd.arg("--chdir").arg(&seen).arg("mysite.wsgi:application");
                cmd.env("DJANGO_SETTINGS_MODULE", wagtail::SETTINGS);
                cmd
            }
            _ => {
                let mut cmd = guest.guest("uwsgi");
                cmd.args(wagtail::uwsgi_args(&cache.venv, &seen, &http.to_string(), WORKERS));
                match setup {
                    Setup::UwsgiTouch => {
                        std::fs::write(&touch, "")?;
                        cmd.arg("--touch-reload").arg(&touch)
                    }
                    Setup::UwsgiPyAutoreload => cmd.args(["--py-autoreload", "1"]),
                    Setup::TouchwireFifo => cmd.arg("--master-fifo").arg(&fifo).arg("--skip-atexit-teardown"),
                    // `touchwire init --uwsgi`'s lines, but for logto: the server's log is its stderr here.
                    _ => cmd
                        .arg("--master-fifo")
                        .arg(&fifo)
                        .args(["--lazy-apps", "--skip-atexit-teardown", "--env"])
                        .arg(format!("TOUCHWIRE_WARM_ROOT={}", fast.root))
                        .arg("--shared-pyimport")
                        .arg(&fast.helper),
                };
                cmd
            }
        };
        guest.spawn(&server, cmd)?;
        let (home, xdg) = (scratch.to_path_buf(), scratch.join("xdg"));
        let rig = Rig { setup, index, repo, http, server, xdg, home };
        let began = Instant::now();
        while !every_worker(&rig.round(), "start", setup.workers()) {
            check_interrupted()?;
            if began.elapsed() > LIMIT {
                bail!("{} never served the app on {}: {}", setup.label(), rig.http, tail(&guest.said(&rig.server)));
            }
            thread::sleep(Duration::from_millis(100));
        }
        if setup.touchwire() {
            let name = format!("listen{n}");
            let mut listen = guest.guest(env!("CARGO_BIN_EXE_touchwire"));
            listen.args(["listen", "--json"]).current_dir(&seen);
            listen.env("HOME", &rig.home).env("XDG_CONFIG_HOME", &rig.xdg);
            guest.spawn(&name, listen)?;
            let began = Instant::now();
            while !guest.said(&name).contains("\"listening\"") {
                check_interrupted()?;
                if began.elapsed() > Duration::from_secs(10) {
                    bail!("touchwire listen for {} did not start: {}", setup.label(), guest.said(&name));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(rig)
    }

    /// Starts `touchwire send --path mysite/marker.py` (a touchwire setup), as an editor's hook does.
    fn send(&self, guest: &Guest) -> Result<Option<Child>> {
        if !self.setup.touchwire() {
            return Ok(None);
        }
        let mut send = guest.host(env!("CARGO_BIN_EXE_touchwire"));
        send.args(["send", "--timeout", "30000", "--path", wagtail::MARKER_FILE]).current_dir(&self.repo);
        send.env("HOME", &self.home).env("XDG_CONFIG_HOME", &self.xdg);
        Ok(Some(send.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("cannot run touchwire send")?))
    }

    /// [`Setup::workers`] concurrent requests, each held 300 ms: every answer's marker and pid.
    fn round(&self) -> Vec<Option<(String, u32)>> {
        let path = format!("{}?hold=300", wagtail::MARKER_PATH);
        thread::scope(|scope| {
            let asks: Vec<_> = (0..self.setup.workers().max(2))
                .map(|_| scope.spawn(|| guest::http_get(self.http, &path, REQUEST)))
                .collect();
            asks.into_iter()
                .map(|ask| match ask.join() {
                    Ok(Ok((200, body))) => wagtail::parse(&body),
                    _ => None,
                })
                .collect()
        })
    }

    /// How many reloads the server's log shows so far.
    fn reloads(&self, guest: &Guest) -> usize {
        guest.said(&self.server).matches(self.setup.reload_line()).count()
    }
}

/// Whether every answer carries `marker`, from `workers` different processes.
fn every_worker(answers: &[Option<(String, u32)>], marker: &str, workers: usize) -> bool {
    let pids: BTreeSet<u32> = answers.iter().flatten().filter(|(m, _)| m == marker).map(|(_, p)| *p).collect();
    answers.iter().all(|a| a.as_ref().is_some_and(|(m, _)| m == marker)) && pids.len() == workers
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits (at most 60 s) for a `touchwire send`; its exit code.
fn finish(send: Option<Child>) -> Option<i32> {
    let mut send = send?;
    let deadline = Instant::now() + LIMIT;
    while matches!(send.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let _ = send.kill();
    send.wait().ok()?.code()
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------------------------

/// What one save caused, timed from just before the write.
#[derive(Debug, Default)]
struct Save {
    served: Option<Duration>,
    everyone: Option<Duration>,
    requests: usize,
    failures: usize,
    reloads: usize,
    send_failed: bool,
}

/// A poller (every [`POLL`]) until `stop`: when it first saw `marker`, its requests and failures.
fn poller(
    http: SocketAddr,
    marker: String,
    start: Instant,
    seen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Option<Duration>, usize, usize) {
    let (mut first, mut requests, mut failures) = (None, 0, 0);
    let deadline = start + LIMIT + Duration::from_secs(10);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        requests += 1;
        match guest::http_get(http, wagtail::MARKER_PATH, REQUEST) {
            Ok((200, body)) => {
                if first.is_none() && wagtail::parse(&body).is_some_and(|(m, _)| m == marker) {
                    first = Some(start.elapsed());
                    seen.store(true, Ordering::SeqCst);
                }
            }
            _ => failures += 1,
        }
        thread::sleep(POLL);
    }
    (first, requests, failures)
}

fn jitter() -> Result<()> {
    thread::sleep(Duration::from_millis(u64::from(getrandom::u32()? % JITTER_MS)));
    Ok(())
}

/// Waits until every worker serves `marker`, at most `limit` from `start`; when it did.
fn wait_everyone(rig: &Rig, marker: &str, start: Instant, limit: Duration) -> Result<Option<Duration>> {
    while start.elapsed() < limit {
        check_interrupted()?;
        if every_worker(&rig.round(), marker, rig.setup.workers()) {
            return Ok(Some(start.elapsed()));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

fn save_once(guest: &Guest, rig: &Rig, marker: &str) -> Result<Save> {
    jitter()?;
    let reloads_before = rig.reloads(guest);
    let (seen, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let start = Instant::now();
    let poll = {
        let (seen, stop, marker, http) = (Arc::clone(&seen), Arc::clone(&stop), marker.to_string(), rig.http);
        thread::spawn(move || poller(http, marker, start, seen, stop))
    };
    wagtail::save(&rig.repo, marker)?;
    let send = rig.send(guest)?;
    // The held requests of the every-worker check would delay the poller's: they start once it saw the save.
    while !seen.load(Ordering::SeqCst) && start.elapsed() < LIMIT {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(5));
    }
    let everyone = wait_everyone(rig, marker, start, LIMIT)?;
    let code = finish(send);
    thread::sleep(SETTLE);
    stop.store(true, Ordering::SeqCst);
    let (served, requests, failures) = poll.join().map_err(|_| anyhow!("the poller panicked"))?;
    if everyone.is_none() {
        eprintln!("bench:   {}: {marker} not served by every worker within {} s", rig.setup.label(), LIMIT.as_secs());
    }
    Ok(Save {
        served,
        everyone,
        requests,
        failures,
        reloads: rig.reloads(guest) - reloads_before,
        send_failed: code.is_some_and(|c| c != 0),
    })
}

type Saves = Vec<Vec<Save>>;

fn measure(guest: &Guest, rigs: &[Rig], runs: usize) -> Result<Saves> {
    let mut saves: Saves = rigs.iter().map(|_| Vec::new()).collect();
    eprintln!("bench: 1 warm-up + {runs} saves per setup, round-robin");
    for round in 0..=runs {
        for (rig, done) in rigs.iter().zip(&mut saves) {
            // One length for every marker, so sizes never tell saves apart.
            let save = save_once(guest, rig, &format!("r{round:03}s{}", rig.index))?;
            if round > 0 {
                done.push(save);
            }
        }
        eprintln!("bench:   round {round}/{runs}");
    }
    Ok(saves)
}

/// A double-save trial: whether every worker ended on the second save, and the gap.
#[derive(Debug)]
struct Trial {
    gap: Duration,
    same_second: bool,
    served: bool,
}

fn double_saves(guest: &Guest, rigs: &[Rig], trials: usize) -> Result<Vec<Vec<Trial>>> {
    let mut all: Vec<Vec<Trial>> = rigs.iter().map(|_| Vec::new()).collect();
    eprintln!("bench: {trials} double-save trials per setup, round-robin");
    let lost = AtomicUsize::new(0);
    for trial in 0..trials {
        for (rig, done) in rigs.iter().zip(&mut all) {
            jitter()?;
            // Every fourth trial: both saves in one whole second (same mtime second, same size).
            let same_second = trial % 4 == 0;
            let gap = if same_second {
                let began = Instant::now();
                while SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.subsec_millis() > 100 {
                    if began.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Duration::from_millis(300)
            } else {
                Duration::from_millis(50 + u64::from(getrandom::u32()? % 1451))
            };
            let (first, second) = (format!("d{trial:03}a{}", rig.index), format!("d{trial:03}b{}", rig.index));
            wagtail::save(&rig.repo, &first)?;
            let send_first = rig.send(guest)?;
            thread::sleep(gap);
            let start = Instant::now();
            wagtail::save(&rig.repo, &second)?;
            let send_second = rig.send(guest)?;
            let served = wait_everyone(rig, &second, start, DOUBLE_LIMIT)?.is_some();
            finish(send_first);
            finish(send_second);
            if !served {
                lost.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "bench:   {}: trial {trial} (gap {} ms) lost the last save",
                    rig.setup.label(),
                    gap.as_millis()
                );
            }
            done.push(Trial { gap, same_second, served });
            thread::sleep(SETTLE);
        }
        eprintln!("bench:   trial {}/{trials} ({} lost so far)", trial + 1, lost.load(Ordering::SeqCst));
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------------------------

fn first_line(program: &str, args: &[&str]) -> String {
    common::first_line(program, args, Duration::from_secs(10), common::Kill::Pid).unwrap_or_else(|e| format!("{e:#}"))
}

/// `SSHFS version 3.7.3` (sshfs prints fusermount's version first).
fn sshfs_version() -> String {
    let mut cmd = Command::new("sshfs");
    cmd.arg("--version");
    let text = common::output_of(cmd, "sshfs --version", Duration::from_secs(10), common::Kill::Pid)
        .map(|(_, text)| text)
        .unwrap_or_default();
    text.lines().find(|l| l.starts_with("SSHFS version")).unwrap_or("unknown").to_string()
}

fn machine(guest: &Guest) -> Result<()> {
    println!("## Machine\n");
    println!("- CPU: {}", common::cpu_model());
    println!("- logical CPUs available: {}", common::logical_cpus());
    println!("- kernel: {}", common::kernel());
    println!("- touchwire: {}", first_line(env!("CARGO_BIN_EXE_touchwire"), &["--version"]));
    println!("- uWSGI: {} (Debian, python3 plugin)", first_line("uwsgi", &["--version"]));
    println!("- Python: {}", first_line("/usr/bin/python3", &["--version"]));
    println!("- sshfs: {}; mount options `{}`", sshfs_version(), guest.options.sshfs_options());
    let mut packages = String::from("unknown");
    if let Ok(cache) = wagtail::setup() {
        let mut pip = Command::new(cache.venv.join("bin/pip"));
        pip.args(["list", "--disable-pip-version-check", "--format", "freeze"]);
        let (_, text) = common::output_of(pip, "pip list", Duration::from_secs(30), common::Kill::Pid)?;
        let wanted = ["wagtail==", "django==", "gunicorn=="];
        let found: Vec<&str> =
            text.lines().filter(|l| wanted.iter().any(|p| l.to_lowercase().starts_with(p))).collect();
        packages = found.join(", ");
    }
    println!("- packages: {packages}");
    println!("- load average at the start (1, 5, 15 min): {}", load_average());
    println!("- date: {}\n", first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(())
}

fn ms(value: f64) -> String {
    if value.is_nan() { "–".into() } else { format!("{value:.0}") }
}

fn report(rigs: &[Rig], saves: &Saves, trials: &[Vec<Trial>], runs: usize) {
    println!("## Save → new code served\n");
    println!("| setup | how |\n|---|---|");
    for rig in rigs {
        println!("| {} | {} |", rig.setup.label(), rig.setup.shown());
    }
    println!();
    let samples = |done: &[Save], pick: fn(&Save) -> Option<Duration>| {
        let mut s = Samples::default();
        for save in done {
            if let Some(d) = pick(save) {
                s.push(d);
            }
        }
        s
    };
    let reference = samples(&saves[0], |s| s.served).median();
    println!(
        "| setup | median ms | p10 | p90 | × runserver local | every worker, median ms | not served in {} s | \
         failed / requests | reloads per save | sends failed |",
        LIMIT.as_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (rig, done) in rigs.iter().zip(saves) {
        let served = samples(done, |s| s.served);
        let everyone = samples(done, |s| s.everyone);
        let sum = |f: fn(&Save) -> usize| done.iter().map(f).sum::<usize>();
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} / {} | {:.2} | {} |",
            rig.setup.label(),
            ms(served.median()),
            ms(served.quantile(0.1)),
            ms(served.quantile(0.9)),
            served.median() / reference,
            ms(everyone.median()),
            done.len() - served.len(),
            sum(|s| s.failures),
            sum(|s| s.requests),
            sum(|s| s.reloads) as f64 / done.len().max(1) as f64,
            if rig.setup.touchwire() { sum(|s| usize::from(s.send_failed)).to_string() } else { "–".into() },
        );
    }
    println!(
        "\n{runs} saves per setup. Timed from just before the write of `mysite/marker.py` on the host to the first \
         answer with the new marker (a poller every {} ms); \"every worker\" is when {WORKERS} concurrent requests \
         held 300 ms each (so each reaches another worker) all carried it. Failed requests (refused, timed out \
         after {} s, not 200) are counted by that poller from the write until {} s after every worker served the \
         save. Reloads per save: lines `{}` / `{}` / `{}` / `{}` in the server's log over the same span.\n",
        POLL.as_millis(),
        REQUEST.as_secs(),
        SETTLE.as_secs_f64(),
        Setup::RunserverLocal.reload_line(),
        Setup::TouchwireFifo.reload_line(),
        Setup::Fast.reload_line(),
        Setup::GunicornHup.reload_line(),
    );
    println!("## The last of two quick saves\n");
    println!(
        "Two saves of one length (`MARKER = \"dNNNaK\"`, then `\"dNNNbK\"`), each followed at once by `touchwire \
         send` in the touchwire setups; the second after a random gap of 50–1,500 ms, or, in every fourth trial, \
         300 ms after the first with both inside one whole second (same mtime second, same size: Python's `.pyc` \
         check cannot tell them apart). A trial counts when every worker serves the second save within {} s of \
         it.\n",
        DOUBLE_LIMIT.as_secs()
    );
    println!("| setup | trials | last save served by every worker | share | lost (gap ms) |\n|---|---:|---:|---:|---|");
    for (rig, done) in rigs.iter().zip(trials) {
        let ok = done.iter().filter(|t| t.served).count();
        let lost: Vec<String> = done
            .iter()
            .filter(|t| !t.served)
            .map(|t| format!("{}{}", t.gap.as_millis(), if t.same_second { " (one second)" } else { "" }))
            .collect();
        println!(
            "| {} | {} | {ok} | {:.0} % | {} |",
            rig.setup.label(),
            done.len(),
            100.0 * ok as f64 / done.len().max(1) as f64,
            if lost.is_empty() { "–".into() } else { lost.join(", ") }
        );
    }
    println!("\nLoad average at the end (1, 5, 15 min): {}.", load_average());
}
