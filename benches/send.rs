//! Benchmark of `touchwire send` and of the receiver under load (DESIGN.md, "What fast means here").
//!
//! Run it with `cargo bench --bench send` (a release build); `BENCH_RUNS=200 cargo bench --bench send` takes
//! more latency samples (default 100, at least 50). The report is Markdown on stdout, progress goes to stderr,
//! so `cargo bench --bench send > report.md` keeps the report alone. It measures, in one run:
//!
//! 1. **the machine**: CPU model, logical CPUs, kernel, touchwire version, date;
//! 2. **send latency**: wall clock from spawning `touchwire send` to its exit, against a real `touchwire listen`
//!    on loopback, side by side with the blog post's pipeline against a listening `nc -l -k`: `nc -N` spawned
//!    directly, and the literal `sh -c "echo . | nc -N ..."`. The three are interleaved round-robin, so machine
//!    noise hits all alike. nc neither authenticates nor waits for an answer; send does both;
//! 3. **the receiver under load**: 100 connections opened at once, each sending 100 authenticated reloads one
//!    after the other; replies and the actions the receiver actually ran are counted, and its memory is read
//!    before, after, and after a second identical load;
//! 4. **1,000 mixed connections** against a receiver capped at 128: idle, garbage, slow drippers and valid reloads
//!    at once (the mix of `tests/load.rs`, shared with it in `tests/util/mix.rs`); valid reloads answered,
//!    retries, the receiver's threads and memory, and a ping after the load;
//! 5. **the receiver under attack** (issue 12): 2,000 held connections, 20,000 open/close churns, a flood of the
//!    unauthenticated slots, each while a valid sender reloads ([`attack`]: `BENCH_ONLY=attack` runs it alone,
//!    `BENCH_TOUCHWIRE=PATH` measures another binary).
//!
//! The baseline needs OpenBSD netcat (Debian/Ubuntu package `netcat-openbsd`); without it, send is measured
//! alone. Only 127.0.0.1 is contacted. Every child process is killed by its PID when the bench ends, on error
//! paths too, and every wait has a deadline of a few seconds.

#[path = "attack/mod.rs"]
mod attack;
mod common;

use anyhow::{Context, Result, anyhow, bail};
use common::{Guard, Kill, Samples, free_port, mb};
use serde_json::Value;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use touchwire::auth::Token;
use touchwire::protocol::{self, Greeting, Op, Reply, Request};

/// Latency samples per command when `BENCH_RUNS` is not set.
const DEFAULT_RUNS: usize = 100;
/// Fewest latency samples per command: fewer make a p90 meaningless.
const MIN_RUNS: usize = 50;
/// Uncounted rounds before the measured ones (page cache, CPU frequency, first connections).
const WARMUP_RUNS: usize = 5;
/// Deadline for anything the bench waits on: a child's exit, a line, a port opening.
const WAIT: Duration = Duration::from_secs(5);
/// Connections opened at once by the load.
const LOAD_CONNECTIONS: usize = 100;
/// Requests per load connection, one after the other.
const LOAD_REQUESTS: usize = 100;
/// The receiver's default settle window, used by the load.
const SETTLE: Duration = Duration::from_millis(200);
/// Time left after a load for the trailing action and the last events.
const TRAILING_WAIT: Duration = Duration::from_secs(1);

