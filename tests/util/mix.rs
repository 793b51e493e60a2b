//! The "1,000 mixed connections" load (issue 8, item 3): 1,000 client threads released at once by a
//! barrier against a receiver capped at 128 connections, each opening a connection: idle ones,
//! garbage, slow drippers and authenticated reloads. Here are the mix (its kinds, counts and
//! timings), the clients, the sampling of the receiver's threads and memory in /proc, and the
//! tally of what the clients saw.
//!
//! Two users: `tests/load.rs` asserts on the tally, `benches/send.rs` (section 4) reports it. Both
//! include this file by path, so it depends on nothing else in `tests/util`.
//!
//! A connection the receiver accepted is greeted (or told "busy") at once. A client that gets no
//! first line within [`GREETING_WAIT`] counts it (a valid client then retries), since that means
//! a burst was dropped unseen at a full listen backlog: the kernel completed the handshake with a
//! SYN cookie and the receiver never accepted it (as with std's fixed backlog of 128).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use touchwire::auth::Token;

/// `--max-connections`.
pub const CAP: u64 = 128;
/// `--read-timeout`, ms.
pub const READ_TIMEOUT_MS: u64 = 2000;
pub const IDLE: usize = 400;
pub const GARBAGE: usize = 250;
pub const DRIP: usize = 50;
pub const VALID: usize = 300;
pub const TOTAL: usize = IDLE + GARBAGE + DRIP + VALID;
/// A receiver that has accepted a connection greets it (or says busy) at once; nothing after this
/// long means the kernel completed a connection the receiver never accepted.
pub const GREETING_WAIT: Duration = Duration::from_secs(3);
/// How long a valid client keeps retrying, from its release.
const RETRY_FOR: Duration = Duration::from_secs(20);
/// Most connections one valid client opens (the time bound comes first).
const MAX_ATTEMPTS: u32 = 400;
/// How long any other client waits for the receiver to close on it, from its release. Covers
/// connections the kernel accepts late (SYNs and SYN-ACKs are retried after 1, 3, 7 s) plus the
/// read timeout.
const CLOSE_WITHIN: Duration = Duration::from_secs(30);
/// How long an idle client sits on its connection before it looks: past the read timeout.
pub const IDLE_HOLD: Duration = Duration::from_secs(3);
/// An idle client that received nothing this long after connecting was never accepted: the last
/// retry of a dropped handshake comes 7 s in, then 2 s of read timeout.
const UNACCEPTED_AFTER: Duration = Duration::from_secs(12);
/// A dripper sends one byte per this, at most [`DRIP_BYTES`]: far less than its line.
const DRIP_EVERY: Duration = Duration::from_secs(1);
const DRIP_BYTES: usize = 25;
/// Client threads need little: their buffers live on the heap.
const CLIENT_STACK: usize = 64 * 1024;
/// The sampler's period, and how long it samples at most (every client is done well before).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const SAMPLE_FOR: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Idle,
    /// Which kind of garbage: see [`garbage`].
    Garbage(u8),
    Drip,
    Valid,
}

/// What one client saw.
enum Outcome {
    /// A valid client's reply; before it, the busy answers and the connections never greeted.
    Answered { reply: Value, busy: u32, unseen: u32, at: Duration },
    /// Any other client: everything it received until the receiver closed the connection ("busy"
    /// alone when that was the first line, "greeted\n" for a greeting it consumed), how long a
    /// dripper stayed open after its greeting, and the bytes it sent.
    Closed { kind: Kind, text: String, open_for: Duration, sent: usize },
    /// An idle client that got nothing: the receiver never accepted its connection.
    Unaccepted,
}

/// The receiver's arguments after `listen`'s address options: the cap and read timeout of the mix,
/// no settle window (every valid reload runs or merges at once).
pub fn receiver_args(touch: &str, token_file: &str) -> Vec<String> {
    let (cap, read_timeout) = (CAP.to_string(), READ_TIMEOUT_MS.to_string());
    let args = [
        "--settle",
        "0",
        "--touch",
        touch,
        "--token-file",
        token_file,
        "--max-connections",
        &cap,
        "--read-timeout",
        &read_timeout,
    ];
    args.iter().map(|arg| arg.to_string()).collect()
}

/// 1,000 clients need as many descriptors, more than a usual soft limit of 1,024: raises the soft
/// limit to the hard one.
pub fn raise_fd_limit() -> Result<(), String> {
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
        return Err(format!("the open file limit ({}) is too low for {TOTAL} connections", limit.rlim_cur));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// The same deterministic "random" bytes on every run (xorshift).
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

pub fn left(deadline: Instant) -> Result<Duration, String> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err("deadline passed".into()),
    }
}

