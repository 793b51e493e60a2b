//! Section 5 of `benches/send.rs`: the receiver under attack (issue 12; DESIGN.md, "Security": "a valid reload is
//! answered within its timeout under any such flood").
//!
//! Three attacks, each against a fresh `touchwire listen --json --touch FILE --token-file FILE` (auth on, the
//! default `--max-connections` 128, `--read-timeout` 10 s and `--settle` 200 ms):
//!
//! 1. **held**: [`HELD`] TCP connections from 127.0.0.2 … 127.0.0.250, opened at once and held idle (nothing
//!    written, nothing read) for [`HOLD`], then closed;
//! 2. **churn**: [`CHURN_THREADS`] threads connecting from 127.0.0.2 … 127.0.0.250 and closing at once, [`CHURNS`]
//!    connections in all, as fast as they go;
//! 3. **slot flood**: [`FLOOD`] idle connections from 127.0.0.2 alone, each reopened as soon as the receiver closes
//!    it, for [`FLOOD_FOR`].
//!
//! During each, a valid sender from 127.0.0.1 does one authenticated reload on a fresh connection every
//! [`VALID_EVERY`], one after the other, each within a [`VALID_BUDGET`] budget; a "busy" answer is retried within
//! that budget with the backoff of touchwire's own client (10 ms, doubling, at most 200 ms). It speaks the wire
//! protocol itself (JSON lines read as plain JSON), so that it works the same against older receivers. The
//! receiver's VmRSS, threads and open descriptors are read before, every [`SAMPLE_EVERY`] during, and [`AFTER`]
//! after the attack.
//!
//! `BENCH_TOUCHWIRE=/path/to/touchwire` picks the binary under test (default: the one cargo built for this bench),
//! so that the same section measures an older build; `BENCH_ONLY=attack` runs this section alone (with the
//! machine). Attackers bind their source address before connecting: any 127.x address is loopback on Linux.
//! Nothing but loopback is contacted; every loop is bounded in count and in time.

use super::common::{self, Kill, Samples};
use super::{Events, Receiver, Scratch, WAIT, mb, mix};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use touchwire::auth::Token;

/// Attack 1: connections held at once.
const HELD: usize = 2000;
/// Attack 1: how long they are held once opened.
const HOLD: Duration = Duration::from_secs(5);
/// Attack 1: how long the bench waits for their handshakes before it counts them.
const HANDSHAKES_WITHIN: Duration = Duration::from_secs(2);
/// Attack 2: open/close churns in all, and the threads doing them.
const CHURNS: usize = 20_000;
const CHURN_THREADS: usize = 8;
/// Attack 2: its bound in time (it takes a few seconds).
const CHURN_FOR: Duration = Duration::from_secs(20);
/// Attack 3: connections held from one address, and how long each is reopened.
const FLOOD: usize = 128;
const FLOOD_FOR: Duration = Duration::from_secs(15);
/// Attack 3: most connections one flooding thread opens (the time bound comes first).
const FLOOD_MAX_OPENS: usize = 1_000_000;
/// An attacker's connect gives up after this.
const ATTACK_CONNECT: Duration = Duration::from_secs(1);
/// Attack threads need little stack.
const ATTACKER_STACK: usize = 64 * 1024;
/// The valid sender: one reload started every this, each answered within the budget or failed.
const VALID_EVERY: Duration = Duration::from_millis(50);
const VALID_BUDGET: Duration = Duration::from_millis(1000);
/// The valid sender's first reload comes this long after the attack started.
const VALID_DELAY: Duration = Duration::from_millis(100);
/// Most reloads the valid sender does in one attack (the attack's end comes first).
const VALID_MAX: usize = 800;
/// touchwire's client backs off "busy" from 10 ms, doubling, up to 200 ms.
const BUSY_FIRST_PAUSE: Duration = Duration::from_millis(10);
const BUSY_MAX_PAUSE: Duration = Duration::from_millis(200);
/// The receiver's resources: sampled this often, for at most this long.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const SAMPLE_FOR: Duration = Duration::from_secs(45);
/// The "after" figures are read this long after the attack's connections are closed.
const AFTER: Duration = Duration::from_millis(1500);
/// The receiver's start-up settles for this long before the "before" figures.
const SETTLE_START: Duration = Duration::from_millis(200);
/// The goal (DESIGN.md, "Security"), reported, not asserted.
const GOAL_MEDIAN_MS: f64 = 50.0;
const GOAL_WORST_MS: f64 = 1000.0;
/// "Back to baseline" for memory: VmRSS after at most this much above before (allocator caches).
const RSS_SLACK_KB: u64 = 1024;
/// Kernel counters reported (whole network namespace): a listen queue overflowing, handshakes dropped or answered
/// with SYN cookies, and retransmissions after a timeout (200 ms at least), which show as a latency tail.
const KERNEL_COUNTERS: [&str; 6] =
    ["ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop", "TCPSynRetrans", "TCPTimeouts"];