fn main() {
    if let Err(err) = run() {
        eprintln!("bench send failed: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    if attack::only()? {
        return attack::alone();
    }
    let runs = runs_from_env()?;
    let scratch = Scratch::new()?;
    let netcat = netcat_version();
    if let Err(why) = &netcat {
        eprintln!("bench: nc baseline skipped: {why}");
    }
    println!("# touchwire send benchmark\n");
    println!("Command: `cargo bench --bench send` (release build), {runs} measured runs per command.\n");
    Machine::probe(&netcat)?.print();
    let latency = measure_latency(&scratch, runs, netcat.is_ok())?;
    latency.print(&netcat);
    let load = measure_load(&scratch)?;
    load.print();
    let mixed = mixed::measure(&scratch)?;
    mixed.print();
    attack::measure(&scratch)?.print();
    eprintln!("bench: done");
    Ok(())
}

/// Latency runs per command: `BENCH_RUNS`, or [`DEFAULT_RUNS`]; never fewer than [`MIN_RUNS`].
fn runs_from_env() -> Result<usize> {
    let runs = match std::env::var("BENCH_RUNS") {
        Ok(text) => text.trim().parse().with_context(|| format!("BENCH_RUNS={text:?} is not a number"))?,
        Err(_) => DEFAULT_RUNS,
    };
    if runs < MIN_RUNS {
        eprintln!("bench: BENCH_RUNS={runs} is below the minimum; using {MIN_RUNS}");
    }
    Ok(runs.max(MIN_RUNS))
}

// ---------------------------------------------------------------------------------------------------------------
// Processes and files
// ---------------------------------------------------------------------------------------------------------------

/// Waits at most [`WAIT`] for `child` to exit successfully; a child still running then is killed.
fn wait_success(child: &mut Guard, what: &str) -> Result<()> {
    let status = child.wait_for(WAIT, what)?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// Runs a short command to completion (at most [`WAIT`]) and returns its stdout and stderr together.
fn output_of(cmd: Command, what: &str) -> Result<String> {
    Ok(common::output_of(cmd, what, WAIT, Kill::Pid)?.1)
}

/// The bench's scratch directory: the token file, the touched files, the receivers' logs, an empty user config.
struct Scratch {
    dir: tempfile::TempDir,
    token: String,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
        fs::create_dir(dir.path().join("xdg")).context("cannot create the scratch config directory")?;
        let token = touchwire::auth::random_hex(32)?;
        fs::write(dir.path().join("token"), format!("{token}\n")).context("cannot write the token file")?;
        Ok(Scratch { dir, token })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file in the scratch directory, as a command-line argument.
    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// `touchwire ARGS`, run in the scratch directory with a clean environment, so no config of the
    /// developer's leaks in.
    fn touchwire(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_touchwire"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env("HOME", self.dir.path());
        for var in ["TOUCHWIRE_TO", "TOUCHWIRE_TOKEN_FILE", "TOUCHWIRE_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// Resident memory of a process, in kB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// VmRSS: resident now.
    rss_kb: u64,
    /// VmHWM: the highest resident size so far.
    peak_kb: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Memory> {
        Ok(Memory { rss_kb: common::vm_kb(pid, "VmRSS:")?, peak_kb: common::vm_kb(pid, "VmHWM:")? })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. The machine
// ---------------------------------------------------------------------------------------------------------------

/// What the numbers were measured on.
struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    touchwire: String,
    netcat: String,
    date: String,
}

impl Machine {
    fn probe(netcat: &Result<String, String>) -> Result<Machine> {
        Ok(Machine {
            cpu: common::cpu_model(),
            cpus: common::logical_cpus(),
            kernel: common::kernel(),
            touchwire: common::first_line(env!("CARGO_BIN_EXE_touchwire"), &["--version"], WAIT, Kill::Pid)?,
            netcat: netcat.clone().unwrap_or_else(|_| "not installed".into()),
            date: common::date(WAIT, Kill::Pid)?,
        })
    }

    fn print(&self) {
        println!("## Machine\n");
        println!("- CPU: {}", self.cpu);
        println!("- logical CPUs available: {}", self.cpus);
        println!("- kernel: {}", self.kernel);
        println!("- touchwire: {}", self.touchwire);
        println!("- nc: {}", self.netcat);
        println!("- date: {}\n", self.date);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A running `touchwire listen` and the events it prints
// ---------------------------------------------------------------------------------------------------------------

/// Counts of the receiver's JSON events on its stdout.
#[derive(Debug, Clone, Copy, Default)]
struct Events {
    /// `"event":"reload"` without `"trailing":true`: leading actions run.
    leading: u64,
    /// `"event":"reload"` with `"trailing":true`: trailing actions run at the end of a settle window.
    trailing: u64,
    /// `"event":"merged"`: triggers folded into an action.
    merged: u64,
    /// `error`, `reload_failed` and `rejected` events.
    errors: u64,
}

impl Events {
    fn count(&mut self, event: &Value) {
        match event["event"].as_str() {
            Some("reload") if event["trailing"] == true => self.trailing += 1,
            Some("reload") => self.leading += 1,
            Some("merged") => self.merged += 1,
            Some("error" | "reload_failed" | "rejected") => self.errors += 1,
            _ => {}
        }
    }

    fn actions(&self) -> u64 {
        self.leading + self.trailing
    }

    /// The events counted since `earlier`.
    fn since(&self, earlier: &Events) -> Events {
        Events {
            leading: self.leading - earlier.leading,
            trailing: self.trailing - earlier.trailing,
            merged: self.merged - earlier.merged,
            errors: self.errors - earlier.errors,
        }
    }
}

/// `touchwire listen --addr 127.0.0.1:0 --json ...`, its address, and a thread counting its events.
struct Receiver {
    child: Guard,
    addr: SocketAddr,
    events: Arc<Mutex<Events>>,
}

impl Receiver {
    /// Starts a receiver with `args` after `--json`, and waits for the address it bound. Its stderr goes to
    /// `NAME.stderr` in the scratch directory.
    fn start(scratch: &Scratch, name: &str, args: &[&str]) -> Result<Receiver> {
        Receiver::start_binary(scratch, std::path::Path::new(env!("CARGO_BIN_EXE_touchwire")), name, args)
    }

    /// [`Receiver::start`] with another `touchwire` binary (section 5 measures an older one too).
    fn start_binary(scratch: &Scratch, binary: &std::path::Path, name: &str, args: &[&str]) -> Result<Receiver> {
        let log_name = format!("{name}.stderr");
        let log = File::create(scratch.path(&log_name)).context("cannot create the receiver's log")?;
        let mut full = vec!["listen", "--addr", "127.0.0.1:0", "--json"];
        full.extend_from_slice(args);
        let mut cmd = attack::retarget(&scratch.touchwire(&full), binary);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = Guard::spawn(&mut cmd, "touchwire listen", Kill::Pid)?;
        let stdout = child.child.stdout.take().context("no stdout pipe")?;
        let events = Arc::new(Mutex::new(Events::default()));
        let (address_tx, address_rx) = mpsc::channel();
        let counter = Arc::clone(&events);
        thread::spawn(move || drain_events(stdout, address_tx, &counter));
        let addr = address_rx.recv_timeout(WAIT).map_err(|_| {
            let said = fs::read_to_string(scratch.path(&log_name)).unwrap_or_default();
            anyhow!("touchwire listen printed no address within {} s; it said:\n{said}", WAIT.as_secs())
        })?;
        let addr = addr.parse().with_context(|| format!("touchwire listen printed a strange address {addr:?}"))?;
        Ok(Receiver { child, addr, events })
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn events(&self) -> Events {
        *self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the receiver's stdout until it closes (the receiver is killed): sends the address of the first
/// `listening` event, counts the others. Draining also keeps the pipe from filling up.
fn drain_events(stdout: ChildStdout, address: Sender<String>, events: &Mutex<Events>) {
    let mut address = Some(address);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if event["event"] == "listening"
            && let (Some(tx), Some(addr)) = (address.take(), event["addr"].as_str())
        {
            let _ = tx.send(addr.to_string());
        }
        events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).count(&event);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. send latency, against nc
// ---------------------------------------------------------------------------------------------------------------

/// OpenBSD netcat's version line, or why the baseline cannot run.
fn netcat_version() -> Result<String, String> {
    let mut cmd = Command::new("nc");
    cmd.arg("-h");
    let install = "install OpenBSD netcat (Debian/Ubuntu: `apt-get install netcat-openbsd`) to get the baseline";
    match output_of(cmd, "nc -h") {
        Err(_) => Err(format!("`nc` is not installed: {install}")),
        Ok(text) => match text.lines().find(|l| l.contains("OpenBSD netcat")) {
            Some(line) => Ok(line.trim().to_string()),
            None => Err(format!("`nc` is not OpenBSD netcat (it lacks -N): {install}")),
        },
    }
}

/// `nc -l -k 127.0.0.1 PORT`, the blog post's guest side, writing what it receives to a file.
struct NetcatServer {
    /// Held only to be killed when the server is dropped.
    _child: Guard,
    port: u16,
    out: PathBuf,
}

impl NetcatServer {
    /// Starts the server on a free port and waits until it accepts connections.
    fn start(scratch: &Scratch) -> Result<NetcatServer> {
        let port = free_port()?;
        let out = scratch.path("nc.out");
        let file = File::create(&out).context("cannot create nc's output file")?;
        let mut cmd = Command::new("nc");
        cmd.args(["-l", "-k", "127.0.0.1", &port.to_string()]);
        cmd.stdin(Stdio::null()).stdout(file).stderr(Stdio::null());
        let mut child = Guard::spawn(&mut cmd, "nc -l", Kill::Pid)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let silent = format!("nc -l -k 127.0.0.1 {port} accepts no connection after {} s", WAIT.as_secs());
        common::wait_until(WAIT, Duration::from_millis(10), &silent, || {
            if let Some(status) = child.child.try_wait()? {
                bail!("nc -l -k 127.0.0.1 {port} exited at once ({status})");
            }
            Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        })?;
        Ok(NetcatServer { _child: child, port, out })
    }

    /// Lines received so far: one per delivered `.`.
    fn lines_received(&self) -> Result<usize> {
        Ok(fs::read_to_string(&self.out).context("cannot read nc's output")?.lines().count())
    }
}

/// Spawn-to-exit wall time of `cmd`, with `input` written to its stdin (then closed) if given. Fails unless
/// it exits with status 0 within [`WAIT`].
fn time_run(mut cmd: Command, input: Option<&[u8]>, what: &str) -> Result<Duration> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = Guard::spawn(&mut cmd, what, Kill::Pid)?;
    if let Some(bytes) = input {
        let mut stdin = child.child.stdin.take().context("no stdin pipe")?;
        stdin.write_all(bytes).with_context(|| format!("cannot write to {what}"))?;
        // Dropping stdin closes it: nc -N then shuts its socket down.
    }
    wait_success(&mut child, what)?;
    Ok(start.elapsed())
}

/// Timings of one command, with its label in the report.
struct Timings {
    label: &'static str,
    samples: Samples,
}

impl Timings {
    fn new(label: &'static str) -> Timings {
        Timings { label, samples: Samples::default() }
    }

    fn push(&mut self, took: Duration) {
        self.samples.push(took);
    }

    fn median(&self) -> f64 {
        self.samples.median()
    }

    fn row(&self) -> String {
        format!(
            "| {} | {:.3} | {:.3} | {:.3} | {} |",
            self.label,
            self.samples.median(),
            self.samples.quantile(0.9),
            self.samples.min(),
            self.samples.len()
        )
    }
}

/// The nc baseline's results, when nc is there.
struct Baseline {
    direct: Timings,
    pipeline: Timings,
    lines_received: usize,
}

/// Section 2's results.
struct Latency {
    send: Timings,
    baseline: Option<Baseline>,
    runs: usize,
    /// Actions the receiver ran, warm-ups included: one per send, since it runs with `--settle 0`.
    actions: u64,
}

fn measure_latency(scratch: &Scratch, runs: usize, with_netcat: bool) -> Result<Latency> {
    let token = scratch.arg("token");
    let touch = scratch.arg("app.reload");
    let receiver = Receiver::start(scratch, "latency", &["--settle", "0", "--touch", &touch, "--token-file", &token])?;
    let to = receiver.addr.to_string();
    let server = if with_netcat { Some(NetcatServer::start(scratch)?) } else { None };
    let send = || scratch.touchwire(&["send", "--to", &to, "--token-file", &token, "-q"]);
    let nc_direct = |port: u16| {
        let mut cmd = Command::new("nc");
        cmd.args(["-N", "127.0.0.1", &port.to_string()]);
        cmd
    };
    let nc_pipeline = |port: u16| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("echo . | nc -N 127.0.0.1 {port}")]);
        cmd
    };
    let mut latency = Latency {
        send: Timings::new("`touchwire send` (authenticates, waits for the acknowledgement)"),
        baseline: server.as_ref().map(|_| Baseline {
            direct: Timings::new("`nc -N`, spawned directly, `.` on its stdin"),
            pipeline: Timings::new("`sh -c \"echo . \\| nc -N\"` (the blog post's pipeline)"),
            lines_received: 0,
        }),
        runs,
        actions: 0,
    };
    eprintln!("bench: send latency, {WARMUP_RUNS} warm-up + {runs} runs per command, round-robin");
    for round in 0..WARMUP_RUNS + runs {
        let counted = round >= WARMUP_RUNS;
        let took = time_run(send(), None, "touchwire send")?;
        if counted {
            latency.send.push(took);
        }
        if let (Some(server), Some(baseline)) = (&server, &mut latency.baseline) {
            let took = time_run(nc_direct(server.port), Some(b".\n"), "nc -N")?;
            if counted {
                baseline.direct.push(took);
            }
            let took = time_run(nc_pipeline(server.port), None, "sh -c \"echo . | nc -N\"")?;
            if counted {
                baseline.pipeline.push(took);
            }
        }
        if counted && (round + 1 - WARMUP_RUNS).is_multiple_of(25) {
            eprintln!("bench:   {}/{runs}", round + 1 - WARMUP_RUNS);
        }
    }
    thread::sleep(Duration::from_millis(100)); // the last events and bytes to land
    latency.actions = receiver.events().actions();
    if let (Some(server), Some(baseline)) = (&server, &mut latency.baseline) {
        baseline.lines_received = server.lines_received()?;
    }
    Ok(latency)
}

impl Latency {
    fn print(&self, netcat: &Result<String, String>) {
        let rounds = WARMUP_RUNS + self.runs;
        println!("## send latency (loopback, spawn to exit)\n");
        println!(
            "Wall clock from spawning the process to its exit, {} runs each after {WARMUP_RUNS} warm-up rounds, \
             interleaved round-robin. Receiver: `touchwire listen --settle 0 --touch FILE --token-file FILE`; \
             baseline server: `nc -l -k 127.0.0.1 PORT`.\n",
            self.runs
        );
        println!("| command | median ms | p90 ms | min ms | runs |");
        println!("|---|---:|---:|---:|---:|");
        println!("{}", self.send.row());
        match (&self.baseline, netcat) {
            (Some(baseline), _) => {
                println!("{}", baseline.direct.row());
                println!("{}\n", baseline.pipeline.row());
                let send = self.send.median();
                println!("- send / nc direct (medians): {:.2}×", send / baseline.direct.median());
                println!("- send / sh pipeline (medians): {:.2}×", send / baseline.pipeline.median());
                println!(
                    "- Not like for like: nc neither authenticates nor waits for an answer (it writes `.` and \
                     leaves); `touchwire send` reads the greeting, answers the nonce with an HMAC, and waits until \
                     the receiver has run the action and acknowledged it."
                );
                println!(
                    "- Delivered: the receiver ran {} touch actions for {rounds} sends; nc's server received {} \
                     lines for {} nc runs (warm-ups included).\n",
                    self.actions,
                    baseline.lines_received,
                    2 * rounds
                );
            }
            (None, Err(why)) => {
                println!("\n**nc baseline skipped**: {why}.\n");
                println!("- Delivered: the receiver ran {} touch actions for {rounds} sends.\n", self.actions);
            }
            (None, Ok(_)) => println!(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. The receiver under load
// ---------------------------------------------------------------------------------------------------------------

/// What the load's clients saw in the replies.
#[derive(Debug, Default)]
struct Tally {
    /// Replies with `"ok":true`.
    ok: u64,
    /// `"ok":true` replies with `"merged":true`.
    merged: u64,
    /// `"ok":true` replies with `"merged":false`: the trigger ran the action.
    leading: u64,
    /// Replies with `"ok":false`.
    error_replies: u64,
    /// The first thing that went wrong, for the report.
    first_error: Option<String>,
}

impl Tally {
    fn count(&mut self, reply: &Reply) {
        if !reply.ok {
            self.error_replies += 1;
            self.note(reply.error.clone().unwrap_or_else(|| "error reply without a message".into()));
            return;
        }
        self.ok += 1;
        match reply.merged {
            Some(true) => self.merged += 1,
            _ => self.leading += 1,
        }
    }

    fn note(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }

    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.merged += other.merged;
        self.leading += other.leading;
        self.error_replies += other.error_replies;
        if let Some(error) = other.first_error {
            self.note(error);
        }
    }
}

/// One run of the load against one receiver.
struct LoadRun {
    requests: u64,
    tally: Tally,
    duration: Duration,
    /// The receiver's events during the run and [`TRAILING_WAIT`] after it.
    events: Events,
    /// The receiver's memory before the run.
    before: Memory,
    /// The receiver's memory after the run and the wait.
    after: Memory,
}

impl LoadRun {
    /// Requests without an `"ok":true` reply: error replies and replies that never came.
    fn failures(&self) -> u64 {
        self.requests - self.tally.ok
    }

    /// Settle windows the load spanned: ceil(duration / settle).
    fn windows(&self) -> u64 {
        (self.duration.as_nanos().div_ceil(SETTLE.as_nanos()) as u64).max(1)
    }
}

/// One load connection: waits at the barrier, connects, reads the greeting, then sends `requests` reloads,
/// each followed by reading its reply.
fn load_client(addr: SocketAddr, token: &Token, requests: usize, start: &Barrier) -> Tally {
    start.wait();
    let mut tally = Tally::default();
    if let Err(err) = exchange_reloads(addr, token, requests, &mut tally) {
        tally.note(format!("{err:#}"));
    }
    tally
}

fn exchange_reloads(addr: SocketAddr, token: &Token, requests: usize, tally: &mut Tally) -> Result<()> {
    let stream = TcpStream::connect_timeout(&addr, WAIT).context("cannot connect")?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let greeting: Greeting = serde_json::from_str(&read_reply_line(&mut reader)?).context("unreadable greeting")?;
    let request = Request {
        op: Some(Op::Reload),
        reason: Some("bench".into()),
        mac: Some(token.mac(&greeting.nonce)),
        ..Request::default()
    };
    let line = protocol::to_line(&request);
    for _ in 0..requests {
        writer.write_all(line.as_bytes()).context("cannot send a request")?;
        let reply: Reply = serde_json::from_str(&read_reply_line(&mut reader)?).context("unreadable reply")?;
        tally.count(&reply);
    }
    Ok(())
}

/// One line from the receiver, within the stream's read timeout.
fn read_reply_line(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).context("no reply")? == 0 {
        bail!("the receiver closed the connection");
    }
    Ok(line)
}

/// Runs the whole load once: [`LOAD_CONNECTIONS`] clients released together by a barrier.
fn load_once(receiver: &Receiver, token: &Token) -> Result<LoadRun> {
    let before = receiver.events();
    let memory_before = Memory::of(receiver.pid())?;
    let start = Barrier::new(LOAD_CONNECTIONS + 1);
    let (tally, duration) = thread::scope(|scope| {
        let clients: Vec<_> = (0..LOAD_CONNECTIONS)
            .map(|_| scope.spawn(|| load_client(receiver.addr, token, LOAD_REQUESTS, &start)))
            .collect();
        start.wait();
        let began = Instant::now();
        let mut tally = Tally::default();
        for client in clients {
            tally.add(client.join().unwrap_or_else(|_| Tally {
                first_error: Some("a client thread panicked".into()),
                ..Tally::default()
            }));
        }
        (tally, began.elapsed())
    });
    thread::sleep(TRAILING_WAIT);
    Ok(LoadRun {
        requests: (LOAD_CONNECTIONS * LOAD_REQUESTS) as u64,
        tally,
        duration,
        events: receiver.events().since(&before),
        before: memory_before,
        after: Memory::of(receiver.pid())?,
    })
}

/// Section 3's results: two identical loads on one receiver.
struct Load {
    runs: [LoadRun; 2],
}

fn measure_load(scratch: &Scratch) -> Result<Load> {
    let token_file = scratch.arg("token");
    let touch = scratch.arg("load.reload");
    let args = ["--touch", &touch, "--token-file", &token_file, "--max-connections", "200"];
    let receiver = Receiver::start(scratch, "load", &args)?;
    let token = Token::new(&scratch.token)?;
    let total = LOAD_CONNECTIONS * LOAD_REQUESTS;
    eprintln!("bench: receiver load 1/2: {LOAD_CONNECTIONS} connections × {LOAD_REQUESTS} requests = {total}");
    let first = load_once(&receiver, &token)?;
    eprintln!("bench: receiver load 2/2, same receiver");
    let second = load_once(&receiver, &token)?;
    Ok(Load { runs: [first, second] })
}

impl Load {
    fn print(&self) {
        println!("## Receiver under load\n");
        println!(
            "`touchwire listen --json --touch FILE --token-file FILE --max-connections 200` (settle 200 ms, the \
             default). {LOAD_CONNECTIONS} threads released at once by a barrier, each opening one connection, \
             reading the greeting and sending {LOAD_REQUESTS} authenticated `reload` requests one after the \
             other, each followed by reading its reply. Then {} s for the trailing action. The same load runs twice \
             on the same receiver.\n",
            TRAILING_WAIT.as_secs()
        );
        let [first, second] = &self.runs;
        let row = |name: &str, value: &dyn Fn(&LoadRun) -> String| {
            println!("| {name} | {} | {} |", value(first), value(second));
        };
        println!("| | run 1 | run 2 |");
        println!("|---|---:|---:|");
        row("requests sent", &|r| r.requests.to_string());
        row("answered `\"ok\":true`", &|r| r.tally.ok.to_string());
        row("failures (error reply or no reply)", &|r| r.failures().to_string());
        row("replies `\"merged\":true`", &|r| r.tally.merged.to_string());
        row("replies `\"merged\":false` (ran the action)", &|r| r.tally.leading.to_string());
        row("actions run (leading + trailing)", &|r| {
            format!("{} ({} + {})", r.events.actions(), r.events.leading, r.events.trailing)
        });
        row("settle windows in the load, ceil(duration / 200 ms)", &|r| r.windows().to_string());
        row("actions per 200 ms window", &|r| format!("{:.2}", r.events.actions() as f64 / r.windows() as f64));
        row("receiver `merged` events", &|r| r.events.merged.to_string());
        row("receiver error events", &|r| r.events.errors.to_string());
        row("load duration", &|r| format!("{:.1} ms", r.duration.as_secs_f64() * 1000.0));
        row("requests / s", &|r| format!("{:.0}", r.requests as f64 / r.duration.as_secs_f64()));
        row("receiver RSS before (VmRSS)", &|r| mb(r.before.rss_kb));
        row("receiver RSS after (VmRSS)", &|r| mb(r.after.rss_kb));
        row("receiver peak RSS so far (VmHWM)", &|r| mb(r.after.peak_kb));
        println!();
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(error) = &run.tally.first_error {
                println!("- run {}: first failure: {error}", i + 1);
            }
        }
        println!(
            "- Memory: {} before the first load, {} after it, {} after the second (peak {}).",
            mb(first.before.rss_kb),
            mb(first.after.rss_kb),
            mb(second.after.rss_kb),
            mb(second.after.peak_kb)
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. 1,000 mixed connections
// ---------------------------------------------------------------------------------------------------------------

/// The load test's mix: its kinds, counts and timings, the clients, the /proc sampling and the tally, shared with
/// `tests/load.rs` so that the bench measures exactly what the test asserts.
#[path = "../tests/util/mix.rs"]
mod mix;

/// Section 4: the load test's mix ([`mix`]) against a release receiver, measured. A valid client retries "busy"
/// after a short backoff, and a connection that brings no greeting within [`mix::GREETING_WAIT`] at once; garbage
/// and drippers send anyway then. Connections that never got a greeting or "busy" (dropped unseen at a full listen
/// backlog, as with std's 128) are counted.
mod mixed {
    use super::mix::{self, CAP, DRIP, GARBAGE, GREETING_WAIT, IDLE, IDLE_HOLD, READ_TIMEOUT_MS, SAMPLE_EVERY};
    use super::mix::{First, TOTAL, VALID};
    use super::{Receiver, Scratch, WAIT, mb};
    use anyhow::{Result, anyhow, bail};
    use serde_json::json;
    use std::thread;
    use std::time::{Duration, Instant};
    use touchwire::auth::Token;

    /// The kernel counters reported: a listen queue overflowing, and handshakes completed with SYN cookies.
    const KERNEL_COUNTERS: [&str; 2] = ["ListenOverflows", "SyncookiesSent"];

    /// Section 4's results.
    pub struct Mixed {
        tally: mix::Tally,
        sampled: mix::Sampled,
        threads_after: u64,
        rss_before_kb: u64,
        peak_kb: u64,
        rss_after_kb: u64,
        ping: Duration,
        kernel: Vec<(String, i64)>,
    }

    /// A kB (or count) field of /proc/PID/status: `Threads:`, `VmRSS:`, `VmHWM:`.
    fn status(pid: u32, field: &str) -> Result<u64> {
        super::common::vm_kb(pid, field)
    }

    /// Connect, greeting, authenticated ping, reply: the round trip.
    fn ping(addr: std::net::SocketAddr, token: &Token) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start + WAIT;
        let mut conn = mix::connect(addr, deadline).map_err(|e| anyhow!("ping: {e}"))?;
        let Some(First::Greeted { nonce }) = mix::first(&mut conn, WAIT).map_err(|e| anyhow!("ping: {e}"))? else {
            bail!("no greeting for the ping")
        };
        mix::send(&conn, format!("{}\n", json!({"op": "ping", "mac": token.mac(&nonce)})).as_bytes())?;
        let reply = mix::reply_line(&mut conn, deadline).map_err(|e| anyhow!("no answer to the ping: {e}"))?;
        if !reply.contains(r#""ok":true"#) {
            bail!("the ping failed: {reply:?}");
        }
        Ok(start.elapsed())
    }

    pub fn measure(scratch: &Scratch) -> Result<Mixed> {
        mix::raise_fd_limit().map_err(|e| anyhow!(e))?;
        let args = mix::receiver_args(&scratch.arg("mixed.reload"), &scratch.arg("token"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let receiver = Receiver::start(scratch, "mixed", &args)?;
        let (pid, addr) = (receiver.pid(), receiver.addr);
        let token = Token::new(&scratch.token)?;
        thread::sleep(Duration::from_millis(100)); // the receiver's start-up to settle before the "before" figures
        let rss_before_kb = status(pid, "VmRSS:")?;
        let base_threads = status(pid, "Threads:")?;
        let kernel_before = mix::tcp_counters(&KERNEL_COUNTERS);
        eprintln!(
            "bench: {TOTAL} mixed connections at once ({IDLE} idle, {GARBAGE} garbage, {DRIP} drip, {VALID} valid)"
        );
        let (tally, sampled) = mix::run(addr, pid, &token).map_err(|e| anyhow!(e))?;
        // Afterwards, at once: a fresh authenticated ping.
        let ping = ping(addr, &token)?;
        wait_for_own_threads(pid, base_threads.max(2))?;
        Ok(Mixed {
            tally,
            sampled,
            threads_after: status(pid, "Threads:")?,
            rss_before_kb,
            peak_kb: status(pid, "VmHWM:")?,
            rss_after_kb: status(pid, "VmRSS:")?,
            ping,
            kernel: mix::grown(&kernel_before, mix::tcp_counters(&KERNEL_COUNTERS)),
        })
    }

    /// Waits (at most [`WAIT`]) until the receiver is back to its own threads: every connection thread ended.
    fn wait_for_own_threads(pid: u32, base: u64) -> Result<()> {
        let what = format!("the receiver's connection threads did not end within {} s", WAIT.as_secs());
        super::common::wait_until(WAIT, Duration::from_millis(20), &what, || Ok(status(pid, "Threads:")? <= base))
    }

    impl Mixed {
        pub fn print(&self) {
            let (tally, sampled) = (&self.tally, &self.sampled);
            // Section 3 ends on a list: a blank line keeps the heading a heading.
            println!("\n## 1,000 mixed connections\n");
            println!(
                "`touchwire listen --json --settle 0 --touch FILE --token-file FILE --max-connections {CAP} \
                 --read-timeout {READ_TIMEOUT_MS}`. {TOTAL} threads released at once by a barrier, each opening a \
                 connection: {IDLE} idle (neither read nor write for {} s, then read until the close), {GARBAGE} \
                 garbage (random bytes, broken JSON, a wrong MAC, a 6,000-byte line, no MAC), {DRIP} slow clients \
                 dripping a request one byte a second, {VALID} valid clients sending one authenticated reload. A \
                 valid client answered \"busy\" retries on a new connection after 25–200 ms; one that gets no \
                 greeting within {} s retries at once (there should be none). The receiver's threads and VmRSS are \
                 sampled every {} ms.\n",
                IDLE_HOLD.as_secs(),
                GREETING_WAIT.as_secs(),
                SAMPLE_EVERY.as_millis()
            );
            let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
            println!("| | |");
            println!("|---|---:|");
            println!("| valid reloads answered `\"ok\":true` / total | {} / {VALID} |", tally.answered);
            println!("| time until every valid reload was answered | {} |", secs(tally.last_answer));
            println!("| retries of valid clients after \"busy\" | {} |", tally.busy_retries);
            println!(
                "| retries of valid clients after no greeting within {} s | {} |",
                GREETING_WAIT.as_secs(),
                tally.unseen_retries
            );
            println!("| other connections answered \"busy\" | {} |", tally.rejected);
            println!(
                "| drippers served, closed at the read timeout; the longest open after its greeting | {}; {} |",
                tally.drips_served,
                secs(tally.longest_drip)
            );
            println!(
                "| idle connections closed by the receiver / never accepted by it | {} / {} |",
                tally.idle_closed, tally.unaccepted
            );
            println!("| `\"ok\":true` replies to garbage, drip or idle connections | {} |", tally.bad_ok);
            println!("| client errors | {} |", tally.errors.len());
            println!(
                "| receiver threads, most sampled (cap {CAP}; {} samples); after the load | {}; {} |",
                sampled.samples, sampled.max_threads, self.threads_after
            );
            println!(
                "| receiver RSS before / most sampled (VmRSS) / peak (VmHWM) / after | {} / {} / {} / {} |",
                mb(self.rss_before_kb),
                mb(sampled.max_rss_kb),
                mb(self.peak_kb),
                mb(self.rss_after_kb)
            );
            println!(
                "| ping after the load (connect, greeting, authenticated ping, reply) | {:.1} ms |",
                self.ping.as_secs_f64() * 1000.0
            );
            let kernel: Vec<String> = self.kernel.iter().map(|(name, delta)| format!("{name} +{delta}")).collect();
            println!("| kernel counters during the load (whole network namespace) | {} |\n", kernel.join(", "));
            if let Some(error) = tally.errors.first() {
                println!("- first client error: {error}");
            }
            println!(
                "- Never accepted: with a listen backlog smaller than the burst (std's 128, before the receiver \
                 asked for 4,096), the kernel completes handshakes with SYN cookies, then drops them at the full \
                 accept queue: the receiver never sees them, and a client waiting for the greeting waits out its \
                 own timeout. Both counts above should be 0.\n"
            );
        }
    }
}
