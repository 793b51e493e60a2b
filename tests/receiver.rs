//! The receiver never lies (issue 12): no target is wedged, output nobody reads never stops it,
//! peers without the token never keep out a sender with it, resources stay bounded, and a stop
//! ends what it started. Each test runs the real binary; timings are generous bounds, never goals.
#![cfg(unix)]

mod util;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
#[cfg(target_os = "linux")]
use std::{net::IpAddr, os::fd::FromRawFd, os::unix::process::CommandExt};
use util::{Env, Raw, eventually, mac};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[cfg(target_os = "linux")]
/// A TCP connection to `addr` from the source address `from` (any 127.x address works on
/// Linux's loopback): a peer other than the sender under test.
fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let (IpAddr::V4(from), IpAddr::V4(to)) = (from, addr.ip()) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, owned by the TcpStream at once; bind and connect read a local struct.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(to, addr.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A receiver started by hand, for tests that set its stdio themselves; killed when dropped.
struct Bare {
    child: Child,
}

impl Bare {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then the exit status within `limit`; `None` if it still runs.
    fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn sample(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count() as u64).unwrap_or(0)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bound address from the first line a receiver printed on stderr ("touchwire listening on ...").
fn addr_from_line(line: &str) -> SocketAddr {
    let rest = line.split("listening on ").nth(1).unwrap_or_else(|| panic!("not the first line: {line:?}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// `n` plain reloads on one connection, each answered ok.
fn reloads_on_one_connection(addr: &str, n: usize) {
    let mut raw = Raw::connect(addr);
    for i in 0..n {
        let reply = raw.request(r#"{"op":"reload","reason":"load"}"#).unwrap_or_else(|| panic!("closed at {i}"));
        assert_eq!(reply["ok"], true, "reload {i}: {reply}");
    }
}

#[test]
fn a_listener_whose_output_nobody_reads_keeps_serving_and_stops_on_sigterm() {
    let env = Env::new();
    let touch = env.join("app.reload");
    let stderr = std::fs::File::create(env.join("stderr.log")).unwrap();
    // stdout is a pipe nobody reads: 500 reloads write far more JSON than a pipe holds.
    let mut cmd = env.command(env.path(), &["listen", "--addr", "127.0.0.1:0", "--json", "--touch"]);
    cmd.arg(&touch).args(["--settle", "0"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    let mut bare = Bare { child: cmd.spawn().unwrap() };
    let mut first = String::new();
    eventually("the first line", || {
        first = std::fs::read_to_string(env.join("stderr.log")).unwrap_or_default();
        first.contains('\n')
    });
    let addr = addr_from_line(first.lines().next().unwrap()).to_string();
    reloads_on_one_connection(&addr, 500);
    let status = bare.terminate_within(Duration::from_secs(8)).expect("SIGTERM did not stop it");
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(env.join("stderr.log")).unwrap();
    assert!(log.contains("log lines were lost"), "the loss is counted and told: {log}");
}

#[test]
fn a_listener_whose_stderr_reader_went_away_keeps_serving_and_stops_on_sigterm() {
    let env = Env::new();
    let touch = env.join("app.reload");
    let mut cmd = env.command(env.path(), &["listen", "--addr", "127.0.0.1:0", "--touch"]);
    cmd.arg(&touch).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut bare = Bare { child: cmd.spawn().unwrap() };
    let mut reader = BufReader::new(bare.child.stderr.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    // The terminal is gone: every later write to stderr fails with EPIPE.
    drop(reader);
    let addr = addr_from_line(&first).to_string();
    reloads_on_one_connection(&addr, 500);
    let status = bare.terminate_within(Duration::from_secs(8)).expect("SIGTERM did not stop it");
    assert!(status.success(), "{status}");
}

#[test]
fn a_listener_in_a_tmux_session_that_is_killed_frees_its_port() {
    if !util::require("tmux") {
        return;
    }
    let env = Env::new();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let socket = env.join("tmux.sock");
    let tmux = |args: &[&str]| Command::new("tmux").arg("-S").arg(&socket).args(args).output().unwrap();
    let line = format!(
        "{} listen --addr {addr} --touch {}",
        env!("CARGO_BIN_EXE_touchwire"),
        env.join("app.reload").display()
    );
    let started = tmux(&["new-session", "-d", "-s", "guest", "-x", "80", "-y", "20", &line]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    eventually("the listener in tmux answers", || env.run(&["send", "--to", &addr]).code == 0);
    tmux(&["kill-server"]);
    // SIGHUP ends it cleanly: the port is free again for the next listener.
    let mut next = None;
    eventually("the port to be free again", || {
        let attempt = env.spawn(env.path(), &["listen", "--addr", &addr, "--json", "--touch", "x.reload"]);
        let mut attempt = attempt;
        std::thread::sleep(Duration::from_millis(200));
        if attempt.is_alive() {
            next = Some(attempt);
            return true;
        }
        false
    });
    env.run(&["send", "--to", &addr]).expect_code(0);
}

#[test]
#[cfg(target_os = "linux")] // connect_from
fn peers_without_the_token_never_lock_out_a_sender_with_it() {
    let env = Env::new();
    std::fs::write(env.join("token"), TOKEN).unwrap();
    let token = env.join("token");
    let token = token.to_str().unwrap();
    let listener = env.listen(&["--token-file", token, "--touch", "app.reload"]);
    let addr: SocketAddr = listener.addr.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 128 idle connections from another address, each reopened as soon as it closes.
    let flood: Vec<_> = (0..128)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut opened = 0u32;
                for _ in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = connect_from(IpAddr::from([127, 0, 0, 2]), addr) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    opened += 1;
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut conn, &mut sink);
                }
                opened
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let until = Instant::now() + Duration::from_secs(5);
    let mut sends = 0;
    while Instant::now() < until && sends < 40 {
        env.run(&["send", "--to", &listener.addr, "--token-file", token, "--timeout", "1000"]).expect_code(0);
        sends += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let opened: u32 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(sends >= 10 && opened >= 128, "{sends} sends, {opened} flood connections");
}

#[test]
#[cfg(target_os = "linux")] // connect_from
fn a_flood_of_waiting_requests_leaves_room_for_a_reload_of_another_target() {
    let env = Env::new();
    std::fs::write(env.join("app.log"), "").unwrap();
    let config = json!({"targets": {
        "slow": {"touch": "slow.reload", "ready": {"log": "app.log", "pattern": "never written", "timeout_ms": 20000}},
        "app": {"touch": "app.reload"}}, "default_target": "app"});
    std::fs::write(env.join(".touchwire.json"), config.to_string()).unwrap();
    let mut listener = env.listen(&["--max-connections", "32"]);
    let addr: SocketAddr = listener.addr.parse().unwrap();
    let mut waiting = Vec::new();
    let mut busy = 0;
    for i in 0..31u8 {
        // Each from an address of its own, so that no per-address limit is what turns them away.
        let mut conn = BufReader::new(connect_from(IpAddr::from([127, 0, 2, i + 1]), addr).unwrap());
        let mut greeting = String::new();
        conn.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("nonce"), "{greeting}");
        conn.get_mut().write_all(b"{\"op\":\"reload\",\"target\":\"slow\",\"wait\":true}\n").unwrap();
        waiting.push(conn);
    }
    // Half the cap may wait for a check; the rest are told busy at once.
    for conn in &mut waiting {
        conn.get_ref().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut line = String::new();
        if conn.read_line(&mut line).is_ok_and(|n| n > 0) {
            assert!(line.contains(r#""code":"busy""#), "{line}");
            busy += 1;
        }
    }
    assert_eq!(busy, 31 - 16, "16 wait (half of 32)");
    env.run(&["send", "--to", &listener.addr, "--target", "app"]).expect_code(0).expect_stderr("touch");
    // A stop does not wait out the 20 s checks: they are cut short, and the waiters told.
    let start = Instant::now();
    assert_eq!(listener.terminate(), Some(0), "{}", listener.stderr());
    assert!(start.elapsed() < Duration::from_secs(8), "stop took {:?}", start.elapsed());
}

#[test]
fn a_fifo_target_flooded_without_a_settle_window_holds_bounded_threads_and_descriptors() {
    let env = Env::new();
    let fifo = env.join("master.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // uWSGI's part: a reader that drains the FIFO.
    let reader = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
            total += n;
            if buf[..n].contains(&b'q') {
                break;
            }
        }
        total
    });
    let mut cmd = env.command(env.path(), &["listen", "--addr", "127.0.0.1:0", "--settle", "0", "--fifo"]);
    cmd.arg(&fifo).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut bare = Bare { child: cmd.spawn().unwrap() };
    let mut stderr = BufReader::new(bare.child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = addr_from_line(&first).to_string();
    let (base_threads, base_fds) = (bare.sample("Threads:"), bare.open_fds());
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || reloads_on_one_connection(&addr, 40))
        })
        .collect();
    // (10 connections from one address at once: within its pre-auth allowance.)
    let (mut threads, mut fds) = (0, 0);
    for _ in 0..200 {
        threads = threads.max(bare.sample("Threads:"));
        fds = fds.max(bare.open_fds());
        if clients.iter().all(|c| c.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for client in clients {
        client.join().unwrap();
    }
    // Base + one thread per connection; no thread or descriptor per action or poke.
    assert!(threads <= base_threads + 10 + 2, "threads {base_threads} -> {threads}");
    assert!(fds <= base_fds + 3 * 10 + 4, "fds {base_fds} -> {fds}");
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"q").unwrap();
    assert!(drain.join().unwrap() > 0);
}

#[test]
#[cfg(target_os = "linux")] // connect_from
fn at_an_open_files_limit_of_256_a_newcomer_is_greeted_or_told_busy() {
    let env = Env::new();
    let mut cmd = env.command(env.path(), &["listen", "--addr", "127.0.0.1:0", "--json", "--max-connections", "1000"]);
    cmd.args(["--touch", "app.reload"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setrlimit(2) in the child before exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut bare = Bare { child: cmd.spawn().unwrap() };
    let mut stderr = BufReader::new(bare.child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    // The bound address first, as always; then the cap fitted to the limit.
    let mut warning = String::new();
    stderr.read_line(&mut warning).unwrap();
    assert!(warning.contains("open-files limit (256)"), "{warning}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr: SocketAddr = addr_from_line(&first);
    // Hold 150 connections that sent a request (from several addresses): more than the limit allows.
    let mut held = Vec::new();
    let mut busy = 0;
    for i in 0..150u8 {
        let mut conn = BufReader::new(connect_from(IpAddr::from([127, 0, 1, i % 16 + 1]), addr).unwrap());
        conn.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let first: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("connection {i}: {line:?}: {e}"));
        if first["code"] == "busy" {
            busy += 1;
            continue;
        }
        assert_eq!(first["touchwire"], 1, "{first}");
        conn.get_mut().write_all(b"{\"op\":\"ping\"}\n").unwrap();
        line.clear();
        conn.read_line(&mut line).unwrap();
        held.push(conn);
    }
    assert!(busy > 0 && !held.is_empty(), "{busy} busy, {} held", held.len());
    drop(held);
    eventually("a send after the load", || env.run(&["send", "--to", &addr.to_string()]).code == 0);
}

#[test]
fn sigterm_during_a_long_exec_ends_its_process_group_and_the_listener() {
    let env = Env::new();
    let pids = env.join("pids");
    let script = format!("echo $$ > {}; sleep 30 & sleep 30", pids.display());
    let mut listener = env.listen(&["--exec", "sh", "-c", &script, "--exec-timeout", "60000"]);
    let send = env.command(env.path(), &["send", "--to", &listener.addr, "--timeout", "500"]).output();
    assert!(send.is_ok());
    eventually("the exec to start", || std::fs::read_to_string(&pids).is_ok_and(|p| p.ends_with('\n')));
    let pgid: libc::pid_t = std::fs::read_to_string(&pids).unwrap().trim().parse().unwrap();
    let start = Instant::now();
    assert_eq!(listener.terminate(), Some(0), "{}", listener.stderr());
    assert!(start.elapsed() < Duration::from_secs(8), "stop took {:?}", start.elapsed());
    // SAFETY: signal 0 only asks whether any process of the group is left.
    eventually("no process of the exec's group to be left", || unsafe { libc::kill(-pgid, 0) } != 0);
}

#[test]
fn a_touch_target_that_is_a_fifo_fails_and_the_target_takes_the_next_reload() {
    let env = Env::new();
    let target = env.join("t.fifo");
    assert!(Command::new("mkfifo").arg(&target).status().unwrap().success());
    let listener = env.listen(&["--touch", target.to_str().unwrap()]);
    for _ in 0..2 {
        env.run(&["send", "--to", &listener.addr]).expect_code(1).expect_stderr("not a regular file");
    }
    std::fs::remove_file(&target).unwrap();
    env.run(&["send", "--to", &listener.addr]).expect_code(0);
    assert!(target.is_file(), "the next reload ran");
}

#[test]
fn a_signed_request_with_json_serde_cannot_take_is_a_bad_request_not_a_reload() {
    let env = Env::new();
    let touch = env.join("app.reload");
    let listener = env.listen(&["--touch", touch.to_str().unwrap()]);
    for line in [r#"{"op":"reload","n":1e999}"#, r#"{"op":"reload","reason":"\ud800"}"#] {
        let mut raw = Raw::connect(&listener.addr);
        let reply = raw.request(line).unwrap();
        assert_eq!(reply["code"], "bad_request", "{line}: {reply}");
    }
    let deep = format!(r#"{{"op":"reload","x":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    let reply = Raw::connect(&listener.addr).request(&deep).unwrap();
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(!touch.exists(), "none of them reloaded");
    // Signed, with auth on: still a bad request, not a "plain line" refusal.
    std::fs::write(env.join("token"), TOKEN).unwrap();
    let signed = env.listen(&["--token-file", env.join("token").to_str().unwrap(), "--touch", "b.reload"]);
    let mut raw = Raw::connect(&signed.addr);
    let line = format!(r#"{{"op":"reload","n":1e999,"mac":"{}"}}"#, mac(TOKEN, &raw.nonce()));
    let reply = raw.request(&line).unwrap();
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[test]
#[cfg(target_os = "linux")] // connect_from
fn a_receiver_that_cannot_start_threads_says_busy_and_recovers_once_the_load_is_gone() {
    // RLIMIT_NPROC binds only users other than root: run as nobody (setpriv), with a limit that
    // leaves room for the receiver's own threads and a few connections.
    if !util::require_root("running the receiver as nobody with a thread limit")
        || !util::require("setpriv")
        || !util::require("prlimit")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = open.path().join("touchwire");
    std::fs::copy(env!("CARGO_BIN_EXE_touchwire"), &bin).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nproc=8", "--", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["listen", "--addr", "127.0.0.1:0", "--touch", "app.reload"])
        .env("XDG_CONFIG_HOME", open.path())
        .env("HOME", open.path())
        .current_dir(open.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut bare = Bare { child: cmd.spawn().unwrap() };
    let mut stderr = BufReader::new(bare.child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = addr_from_line(&first);
    // Connections that hold their thread (each sent a ping) until spawning fails.
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..16u8 {
        let mut conn = BufReader::new(connect_from(IpAddr::from([127, 0, 3, i + 1]), addr).unwrap());
        conn.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if !line.contains("nonce") {
            refused = Some(line);
            break;
        }
        conn.get_mut().write_all(b"{\"op\":\"ping\"}\n").unwrap();
        line.clear();
        conn.read_line(&mut line).unwrap();
        assert!(line.contains(r#""ok":true"#), "{line}");
        held.push(conn);
    }
    let refused = refused.expect("the thread limit was never reached");
    assert!(refused.contains(r#""code":"busy""#) && refused.contains("cannot start a thread"), "{refused}");
    drop(held);
    // No limit was raised: once the connections are gone, the receiver serves again.
    eventually("a send after the load", || env.run(&["send", "--to", &addr.to_string()]).code == 0);
    let status = bare.terminate_within(Duration::from_secs(8)).expect("SIGTERM did not stop it");
    assert!(status.success(), "{status}");
}

/// The reply to `line` on a fresh connection, raw, with its length checked against the cap.
fn bounded_reply(addr: &str, line: &str) -> Value {
    let mut conn = BufReader::new(TcpStream::connect(addr).unwrap());
    conn.get_ref().set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut greeting = String::new();
    conn.read_line(&mut greeting).unwrap();
    conn.get_mut().write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_line(&mut reply).unwrap();
    assert!(reply.len() <= 4097, "a reply of {} bytes", reply.len());
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}

#[test]
fn no_reply_is_longer_than_4096_bytes_and_no_remote_text_reaches_a_terminal_raw() {
    let env = Env::new();
    let control: Vec<u8> = (0..2000u32).map(|i| [0x1b, 0x07, 0x08, 0x7f, b'\r'][i as usize % 5]).collect();
    std::fs::write(env.join("control.bin"), &control).unwrap();
    let long = "x".repeat(5000);
    let traceback = format!(
        "Traceback (most recent call last):\n  File \"app/views.py\", line 3, in <module>\n    {long}\nValueError: boom\n"
    );
    std::fs::write(env.join("traceback.txt"), traceback).unwrap();
    std::fs::write(env.join("app.log"), "").unwrap();
    let config = json!({"targets": {
        "noisy": {"exec": ["sh", "-c", "cat control.bin >&2; exit 3"]},
        "app": {"exec": ["sh", "-c", "cat traceback.txt >> app.log"],
                "ready": {"log": "app.log", "pattern": "ready", "error_pattern": "Traceback", "timeout_ms": 5000}}},
        "default_target": "app"});
    std::fs::write(env.join(".touchwire.json"), config.to_string()).unwrap();
    let listener = env.listen(&[]);
    // An unknown target of 2,000 quote characters: the error names it, cut.
    let name = "\"".repeat(2000);
    let reply = bounded_reply(&listener.addr, &json!({"op": "reload", "target": name}).to_string());
    assert_eq!(reply["code"], "unknown_target", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains('…'), "{reply}");
    // An exec whose stderr is 2,000 control bytes: escaped before it goes out.
    let reply = bounded_reply(&listener.addr, r#"{"op":"reload","target":"noisy"}"#);
    assert_eq!(reply["code"], "action_failed", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("exited with status 3") && !error.chars().any(|c| c.is_control() && c != '\n'), "{error:?}");
    let run = env.run(&["send", "--to", &listener.addr, "--target", "noisy"]);
    run.expect_code(1);
    assert!(!run.stderr.chars().any(|c| c.is_control() && c != '\n'), "raw control characters: {:?}", run.stderr);
    // A ready excerpt with a 5,000-character line: cut in the middle, its start and end kept.
    let reply = bounded_reply(&listener.addr, r#"{"op":"reload","wait":true}"#);
    let excerpt = reply["ready"]["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(excerpt.contains("Traceback") && excerpt.contains("ValueError: boom"), "{excerpt}");
    std::thread::sleep(Duration::from_millis(300));
    let run = env.run(&["send", "--to", &listener.addr, "--wait"]);
    run.expect_code(1).expect_stderr("ValueError: boom");
}

#[test]
fn files_a_trigger_names_are_refreshed_under_root_and_nowhere_else() {
    let env = Env::new();
    let tree = env.join("tree");
    let cache = tree.join("app/__pycache__");
    std::fs::create_dir_all(&cache).unwrap();
    for module in ["views", "models", "forms"] {
        std::fs::write(tree.join(format!("app/{module}.py")), "X = 1\n").unwrap();
        std::fs::write(cache.join(format!("{module}.cpython-311.pyc")), "stale").unwrap();
    }
    let config = json!({"targets": {"app": {"touch": "app.reload", "root": "tree"},
                                    "bare": {"touch": "bare.reload"}},
                        "default_target": "app", "settle_ms": 1000});
    std::fs::write(env.join(".touchwire.json"), config.to_string()).unwrap();
    let listener = env.listen(&[]);
    let reload = |target: &str, files: &[&str]| {
        Raw::connect(&listener.addr).request(&json!({"op": "reload", "target": target, "files": files}).to_string())
    };
    // Without a root nothing named on the wire is touched.
    assert_eq!(reload("bare", &["app/forms.py"]).unwrap()["ok"], true);
    assert!(cache.join("forms.cpython-311.pyc").exists());
    assert_eq!(reload("app", &["app/views.py", "../tree/app/forms.py", "/etc/passwd.py"]).unwrap()["merged"], false);
    assert!(!cache.join("views.cpython-311.pyc").exists(), "the saved module's bytecode is gone");
    assert!(cache.join("forms.cpython-311.pyc").exists(), "a name with .. is refused");
    // A merged trigger's files are refreshed by the trailing action.
    assert_eq!(reload("app", &["app/models.py"]).unwrap()["merged"], true);
    eventually("the trailing action to refresh models.py", || !cache.join("models.cpython-311.pyc").exists());
}
