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
//!    at once (the mix of `tests/load.rs`); valid reloads answered, retries, the receiver's threads and memory,
//!    and a ping after the load.
//!
//! The baseline needs OpenBSD netcat (Debian/Ubuntu package `netcat-openbsd`); without it, send is measured
//! alone. Only 127.0.0.1 is contacted. Every child process is killed by its PID when the bench ends, on error
//! paths too, and every wait has a deadline of a few seconds.

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
        let log_name = format!("{name}.stderr");
        let log = File::create(scratch.path(&log_name)).context("cannot create the receiver's log")?;
        let mut full = vec!["listen", "--addr", "127.0.0.1:0", "--json"];
        full.extend_from_slice(args);
        let mut cmd = scratch.touchwire(&full);
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

/// Section 4: the load test's mix (`tests/load.rs`) against a release receiver, measured. The clients behave as
/// the test's do: a valid client retries "busy" after a short backoff, and a connection that brings no greeting
/// within [`mixed::GREETING_WAIT`] at once; garbage and drippers send anyway then. Connections that never got a
/// greeting or "busy" (dropped unseen at a full listen backlog, as with std's 128) are counted.
mod mixed {
    use super::{Receiver, Scratch, WAIT, mb};
    use anyhow::{Context, Result, anyhow, bail};
    use serde_json::{Value, json};
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::{Arc, Barrier};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};
    use touchwire::auth::Token;

    const IDLE: usize = 400;
    const GARBAGE: usize = 250;
    const DRIP: usize = 50;
    const VALID: usize = 300;
    const TOTAL: usize = IDLE + GARBAGE + DRIP + VALID;
    /// `--max-connections`.
    const CAP: u64 = 128;
    /// `--read-timeout`, ms.
    const READ_TIMEOUT_MS: u64 = 2000;
    /// A receiver that has accepted a connection greets it (or says busy) at once.
    pub const GREETING_WAIT: Duration = Duration::from_secs(3);
    /// How long a valid client keeps retrying, from its release; and its most connections.
    const RETRY_FOR: Duration = Duration::from_secs(20);
    const MAX_ATTEMPTS: u32 = 400;
    /// How long any other client waits for the receiver to close on it, from its release.
    const CLOSE_WITHIN: Duration = Duration::from_secs(30);
    /// An idle client sits this long without reading or writing, then looks.
    const IDLE_HOLD: Duration = Duration::from_secs(3);
    /// An idle client that received nothing this long after connecting was never accepted (a dropped handshake is
    /// retried 1, 3, 7 s in, then 2 s of read timeout).
    const UNACCEPTED_AFTER: Duration = Duration::from_secs(12);
    /// A dripper sends one byte a second, at most this many: far less than its line.
    const DRIP_BYTES: usize = 25;
    const CLIENT_STACK: usize = 64 * 1024;
    const SAMPLE_EVERY: Duration = Duration::from_millis(20);
    const SAMPLE_FOR: Duration = Duration::from_secs(45);

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Idle,
        /// 0 random bytes, 1 broken JSON, 2 a wrong MAC, 3 an over-long line, 4 no MAC.
        Garbage(u8),
        Drip,
        Valid,
    }

    /// What one client saw.
    enum Outcome {
        Answered {
            ok: bool,
            busy: u32,
            unseen: u32,
            at: Duration,
        },
        /// Closed by the receiver: after "busy", or after being served (`open_for`: a dripper's time from its
        /// greeting to the close); `ok` counts `"ok":true` replies, which must be none.
        Closed {
            kind: Kind,
            busy: bool,
            open_for: Duration,
            ok: usize,
        },
        /// An idle client that received nothing: the receiver never accepted its connection.
        Unaccepted,
    }

    /// Section 4's results.
    pub struct Mixed {
        answered: usize,
        busy_retries: u32,
        unseen_retries: u32,
        last_answer: Duration,
        rejected: usize,
        drips_served: usize,
        longest_drip: Duration,
        idle_closed: usize,
        unaccepted: usize,
        bad_ok: usize,
        errors: usize,
        first_error: Option<String>,
        max_threads: u64,
        threads_after: u64,
        samples: usize,
        rss_before_kb: u64,
        rss_max_kb: u64,
        peak_kb: u64,
        rss_after_kb: u64,
        ping: Duration,
        kernel: Vec<(String, i64)>,
    }

    fn left(deadline: Instant) -> Result<Duration> {
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => bail!("deadline passed"),
        }
    }

    fn connect(addr: SocketAddr, deadline: Instant) -> Result<BufReader<TcpStream>> {
        Ok(BufReader::new(TcpStream::connect_timeout(&addr, left(deadline)?).context("cannot connect")?))
    }

    /// Writes on the reader's stream: no second descriptor, 1,000 clients use enough.
    fn send(conn: &BufReader<TcpStream>, bytes: &[u8]) -> std::io::Result<()> {
        let mut stream: &TcpStream = conn.get_ref();
        stream.write_all(bytes)
    }

    fn timed_out(e: &std::io::Error) -> bool {
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }

    enum First {
        Greeted { nonce: String },
        Busy,
    }

    /// The receiver's first line, or `None` when none came within `limit`.
    fn first(conn: &mut BufReader<TcpStream>, limit: Duration) -> Result<Option<First>> {
        conn.get_ref().set_read_timeout(Some(limit))?;
        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) => bail!("closed before the first line"),
            Ok(_) => {}
            Err(e) if timed_out(&e) && line.is_empty() => return Ok(None),
            Err(e) => return Err(e).context("no first line"),
        }
        let value: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line:?}"))?;
        if value["touchwire"] == 1 {
            return Ok(Some(First::Greeted { nonce: value["nonce"].as_str().unwrap_or_default().to_string() }));
        }
        if value["ok"] == false && value["error"].as_str().is_some_and(|e| e.starts_with("busy:")) {
            return Ok(Some(First::Busy));
        }
        bail!("neither a greeting nor busy: {line:?}")
    }

    /// Everything until the receiver closes (a reset counts as closed), and whether it closed before `deadline`.
    fn read_to_close(conn: &mut BufReader<TcpStream>, deadline: Instant) -> Result<(String, bool)> {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        let text_of = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        // Each round reads at least a byte or ends: the receiver sends a few lines at most.
        for _ in 0..1000 {
            let Ok(limit) = left(deadline) else { return Ok((text_of(&text), false)) };
            conn.get_ref().set_read_timeout(Some(limit))?;
            match conn.read(&mut buf) {
                Ok(0) => return Ok((text_of(&text), true)),
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((text_of(&text), true)),
                Err(e) if timed_out(&e) => return Ok((text_of(&text), false)),
                Err(e) => return Err(e).context("read failed"),
            }
        }
        bail!("the receiver kept sending")
    }

    fn ok_replies(text: &str) -> usize {
        text.matches(r#""ok":true"#).count()
    }

    fn is_busy(text: &str) -> bool {
        text.starts_with(r#"{"ok":false,"error":"busy:"#)
    }

    /// Authenticated reload; "busy" or no greeting: a new connection, bounded in count and time.
    fn valid(addr: SocketAddr, token: &Token, id: usize, released: Instant) -> Result<Outcome> {
        let deadline = released + RETRY_FOR;
        let (mut busy, mut unseen) = (0, 0);
        for attempt in 0..MAX_ATTEMPTS {
            let given_up = |busy, unseen| anyhow!("not served in time: {busy} busy, {unseen} never greeted");
            let mut conn = connect(addr, deadline).map_err(|_| given_up(busy, unseen))?;
            let limit = GREETING_WAIT.min(left(deadline).map_err(|_| given_up(busy, unseen))?);
            match first(&mut conn, limit)? {
                None => unseen += 1,
                Some(First::Busy) => {
                    busy += 1;
                    // 25, 50, 100, 200 ms, spread a little per client so that retries come in no waves.
                    let pause = Duration::from_millis((25 << attempt.min(3)) + (id % 7) as u64 * 6);
                    thread::sleep(pause.min(left(deadline).map_err(|_| given_up(busy, unseen))?));
                }
                Some(First::Greeted { nonce }) => {
                    let line = json!({"op": "reload", "reason": "bench", "mac": token.mac(&nonce)});
                    send(&conn, format!("{line}\n").as_bytes()).context("cannot send the request")?;
                    conn.get_ref().set_read_timeout(Some(left(deadline)?))?;
                    let mut reply = String::new();
                    if conn.read_line(&mut reply).context("no reply")? == 0 {
                        bail!("the receiver closed the connection instead of replying");
                    }
                    let reply: Value = serde_json::from_str(&reply).with_context(|| format!("bad reply {reply:?}"))?;
                    return Ok(Outcome::Answered { ok: reply["ok"] == true, busy, unseen, at: released.elapsed() });
                }
            }
        }
        bail!("not served after {MAX_ATTEMPTS} connections: {busy} busy, {unseen} never greeted")
    }

    /// The same "random" bytes on every run (xorshift).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Garbage: random bytes and an over-long line written blind at once; broken JSON, a wrong MAC and no MAC
    /// after the greeting (blind too when none comes).
    fn garbage(addr: SocketAddr, id: usize, variant: u8, released: Instant) -> Result<Outcome> {
        let deadline = released + CLOSE_WITHIN;
        let mut conn = connect(addr, deadline)?;
        let kind = Kind::Garbage(variant);
        let bytes = match variant {
            0 => noise(id as u64, 1 + id * 37 % 3000),
            3 => [vec![b'x'; 6000], vec![b'\n']].concat(),
            _ => {
                let nonce = match first(&mut conn, GREETING_WAIT)? {
                    Some(First::Busy) => {
                        return Ok(Outcome::Closed { kind, busy: true, open_for: Duration::ZERO, ok: 0 });
                    }
                    Some(First::Greeted { nonce }) => nonce,
                    None => "0".repeat(32),
                };
                let line = match variant {
                    1 => r#"{"op":"reload","mac":"#.to_string(),
                    2 => json!({"op": "reload", "mac": Token::new("not the token at all")?.mac(&nonce)}).to_string(),
                    _ => json!({"op": "reload", "reason": "no mac"}).to_string(),
                };
                format!("{line}\n").into_bytes()
            }
        };
        // The receiver may close on us mid-write (over-long line, busy): that is an answer too.
        let _ = send(&conn, &bytes);
        match read_to_close(&mut conn, deadline)? {
            (text, true) => {
                Ok(Outcome::Closed { kind, busy: is_busy(&text), open_for: Duration::ZERO, ok: ok_replies(&text) })
            }
            (text, false) => bail!("garbage {variant}: still open at the deadline, having received {text:?}"),
        }
    }

    /// A request dripped one byte a second until the receiver answers or closes; with a valid MAC when a greeting
    /// came first, and dripped anyway (which completes the handshake) when none came.
    fn drip(addr: SocketAddr, token: &Token, released: Instant) -> Result<Outcome> {
        let deadline = released + CLOSE_WITHIN;
        let mut conn = connect(addr, deadline)?;
        let (nonce, greeting_pending) = match first(&mut conn, GREETING_WAIT)? {
            Some(First::Busy) => {
                return Ok(Outcome::Closed { kind: Kind::Drip, busy: true, open_for: Duration::ZERO, ok: 0 });
            }
            Some(First::Greeted { nonce }) => (nonce, false),
            None => ("0".repeat(32), true),
        };
        let line = format!("{}\n", json!({"op": "reload", "reason": "drip", "mac": token.mac(&nonce)}));
        let mut greeted = (!greeting_pending).then(Instant::now);
        let answered_after = usize::from(greeting_pending);
        let (mut received, mut sent, mut buf) = (Vec::new(), 0, [0u8; 1024]);
        for _ in 0..100 {
            left(deadline).map_err(|_| anyhow!("dripper still open after {sent} bytes"))?;
            // Stop writing once answered: writing to a closed socket would reset it.
            let lines = received.iter().filter(|&&b| b == b'\n').count();
            if lines <= answered_after && sent < DRIP_BYTES {
                if send(&conn, &line.as_bytes()[sent..=sent]).is_err() {
                    break;
                }
                sent += 1;
            }
            conn.get_ref().set_read_timeout(Some(Duration::from_secs(1)))?;
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if timed_out(&e) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e).context("read failed"),
            }
            if greeted.is_none() && !received.is_empty() {
                greeted = Some(Instant::now());
            }
        }
        if sent >= DRIP_BYTES {
            bail!("a dripper sent {sent} bytes and was not closed");
        }
        let text = String::from_utf8_lossy(&received);
        let open_for = greeted.map_or(Duration::ZERO, |at| at.elapsed());
        Ok(Outcome::Closed { kind: Kind::Drip, busy: is_busy(&text), open_for, ok: ok_replies(&text) })
    }

    /// Connects, neither reads nor writes for a while, then reads until the close.
    fn idle(addr: SocketAddr, released: Instant) -> Result<Outcome> {
        let deadline = released + CLOSE_WITHIN;
        let mut conn = connect(addr, deadline)?;
        let opened = Instant::now();
        thread::sleep(IDLE_HOLD);
        match read_to_close(&mut conn, (opened + UNACCEPTED_AFTER).min(deadline))? {
            (text, true) => Ok(Outcome::Closed {
                kind: Kind::Idle,
                busy: is_busy(&text),
                open_for: Duration::ZERO,
                ok: ok_replies(&text),
            }),
            (text, false) if text.is_empty() => Ok(Outcome::Unaccepted),
            (text, false) => bail!("idle: greeted but never closed: {text:?}"),
        }
    }

    fn client(kind: Kind, addr: SocketAddr, token: &Token, id: usize, start: &Barrier) -> Result<Outcome> {
        start.wait();
        let released = Instant::now();
        match kind {
            Kind::Idle => idle(addr, released),
            Kind::Garbage(variant) => garbage(addr, id, variant, released),
            Kind::Drip => drip(addr, token, released),
            Kind::Valid => valid(addr, token, id, released),
        }
    }

    /// Interleaved, so that every kind meets the cap: in each 20, 8 idle, 5 garbage, 1 drip, 6 valid.
    fn kind_of(i: usize) -> Kind {
        match i % 20 {
            0..8 => Kind::Idle,
            8..13 => Kind::Garbage((i % 20 - 8) as u8),
            13 => Kind::Drip,
            _ => Kind::Valid,
        }
    }

    /// A kB (or count) field of /proc/PID/status: `Threads:`, `VmRSS:`, `VmHWM:`.
    fn status(pid: u32, field: &str) -> Result<u64> {
        super::common::vm_kb(pid, field)
    }

    /// The TCP counters of this network namespace that show a listen queue overflowing.
    fn kernel_counters() -> Vec<(String, i64)> {
        let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return Vec::new() };
        let wanted = ["ListenOverflows", "SyncookiesSent"];
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(name, _)| wanted.contains(name))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect()
    }

    /// 1,000 clients need more descriptors than a usual soft limit of 1,024: raise it to the hard limit.
    fn raise_fd_limit() -> Result<()> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write only the rlimit we own.
        let ok = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
        };
        if !ok || limit.rlim_cur < 2 * TOTAL as u64 {
            bail!("the open file limit ({}) is too low for {TOTAL} connections", limit.rlim_cur);
        }
        Ok(())
    }

    /// Connect, greeting, authenticated ping, reply: the round trip.
    fn ping(addr: SocketAddr, token: &Token) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start + WAIT;
        let mut conn = connect(addr, deadline)?;
        let Some(First::Greeted { nonce }) = first(&mut conn, WAIT)? else { bail!("no greeting for the ping") };
        send(&conn, format!("{}\n", json!({"op": "ping", "mac": token.mac(&nonce)})).as_bytes())?;
        conn.get_ref().set_read_timeout(Some(left(deadline)?))?;
        let mut reply = String::new();
        conn.read_line(&mut reply).context("no answer to the ping")?;
        if !reply.contains(r#""ok":true"#) {
            bail!("the ping failed: {reply:?}");
        }
        Ok(start.elapsed())
    }

    pub fn measure(scratch: &Scratch) -> Result<Mixed> {
        raise_fd_limit()?;
        let (token_file, touch) = (scratch.arg("token"), scratch.arg("mixed.reload"));
        let (cap, read_timeout) = (CAP.to_string(), READ_TIMEOUT_MS.to_string());
        let args = [
            "--settle",
            "0",
            "--touch",
            &touch,
            "--token-file",
            &token_file,
            "--max-connections",
            &cap,
            "--read-timeout",
            &read_timeout,
        ];
        let receiver = Receiver::start(scratch, "mixed", &args)?;
        let (pid, addr) = (receiver.pid(), receiver.addr);
        let token = Token::new(&scratch.token)?;
        thread::sleep(Duration::from_millis(100)); // the receiver's start-up to settle before the "before" figures
        let rss_before_kb = status(pid, "VmRSS:")?;
        let base_threads = status(pid, "Threads:")?;
        let kernel_before = kernel_counters();
        eprintln!(
            "bench: {TOTAL} mixed connections at once ({IDLE} idle, {GARBAGE} garbage, {DRIP} drip, {VALID} valid)"
        );
        let start = Arc::new(Barrier::new(TOTAL + 1));
        let mut clients: Vec<(Kind, JoinHandle<Result<Outcome>>)> = Vec::with_capacity(TOTAL);
        for id in 0..TOTAL {
            let (kind, start, token) = (kind_of(id), Arc::clone(&start), token.clone());
            let handle = thread::Builder::new()
                .stack_size(CLIENT_STACK)
                .spawn(move || client(kind, addr, &token, id, &start))
                .context("cannot start a client thread")?;
            clients.push((kind, handle));
        }
        start.wait();
        let released = Instant::now();
        let (mut max_threads, mut rss_max_kb, mut samples) = (0, 0, 0);
        while released.elapsed() < SAMPLE_FOR && !clients.iter().all(|(_, c)| c.is_finished()) {
            if let (Ok(threads), Ok(rss)) = (status(pid, "Threads:"), status(pid, "VmRSS:")) {
                max_threads = max_threads.max(threads);
                rss_max_kb = rss_max_kb.max(rss);
                samples += 1;
            }
            thread::sleep(SAMPLE_EVERY);
        }
        let mut mixed = Mixed {
            answered: 0,
            busy_retries: 0,
            unseen_retries: 0,
            last_answer: Duration::ZERO,
            rejected: 0,
            drips_served: 0,
            longest_drip: Duration::ZERO,
            idle_closed: 0,
            unaccepted: 0,
            bad_ok: 0,
            errors: 0,
            first_error: None,
            max_threads,
            threads_after: 0,
            samples,
            rss_before_kb,
            rss_max_kb,
            peak_kb: 0,
            rss_after_kb: 0,
            ping: Duration::ZERO,
            kernel: Vec::new(),
        };
        for (kind, handle) in clients {
            if !handle.is_finished() {
                bail!("a client ({kind:?}) still runs after {} s", SAMPLE_FOR.as_secs());
            }
            let outcome = handle.join().unwrap_or_else(|_| Err(anyhow!("the client thread panicked")));
            mixed.count(kind, outcome);
        }
        // Afterwards, at once: a fresh authenticated ping.
        mixed.ping = ping(addr, &token)?;
        wait_for_own_threads(pid, base_threads.max(2))?;
        mixed.threads_after = status(pid, "Threads:")?;
        mixed.peak_kb = status(pid, "VmHWM:")?;
        mixed.rss_after_kb = status(pid, "VmRSS:")?;
        mixed.kernel = kernel_counters()
            .into_iter()
            .map(|(name, after)| {
                let before = kernel_before.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
                (name, after - before)
            })
            .collect();
        Ok(mixed)
    }

    /// Waits (at most [`WAIT`]) until the receiver is back to its own threads: every connection thread ended.
    fn wait_for_own_threads(pid: u32, base: u64) -> Result<()> {
        let what = format!("the receiver's connection threads did not end within {} s", WAIT.as_secs());
        super::common::wait_until(WAIT, Duration::from_millis(20), &what, || Ok(status(pid, "Threads:")? <= base))
    }

    impl Mixed {
        fn count(&mut self, kind: Kind, outcome: Result<Outcome>) {
            match outcome {
                Err(err) => {
                    self.errors += 1;
                    self.first_error.get_or_insert_with(|| format!("{kind:?}: {err:#}"));
                }
                Ok(Outcome::Answered { ok, busy, unseen, at }) => {
                    self.answered += usize::from(ok);
                    self.busy_retries += busy;
                    self.unseen_retries += unseen;
                    self.last_answer = self.last_answer.max(at);
                }
                Ok(Outcome::Closed { kind, busy, open_for, ok }) => {
                    self.bad_ok += ok;
                    if busy {
                        self.rejected += 1;
                    } else if kind == Kind::Drip {
                        self.drips_served += 1;
                        self.longest_drip = self.longest_drip.max(open_for);
                    } else if kind == Kind::Idle {
                        self.idle_closed += 1;
                    }
                }
                Ok(Outcome::Unaccepted) => self.unaccepted += 1,
            }
        }

        pub fn print(&self) {
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
            println!("| valid reloads answered `\"ok\":true` / total | {} / {VALID} |", self.answered);
            println!("| time until every valid reload was answered | {} |", secs(self.last_answer));
            println!("| retries of valid clients after \"busy\" | {} |", self.busy_retries);
            println!(
                "| retries of valid clients after no greeting within {} s | {} |",
                GREETING_WAIT.as_secs(),
                self.unseen_retries
            );
            println!("| other connections answered \"busy\" | {} |", self.rejected);
            println!(
                "| drippers served, closed at the read timeout; the longest open after its greeting | {}; {} |",
                self.drips_served,
                secs(self.longest_drip)
            );
            println!(
                "| idle connections closed by the receiver / never accepted by it | {} / {} |",
                self.idle_closed, self.unaccepted
            );
            println!("| `\"ok\":true` replies to garbage, drip or idle connections | {} |", self.bad_ok);
            println!("| client errors | {} |", self.errors);
            println!(
                "| receiver threads, most sampled (cap {CAP}; {} samples); after the load | {}; {} |",
                self.samples, self.max_threads, self.threads_after
            );
            println!(
                "| receiver RSS before / most sampled (VmRSS) / peak (VmHWM) / after | {} / {} / {} / {} |",
                mb(self.rss_before_kb),
                mb(self.rss_max_kb),
                mb(self.peak_kb),
                mb(self.rss_after_kb)
            );
            println!(
                "| ping after the load (connect, greeting, authenticated ping, reply) | {:.1} ms |",
                self.ping.as_secs_f64() * 1000.0
            );
            let kernel: Vec<String> = self.kernel.iter().map(|(name, delta)| format!("{name} +{delta}")).collect();
            println!("| kernel counters during the load (whole network namespace) | {} |\n", kernel.join(", "));
            if let Some(error) = &self.first_error {
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
