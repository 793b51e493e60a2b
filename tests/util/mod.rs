//! Test harness: runs the real `touchwire` binary in a clean environment, starts receivers on
//! ephemeral loopback ports, and speaks the wire protocol by hand. Failures print what the
//! receiver said, so a red test explains itself; and every daemon an [`Env`] starts is logged
//! there, so a failing test prints each one's command, directory, stdout and stderr (as
//! ripgrep's tests/util.rs does), the watcher's as well as the receiver's.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory whose user config dir is empty, so the developer's own config never leaks in.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// What each daemon started here printed, dumped when the test fails.
    daemons: Arc<Mutex<Vec<DaemonLog>>>,
}

/// One daemon's command and output, kept for a failing test's report.
struct DaemonLog {
    command: String,
    cwd: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Env {
    /// A failing test (a panic under way) prints every daemon's command and output.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let daemons = self.daemons.lock().unwrap_or_else(|p| p.into_inner());
        for (i, daemon) in daemons.iter().enumerate() {
            let stdout = daemon.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let stderr = daemon.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
            eprintln!(
                "\n===== daemon {i}: {}\ncwd: {}\n----- stdout:\n{stdout}----- stderr:\n{stderr}=====",
                daemon.command,
                daemon.cwd.display()
            );
        }
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        std::fs::create_dir_all(dir.path().join("xdg")).unwrap();
        Env { dir, daemons: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `touchwire` command running in `cwd` with a clean environment.
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_touchwire"));
        cmd.args(args).current_dir(cwd).env("XDG_CONFIG_HOME", self.join("xdg")).env("HOME", self.path());
        for var in ["TOUCHWIRE_TO", "TOUCHWIRE_TOKEN_FILE", "TOUCHWIRE_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `touchwire ARGS` in the env's directory to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(self.path(), args)
    }

    /// Runs `touchwire ARGS` in `cwd` to completion.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Run {
        let output = self.command(cwd, args).stdin(Stdio::null()).output().expect("cannot run touchwire");
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `touchwire listen --addr 127.0.0.1:0 --json ARGS` in the env's directory.
    pub fn listen(&self, args: &[&str]) -> Listener {
        self.listen_in(self.path(), args)
    }

    /// Starts a receiver in `cwd` and waits for the address it bound.
    pub fn listen_in(&self, cwd: &Path, args: &[&str]) -> Listener {
        self.listen_at("127.0.0.1:0", cwd, args)
    }

    /// Starts a receiver on exactly `addr` (one restarted on its old port) in `cwd`.
    pub fn listen_at(&self, addr: &str, cwd: &Path, args: &[&str]) -> Listener {
        let mut full = vec!["listen", "--addr", addr, "--json"];
        full.extend_from_slice(args);
        let mut listener = self.spawn(cwd, &full);
        let first = listener.wait_event("listening");
        listener.addr = first["addr"].as_str().unwrap().to_string();
        listener
    }

    /// Starts `touchwire watch --json ARGS` in `cwd` and waits until it is ready.
    pub fn watch_in(&self, cwd: &Path, args: &[&str]) -> (Daemon, Value) {
        let mut full = vec!["watch", "--json"];
        full.extend_from_slice(args);
        let watcher = self.spawn(cwd, &full);
        let ready = watcher.wait_event("ready");
        (watcher, ready)
    }

    /// Starts a long-running `touchwire ARGS` whose stdout carries JSON events.
    pub fn spawn(&self, cwd: &Path, args: &[&str]) -> Daemon {
        self.spawn_command(self.command(cwd, args), cwd, args)
    }

    /// Starts `WRAPPER... touchwire ARGS` (such as `unshare -U -r sh -c '...; exec "$0" "$@"'`),
    /// in the same clean environment, as a daemon of this env.
    pub fn spawn_via(&self, wrapper: &[&str], cwd: &Path, args: &[&str]) -> Daemon {
        let direct = self.command(cwd, args);
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_touchwire")).args(args).current_dir(cwd);
        for (key, value) in direct.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let mut shown: Vec<&str> = wrapper.to_vec();
        shown.push("touchwire");
        shown.extend_from_slice(args);
        self.spawn_command(cmd, cwd, &shown)
    }

    /// Starts `cmd` as a daemon of this env, its output followed and logged.
    fn spawn_command(&self, mut cmd: Command, cwd: &Path, args: &[&str]) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start touchwire");
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr_log);
        let stderr = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, events) = channel();
        let stdout = child.stdout.take().unwrap();
        let stdout_log = Arc::new(Mutex::new(String::new()));
        self.daemons.lock().unwrap_or_else(|p| p.into_inner()).push(DaemonLog {
            command: format!("{args:?}"),
            cwd: cwd.to_path_buf(),
            stdout: Arc::clone(&stdout_log),
            stderr: Arc::clone(&stderr_log),
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut log) = stdout_log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let args = args.iter().map(|s| s.to_string()).collect();
        Daemon { child, args, addr: String::new(), events, stderr: stderr_log, stderr_reader: Some(stderr_reader) }
    }
}

