//! End-to-end benchmark with a real uWSGI (DESIGN.md, "What fast means here"): from a file saved on the host to
//! the new response served by uWSGI in the guest, for touchwire's actions, the blog post's pipeline and uWSGI's
//! own reloaders.
//!
//! Run it as root with `cargo bench --bench uwsgi` (a release build); `BENCH_EDITS=40 cargo bench --bench uwsgi`
//! takes more samples (default and minimum 20 per method). The report is Markdown on stdout, progress goes to
//! stderr. Like tests/e2e_uwsgi.rs it builds two network namespaces joined by a veth pair (host 10.213.0.1, guest
//! 10.213.0.2), then moves its own main thread into the host namespace (setns(2)), so the edits, `touchwire
//! watch` and `send`, the blog's `inotifywait | nc` pipeline and the HTTP pollers (threads) all run there without
//! the cost of `ip netns exec`; uWSGI, `touchwire listen` and `nc -l` run in the guest through `ip netns exec`.
//!
//! Seven methods (see [`Method`]), each with its own repository, its own fresh uWSGI (`--master --processes 1
//! --http-socket GUEST:800N`) and, where it has one, its own receiver on GUEST:900N, are measured interleaved
//! round-robin: one edit of `app/value.py` per method per round. Each edit is timed from just before the write
//! to the first HTTP answer carrying the new value, while [`POLLERS`] threads poll the guest in tight loops and
//! count every failed request. Then uWSGI's log (each line stamped on arrival) must show the reload finished and
//! stay quiet for [`QUIET`], and a random pause of up to [`JITTER`] passes, before the next edit.
//!
//! Needs root, iproute2, uwsgi with uwsgi-plugin-python3, git, inotify-tools and OpenBSD netcat. Only the
//! namespace addresses are contacted. Every child leads its own process group and is killed with it (by its PID)
//! when the bench ends, on errors and Ctrl-C too; the namespaces are deleted; every wait has a deadline.

mod common;

use anyhow::{Context, Result, anyhow, bail};
use common::{Guard, Kill, check_interrupted, load_average};
use serde_json::Value;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

const HOST_ADDR: &str = "10.213.0.1";
const GUEST_ADDR: &str = "10.213.0.2";
/// Measured edits per method when `BENCH_EDITS` is not set; also the minimum.
const DEFAULT_EDITS: usize = 20;
/// Uncounted edits per method before the measured ones (first re-exec, first bytecode written).
const WARMUP_EDITS: usize = 2;
/// Deadline for a start-up, a short command, and for the new answer after an edit.
const WAIT: Duration = Duration::from_secs(10);
/// Threads polling the guest's HTTP during each edit.
const POLLERS: usize = 2;
/// Most requests one poller sends for one edit.
const MAX_REQUESTS: usize = 100_000;
/// Quiet time in uWSGI's log, with no reload under way, before the next edit.
const QUIET: Duration = Duration::from_millis(2500);
/// Longest random pause before an edit: one of uWSGI's one-second cycles, so that edits land at random points
/// of them, as a person's saves do. Without it the round-robin schedule locks every edit to the same point of
/// the cycles of its uWSGI (seen in a first run: touch-reload's wait for its check 430–530 ms, never 0–1,000).
const JITTER: u32 = 1000;
/// Longest an edit is followed.
const EDIT_MAX: Duration = Duration::from_secs(30);
/// Text of the uWSGI log lines marking the steps of a graceful reload, in order: the reload begins, the worker is
/// buried, the master re-executes itself, the app is ready, the new worker is spawned.
const STEPS: [&str; 5] = [
    "...gracefully killing workers...",
    "buried after",
    "binary reloading uWSGI",
    "WSGI app 0 (mountpoint='') ready",
    "spawned uWSGI worker 1",
];