/// `BENCH_ONLY=attack`: whether only this section runs. Any other value is refused.
pub fn only() -> Result<bool> {
    match std::env::var("BENCH_ONLY") {
        Err(_) => Ok(false),
        Ok(text) if text.trim().is_empty() => Ok(false),
        Ok(text) if text.trim() == "attack" => Ok(true),
        Ok(text) => bail!("BENCH_ONLY={text:?}: the only section that runs alone is `attack`"),
    }
}

/// The machine and this section alone (`BENCH_ONLY=attack`).
pub fn alone() -> Result<()> {
    let scratch = Scratch::new()?;
    println!("# touchwire send benchmark: the attack section alone\n");
    println!("Command: `BENCH_ONLY=attack cargo bench --bench send` (release build).\n");
    super::Machine::probe(&super::netcat_version())?.print();
    measure(&scratch)?.print();
    eprintln!("bench: done");
    Ok(())
}

/// The binary under test: `BENCH_TOUCHWIRE`, or the one cargo built for this bench.
fn binary() -> Result<PathBuf> {
    match std::env::var_os("BENCH_TOUCHWIRE") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("BENCH_TOUCHWIRE={}: no such file", path.display());
            }
            Ok(path)
        }
        _ => Ok(PathBuf::from(env!("CARGO_BIN_EXE_touchwire"))),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The receiver under test and its resources
// ---------------------------------------------------------------------------------------------------------------

/// `cmd` (from [`Scratch::touchwire`], with its clean environment and directory) with another program.
pub(super) fn retarget(cmd: &Command, program: &Path) -> Command {
    let mut other = Command::new(program);
    other.args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        other.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => other.env(key, value),
            None => other.env_remove(key),
        };
    }
    other
}

/// [`Receiver::start`] with the binary under test: `listen --addr 127.0.0.1:0 --json --touch FILE --token-file
/// FILE`, every other option at its default.
fn start(scratch: &Scratch, binary: &Path, name: &str) -> Result<Receiver> {
    let (touch, token) = (scratch.arg(&format!("{name}.reload")), scratch.arg("token"));
    Receiver::start_binary(scratch, binary, name, &["--touch", &touch, "--token-file", &token])
}

/// What the receiver holds: resident memory, threads, open descriptors.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss_kb: u64,
    threads: u64,
    fds: u64,
}

impl Usage {
    fn of(pid: u32) -> Result<Usage> {
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).context("cannot list /proc/PID/fd")?.count() as u64;
        Ok(Usage { rss_kb: common::vm_kb(pid, "VmRSS:")?, threads: common::vm_kb(pid, "Threads:")?, fds })
    }

    /// The larger of each figure.
    fn max(self, other: Usage) -> Usage {
        Usage {
            rss_kb: self.rss_kb.max(other.rss_kb),
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
        }
    }

    /// Threads and descriptors no more than `before`.
    fn threads_and_fds_back_to(&self, before: &Usage) -> bool {
        self.threads <= before.threads && self.fds <= before.fds
    }

    /// Memory within [`RSS_SLACK_KB`] of `before`.
    fn rss_back_to(&self, before: &Usage) -> bool {
        self.rss_kb <= before.rss_kb + RSS_SLACK_KB
    }
}