/// Runs `command` (`what` names it in the failure) to completion; panics with its status,
/// stdout and stderr unless it succeeded.
#[track_caller]
pub fn succeed(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.output().unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A finished `touchwire` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing everything the command printed when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "touchwire {:?} exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "touchwire {:?}: stderr lacks {needle:?}:\n{}", self.args, self.stderr);
        self
    }

    /// Asserts that stdout contains `needle`.
    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &Run {
        assert!(self.stdout.contains(needle), "touchwire {:?}: stdout lacks {needle:?}:\n{}", self.args, self.stdout);
        self
    }
}

/// A running receiver.
pub type Listener = Daemon;

/// A running `touchwire` (receiver or watcher); killed (by its own PID) when dropped.
pub struct Daemon {
    child: Child,
    args: Vec<String>,
    /// The bound address, for a receiver.
    pub addr: String,
    events: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Joined once the process has exited, so that its last lines are in `stderr`.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Everything the receiver wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its process ID (for reading its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it bound.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn next_event(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits for the next event named `name`, skipping others; panics with the log after [`WAIT`].
    #[track_caller]
    pub fn wait_event(&self, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_event(left) {
                Some(event) if event["event"] == name => return event,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no {name:?} event within {WAIT:?} from touchwire {:?}; its stderr:\n{}", self.args, self.stderr())
    }

    /// All events named `name` that arrive within `window`.
    pub fn named_within(&self, name: &str, window: Duration) -> Vec<Value> {
        self.events_within(window).into_iter().filter(|e| e["event"] == name).collect()
    }

    /// All events that arrive within `window`.
    pub fn events_within(&self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_event(left) {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }

    /// Sends SIGTERM (unless it has exited already) and waits (at most [`WAIT`]) for the process
    /// to exit; returns its exit code, with all it wrote on stderr read.
    pub fn terminate(&mut self) -> Option<i32> {
        if !self.is_alive() {
            return self.exited();
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return self.exited();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The exit code of a process that has exited, once its stderr is read to the end.
    fn exited(&mut self) -> Option<i32> {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.child.try_wait().ok().flatten().and_then(|status| status.code())
    }

    /// Sends `signal` to the process, if it still runs (never to a reaped, maybe reused, PID).
    pub fn signal(&mut self, signal: libc::c_int) {
        if let (true, Ok(pid)) = (self.is_alive(), libc::pid_t::try_from(self.child.id())) {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits (at most [`WAIT`]) until stderr holds `needle`: stderr is read on a thread of its
    /// own, so a line may land there a moment after the JSON event of the same moment.
    #[track_caller]
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let stderr = self.stderr();
            if stderr.contains(needle) {
                return stderr;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} on the stderr of touchwire {:?} within {WAIT:?}:\n{}", self.args, self.stderr())
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hand-driven protocol client.
pub struct Raw {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The greeting line, parsed.
    pub greeting: Value,
}

impl Raw {
    /// Connects and reads the greeting.
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let greeting = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad greeting {line:?}: {e}"));
        Raw { stream, reader, greeting }
    }

    /// The greeting's nonce.
    pub fn nonce(&self) -> String {
        self.greeting["nonce"].as_str().unwrap_or_default().to_string()
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Writes one line (adds `\n`) and reads the reply; `None` if the receiver closed the connection.
    pub fn request(&mut self, line: &str) -> Option<Value> {
        self.send_bytes(format!("{line}\n").as_bytes());
        self.read_reply()
    }

    /// Reads one reply line; `None` on end of stream (or a reset).
    pub fn read_reply(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))),
        }
    }

    /// Reads everything until the receiver closes the connection; panics if it stays open past [`WAIT`].
    pub fn rest_until_closed(&mut self) -> String {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the receiver kept the connection open for {WAIT:?}: {e}"),
        }
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// HMAC-SHA256 of `nonce` with `token`, as the protocol wants it.
pub fn mac(token: &str, nonce: &str) -> String {
    touchwire::auth::Token::new(token).unwrap().mac(nonce)
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the tests run as root, which `why` needs. In CI they must; elsewhere the test skips, saying why.
pub fn require_root(why: &str) -> bool {
    if !is_root() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run this test as root ({why})");
        eprintln!("skipping: {why} needs root");
    }
    is_root()
}

/// Whether `tool` is installed. Missing in CI is a failure; on a laptop the test skips, saying why.
pub fn require(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have {tool} installed (scripts/test installs it)"
        );
        eprintln!("skipping: {tool} is not installed (scripts/test installs it when run as root)");
    }
    found
}

/// PATH with the `touchwire` under test first, as an editor would find it.
pub fn path_with_touchwire() -> std::ffi::OsString {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_touchwire")).parent().unwrap().to_path_buf();
    let system = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&system))).unwrap()
}

/// Polls `check` every 20 ms until it holds or [`WAIT`] passes.
/// The lines `reader` (a child's stdout or stderr) gives, on a channel, read by a thread that
/// ends with the stream (or when the receiver is dropped): join it after ending the child.
pub fn lines_of(reader: impl Read + Send + 'static) -> (Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, lines) = channel();
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (lines, thread)
}

pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {WAIT:?} waiting for: {what}");
}