pub fn connect(addr: SocketAddr, deadline: Instant) -> Result<BufReader<TcpStream>, String> {
    let stream = TcpStream::connect_timeout(&addr, left(deadline)?).map_err(|e| format!("cannot connect: {e}"))?;
    Ok(BufReader::new(stream))
}

/// Writes on the reader's stream (no second descriptor: 1,000 clients already use a lot).
pub fn send(conn: &BufReader<TcpStream>, bytes: &[u8]) -> std::io::Result<()> {
    let mut stream: &TcpStream = conn.get_ref();
    stream.write_all(bytes)
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// What the receiver says first on a connection: a greeting, or that it is busy.
pub enum First {
    Greeted { nonce: String },
    Busy,
}

/// The first line, or `None` if none came within `limit` (a connection never accepted).
pub fn first(conn: &mut BufReader<TcpStream>, limit: Duration) -> Result<Option<First>, String> {
    conn.get_ref().set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => return Err("closed before the first line".into()),
        Ok(_) => {}
        Err(e) if timed_out(&e) && line.is_empty() => return Ok(None),
        Err(e) => return Err(format!("no first line: {e}")),
    }
    let value: Value = serde_json::from_str(&line).map_err(|e| format!("not JSON: {line:?}: {e}"))?;
    if value["touchwire"] == 1 {
        return Ok(Some(First::Greeted { nonce: value["nonce"].as_str().unwrap_or_default().to_string() }));
    }
    if value["ok"] == false && value["code"] == "busy" {
        return Ok(Some(First::Busy));
    }
    Err(format!("neither a greeting nor busy: {line:?}"))
}

/// Everything left until the receiver closes (a reset counts as closed), and whether it closed
/// before `deadline`.
fn read_to_close(conn: &mut BufReader<TcpStream>, deadline: Instant) -> Result<(String, bool), String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let text_of = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    // Each round reads at least a byte or ends: the receiver sends a few lines at most.
    for _ in 0..1000 {
        let Ok(limit) = left(deadline) else { return Ok((text_of(&text), false)) };
        conn.get_ref().set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => return Ok((text_of(&text), true)),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((text_of(&text), true)),
            Err(e) if timed_out(&e) => return Ok((text_of(&text), false)),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    Err("the receiver kept sending".into())
}

/// Reads to the close, which must come before `deadline`.
fn closed_by(conn: &mut BufReader<TcpStream>, deadline: Instant) -> Result<String, String> {
    match read_to_close(conn, deadline)? {
        (text, true) => Ok(text),
        (text, false) => Err(format!("still open at the deadline, having received {text:?}")),
    }
}

/// One reply line, before `deadline`.
pub fn reply_line(conn: &mut BufReader<TcpStream>, deadline: Instant) -> Result<String, String> {
    conn.get_ref().set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => Err("the receiver closed the connection instead of replying".into()),
        Ok(_) => Ok(line),
        Err(e) => Err(format!("no reply: {e}")),
    }
}

fn given_up(busy: u32, unseen: u32) -> String {
    format!("not served within {RETRY_FOR:?}: {busy} busy, {unseen} never greeted")
}

/// Authenticated reload; on "busy" or no greeting, a new connection (after a short backoff for
/// "busy"), bounded in count and time.
fn valid(addr: SocketAddr, token: &Token, id: usize, released: Instant) -> Result<Outcome, String> {
    let deadline = released + RETRY_FOR;
    let (mut busy, mut unseen) = (0, 0);
    for attempt in 0..MAX_ATTEMPTS {
        let mut conn = connect(addr, deadline).map_err(|e| format!("{e} ({})", given_up(busy, unseen)))?;
        let limit = GREETING_WAIT.min(left(deadline).map_err(|_| given_up(busy, unseen))?);
        match first(&mut conn, limit)? {
            None => unseen += 1,
            Some(First::Busy) => {
                busy += 1;
                // 25, 50, 100, 200 ms, spread a little per client so that retries come in no waves.
                let pause = Duration::from_millis((25 << attempt.min(3)) + (id % 7) as u64 * 6);
                std::thread::sleep(pause.min(left(deadline).map_err(|_| given_up(busy, unseen))?));
            }
            Some(First::Greeted { nonce }) => {
                let line = json!({"op": "reload", "reason": "load", "mac": token.mac(&nonce)}).to_string();
                send(&conn, format!("{line}\n").as_bytes()).map_err(|e| format!("cannot send: {e}"))?;
                let reply = reply_line(&mut conn, deadline)?;
                let reply: Value = serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))?;
                // Evicted before its request was read (it never acts then): retried, as
                // `touchwire send` retries a busy reply (client.rs).
                if reply["code"] == "busy" {
                    busy += 1;
                    continue;
                }
                return Ok(Outcome::Answered { reply, busy, unseen, at: released.elapsed() });
            }
        }
    }
    Err(format!("not served after {MAX_ATTEMPTS} connections: {busy} busy, {unseen} never greeted"))
}