/// Samples `pid` every [`SAMPLE_EVERY`] until `stop` (at most [`SAMPLE_FOR`]): the most of each figure, and the
/// number of samples.
fn sample(pid: u32, stop: &AtomicBool) -> (Usage, u64) {
    let (mut most, mut samples) = (Usage::default(), 0);
    let end = Instant::now() + SAMPLE_FOR;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end && !common::interrupted() {
        if let Ok(usage) = Usage::of(pid) {
            most = most.max(usage);
            samples += 1;
        }
        thread::sleep(SAMPLE_EVERY);
    }
    (most, samples)
}

// ---------------------------------------------------------------------------------------------------------------
// The valid sender
// ---------------------------------------------------------------------------------------------------------------

/// What the valid sender saw during one attack.
#[derive(Debug, Default)]
struct Valid {
    attempted: u64,
    /// Answered `"ok":true` within [`VALID_BUDGET`].
    succeeded: u64,
    /// "busy" answers, each retried within the budget.
    busy: u64,
    /// Time from the first connect to the `"ok":true` reply, busy retries included; a failed reload counts as the
    /// whole budget (or longer, if it took longer to fail).
    latency: Samples,
    /// The first failure, and how many failed like it.
    failures: Vec<(String, u64)>,
    /// The slowest reload that succeeded: its time, and the phases of its last connection.
    slowest: Option<(Duration, Phases)>,
}

/// Where one connection of the valid sender spent its time: connect, greeting, reply (after the request).
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    connect: Duration,
    greeting: Duration,
    reply: Duration,
}

impl Phases {
    fn text(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "connect {:.1} ms, greeting {:.1} ms, reply {:.1} ms",
            ms(self.connect),
            ms(self.greeting),
            ms(self.reply)
        )
    }
}

impl Valid {
    fn fail(&mut self, why: String) {
        // Group by the message's first words: the rest names ports and times.
        let kind: String = why.split(':').next().unwrap_or("").to_string();
        match self.failures.iter_mut().find(|(seen, _)| seen.split(':').next() == Some(kind.as_str())) {
            Some((_, n)) => *n += 1,
            None => self.failures.push((why, 1)),
        }
    }

    fn worst(&self) -> f64 {
        self.latency.quantile(1.0)
    }
}

/// Authenticated reloads one after the other, one started every [`VALID_EVERY`], until `stop` (at most
/// [`VALID_MAX`]).
fn valid_sender(addr: SocketAddr, token: &Token, stop: &AtomicBool) -> Valid {
    let mut valid = Valid::default();
    let mut next = Instant::now() + VALID_DELAY;
    for _ in 0..VALID_MAX {
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(2).min(next.saturating_duration_since(Instant::now())));
        }
        if stop.load(Ordering::SeqCst) || common::interrupted() {
            break;
        }
        // After a slow reload the next starts at once, without catching up on those it missed.
        next = next.max(Instant::now()) + VALID_EVERY;
        valid.attempted += 1;
        let began = Instant::now();
        let mut phases = Phases::default();
        match reload(addr, token, began + VALID_BUDGET, &mut valid.busy, &mut phases) {
            Ok(()) if began.elapsed() <= VALID_BUDGET => {
                let took = began.elapsed();
                valid.succeeded += 1;
                valid.latency.push(took);
                if valid.slowest.is_none_or(|(slowest, _)| took > slowest) {
                    valid.slowest = Some((took, phases));
                }
            }
            Ok(()) => {
                valid.latency.push(began.elapsed());
                valid.fail(format!("answered after the budget: {:.0} ms", began.elapsed().as_secs_f64() * 1000.0));
            }
            Err(err) => {
                valid.latency.push(began.elapsed().max(VALID_BUDGET));
                valid.fail(format!("{err:#}"));
            }
        }
    }
    valid
}

/// What one connection of the valid sender got.
enum Answer {
    Ok,
    Busy,
}

/// One reload by `deadline`, retrying "busy" with a backoff; `busy` counts the busy answers, `phases` is the
/// last connection's.
fn reload(addr: SocketAddr, token: &Token, deadline: Instant, busy: &mut u64, phases: &mut Phases) -> Result<()> {
    let mut pause = BUSY_FIRST_PAUSE;
    // Bounded by the deadline; the count is a second bound.
    for _ in 0..1000 {
        match reload_once(addr, token, deadline, phases)? {
            Answer::Ok => return Ok(()),
            Answer::Busy => {
                *busy += 1;
                if Instant::now() + pause >= deadline {
                    bail!("still busy after {} ms", VALID_BUDGET.as_millis());
                }
                thread::sleep(pause);
                pause = (pause * 2).min(BUSY_MAX_PAUSE);
            }
        }
    }
    bail!("still busy after 1,000 tries")
}