/// A git repository in a temporary directory, driven through the git CLI.
pub struct Repo {
    pub root: PathBuf,
}

impl Repo {
    /// `git init` in `root` (created), with an identity for commits.
    pub fn init(root: PathBuf) -> Repo {
        std::fs::create_dir_all(&root).unwrap();
        let repo = Repo { root };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "test@example.com"]);
        repo.git(&["config", "user.name", "touchwire test"]);
        repo
    }

    /// Runs git in the repository; panics with its stderr on failure.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git").args(args).current_dir(&self.root).output().expect("git must be installed");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs git as a user would, with `touchwire` on PATH (unless `with_touchwire` is false) and
    /// the env's clean configuration; returns the output whatever the exit status.
    pub fn git_as_user(&self, env: &Env, args: &[&str], with_touchwire: bool, vars: &[(&str, &str)]) -> Output {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_touchwire")).parent().unwrap().to_path_buf();
        let system_path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> =
            std::env::split_paths(&system_path).filter(|d| !d.join("touchwire").exists()).collect();
        if with_touchwire {
            dirs.insert(0, bin_dir);
        }
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(&self.root).env("PATH", std::env::join_paths(dirs).unwrap());
        cmd.env("XDG_CONFIG_HOME", env.join("xdg"));
        for var in ["TOUCHWIRE_TO", "TOUCHWIRE_TOKEN_FILE", "TOUCHWIRE_CONFIG", "TOUCHWIRE_SKIP"] {
            cmd.env_remove(var);
        }
        cmd.envs(vars.iter().copied());
        cmd.stdin(Stdio::null()).output().expect("git must be installed")
    }

    /// Writes a file (creating its directories).
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// `git add -A && git commit`.
    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }
}

/// A git repository and a receiver that acts on every trigger (settle 0): what the watcher,
/// hooks and editor tests start from.
pub struct Project {
    pub env: Env,
    pub repo: Repo,
    pub receiver: Listener,
}

impl Project {
    /// `files` committed on `main`; with `configured`, a `.touchwire.json` naming the receiver too.
    pub fn new(files: &[(&str, &str)], configured: bool) -> Project {
        let env = Env::new();
        let repo = Repo::init(env.join("repo"));
        let receiver = env.listen(&["--settle", "0", "--touch", env.join("app.reload").to_str().unwrap()]);
        if configured {
            repo.write(".touchwire.json", &serde_json::json!({"remote": receiver.addr}).to_string());
        }
        for (path, content) in files {
            repo.write(path, content);
        }
        repo.commit_all("init");
        Project { env, repo, receiver }
    }

    /// Asserts that the receiver acts on nothing for `window`.
    #[track_caller]
    pub fn no_trigger(&self, what: &str, window: Duration) {
        let extra = self.receiver.named_within("reload", window);
        assert!(extra.is_empty(), "{what}: unexpected trigger(s) {extra:?}");
    }
}