/// Five kinds of garbage, by `variant`: 0 random bytes and 3 an over-long line, both written
/// blind at once; after the greeting, 1 broken JSON, 2 a wrong MAC, 4 no MAC (written blind too
/// when no greeting comes: the data completes a handshake the receiver missed).
fn garbage(addr: SocketAddr, id: usize, variant: u8, released: Instant) -> Result<Outcome, String> {
    let deadline = released + CLOSE_WITHIN;
    let mut conn = connect(addr, deadline)?;
    let opened = Instant::now();
    // What was read before the rest: the greeting, when this client waited for it.
    let mut text = String::new();
    let bytes = match variant {
        0 => noise(id as u64, 1 + id * 37 % 3000),
        3 => [vec![b'x'; 6000], vec![b'\n']].concat(),
        _ => {
            let nonce = match first(&mut conn, GREETING_WAIT)? {
                Some(First::Busy) => return Ok(closed(Kind::Garbage(variant), "busy".into(), opened, 0)),
                Some(First::Greeted { nonce }) => {
                    text.push_str("greeted\n");
                    nonce
                }
                None => "0".repeat(32),
            };
            let line = match variant {
                1 => r#"{"op":"reload","mac":"#.to_string(),
                2 => {
                    let wrong = Token::new("not the token at all").map_err(|e| e.to_string())?;
                    json!({"op": "reload", "mac": wrong.mac(&nonce)}).to_string()
                }
                _ => json!({"op": "reload", "reason": "no mac"}).to_string(),
            };
            format!("{line}\n").into_bytes()
        }
    };
    // The receiver may close on us mid-write (over-long line, busy): that is an answer too.
    let _ = send(&conn, &bytes);
    text.push_str(&closed_by(&mut conn, deadline)?);
    Ok(closed(Kind::Garbage(variant), text, opened, bytes.len()))
}

fn closed(kind: Kind, text: String, opened: Instant, sent: usize) -> Outcome {
    Outcome::Closed { kind, text, open_for: opened.elapsed(), sent }
}