/// Time left until `deadline`, or an error once it has passed.
fn left(deadline: Instant) -> Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => bail!("no answer within {} ms", VALID_BUDGET.as_millis()),
    }
}

/// A reply that says busy: `"code":"busy"`, or (older receivers, without `code`) an error starting with `busy`.
fn is_busy(line: &Value) -> bool {
    line["ok"] == false && (line["code"] == "busy" || line["error"].as_str().is_some_and(|e| e.starts_with("busy")))
}

/// One line as JSON, by `deadline`.
fn read_json(reader: &mut BufReader<TcpStream>, deadline: Instant, what: &str) -> Result<Value> {
    reader.get_ref().set_read_timeout(Some(left(deadline)?))?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => bail!("closed before the {what}"),
        Ok(_) => serde_json::from_str(&line).with_context(|| format!("the {what} is not JSON: {line:?}")),
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            bail!("no answer within {} ms (waiting for the {what})", VALID_BUDGET.as_millis())
        }
        Err(err) => Err(anyhow!("no {what}: {err}")),
    }
}

/// Connect, greeting, authenticated reload, reply: all by `deadline`.
fn reload_once(addr: SocketAddr, token: &Token, deadline: Instant, phases: &mut Phases) -> Result<Answer> {
    *phases = Phases::default();
    let mut mark = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let took = now - mark;
        mark = now;
        took
    };
    let stream = match TcpStream::connect_timeout(&addr, left(deadline)?) {
        Ok(stream) => stream,
        Err(err) if err.kind() == ErrorKind::TimedOut => {
            bail!("no answer within {} ms (connect)", VALID_BUDGET.as_millis())
        }
        Err(err) => bail!("cannot connect: {err}"),
    };
    phases.connect = lap();
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    let greeting = read_json(&mut reader, deadline, "greeting")?;
    phases.greeting = lap();
    if is_busy(&greeting) {
        return Ok(Answer::Busy);
    }
    let Some(nonce) = greeting["nonce"].as_str().filter(|_| greeting["touchwire"] == 1) else {
        bail!("neither a greeting nor busy: {greeting}");
    };
    let request = json!({"op": "reload", "reason": "bench", "mac": token.mac(nonce)});
    reader.get_ref().set_write_timeout(Some(left(deadline)?))?;
    let mut writer: &TcpStream = reader.get_ref();
    writer.write_all(format!("{request}\n").as_bytes()).context("cannot send the request")?;
    let reply = read_json(&mut reader, deadline, "reply")?;
    phases.reply = lap();
    if reply["ok"] == true {
        Ok(Answer::Ok)
    } else if is_busy(&reply) {
        // Evicted before the request landed: a new connection, as for a busy greeting.
        Ok(Answer::Busy)
    } else {
        bail!("refused: {reply}")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The attackers
// ---------------------------------------------------------------------------------------------------------------

/// The `i`-th attacker's source address: 127.0.0.2 … 127.0.0.250, round-robin.
fn attacker(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8)
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// A TCP connection from `source` (its port chosen at connect) to `to`. With `wait`, once the handshake completed
/// within it (then blocking); without, at once, non-blocking, the handshake perhaps still under way.
fn connect_from(source: Ipv4Addr, to: SocketAddrV4, wait: Option<Duration>) -> std::io::Result<TcpStream> {
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, flags, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it when dropped, on every path below.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let len = |size: usize| size as libc::socklen_t;
    // Best effort: the port is then chosen at connect, for this destination, which spares ports.
    // SAFETY: setsockopt(2) reads one c_int that lives across the call.
    unsafe {
        let one = (&one as *const libc::c_int).cast();
        libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, one, len(size_of::<libc::c_int>()));
    }
    let (from, dest) = (sockaddr(SocketAddrV4::new(source, 0)), sockaddr(to));
    let addr_len = len(size_of::<libc::sockaddr_in>());
    // SAFETY: bind(2) reads one sockaddr_in that lives across the call.
    if unsafe { libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), addr_len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: connect(2) reads one sockaddr_in that lives across the call.
    if unsafe { libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), addr_len) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    let Some(wait) = wait else { return Ok(stream) };
    let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the socket this function owns.
    match unsafe { libc::poll(&mut poll, 1, ms) } {
        n if n < 0 => return Err(std::io::Error::last_os_error()),
        0 => return Err(std::io::Error::new(ErrorKind::TimedOut, "connect timed out")),
        _ => {}
    }
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Counts of what attackers saw, shared by their threads.
#[derive(Debug, Default)]
struct Counts {
    /// Connections whose handshake completed.
    opened: AtomicU64,
    /// Connects that failed or timed out.
    failed: AtomicU64,
    /// Connections whose first line was a greeting, or "busy" (attack 3 reads them).
    greeted: AtomicU64,
    told_busy: AtomicU64,
    /// Connections the receiver closed (or reset) while held.
    closed_by_receiver: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn failed(&self, err: &std::io::Error) {
        Counts::add(&self.failed);
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| err.to_string());
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Attack 1: [`HELD`] connections opened at once, held idle for [`HOLD`], closed.
fn held(to: SocketAddrV4, counts: &Counts) -> Result<()> {
    let mut streams = Vec::with_capacity(HELD);
    for i in 0..HELD {
        common::check_interrupted()?;
        match connect_from(attacker(i), to, None) {
            Ok(stream) => streams.push(stream),
            Err(err) => counts.failed(&err),
        }
    }
    let opened_at = Instant::now();
    // Handshakes under way complete in the kernel; count those done within HANDSHAKES_WITHIN.
    let mut established = 0;
    while opened_at.elapsed() < HANDSHAKES_WITHIN {
        established = streams.iter().filter(|s| s.peer_addr().is_ok()).count();
        if established == streams.len() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    counts.opened.store(established as u64, Ordering::Relaxed);
    counts.failed.fetch_add((streams.len() - established) as u64, Ordering::Relaxed);
    while opened_at.elapsed() < HOLD {
        common::check_interrupted()?;
        thread::sleep(Duration::from_millis(20).min(HOLD.saturating_sub(opened_at.elapsed())));
    }
    // Which ones the receiver closed, seen without reading: a FIN or a reset is pending on them.
    let mut polls: Vec<libc::pollfd> =
        streams.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 }).collect();
    // SAFETY: `polls` holds valid pollfds for sockets that live across the call; a zero timeout does not block.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) };
    let closed = polls.iter().filter(|p| p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0).count();
    counts.closed_by_receiver.store(closed as u64, Ordering::Relaxed);
    drop(streams);
    Ok(())
}

