//! The four actions, run by a real receiver over real loopback TCP.
#![cfg(unix)]

mod util;

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};
use util::{Env, WAIT, eventually};

/// A real FIFO in the env's directory, as uWSGI's master-fifo makes one.
fn make_fifo(env: &Env) -> std::path::PathBuf {
    let fifo = env.join("master.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    fifo
}

/// Opens the FIFO for reading without waiting for a writer.
fn read_end(fifo: &std::path::Path) -> std::fs::File {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(fifo).unwrap()
}

fn mtime(path: &std::path::Path) -> Duration {
    std::fs::metadata(path).unwrap().modified().unwrap().duration_since(UNIX_EPOCH).unwrap()
}

#[test]
fn touch_creates_a_missing_file_without_content() {
    let env = Env::new();
    let file = env.join("app.reload");
    let listener = env.listen(&["--touch", file.to_str().unwrap()]);
    env.run(&["send", "--to", &listener.addr]).expect_code(0).expect_stderr("reloaded app");
    assert_eq!(std::fs::read(&file).unwrap(), b"", "touch must never write content");
    assert_eq!(listener.wait_event("reload")["target"], "app");
}

#[test]
fn touch_advances_the_whole_second_mtime_every_time_and_keeps_content() {
    let env = Env::new();
    let file = env.join("app.reload");
    std::fs::write(&file, "keep me").unwrap();
    let listener = env.listen(&["--touch", file.to_str().unwrap(), "--settle", "0"]);
    let mut seconds = vec![mtime(&file).as_secs()];
    // Three touches well inside one or two seconds: each must see a strictly later whole second.
    for _ in 0..3 {
        env.run(&["send", "--to", &listener.addr]).expect_code(0);
        seconds.push(mtime(&file).as_secs());
    }
    assert!(seconds.windows(2).all(|w| w[1] > w[0]), "whole-second mtimes not increasing: {seconds:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn touch_in_a_missing_directory_is_the_guests_error_shown_by_send() {
    let env = Env::new();
    let file = env.join("no/such/dir/app.reload");
    let listener = env.listen(&["--touch", file.to_str().unwrap()]);
    env.run(&["send", "--to", &listener.addr]).expect_code(1).expect_stderr(&format!(
        "{}: cannot touch {}: No such file or directory",
        listener.addr,
        file.display()
    ));
}

#[test]
fn fifo_writes_the_command_then_pokes_until_the_reader_goes() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let mut reader = read_end(&fifo);
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap()]);
    env.run(&["send", "--to", &listener.addr]).expect_code(0).expect_stderr("(fifo)");

    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 20 && Instant::now() < deadline {
        let mut buf = [0u8; 64];
        match reader.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the FIFO: {e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got.first(), Some(&b'r'), "the command byte comes first: {got:?}");
    assert!(got.len() >= 20 && got[1..].iter().all(|b| *b == b'\n'), "then the pokes: {got:?}");

    drop(reader);
    let end = listener.wait_event("poke_end");
    assert_eq!(end["why"], "reader gone", "{end}");
    // With the poke ended, a new reader sees no writer and no data.
    let mut again = read_end(&fifo);
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 16];
    assert_eq!(again.read(&mut buf).unwrap_or(0), 0, "the poke must stop writing");
}

#[test]
fn fifo_command_is_configurable() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let mut reader = read_end(&fifo);
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap(), "--fifo-command", "c", "--no-poke"]);
    env.run(&["send", "--to", &listener.addr]).expect_code(0);
    let mut got = String::new();
    eventually("the chain-reload byte", || {
        let _ = reader.read_to_string(&mut got);
        !got.is_empty()
    });
    assert_eq!(got, "c", "no poke bytes after --no-poke");
}

#[test]
fn status_tells_which_targets_could_not_act() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap()]);
    env.run(&["status", "--to", &listener.addr])
        .expect_code(1)
        .expect_stdout("target app: CANNOT ACT: no reader on")
        .expect_stdout("is uWSGI running with master-fifo?");
    let _reader = read_end(&fifo);
    env.run(&["status", "--to", &listener.addr]).expect_stdout("target app: action ok: uWSGI is attached");
}