fn main() {
    common::install_interrupt_handler();
    if let Err(err) = run() {
        eprintln!("bench uwsgi failed: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let edits = match std::env::var("BENCH_EDITS") {
        Ok(text) => text.trim().parse().with_context(|| format!("BENCH_EDITS={text:?} is not a number"))?,
        Err(_) => DEFAULT_EDITS,
    };
    let edits = usize::max(edits, DEFAULT_EDITS);
    preflight()?;
    let net = Network::create()?;
    net.enter_host()?;
    let env = Env::new()?;
    let mut rigs = Vec::new();
    for (index, method) in Method::ALL.into_iter().enumerate() {
        eprintln!("bench: starting {}", method.label());
        rigs.push(Rig::start(&env, &net, method, index)?);
    }
    println!("# touchwire end-to-end benchmark with uWSGI\n");
    println!("Command: `cargo bench --bench uwsgi` (release build, as root), {edits} measured edits per method.\n");
    machine(&rigs[0].python);
    let results = measure(&rigs, edits)?;
    drop(rigs);
    report(&results, edits);
    eprintln!("bench: done");
    Ok(())
}

/// Root and every tool, or a clear reason to stop.
fn preflight() -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("network namespaces need root: run it as root");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["ip", "uwsgi", "git", "inotifywait", "nc"] {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            bail!(
                "`{tool}` is not installed (apt-get install iproute2 uwsgi uwsgi-plugin-python3 git inotify-tools netcat-openbsd)"
            );
        }
    }
    if !Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() {
        bail!("uWSGI's python3 plugin is not installed (apt-get install uwsgi-plugin-python3)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Processes, the network, the scratch directory
// ---------------------------------------------------------------------------------------------------------------

/// Spawns `cmd` as the leader of its own process group, killed with it (see [`Kill::Group`]).
fn spawn(cmd: &mut Command, what: &str) -> Result<Guard> {
    Guard::spawn(cmd, what, Kill::Group)
}

/// Runs a short command to completion (at most [`WAIT`]); fails with what it said unless it succeeded.
fn run_cmd(cmd: Command, what: &str) -> Result<String> {
    let (status, text) = output_of(cmd, what)?;
    if !status.success() {
        bail!("{what} failed ({status}): {}", text.trim());
    }
    Ok(text)
}

/// Runs a short command to completion (at most [`WAIT`]); returns its status, stdout and stderr.
fn output_of(cmd: Command, what: &str) -> Result<(ExitStatus, String)> {
    common::output_of(cmd, what, WAIT, Kill::Group)
}

/// A line of a child's output with the instant the bench read it.
type Stamped = common::Stamped<String>;

/// A child's output, followed line by line.
type Lines = common::Lines<String>;

/// A touchwire JSON line, or `null`.
fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_default()
}

/// Two network namespaces joined by a veth pair; deleted when dropped (after the children, dropped first).
struct Network {
    host: String,
    guest: String,
}

impl Network {
    fn create() -> Result<Network> {
        let id = std::process::id();
        let net = Network { host: format!("twb-host-{id}"), guest: format!("twb-guest-{id}") };
        let (veth_host, veth_guest) = (format!("twbh{id}"), format!("twbg{id}"));
        let ip = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            run_cmd(cmd, &format!("ip {}", args.join(" ")))
        };
        ip(&["netns", "add", &net.host])?;
        ip(&["netns", "add", &net.guest])?;
        ip(&[
            "-n",
            &net.host,
            "link",
            "add",
            &veth_host,
            "type",
            "veth",
            "peer",
            "name",
            &veth_guest,
            "netns",
            &net.guest,
        ])?;
        for (ns, dev, addr) in [(&net.host, &veth_host, HOST_ADDR), (&net.guest, &veth_guest, GUEST_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Moves the calling thread into the host namespace: call it from the main thread before starting the
    /// threads and children that must live there.
    fn enter_host(&self) -> Result<()> {
        let ns = File::open(format!("/run/netns/{}", self.host)).context("cannot open the host namespace")?;
        // SAFETY: setns(2) on a descriptor we hold open; it changes only this thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot enter the host namespace");
        }
        Ok(())
    }

    /// `program` run in the guest namespace.
    fn guest(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.guest, program]).stdin(Stdio::null());
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in [&self.host, &self.guest] {
            // Not through Guard: this runs after Ctrl-C too.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "del", ns]).stdin(Stdio::null()).stdout(Stdio::null());
            let deleted = cmd.spawn().and_then(|mut child| child.wait_timeout(WAIT));
            if !matches!(deleted, Ok(Some(status)) if status.success()) {
                eprintln!("bench: cannot delete network namespace {ns} ({deleted:?}): `ip netns del {ns}`");
            }
        }
    }
}