/// Attack 2: [`CHURNS`] connections opened and closed at once by [`CHURN_THREADS`] threads.
fn churn(to: SocketAddrV4, counts: &Counts) -> Result<()> {
    let next = AtomicUsize::new(0);
    let end = Instant::now() + CHURN_FOR;
    thread::scope(|scope| -> Result<()> {
        let mut threads = Vec::new();
        for _ in 0..CHURN_THREADS {
            let work = || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CHURNS || Instant::now() >= end || common::interrupted() {
                    break;
                }
                match connect_from(attacker(i), to, Some(ATTACK_CONNECT)) {
                    Ok(stream) => {
                        Counts::add(&counts.opened);
                        drop(stream);
                    }
                    Err(err) => counts.failed(&err),
                }
            };
            threads.push(thread::Builder::new().stack_size(ATTACKER_STACK).spawn_scoped(scope, work)?);
        }
        for thread in threads {
            thread.join().map_err(|_| anyhow!("a churn thread panicked"))?;
        }
        Ok(())
    })
}

/// Attack 3: [`FLOOD`] idle connections from 127.0.0.2, each reopened as soon as the receiver closes it, for
/// [`FLOOD_FOR`].
fn flood(to: SocketAddrV4, counts: &Counts) -> Result<()> {
    let end = Instant::now() + FLOOD_FOR;
    thread::scope(|scope| -> Result<()> {
        let mut threads = Vec::new();
        for _ in 0..FLOOD {
            let work = || {
                for _ in 0..FLOOD_MAX_OPENS {
                    if Instant::now() >= end || common::interrupted() {
                        break;
                    }
                    match connect_from(Ipv4Addr::new(127, 0, 0, 2), to, Some(ATTACK_CONNECT)) {
                        Ok(stream) => {
                            Counts::add(&counts.opened);
                            sit(stream, end, counts);
                        }
                        Err(err) => {
                            counts.failed(&err);
                            thread::sleep(Duration::from_millis(5)); // out of ports, say: no spinning
                        }
                    }
                }
            };
            threads.push(thread::Builder::new().stack_size(ATTACKER_STACK).spawn_scoped(scope, work)?);
        }
        for thread in threads {
            thread.join().map_err(|_| anyhow!("a flood thread panicked"))?;
        }
        Ok(())
    })
}