#[test]
fn fifo_without_a_reader_is_a_clear_error() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap()]);
    env.run(&["send", "--to", &listener.addr])
        .expect_code(1)
        .expect_stderr("no process reads the FIFO")
        .expect_stderr("is uWSGI running with master-fifo");
}

#[test]
fn signal_reaches_the_process_in_the_pidfile() {
    let env = Env::new();
    let (pidfile, record) = (env.join("app.pid"), env.join("got-signal"));
    // A stand-in app: records SIGUSR1, then exits; gives up by itself after ~10 s.
    let script = format!(
        "trap 'echo USR1 > {rec}; exit 0' USR1; echo $$ > {pid}; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
        rec = record.display(),
        pid = pidfile.display()
    );
    let mut app = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    eventually("the app writes its pidfile", || std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')));
    let listener = env.listen(&["--pidfile", pidfile.to_str().unwrap(), "--signal", "USR1"]);
    env.run(&["send", "--to", &listener.addr]).expect_code(0).expect_stderr("(signal)");
    eventually("the app records the signal", || record.exists());
    assert_eq!(std::fs::read_to_string(&record).unwrap().trim(), "USR1");
    assert!(app.wait().unwrap().success());
}

#[test]
fn signal_to_a_dead_process_says_so() {
    let env = Env::new();
    let pidfile = env.join("app.pid");
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
    let listener = env.listen(&["--pidfile", pidfile.to_str().unwrap()]);
    env.run(&["send", "--to", &listener.addr]).expect_code(1).expect_stderr(&format!("no process {pid}"));
}

#[test]
fn exec_success_and_exit_status_are_reported() {
    let env = Env::new();
    let marker = env.join("ran");
    let ok = env.listen(&["--exec", "touch", marker.to_str().unwrap()]);
    env.run(&["send", "--to", &ok.addr]).expect_code(0).expect_stderr("(exec)");
    assert!(marker.exists());

    let failing = env.listen(&["--exec", "sh", "-c", "echo broken app >&2; exit 3"]);
    env.run(&["send", "--to", &failing.addr]).expect_code(1).expect_stderr("\"sh\" exited with status 3: broken app");

    let slow = env.listen(&["--exec-timeout", "200", "--exec", "sleep", "5"]);
    env.run(&["send", "--to", &slow.addr, "--timeout", "5000"])
        .expect_code(1)
        .expect_stderr("did not finish within 200 ms and was killed");

    let missing = env.listen(&["--exec", "/no/such/program"]);
    env.run(&["send", "--to", &missing.addr]).expect_code(1).expect_stderr("cannot run \"/no/such/program\"");
}

#[test]
fn a_burst_of_50_triggers_costs_exactly_two_actions() {
    let env = Env::new();
    let count = env.join("actions");
    let script = format!("echo x >> {}", count.display());
    let listener = env.listen(&["--settle", "1000", "--exec", "sh", "-c", &script]);
    let mut raw = util::Raw::connect(&listener.addr);
    let mut merged = 0;
    for _ in 0..50 {
        let reply = raw.request(r#"{"op":"reload","reason":"burst"}"#).expect("reply");
        assert_eq!(reply["ok"], true, "{reply}");
        merged += usize::from(reply["merged"] == true);
    }
    assert_eq!(merged, 49, "all but the first are merged");
    // The trailing action runs at the end of the 1 s window.
    let leading = listener.wait_event("reload");
    assert_eq!(leading["trailing"], serde_json::Value::Null, "{leading}");
    let trailing = listener.wait_event("reload");
    assert_eq!(trailing["trailing"], true, "{trailing}");
    let later = listener.events_within(Duration::from_millis(1500));
    assert!(later.iter().all(|e| e["event"] != "reload"), "no third action: {later:?}");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
}

#[test]
fn a_stopping_receiver_runs_the_trailing_reload_it_owes_first() {
    let env = Env::new();
    let count = env.join("actions");
    let script = format!("echo x >> {}", count.display());
    let mut listener = env.listen(&["--settle", "1000", "--exec", "sh", "-c", &script]);
    env.run(&["send", "--to", &listener.addr]).expect_code(0);
    env.run(&["send", "--to", &listener.addr]).expect_code(0).expect_stderr("merged");
    // Stopped inside the settle window: the merged trigger's reload still runs, then it exits.
    assert_eq!(listener.terminate(), Some(0), "{}", listener.stderr());
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    eventually("the stop to be told", || listener.stderr().contains("stopping: finishing the reloads"));
}

/// Asserts that one `send` to `listener` fails with `needle` in its message, well within its
/// 1 s timeout: an action that blocked would show as a timeout instead.
#[track_caller]
fn send_fails_with(env: &Env, addr: &str, needle: &str) {
    let start = Instant::now();
    env.run(&["send", "--to", addr, "--timeout", "1000"]).expect_code(1).expect_stderr(needle);
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
}

#[test]
fn touch_of_a_fifo_is_an_error_at_once_and_the_target_stays_usable() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let listener = env.listen(&["--touch", fifo.to_str().unwrap(), "--settle", "0"]);
    let needle = format!("cannot touch {}: it is a FIFO, not a regular file", fifo.display());
    send_fails_with(&env, &listener.addr, &needle);
    // Nothing was left busy: the next trigger acts (and fails the same way) rather than merging.
    send_fails_with(&env, &listener.addr, &needle);
}

#[test]
fn a_pidfile_that_is_a_fifo_a_device_or_huge_is_an_error_at_once() {
    let env = Env::new();
    let fifo = make_fifo(&env);
    let listener = env.listen(&["--pidfile", fifo.to_str().unwrap()]);
    send_fails_with(&env, &listener.addr, &format!("pidfile {} is a FIFO, not a regular file", fifo.display()));

    let listener = env.listen(&["--pidfile", "/dev/zero"]);
    send_fails_with(&env, &listener.addr, "pidfile /dev/zero is a character device, not a regular file");

    // Sparse: no disk used, but a gigabyte to read for a receiver that reads pidfiles whole.
    let huge = env.join("huge.pid");
    std::fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let listener = env.listen(&["--pidfile", huge.to_str().unwrap()]);
    send_fails_with(&env, &listener.addr, &format!("pidfile {} is 1073741824 bytes, not a pid", huge.display()));
}

/// A receiver started by hand, so that its pid is known; killed (by that pid) when dropped.
struct Own(std::process::Child);

impl Drop for Own {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pidfile_naming_the_receiver_itself_is_refused() {
    use std::io::BufRead;
    let env = Env::new();
    let pidfile = env.join("app.pid");
    std::fs::write(&pidfile, "").unwrap();
    let args = ["listen", "--addr", "127.0.0.1:0", "--json", "--settle", "0", "--pidfile", pidfile.to_str().unwrap()];
    let mut child = env
        .command(env.path(), &args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let receiver = Own(child);
    // Kept open to the end: the receiver's later events go there.
    let mut events = std::io::BufReader::new(stdout);
    let mut first = String::new();
    events.read_line(&mut first).unwrap();
    let listening: serde_json::Value = serde_json::from_str(&first).unwrap();
    let addr = listening["addr"].as_str().unwrap();
    std::fs::write(&pidfile, format!("{}\n", receiver.0.id())).unwrap();
    send_fails_with(&env, addr, "names the receiver itself");
    send_fails_with(&env, addr, "refusing to signal it");
}

#[test]
fn exec_whose_stderr_is_control_bytes_reports_its_failure() {
    let env = Env::new();
    let script = "head -c 2000 /dev/zero | tr '\\0' '\\001' >&2; exit 3";
    let listener = env.listen(&["--exec", "sh", "-c", script]);
    send_fails_with(&env, &listener.addr, "\"sh\" exited with status 3");
}