/// The scratch directory: repositories, the token, FIFOs, touch files, logs, an empty home.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Result<Env> {
        let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
        fs::create_dir_all(dir.path().join("home/.config")).context("cannot create the scratch home")?;
        let token = touchwire::auth::random_hex(32)?;
        fs::write(dir.path().join("token"), format!("{token}\n")).context("cannot write the token file")?;
        Ok(Env { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    fn log(&self, name: &str) -> Result<File> {
        File::create(self.path(&format!("{name}.stderr"))).context("cannot create a log file")
    }

    fn said(&self, name: &str) -> String {
        fs::read_to_string(self.path(&format!("{name}.stderr"))).unwrap_or_default()
    }

    /// `touchwire ARGS` with a clean environment, so no config of the developer's leaks in.
    fn touchwire(&self, mut cmd: Command) -> Command {
        cmd.env("HOME", self.path("home")).env("XDG_CONFIG_HOME", self.path("home/.config"));
        for var in ["TOUCHWIRE_TO", "TOUCHWIRE_TOKEN_FILE", "TOUCHWIRE_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// The app's repository: `wsgi.py` answers `app/value.py`'s VALUE; `__pycache__/` is ignored.
    fn app_repo(&self, repo: &Path) -> Result<()> {
        fs::create_dir_all(repo.join("app")).context("cannot create the repository")?;
        for (file, text) in [
            (".gitignore", "__pycache__/\n"),
            ("app/__init__.py", ""),
            ("app/value.py", "VALUE = 'start'\n"),
            ("wsgi.py", APP),
        ] {
            fs::write(repo.join(file), text).with_context(|| format!("cannot write {file}"))?;
        }
        let identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"];
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[&identity[..], &["commit", "-q", "-m", "app"]].concat(),
        ] {
            let mut cmd = Command::new("git");
            cmd.args(args).current_dir(repo).env("HOME", self.path("home")).env("GIT_CONFIG_NOSYSTEM", "1");
            run_cmd(cmd, &format!("git {}", args.join(" ")))?;
        }
        Ok(())
    }
}

const APP: &str = "from app.value import VALUE\n\n\ndef application(environ, start_response):\n    \
                   start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [VALUE.encode()]\n";

/// The body of `GET /` when the answer is 200; anything else is an error.
fn get(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("answered {status:?}");
    }
    Ok(body.to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// The methods and their rigs
// ---------------------------------------------------------------------------------------------------------------

/// The ways of getting an edit into the running app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    WatchTouch,
    WatchFifo,
    WatchFifoNoPoke,
    SendFifo,
    Blog,
    PyAutoreload,
    FsReload,
}

impl Method {
    const ALL: [Method; 7] = [
        Method::WatchTouch,
        Method::WatchFifo,
        Method::WatchFifoNoPoke,
        Method::SendFifo,
        Method::Blog,
        Method::PyAutoreload,
        Method::FsReload,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::WatchTouch => "1. watch + touch",
            Method::WatchFifo => "2. watch + fifo + poke",
            Method::WatchFifoNoPoke => "3. watch + fifo, no poke",
            Method::SendFifo => "4. send --path + fifo + poke",
            Method::Blog => "5. blog post: inotifywait + nc",
            Method::PyAutoreload => "6. uWSGI py-autoreload",
            Method::FsReload => "7. uWSGI fs-reload",
        }
    }

    /// The set-up, with `REPO`, `FILE`, `FIFO` and the ports for the values.
    fn shown(self) -> &'static str {
        match self {
            Method::WatchTouch => {
                "`touchwire watch --to GUEST:9001 REPO`; guest `touchwire listen --touch FILE`; uWSGI `--touch-reload FILE`"
            }
            Method::WatchFifo => {
                "`touchwire watch --to GUEST:9002 REPO`; guest `touchwire listen --fifo FIFO` (poke on); uWSGI `--master-fifo FIFO`"
            }
            Method::WatchFifoNoPoke => {
                "`touchwire watch --to GUEST:9003 REPO`; guest `touchwire listen --fifo FIFO --no-poke`; uWSGI `--master-fifo FIFO`"
            }
            Method::SendFifo => {
                "`touchwire send --path REPO/app/value.py --to GUEST:9004` spawned right after the save; guest `touchwire \
                 listen --fifo FIFO` (poke on); uWSGI `--master-fifo FIFO`"
            }
            Method::Blog => {
                "`inotifywait -m -r -q -e close_write,moved_to --format . REPO \\| while read -r _; do echo . \\| nc -N \
                 GUEST 9005; done`; guest `nc -l -k GUEST 9005 > FILE`; uWSGI `--touch-reload FILE`"
            }
            Method::PyAutoreload => "uWSGI `--py-autoreload 1`, nothing else",
            Method::FsReload => "uWSGI `--fs-reload REPO/app` (the app's directory), nothing else",
        }
    }

    /// DESIGN.md's figure for this method, in ms.
    fn claim(self) -> &'static str {
        match self {
            Method::WatchTouch | Method::Blog => "1,499 (touch-reload)",
            Method::WatchFifo | Method::SendFifo => "82–100",
            Method::WatchFifoNoPoke => "1,075 (1,072 in the fifo rule)",
            Method::PyAutoreload => "1,563",
            Method::FsReload => "1,084",
        }
    }

    fn touchwire(self) -> bool {
        matches!(self, Method::WatchTouch | Method::WatchFifo | Method::WatchFifoNoPoke | Method::SendFifo)
    }
}

/// One method running: its repository, its uWSGI (and log), its receiver's and watcher's events, its children.
struct Rig {
    method: Method,
    index: usize,
    repo: PathBuf,
    http: SocketAddr,
    remote: String,
    token: String,
    uwsgi: Lines,
    receiver: Option<Lines>,
    watcher: Option<Lines>,
    /// uWSGI's "Python version" line.
    python: String,
    _children: Vec<Guard>,
}