/// Sits on a connection, writing nothing, until the receiver closes it or `end`; counts what came first.
fn sit(stream: TcpStream, end: Instant, counts: &Counts) {
    let mut reader = BufReader::new(stream);
    let Some(limit) = end.checked_duration_since(Instant::now()) else { return };
    if reader.get_ref().set_read_timeout(Some(limit.max(Duration::from_millis(1)))).is_err() {
        return;
    }
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {
            let first: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if first["touchwire"] == 1 {
                Counts::add(&counts.greeted);
            } else if is_busy(&first) {
                Counts::add(&counts.told_busy);
            }
        }
        Ok(_) => {}
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
        Err(_) => {
            Counts::add(&counts.closed_by_receiver);
            return;
        }
    }
    // Then until the close (a few lines at most, each read bounded by the time left).
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        let Some(limit) = end.checked_duration_since(Instant::now()) else { return };
        if reader.get_ref().set_read_timeout(Some(limit.max(Duration::from_millis(1)))).is_err() {
            return;
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            Err(_) => break,
        }
    }
    Counts::add(&counts.closed_by_receiver);
}

// ---------------------------------------------------------------------------------------------------------------
// One attack, measured
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Held,
    Churn,
    Flood,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Held => "2,000 held",
            Kind::Churn => "20,000 churns",
            Kind::Flood => "slot flood",
        }
    }
}

/// One attack's figures.
struct Attack {
    kind: Kind,
    counts: Counts,
    took: Duration,
    valid: Valid,
    before: Usage,
    peak: Usage,
    after: Usage,
    samples: u64,
    events: Events,
    /// How much each of [`KERNEL_COUNTERS`] grew during the attack and the "after" wait.
    kernel: Vec<(String, i64)>,
    /// The receiver's exit status, if it died during the attack.
    died: Option<String>,
}

impl Attack {
    /// Every valid reload answered, within the goal's median and worst.
    fn reloads_goal_met(&self) -> bool {
        self.valid.attempted > 0
            && self.valid.succeeded == self.valid.attempted
            && self.valid.latency.median() <= GOAL_MEDIAN_MS
            && self.valid.worst() <= GOAL_WORST_MS
            && self.died.is_none()
    }
}

/// A fresh receiver, the attack with the valid sender and the sampler alongside, then the figures.
fn attack(scratch: &Scratch, binary: &Path, kind: Kind) -> Result<Attack> {
    let name = format!("attack-{kind:?}").to_lowercase();
    let mut receiver = start(scratch, binary, &name)?;
    let (pid, addr) = (receiver.pid(), receiver.addr);
    let SocketAddr::V4(to) = addr else { bail!("the receiver bound {addr}, not an IPv4 address") };
    let token = Token::new(&scratch.token)?;
    thread::sleep(SETTLE_START);
    let before = Usage::of(pid)?;
    let events_before = receiver.events();
    let kernel_before = mix::tcp_counters(&KERNEL_COUNTERS);
    let counts = Counts::default();
    let (stop_sending, stop_sampling) = (AtomicBool::new(false), AtomicBool::new(false));
    eprintln!("bench: attack {}", kind.name());
    let (attacked, took, valid, (peak, samples), after) = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(pid, &stop_sampling));
        let sender = scope.spawn(|| valid_sender(addr, &token, &stop_sending));
        let began = Instant::now();
        let attacked = match kind {
            Kind::Held => held(to, &counts),
            Kind::Churn => churn(to, &counts),
            Kind::Flood => flood(to, &counts),
        };
        let took = began.elapsed();
        stop_sending.store(true, Ordering::SeqCst);
        let valid = sender.join().unwrap_or_default();
        thread::sleep(AFTER.saturating_sub(began.elapsed() - took));
        let after = Usage::of(pid);
        stop_sampling.store(true, Ordering::SeqCst);
        let sampled = sampler.join().unwrap_or_default();
        (attacked, took, valid, sampled, after)
    });
    let died = receiver.child.child.try_wait()?.map(|status| status.to_string());
    attacked?;
    let after = match &died {
        None => after?,
        Some(status) => {
            eprintln!("bench: the receiver died during attack {}: {status}", kind.name());
            Usage::default()
        }
    };
    let events = receiver.events().since(&events_before);
    let kernel = mix::grown(&kernel_before, mix::tcp_counters(&KERNEL_COUNTERS));
    let peak = peak.max(before).max(after);
    Ok(Attack { kind, counts, took, valid, before, peak, after, samples, events, kernel, died })
}