/// A slow client: a request, one byte a second, until the receiver answers or closes. Its MAC is
/// valid when a greeting came first; without one it drips anyway, which completes the handshake.
fn drip(addr: SocketAddr, token: &Token, released: Instant) -> Result<Outcome, String> {
    let deadline = released + CLOSE_WITHIN;
    let mut conn = connect(addr, deadline)?;
    let (nonce, lines_before_answer) = match first(&mut conn, GREETING_WAIT)? {
        Some(First::Busy) => return Ok(closed(Kind::Drip, "busy".into(), Instant::now(), 0)),
        Some(First::Greeted { nonce }) => (nonce, 0),
        None => ("0".repeat(32), 1),
    };
    let line = format!("{}\n", json!({"op": "reload", "reason": "drip", "mac": token.mac(&nonce)}));
    let mut received: Vec<u8> = if lines_before_answer == 0 { b"greeted\n".to_vec() } else { Vec::new() };
    let lines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count();
    let base = lines(&received);
    let mut greeted = (lines_before_answer == 0).then(Instant::now);
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    // Bounded by the deadline and the round count; each round waits up to a second for the receiver.
    for _ in 0..100 {
        left(deadline).map_err(|_| format!("still open after {sent} bytes dripped"))?;
        // Stop writing once answered: writing to a closed socket would reset it.
        if lines(&received) - base <= lines_before_answer && sent < DRIP_BYTES {
            if send(&conn, &line.as_bytes()[sent..=sent]).is_err() {
                break;
            }
            sent += 1;
        }
        conn.get_ref().set_read_timeout(Some(DRIP_EVERY)).map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if timed_out(&e) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("read failed: {e}")),
        }
        if greeted.is_none() && !received.is_empty() {
            greeted = Some(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let open_for = greeted.map_or(Duration::ZERO, |at| at.elapsed());
    Ok(Outcome::Closed { kind: Kind::Drip, text, open_for, sent })
}

/// Connects, then neither reads nor writes for a while; then reads what came until the close.
fn idle(addr: SocketAddr, released: Instant) -> Result<Outcome, String> {
    let deadline = released + CLOSE_WITHIN;
    let mut conn = connect(addr, deadline)?;
    let opened = Instant::now();
    std::thread::sleep(IDLE_HOLD);
    match read_to_close(&mut conn, (opened + UNACCEPTED_AFTER).min(deadline))? {
        (text, true) => Ok(closed(Kind::Idle, text, opened, 0)),
        (text, false) if text.is_empty() => Ok(Outcome::Unaccepted),
        (text, false) => Err(format!("Idle: greeted but never closed: {text:?}")),
    }
}

fn client(kind: Kind, addr: SocketAddr, token: &Token, id: usize, start: &Barrier) -> Result<Outcome, String> {
    start.wait();
    let released = Instant::now();
    match kind {
        Kind::Idle => idle(addr, released),
        Kind::Garbage(variant) => garbage(addr, id, variant, released),
        Kind::Drip => drip(addr, token, released),
        Kind::Valid => valid(addr, token, id, released),
    }
}

/// The kinds interleaved, so that every kind meets the cap: in each 20, 8 idle, 5 garbage, 1 drip, 6 valid.
fn plan() -> Vec<Kind> {
    let kinds: Vec<Kind> = (0..TOTAL)
        .map(|i| match i % 20 {
            0..8 => Kind::Idle,
            8..13 => Kind::Garbage((i % 20 - 8) as u8),
            13 => Kind::Drip,
            _ => Kind::Valid,
        })
        .collect();
    let count = |k: fn(&Kind) -> bool| kinds.iter().filter(|x| k(x)).count();
    assert_eq!(count(|k| *k == Kind::Idle), IDLE);
    assert_eq!(count(|k| matches!(k, Kind::Garbage(_))), GARBAGE);
    assert_eq!(count(|k| *k == Kind::Drip), DRIP);
    assert_eq!(count(|k| *k == Kind::Valid), VALID);
    kinds
}

// ---------------------------------------------------------------------------------------------
// The run, and the receiver seen through /proc
// ---------------------------------------------------------------------------------------------

/// A field of /proc/PID/status, such as `Threads:` or `VmRSS:` (kB).
pub fn status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// The `TcpExt:` counters of this network namespace named in `names` (those that show a listen
/// queue overflowing), from /proc/net/netstat.
pub fn tcp_counters(names: &[&str]) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(headers), Some(values)) = (lines.next(), lines.next()) else { return Vec::new() };
    headers
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| names.contains(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}

/// How much each counter of `after` grew since `before`.
pub fn grown(before: &[(String, i64)], after: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let was = |name: &str| before.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
    after
        .into_iter()
        .map(|(name, now)| {
            let delta = now - was(&name);
            (name, delta)
        })
        .collect()
}

/// The receiver's threads and resident memory, sampled during the load.
pub struct Sampled {
    pub max_threads: u64,
    pub max_rss_kb: u64,
    pub samples: usize,
    /// From the release until every client was done (or sampling gave up). Only the test prints it.
    #[allow(dead_code)]
    pub took: Duration,
}