impl Rig {
    fn start(env: &Env, net: &Network, method: Method, index: usize) -> Result<Rig> {
        let repo = env.path(&format!("repo{}", index + 1));
        env.app_repo(&repo)?;
        let root = repo.to_string_lossy().into_owned();
        let (reload, fifo) = (env.arg(&format!("app{}.reload", index + 1)), env.arg(&format!("app{}.fifo", index + 1)));
        let remote = format!("{GUEST_ADDR}:{}", 9001 + index);
        let token = env.arg("token");
        let mut children = Vec::new();
        match method {
            Method::Blog => {
                let mut nc = net.guest("sh");
                nc.args(["-c", &format!("exec nc -l -k {GUEST_ADDR} {} > {reload}", 9001 + index)]);
                children.push(spawn(nc.stdout(Stdio::null()).stderr(env.log("nc-l")?), "nc -l -k")?);
                // Listening proves the shell created FILE: uWSGI must find it. The empty connection writes nothing.
                let addr: SocketAddr = format!("{GUEST_ADDR}:{}", 9001 + index).parse()?;
                let deadline = Instant::now() + WAIT;
                while TcpStream::connect_timeout(&addr, WAIT).is_err() {
                    check_interrupted()?;
                    if Instant::now() > deadline {
                        bail!("nc -l -k never listened on {addr}: {}", env.said("nc-l"));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
            _ => fs::write(&reload, "").context("cannot create the touch file")?,
        }
        let http: SocketAddr = format!("{GUEST_ADDR}:{}", 8000 + index).parse()?;
        let mut uwsgi = net.guest("uwsgi");
        uwsgi.args(["--plugin", "python3", "--master", "--processes", "1", "--http-socket", &http.to_string()]);
        uwsgi.args(["--chdir", &root, "--pythonpath", &root, "--wsgi-file", "wsgi.py", "--die-on-term"]);
        uwsgi.arg("--disable-logging");
        match method {
            Method::WatchTouch | Method::Blog => uwsgi.args(["--touch-reload", &reload]),
            Method::PyAutoreload => uwsgi.args(["--py-autoreload", "1"]),
            Method::FsReload => uwsgi.args(["--fs-reload", &format!("{root}/app")]),
            _ => uwsgi.args(["--master-fifo", &fifo]),
        };
        let mut child = spawn(uwsgi.stdout(Stdio::null()).stderr(Stdio::piped()), "uwsgi")?;
        let log = Lines::follow(child.child.stderr.take().context("no stderr pipe")?, Some);
        children.push(child);
        let deadline = Instant::now() + WAIT;
        while get(http).ok().as_deref() != Some("start") {
            check_interrupted()?;
            if Instant::now() > deadline {
                let said: Vec<String> = log.drain().into_iter().map(|(_, line)| line).collect();
                bail!("uWSGI never served the app on {http}; it said:\n{}", said.join("\n"));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let python = log.drain().into_iter().find(|(_, l)| l.starts_with("Python version")).map(|(_, l)| l);
        let mut rig = Rig {
            method,
            index,
            repo,
            http,
            remote,
            token,
            uwsgi: log,
            receiver: None,
            watcher: None,
            python: python.unwrap_or_default(),
            _children: children,
        };
        if method.touchwire() {
            let name = format!("listen{}", index + 1);
            let mut listen = net.guest(env!("CARGO_BIN_EXE_touchwire"));
            listen.args(["listen", "--addr", &rig.remote, "--token-file", &rig.token, "--json"]);
            match method {
                Method::WatchTouch => listen.args(["--touch", &reload]),
                Method::WatchFifoNoPoke => listen.args(["--fifo", &fifo, "--no-poke"]),
                _ => listen.args(["--fifo", &fifo]),
            };
            let mut cmd = env.touchwire(listen);
            let mut child = spawn(cmd.stdout(Stdio::piped()).stderr(env.log(&name)?), "touchwire listen")?;
            let events = Lines::follow(child.child.stdout.take().context("no stdout pipe")?, Some);
            rig._children.push(child);
            events
                .wait_for(WAIT, |line: &String| json(line)["event"] == "listening")
                .ok_or_else(|| anyhow!("touchwire listen did not start; it said:\n{}", env.said(&name)))?;
            rig.receiver = Some(events);
        }
        if method != Method::SendFifo && method.touchwire() {
            let name = format!("watch{}", index + 1);
            let mut watch = Command::new(env!("CARGO_BIN_EXE_touchwire"));
            watch
                .args(["watch", "--json", "--to", &rig.remote, "--token-file", &rig.token, &root])
                .current_dir(&rig.repo);
            let mut cmd = env.touchwire(watch);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(env.log(&name)?);
            let mut child = spawn(&mut cmd, "touchwire watch")?;
            let events = Lines::follow(child.child.stdout.take().context("no stdout pipe")?, Some);
            rig._children.push(child);
            for event in ["ready", "connected"] {
                events
                    .wait_for(WAIT, |line: &String| json(line)["event"] == event)
                    .ok_or_else(|| anyhow!("touchwire watch: no {event} event; it said:\n{}", env.said(&name)))?;
            }
            rig.watcher = Some(events);
        }
        if method == Method::Blog {
            let pipeline = format!(
                "inotifywait -m -r -q -e close_write,moved_to --format . {root} | while read -r _; do echo . | nc -N \
                 {GUEST_ADDR} {}; done",
                9001 + index
            );
            let mut sh = Command::new("sh");
            sh.args(["-c", &pipeline]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(env.log("pipeline")?);
            rig._children.push(spawn(&mut sh, "the inotifywait | nc pipeline")?);
        }
        Ok(rig)
    }

    /// Writes a fresh value into `app/value.py` (and for [`Method::SendFifo`] runs `touchwire send --path`),
    /// polls until every poller got the new value, then follows uWSGI's log until the reload is over and quiet.
    fn edit(&self, round: usize) -> Result<Edit> {
        thread::sleep(Duration::from_millis((getrandom::u32()? % JITTER).into()));
        let (uwsgi, receiver, watcher) = (&self.uwsgi, self.receiver.as_ref(), self.watcher.as_ref());
        for lines in [Some(uwsgi), receiver, watcher].into_iter().flatten() {
            lines.drain();
        }
        let value = format!("r{round}m{}", self.index + 1);
        let file = self.repo.join("app/value.py");
        let deadline = Instant::now() + WAIT;
        let (start, polls) = thread::scope(|scope| -> Result<(Instant, Vec<Poll>)> {
            let (http, value) = (self.http, &value);
            let pollers: Vec<_> = (0..POLLERS).map(|_| scope.spawn(move || poll(http, value, deadline))).collect();
            let start = Instant::now();
            fs::write(&file, format!("VALUE = '{value}'\n")).context("cannot write app/value.py")?;
            if self.method == Method::SendFifo {
                let mut send = Command::new(env!("CARGO_BIN_EXE_touchwire"));
                send.args(["send", "-q", "--to", &self.remote, "--token-file", &self.token, "--path"]).arg(&file);
                send.current_dir(&self.repo).stdin(Stdio::null()).stdout(Stdio::null());
                let status = spawn(&mut send, "touchwire send")?.wait_for(WAIT, "touchwire send --path")?;
                if !status.success() {
                    bail!("touchwire send --path failed: {status}");
                }
            }
            Ok((start, pollers.into_iter().map(|p| p.join().unwrap_or_default()).collect()))
        })?;
        let mut edit =
            Edit { served: polls.iter().filter_map(|p| p.seen).min().map(|at| at - start), ..Edit::default() };
        for p in polls {
            edit.requests += p.requests;
            edit.failures += p.failures;
            edit.first_failure = edit.first_failure.or(p.first_failure.map(|(at, err)| (at - start, err)));
            edit.answer_time += p.answer_time;
            edit.answers += p.answers;
        }
        let log = follow_reload(uwsgi, start)?;
        edit.reloads = log.iter().filter(|(_, line)| line.contains(STEPS[0])).count();
        edit.steps =
            STEPS.iter().map(|text| log.iter().find(|(_, l)| l.contains(text)).map(|(at, _)| *at - start)).collect();
        for (at, line) in receiver.map(Lines::drain).unwrap_or_default() {
            let event = json(&line);
            if event["event"] == "reload" {
                edit.actions += 1;
                edit.action.get_or_insert(at - start);
            } else if event["event"] == "poke_end" {
                edit.poke = Some((event["ms"].as_u64().unwrap_or(0), event["why"].as_str().unwrap_or("?").to_string()));
            }
        }
        edit.triggers =
            watcher.map(Lines::drain).unwrap_or_default().iter().filter(|(_, l)| json(l)["event"] == "trigger").count();
        Ok(edit)
    }
}

/// uWSGI's log lines from now until it has been quiet for [`QUIET`] with no reload under way (at most until
/// [`EDIT_MAX`] after `start`).
fn follow_reload(uwsgi: &Lines, start: Instant) -> Result<Vec<Stamped>> {
    let mut log: Vec<Stamped> = Vec::new();
    let mut last = Instant::now();
    loop {
        check_interrupted()?;
        let wait = (last + QUIET).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match uwsgi.next(wait) {
            Ok((at, line)) => {
                last = last.max(at);
                log.push((at, line));
            }
            Err(RecvTimeoutError::Timeout) => {
                let under_way = log.iter().rposition(|(_, l)| l.contains(STEPS[0]))
                    > log.iter().rposition(|(_, l)| l.contains(STEPS[4]));
                if !under_way || start.elapsed() > EDIT_MAX {
                    return Ok(log);
                }
                last = Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => {
                check_interrupted()?;
                bail!("uWSGI stopped");
            }
        }
    }
}

/// What one poller saw during one edit.
#[derive(Debug, Default)]
struct Poll {
    seen: Option<Instant>,
    requests: usize,
    failures: usize,
    first_failure: Option<(Instant, String)>,
    /// Time spent on requests the old app answered, and how many: the polling resolution.
    answer_time: Duration,
    answers: usize,
}

/// Sends `GET /` in a tight loop, one connection per request, until the answer is `expected`, `deadline`, or
/// [`MAX_REQUESTS`].
fn poll(addr: SocketAddr, expected: &str, deadline: Instant) -> Poll {
    let mut poll = Poll::default();
    while poll.requests < MAX_REQUESTS && Instant::now() < deadline && !common::interrupted() {
        let began = Instant::now();
        poll.requests += 1;
        match get(addr) {
            Ok(body) if body == expected => {
                poll.seen = Some(Instant::now());
                break;
            }
            Ok(_) => {
                poll.answer_time += began.elapsed();
                poll.answers += 1;
            }
            Err(err) => {
                poll.failures += 1;
                poll.first_failure.get_or_insert_with(|| (began, format!("{err:#}")));
            }
        }
    }
    poll
}

/// What one edit caused, each time measured from just before the write.
#[derive(Debug, Default)]
struct Edit {
    /// The first answer with the new value.
    served: Option<Duration>,
    requests: usize,
    failures: usize,
    /// When the first failed request was sent, and its error.
    first_failure: Option<(Duration, String)>,
    answer_time: Duration,
    answers: usize,
    /// The first of each of [`STEPS`] in uWSGI's log.
    steps: Vec<Option<Duration>>,
    /// Reloads uWSGI began ("gracefully killing workers") before it was quiet again.
    reloads: usize,
    /// The receiver's first `reload` event (its action done), and how many there were.
    action: Option<Duration>,
    actions: usize,
    /// `trigger` events of the watcher.
    triggers: usize,
    /// The receiver's `poke_end` event: how long the poke lasted, and why it ended.
    poke: Option<(u64, String)>,
}

/// Every method's measured edits, in [`Method::ALL`] order.
type Results = Vec<(Method, Vec<Edit>)>;

fn measure(rigs: &[Rig], edits: usize) -> Result<Results> {
    let mut results: Results = rigs.iter().map(|rig| (rig.method, Vec::new())).collect();
    eprintln!("bench: {WARMUP_EDITS} warm-up + {edits} edits per method, round-robin (about 4 s per edit)");
    for round in 0..WARMUP_EDITS + edits {
        for (rig, (_, done)) in rigs.iter().zip(&mut results) {
            let edit = rig.edit(round)?;
            if round >= WARMUP_EDITS {
                done.push(edit);
            }
        }
        eprintln!("bench:   round {}/{}", round + 1, WARMUP_EDITS + edits);
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------------------------

/// The first line of `program ARGS`.
fn first_line(program: &str, args: &[&str]) -> String {
    // Not run_cmd: `inotifywait --help` exits 1.
    common::first_line(program, args, WAIT, Kill::Group).unwrap_or_else(|e| format!("{e:#}"))
}

fn machine(python: &str) {
    println!("## Machine\n");
    println!("- CPU: {}", common::cpu_model());
    println!("- logical CPUs available: {}", common::logical_cpus());
    println!("- kernel: {}", common::kernel());
    println!("- touchwire: {}", first_line(env!("CARGO_BIN_EXE_touchwire"), &["--version"]));
    println!("- uWSGI: {} (python3 plugin; {python})", first_line("uwsgi", &["--version"]));
    println!("- inotifywait: {}", first_line("inotifywait", &["--help"]));
    println!("- nc: {}", first_line("nc", &["-h"]));
    println!("- load average at the start (1, 5, 15 min): {}", load_average());
    println!("- date: {}\n", first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
}

/// The `p` quantile (0 to 1) of `values` in ms, linearly interpolated; `None` without values.
fn quantile(values: impl Iterator<Item = Duration>, p: f64) -> Option<f64> {
    let ms: Vec<f64> = values.map(|d| d.as_secs_f64() * 1000.0).collect();
    (!ms.is_empty()).then(|| common::quantile(&ms, p))
}

fn ms(value: Option<f64>) -> String {
    value.map_or("–".into(), |ms| format!("{ms:.0}"))
}

/// The median over `edits` of the time from `from` to `to` (both picked from an edit), where both are known.
fn span<'a>(
    edits: impl IntoIterator<Item = &'a Edit>,
    from: impl Fn(&Edit) -> Option<Duration>,
    to: impl Fn(&Edit) -> Option<Duration>,
) -> Option<f64> {
    quantile(edits.into_iter().filter_map(|e| to(e)?.checked_sub(from(e)?)), 0.5)
}

fn step(i: usize) -> impl Fn(&Edit) -> Option<Duration> {
    move |e: &Edit| e.steps.get(i).copied().flatten()
}

fn zero(_: &Edit) -> Option<Duration> {
    Some(Duration::ZERO)
}

fn report(results: &Results, edits: usize) {
    println!("## Save → new answer served\n");
    println!(
        "Each method has its own copy of the app (a git repository: `wsgi.py` returns `app/value.py`'s `VALUE`), \
         its own fresh uWSGI in the guest namespace (`uwsgi --plugin python3 --master --processes 1 --http-socket \
         {GUEST_ADDR}:800N --wsgi-file wsgi.py --die-on-term --disable-logging` plus the method's option), and \
         for the touchwire methods its own receiver on {GUEST_ADDR}:900N with a token (auth on). The methods run \
         side by side, interleaved round-robin: one edit each per round, {WARMUP_EDITS} uncounted warm-up rounds, \
         then {edits} measured. An edit writes a fresh `VALUE` into `app/value.py` (`std::fs::write`, in place) in \
         the host namespace; the time runs from just before the write to the first HTTP answer carrying the new \
         value. The next edit waits until uWSGI's log shows the reload finished (`spawned uWSGI worker 1`), \
         then {:.1} s of quiet with no reload under way, then a random pause of 0–{JITTER} ms, so that edits land \
         at random points of uWSGI's one-second cycles, as a person's saves do.\n",
        QUIET.as_secs_f64()
    );
    println!("| method | set-up |\n|---|---|");
    for (method, _) in results {
        println!("| {} | {} |", method.label(), method.shown());
    }
    println!();
    println!(
        "| method | median ms | p90 ms | min ms | max ms | edits | no new answer within {} s | failed requests / \
         requests | uWSGI reloads per edit | receiver actions per edit |",
        WAIT.as_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (method, done) in results {
        let served = || done.iter().filter_map(|e| e.served);
        let total = |f: fn(&Edit) -> usize| done.iter().map(f).sum::<usize>();
        let per_edit = |f: fn(&Edit) -> usize| format!("{:.2}", total(f) as f64 / done.len().max(1) as f64);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            method.label(),
            ms(quantile(served(), 0.5)),
            ms(quantile(served(), 0.9)),
            ms(quantile(served(), 0.0)),
            ms(quantile(served(), 1.0)),
            done.len(),
            done.len() - served().count(),
            total(|e| e.failures),
            total(|e| e.requests),
            per_edit(|e| e.reloads),
            if method.touchwire() { per_edit(|e| e.actions) } else { "–".into() },
        );
        for edit in done {
            if let Some((at, err)) = &edit.first_failure {
                let at_step = |i: usize| ms(step(i)(edit).map(|d| d.as_secs_f64() * 1000.0));
                failures.push(format!(
                    "- {}: a request sent {} ms after the edit failed: {err} (reload began at {} ms, worker buried at \
                     {}, binary reloading at {}, worker spawned at {})",
                    method.label(),
                    ms(Some(at.as_secs_f64() * 1000.0)),
                    at_step(0),
                    at_step(1),
                    at_step(2),
                    at_step(4)
                ));
            }
        }
    }
    println!();
    for line in &failures {
        println!("{line}");
    }
    let all = || results.iter().flat_map(|(_, done)| done);
    let (time, answers) = all().fold((Duration::ZERO, 0), |(t, n), e| (t + e.answer_time, n + e.answers));
    println!(
        "- Polling: {POLLERS} threads in the host namespace, each a tight loop of `GET /` over HTTP/1.0, one \
         connection per request, from just before the write until it got the new value itself (at most \
         {MAX_REQUESTS} requests or {} s). A request the running app answered took {:.2} ms on average ({answers} \
         requests), so the first new answer is seen within about that of being possible; requests sent while no \
         worker runs wait in the listen backlog (the master keeps the socket across its re-exec) and are the first \
         the new worker answers. \"failed requests\" counts connection errors and non-200 answers over all of that, \
         the whole reload included; the list above gives, for each edit with one, when its first failed request \
         was sent, next to the moments of uWSGI's reload.",
        WAIT.as_secs(),
        time.as_secs_f64() * 1000.0 / answers.max(1) as f64
    );
    println!(
        "- \"uWSGI reloads per edit\" counts `...gracefully killing workers...` lines from the write until uWSGI was \
         quiet again: more than 1 means one save reloaded the app more than once.\n"
    );
    where_the_time_goes(results);
}

fn where_the_time_goes(results: &Results) {
    println!("## Where the time goes\n");
    println!(
        "Medians over the measured edits, in ms, of the time between two moments of each reload. uWSGI's own \
         `--logdate` prefixes lines with a strftime date, whole seconds only, so instead the bench reads uWSGI's \
         stderr through a pipe and stamps each line as it arrives (uWSGI writes its log unbuffered; the stamp may \
         lag by the bench's thread scheduling, below a millisecond when idle). The receiver's `reload` event (its \
         `--json` output, stamped the same way) is when its action was done. Medians of the parts need not add up \
         to the median of the whole.\n"
    );
    let cols = [
        "edit → receiver action done",
        "edit → reload begins",
        "reload begins → worker buried",
        "buried → binary reloading",
        "binary reloading → WSGI app ready",
        "app ready → worker spawned",
        "worker spawned → new answer",
        "edit → new answer",
    ];
    println!("| method | {} |\n|---|{}", cols.join(" | "), "---:|".repeat(cols.len()));
    for (method, done) in results {
        let served = |e: &Edit| e.served;
        let cells = [
            span(done, zero, |e| e.action),
            span(done, zero, step(0)),
            span(done, step(0), step(1)),
            span(done, step(1), step(2)),
            span(done, step(2), step(3)),
            span(done, step(3), step(4)),
            span(done, step(4), served),
            span(done, zero, served),
        ];
        println!("| {} | {} |", method.label(), cells.map(ms).join(" | "));
    }
    println!();
    let of = |m: Method| &results.iter().find(|(method, _)| *method == m).expect("every method ran").1;
    let touch_begin = span(of(Method::WatchTouch), zero, step(0));
    println!(
        "- **touch-reload's once-a-second check**: uWSGI's master stats the touch file once a second, so a touch \
         waits 0–1,000 ms (500 on average) before the reload begins: measured edit → reload begins {} ms with \
         touchwire's touch, {} ms with the blog's pipeline, against {} ms with the fifo (written the moment the \
         receiver acts). py-autoreload waits the same way for its scan of the modules' mtimes, once a second in \
         the worker ({} ms); fs-reload's inotify monitor is immediate ({} ms).",
        ms(touch_begin),
        ms(span(of(Method::Blog), zero, step(0))),
        ms(span(of(Method::WatchFifo), zero, step(0))),
        ms(span(of(Method::PyAutoreload), zero, step(0))),
        ms(span(of(Method::FsReload), zero, step(0))),
    );
    let buried = |m: Method| ms(span(of(m), step(0), step(1)));
    println!(
        "- **The reaping of stopped workers**: in a graceful reload the master asks the worker to stop, then notices \
         that it has stopped only on its next wake-up, at the latest its once-a-second tick: reload begins → worker \
         buried {} ms with the fifo and no poke, {} ms with fs-reload, {} ms with touch-reload, {} ms with \
         py-autoreload. The poke's bytes wake the master every 2 ms: {} ms with watch + fifo + poke, {} ms with send \
         + fifo + poke: this is what separates methods 2 and 3.",
        buried(Method::WatchFifoNoPoke),
        buried(Method::FsReload),
        buried(Method::WatchTouch),
        buried(Method::PyAutoreload),
        buried(Method::WatchFifo),
        buried(Method::SendFifo),
    );
    let all: Vec<&Edit> = results.iter().flat_map(|(_, done)| done).collect();
    let import = span(all.iter().copied(), step(2), step(3));
    println!(
        "- **Re-exec and the app's import**: from `binary reloading uWSGI...` to `WSGI app 0 ... ready` the master \
         re-executes uWSGI, starts Python and imports the app (this app imports only its one module): {} ms over \
         all methods; forking the worker and its first answer add the last two columns.",
        ms(import)
    );
    let pokes: Vec<&(u64, String)> = all.iter().filter_map(|e| e.poke.as_ref()).collect();
    let mut whys: Vec<String> = pokes.iter().map(|(_, why)| why.clone()).collect();
    whys.sort();
    whys.dedup();
    let whys: Vec<String> =
        whys.iter().map(|w| format!("{w} ×{}", pokes.iter().filter(|(_, x)| x == w).count())).collect();
    println!(
        "- **The poke itself** (the receivers' `poke_end` events): median {} ms, ended by: {}.",
        ms(quantile(pokes.iter().map(|(ms, _)| Duration::from_millis(*ms)), 0.5)),
        if whys.is_empty() { "–".into() } else { whys.join(", ") }
    );
    let triggers: usize = all.iter().map(|e| e.triggers).sum();
    let watched = results.iter().filter(|(m, _)| m.touchwire() && *m != Method::SendFifo);
    let watched_edits: usize = watched.map(|(_, done)| done.len()).sum();
    println!(
        "- **The watcher's debounce and the acknowledgement**: `touchwire watch` sends a save at once, at the close \
         of the write (the 30 ms debounce only gathers what follows into a trailing trigger), over a connection \
         kept open and already authenticated, and the receiver acts before it answers: edit → action done {} ms \
         (watch + touch), {} ms (watch + fifo); {triggers} `trigger` events for {watched_edits} edits. `send --path` \
         is a fresh process per save (start, git relevance check, connect, challenge–response): {} ms. Nothing \
         waits for the acknowledgement before the reload starts.\n",
        ms(span(of(Method::WatchTouch), zero, |e| e.action)),
        ms(span(of(Method::WatchFifo), zero, |e| e.action)),
        ms(span(of(Method::SendFifo), zero, |e| e.action)),
    );
    println!("## DESIGN.md's figures and this run\n");
    println!("| method | DESIGN.md ms | measured median ms | p90 ms |\n|---|---:|---:|---:|");
    for (method, done) in results {
        let served = || done.iter().filter_map(|e| e.served);
        println!(
            "| {} | {} | {} | {} |",
            method.label(),
            method.claim(),
            ms(quantile(served(), 0.5)),
            ms(quantile(served(), 0.9))
        );
    }
    println!("\nLoad average at the end (1, 5, 15 min): {}.", load_average());
}