/// Section 5's results.
pub struct Attacks {
    binary: PathBuf,
    version: String,
    attacks: Vec<Attack>,
}

pub fn measure(scratch: &Scratch) -> Result<Attacks> {
    mix::raise_fd_limit().map_err(|e| anyhow!(e))?;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes one rlimit this function owns.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur < HELD as u64 + 256 {
        bail!("the open file limit ({}) is too low to hold {HELD} connections", limit.rlim_cur);
    }
    let binary = binary()?;
    let version = common::first_line(&binary.to_string_lossy(), &["--version"], WAIT, Kill::Pid)?;
    eprintln!("bench: receiver under attack: {} ({version})", binary.display());
    let mut attacks = Vec::new();
    for kind in [Kind::Held, Kind::Churn, Kind::Flood] {
        attacks.push(attack(scratch, &binary, kind)?);
    }
    Ok(Attacks { binary, version, attacks })
}

impl Attacks {
    pub fn print(&self) {
        println!("\n## Receiver under attack (issue 12)\n");
        println!(
            "Binary under test: `{}` ({}; `BENCH_TOUCHWIRE` picks another). Each attack runs against a fresh \
             `touchwire listen --json --touch FILE --token-file FILE` (auth on; `--max-connections` 128, \
             `--read-timeout` 10 s and `--settle` 200 ms: the defaults):\n",
            self.binary.display(),
            self.version
        );
        println!(
            "- **2,000 held**: {HELD} connections from 127.0.0.2 … 127.0.0.250, opened at once (non-blocking \
             connects), held idle for {} s (nothing written, nothing read), then closed;",
            HOLD.as_secs()
        );
        println!(
            "- **20,000 churns**: {CHURN_THREADS} threads connecting from 127.0.0.2 … 127.0.0.250 and closing at \
             once, {CHURNS} connections in all, as fast as they go (bounded at {} s);",
            CHURN_FOR.as_secs()
        );
        println!(
            "- **slot flood**: {FLOOD} idle connections from 127.0.0.2 alone, each reopened as soon as the \
             receiver closes it, for {} s.\n",
            FLOOD_FOR.as_secs()
        );
        println!(
            "During each, a valid sender from 127.0.0.1 starts an authenticated reload on a fresh connection every \
             {} ms, one after the other, each with a {} ms budget from connect to reply; \"busy\" is retried \
             within the budget (backoff 10 ms doubling to 200 ms, as `touchwire send`). Latency counts from the \
             first connect to the `\"ok\":true` reply, retries included; a failed reload counts as {} ms. \
             Receiver resources: before, the most of each sampled every {} ms, and {} ms after the attack's \
             connections are closed.\n",
            VALID_EVERY.as_millis(),
            VALID_BUDGET.as_millis(),
            VALID_BUDGET.as_millis(),
            SAMPLE_EVERY.as_millis(),
            AFTER.as_millis()
        );
        let header: Vec<&str> = self.attacks.iter().map(|a| a.kind.name()).collect();
        println!("| | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(self.attacks.len()));
        let row = |name: &str, value: &dyn Fn(&Attack) -> String| {
            let cells: Vec<String> = self.attacks.iter().map(value).collect();
            println!("| {name} | {} |", cells.join(" | "));
        };
        let get = Counts::get;
        row("attack connections opened / failed to open", &|a| {
            format!("{} / {}", get(&a.counts.opened), get(&a.counts.failed))
        });
        row("attack connections greeted / told busy first (flood: read)", &|a| match a.kind {
            Kind::Flood => format!("{} / {}", get(&a.counts.greeted), get(&a.counts.told_busy)),
            _ => "–".into(),
        });
        row("attack connections the receiver closed (held: by the end of the hold)", &|a| match a.kind {
            Kind::Churn => "–".into(),
            _ => get(&a.counts.closed_by_receiver).to_string(),
        });
        row("attack duration", &|a| format!("{:.2} s", a.took.as_secs_f64()));
        row("**valid reloads succeeded within 1 s / attempted**", &|a| {
            format!("**{} / {}**", a.valid.succeeded, a.valid.attempted)
        });
        row("busy answers to the valid sender (retried)", &|a| a.valid.busy.to_string());
        let ms = |v: f64| format!("{v:.1}");
        row("valid reload latency median / p90 / worst, ms", &|a| {
            let l = &a.valid.latency;
            format!("{} / {} / {}", ms(l.median()), ms(l.quantile(0.9)), ms(a.valid.worst()))
        });
        row("receiver RSS before / peak / after", &|a| {
            format!("{} / {} / {}", mb(a.before.rss_kb), mb(a.peak.rss_kb), mb(a.after.rss_kb))
        });
        row("receiver threads before / peak / after", &|a| {
            format!("{} / {} / {}", a.before.threads, a.peak.threads, a.after.threads)
        });
        row("receiver open fds before / peak / after", &|a| {
            format!("{} / {} / {}", a.before.fds, a.peak.fds, a.after.fds)
        });
        row("samples", &|a| a.samples.to_string());
        row("receiver error / rejected events", &|a| a.events.errors.to_string());
        row("receiver actions run", &|a| a.events.actions().to_string());
        row("kernel counters grown (whole namespace)", &|a| {
            let grown: Vec<String> =
                a.kernel.iter().filter(|(_, d)| *d != 0).map(|(name, d)| format!("{name} {d:+}")).collect();
            if grown.is_empty() { "none".into() } else { grown.join(", ") }
        });
        row("receiver still running after", &|a| {
            a.died.as_ref().map_or_else(|| "yes".into(), |s| format!("**no**: {s}"))
        });
        row("RSS after − before", &|a| {
            format!("{:+.1} MB", (a.after.rss_kb as f64 - a.before.rss_kb as f64) / 1024.0)
        });
        row("**goal: valid reloads all answered, median ≤ 50 ms, worst ≤ 1 s**", &|a| yes(a.reloads_goal_met()));
        row("**goal: threads and fds back to baseline after**", &|a| {
            yes(a.died.is_none() && a.after.threads_and_fds_back_to(&a.before))
        });
        row("**goal: RSS back to baseline after (within 1 MB)**", &|a| {
            yes(a.died.is_none() && a.after.rss_back_to(&a.before))
        });
        println!();
        println!(
            "- Goal (DESIGN.md, \"Security\"; reported, not asserted): during any attack every valid reload \
             answered, within {GOAL_MEDIAN_MS:.0} ms median and {GOAL_WORST_MS:.0} ms worst; the receiver's \
             threads and descriptors back to their baseline after, and its memory within 1 MB of it. Memory an \
             allocator keeps after the threads that used it ended counts against the last: a higher \
             \"after\" is retention or a leak, which this run alone cannot tell apart."
        );
        for a in &self.attacks {
            if let Some((took, phases)) = &a.valid.slowest {
                let ms = took.as_secs_f64() * 1000.0;
                println!(
                    "- {}: slowest valid reload answered: {ms:.1} ms; its last connection: {}",
                    a.kind.name(),
                    phases.text()
                );
            }
            for (why, n) in &a.valid.failures {
                println!("- {}: valid reloads failed: {n} × like `{}`", a.kind.name(), why.replace('`', "'"));
            }
            if let Some(error) = a.counts.first_error() {
                println!("- {}: first attacker connect error: {error}", a.kind.name());
            }
        }
        println!();
    }
}

fn yes(ok: bool) -> String {
    if ok { "yes".into() } else { "**no**".into() }
}