/// Runs the mix against the receiver at `addr` (process `pid`): starts every client, releases them
/// together, samples the receiver until they are done, and adds up what the clients saw. Fails only
/// when a client thread cannot start.
pub fn run(addr: SocketAddr, pid: u32, token: &Token) -> Result<(Tally, Sampled), String> {
    let start = Arc::new(Barrier::new(TOTAL + 1));
    let mut clients: Vec<(Kind, JoinHandle<Result<Outcome, String>>)> = Vec::with_capacity(TOTAL);
    for (id, kind) in plan().into_iter().enumerate() {
        let (start, token) = (Arc::clone(&start), token.clone());
        let handle = std::thread::Builder::new()
            .stack_size(CLIENT_STACK)
            .spawn(move || client(kind, addr, &token, id, &start))
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        clients.push((kind, handle));
    }

    // All 1,000 connect at once; meanwhile, sample the receiver's threads and memory.
    start.wait();
    let released = Instant::now();
    let (mut max_threads, mut max_rss_kb, mut samples) = (0, 0, 0);
    while released.elapsed() < SAMPLE_FOR && !clients.iter().all(|(_, c)| c.is_finished()) {
        if let (Some(threads), Some(rss)) = (status(pid, "Threads:"), status(pid, "VmRSS:")) {
            max_threads = max_threads.max(threads);
            max_rss_kb = max_rss_kb.max(rss);
            samples += 1;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let sampled = Sampled { max_threads, max_rss_kb, samples, took: released.elapsed() };
    // Every client ends by its own deadline (at most CLOSE_WITHIN), so the joins are bounded too.
    let outcomes = clients
        .into_iter()
        .map(|(kind, handle)| (kind, handle.join().unwrap_or_else(|_| Err("the client thread panicked".into()))));
    Ok((Tally::of(outcomes), sampled))
}

// ---------------------------------------------------------------------------------------------
// The tally
// ---------------------------------------------------------------------------------------------

/// Whether a closed connection was turned away: "busy" as its first line, or a busy reply (an
/// idle connection evicted from its pre-auth slot gets one after its greeting).
fn is_busy(text: &str) -> bool {
    text == "busy" || text.lines().any(|line| line.starts_with(r#"{"ok":false,"code":"busy""#))
}

/// What a closed connection must have received (after a greeting; a busy line is always fine).
fn check_closed(kind: Kind, text: &str) -> Result<(), String> {
    if text.contains(r#""ok":true"#) {
        return Err(format!("{kind:?} got an ok reply: {text:?}"));
    }
    let busy = is_busy(text);
    let greeted = text.starts_with("greeted\n") || text.starts_with(r#"{"touchwire":1"#);
    let timeout = format!("no complete request within {READ_TIMEOUT_MS} ms");
    let expected = match kind {
        Kind::Idle | Kind::Drip => Some(timeout.as_str()),
        // Broken JSON is a bad request (never the `nc` line, which auth would refuse as unauthorized).
        Kind::Garbage(1) => Some(r#""code":"bad_request""#),
        Kind::Garbage(2) => Some("wrong token"),
        Kind::Garbage(4) => Some("no mac sent"),
        // Blind writers may be reset before they read anything: closed is all that is asked.
        _ => None,
    };
    match expected {
        _ if busy => Ok(()),
        Some(needle) if greeted && !text.contains(needle) => Err(format!("{kind:?}: no {needle:?} in {text:?}")),
        Some(_) if !greeted => Err(format!("{kind:?}: neither greeted nor busy: {text:?}")),
        _ => Ok(()),
    }
}

/// What the clients saw, added up, in [`plan`] order. The test fails on any entry of `errors` or
/// `wrong`; the bench reports the counts.
#[derive(Default)]
pub struct Tally {
    /// Valid reloads answered `"ok":true`.
    pub answered: usize,
    /// Retries of valid clients after "busy", and after no greeting within [`GREETING_WAIT`].
    pub busy_retries: usize,
    pub unseen_retries: usize,
    /// When the last valid reload was answered, from the release.
    pub last_answer: Duration,
    /// Other connections answered "busy".
    pub rejected: usize,
    /// Drippers served (greeted, then closed at the read timeout), and the longest open after its greeting.
    pub drips_served: usize,
    pub longest_drip: Duration,
    /// Idle connections the receiver closed, and those it never accepted.
    pub idle_closed: usize,
    pub unaccepted: usize,
    /// `"ok":true` replies on garbage, drip or idle connections: must be none.
    pub bad_ok: usize,
    /// Clients that failed: an error of their own, a panic, a dripper the receiver never closed.
    pub errors: Vec<String>,
    /// Wrong answers: a valid reload not ok, a closed connection without its expected error.
    pub wrong: Vec<String>,
}

impl Tally {
    fn of(outcomes: impl Iterator<Item = (Kind, Result<Outcome, String>)>) -> Tally {
        let mut tally = Tally::default();
        for (kind, outcome) in outcomes {
            match outcome {
                Err(error) => tally.errors.push(format!("{kind:?}: {error}")),
                Ok(Outcome::Answered { reply, busy, unseen, at }) => {
                    tally.busy_retries += busy as usize;
                    tally.unseen_retries += unseen as usize;
                    tally.last_answer = tally.last_answer.max(at);
                    if reply["ok"] == true && reply["op"] == "reload" {
                        tally.answered += 1;
                    } else {
                        tally.wrong.push(format!("valid reload not ok: {reply}"));
                    }
                }
                Ok(Outcome::Closed { kind, text, open_for, sent }) => {
                    tally.bad_ok += text.matches(r#""ok":true"#).count();
                    if is_busy(&text) {
                        tally.rejected += 1;
                    } else if kind == Kind::Drip && sent >= DRIP_BYTES {
                        tally.errors.push(format!("Drip: a dripper sent {sent} bytes and was not closed"));
                    } else if kind == Kind::Drip {
                        tally.longest_drip = tally.longest_drip.max(open_for);
                        tally.drips_served += 1;
                    } else if kind == Kind::Idle {
                        tally.idle_closed += 1;
                    }
                    if let Err(error) = check_closed(kind, &text) {
                        tally.wrong.push(error);
                    }
                }
                Ok(Outcome::Unaccepted) => tally.unaccepted += 1,
            }
        }
        tally
    }
}
