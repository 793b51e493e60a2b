//! Faults (issue 8): each must give a clear message, and the process goes on, or exits with a
//! clear reason where going on is impossible. No trigger is silently lost; nothing panics.
#![cfg(unix)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use util::{Daemon, Env, Listener, Project, eventually};

const TOKEN: &str = "fault-test-token-0123456789";

/// A watched project whose receiver can be killed and started again on the same port.
fn watched_project() -> (Project, Daemon) {
    let project = Project::new(&[("app/views.py", "VALUE = 1\n"), ("notes.txt", "n\n")], false);
    let (watcher, _) = project.env.watch_in(&project.repo.root, &["--to", &project.receiver.addr]);
    watcher.wait_event("connected");
    (project, watcher)
}

/// A receiver touching `file` on exactly `addr` (to stand in for one restarted in the guest).
fn listen_on(env: &Env, addr: &str, file: &Path) -> Daemon {
    env.listen_at(addr, env.path(), &["--settle", "0", "--touch", path(file)])
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn files(event: &serde_json::Value) -> Vec<&str> {
    event["files"].as_array().map(|a| a.iter().filter_map(|f| f.as_str()).collect()).unwrap_or_default()
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where root may not mount (a container without CAP_SYS_ADMIN): the test skips, saying why.
    fn mount(env: &Env, name: &str, options: &str) -> Option<Tmpfs> {
        let dir = env.join(name);
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs", path(&dir)]).status();
        if status.is_ok_and(|s| s.success()) {
            return Some(Tmpfs(dir));
        }
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI cannot mount a tmpfs on {}", dir.display());
        eprintln!("skipped: cannot mount a tmpfs here (no CAP_SYS_ADMIN?)");
        None
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{options}"), path(&self.0)]).status();
        assert!(status.is_ok_and(|s| s.success()), "cannot remount {} {options}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_change_made_while_the_guest_is_down_is_sent_once_it_is_back() {
    let (project, watcher) = watched_project();
    let Project { env, repo, receiver } = project;
    let addr = receiver.addr.clone();
    drop(receiver);
    repo.write("app/views.py", "VALUE = 2\n");
    let undelivered = watcher.wait_event("undelivered");
    assert!(undelivered["error"].as_str().unwrap().contains("will send it when the guest is back"), "{undelivered}");

    // No new edit: the watcher owes the guest this change and sends it on its own.
    let back = listen_on(&env, &addr, &env.join("app.reload"));
    let reload = back.wait_event("reload");
    assert_eq!(files(&reload), ["app/views.py"], "{reload}");
    assert_eq!(reload["reason"], "missed", "{reload}");
    assert_eq!(files(&watcher.wait_event("catching_up")), ["app/views.py"]);
    let delivered = watcher.wait_event("trigger");
    assert_eq!(delivered["ok"], true, "{delivered}");
}

#[test]
fn a_watcher_stopped_while_the_guest_is_down_says_what_was_not_sent() {
    let (project, mut watcher) = watched_project();
    let Project { repo, receiver, .. } = project;
    drop(receiver);
    repo.write("app/views.py", "VALUE = 2\n");
    watcher.wait_event("undelivered");
    // The stop tries once more, then says what never got through, and exits 1.
    assert_eq!(watcher.terminate(), Some(1));
    let stderr = watcher.stderr();
    assert!(
        stderr.contains("app/views.py") && stderr.contains("the watcher stopped before the guest was back"),
        "{stderr}"
    );
    assert!(stderr.contains("stopped: 1 changed file never reached a guest"), "{stderr}");
}

#[test]
fn a_receiver_killed_while_send_waits_is_a_clear_failure_and_a_restart_recovers() {
    let env = Env::new();
    let started = env.join("started");
    let script = format!("touch {}; sleep 3", path(&started));
    let receiver = env.listen(&["--exec", "sh", "-c", &script]);
    let addr = receiver.addr.clone();
    let send = env.command(env.path(), &["send", "--to", &addr, "--timeout", "10000"]);
    let waiting = std::thread::spawn(move || {
        let mut send = send;
        send.output()
    });
    eventually("the action starts", || started.exists());
    drop(receiver); // SIGKILL, by its PID
    let output = waiting.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("the reload may or may not have run"), "{stderr}");

    let back = listen_on(&env, &addr, &env.join("app.reload"));
    env.run(&["send", "--to", &addr]).expect_code(0).expect_stderr("reloaded app");
    back.wait_event("reload");
}

#[test]
fn a_deleted_target_directory_is_reported_and_its_return_recovers() {
    let env = Env::new();
    let dir = env.join("guest");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("app.reload");
    let receiver = env.listen(&["--touch", path(&file), "--settle", "0"]);
    env.run(&["send", "--to", &receiver.addr]).expect_code(0);
    std::fs::remove_dir_all(&dir).unwrap();
    env.run(&["send", "--to", &receiver.addr]).expect_code(1).expect_stderr(&format!(
        "cannot touch {}: No such file or directory (does its directory exist?)",
        file.display()
    ));
    env.run(&["status", "--to", &receiver.addr]).expect_stdout(&format!("directory {} does not exist", dir.display()));
    std::fs::create_dir(&dir).unwrap();
    env.run(&["send", "--to", &receiver.addr]).expect_code(0);
    assert!(file.exists());
}

#[test]
fn a_read_only_target_directory_is_reported() {
    let env = Env::new();
    if !util::is_root() {
        // Without root, permissions make the directory read-only.
        let dir = env.join("ro");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let receiver = env.listen(&["--touch", path(&dir.join("app.reload"))]);
        env.run(&["send", "--to", &receiver.addr]).expect_code(1).expect_stderr("Permission denied");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    // Root ignores permissions: a read-only file system, with one file made before it turned read-only.
    let Some(fs) = Tmpfs::mount(&env, "ro", "size=1m") else { return };
    let existing = fs.0.join("existing.reload");
    std::fs::write(&existing, "").unwrap();
    fs.remount("ro");
    let missing = env.listen(&["--touch", path(&fs.0.join("app.reload"))]);
    env.run(&["send", "--to", &missing.addr]).expect_code(1).expect_stderr("Read-only file system");
    let there = env.listen(&["--touch", path(&existing)]);
    env.run(&["send", "--to", &there.addr]).expect_code(1).expect_stderr("Read-only file system");
    // The receiver goes on: once the file system is writable, the same receivers act.
    fs.remount("rw");
    env.run(&["send", "--to", &missing.addr]).expect_code(0);
    env.run(&["send", "--to", &there.addr]).expect_code(0);
}

#[test]
fn a_full_file_system_fails_only_what_needs_space() {
    let env = Env::new();
    if !util::require_root("mounting a small tmpfs") {
        return;
    }
    let Some(fs) = Tmpfs::mount(&env, "full", "size=64k,nr_inodes=32") else { return };
    let existing = fs.0.join("existing.reload");
    std::fs::write(&existing, "").unwrap();
    // Fill it: every block, then every inode.
    let _ = std::fs::write(fs.0.join("blocks"), vec![b'x'; 128 * 1024]);
    for i in 0..64 {
        if std::fs::write(fs.0.join(format!("inode{i}")), "").is_err() {
            break;
        }
    }
    let new_file = env.listen(&["--touch", path(&fs.0.join("app.reload"))]);
    env.run(&["send", "--to", &new_file.addr]).expect_code(1).expect_stderr("No space left on device");
    // Advancing an existing file's mtime needs no space.
    let there = env.listen(&["--touch", path(&existing)]);
    env.run(&["send", "--to", &there.addr]).expect_code(0);
}

#[test]
fn a_fifo_whose_reader_goes_and_comes_back() {
    let env = Env::new();
    let fifo = env.join("master.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let open_reader = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap()
    };
    let receiver = env.listen(&["--fifo", path(&fifo), "--no-poke", "--settle", "0"]);
    let reader = open_reader();
    env.run(&["send", "--to", &receiver.addr]).expect_code(0).expect_stderr("(fifo)");
    drop(reader); // uWSGI stopped
    env.run(&["send", "--to", &receiver.addr])
        .expect_code(1)
        .expect_stderr("no process reads the FIFO")
        .expect_stderr("is uWSGI running with master-fifo");
    let _reader = open_reader();
    env.run(&["send", "--to", &receiver.addr]).expect_code(0);
}

#[test]
fn stale_garbage_and_missing_pidfiles_are_each_explained() {
    let env = Env::new();
    let pidfile = env.join("app.pid");
    let receiver = env.listen(&["--pidfile", path(&pidfile), "--settle", "0"]);
    env.run(&["send", "--to", &receiver.addr]).expect_code(1).expect_stderr(&pidfile.display().to_string());
    std::fs::write(&pidfile, "not a pid\n").unwrap();
    env.run(&["send", "--to", &receiver.addr]).expect_code(1).expect_stderr("not a pid");
    // A pid that no process has: far above any pid_max.
    std::fs::write(&pidfile, "99999999\n").unwrap();
    env.run(&["send", "--to", &receiver.addr]).expect_code(1).expect_stderr("no process 99999999");
    env.run(&["status", "--to", &receiver.addr]).expect_stdout("no process 99999999");
}

#[test]
fn a_missing_or_unreadable_token_file_stops_each_side_at_start_naming_it() {
    let env = Env::new();
    let missing = env.join("no-such-token");
    let a_dir = env.join("token-dir");
    std::fs::create_dir(&a_dir).unwrap();
    let touch = env.join("app.reload");
    let repo = util::Repo::init(env.join("repo"));
    repo.write("a.py", "");
    repo.commit_all("init");
    for token in [&missing, &a_dir] {
        let token = path(token);
        let listen = ["listen", "--addr", "127.0.0.1:0", "--touch", path(&touch), "--token-file", token];
        env.run(&listen).expect_code(2).expect_stderr(token);
        env.run(&["send", "--to", "127.0.0.1:9", "--token-file", token]).expect_code(2).expect_stderr(token);
        env.run_in(&repo.root, &["watch", "--to", "127.0.0.1:9", "--token-file", token])
            .expect_code(2)
            .expect_stderr(token);
    }
}

#[test]
fn a_token_file_the_user_cannot_read_is_named() {
    let env = Env::new();
    let token = env.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o000)).unwrap();
    let args = ["send", "--to", "127.0.0.1:9", "--token-file", path(&token)];
    if !util::is_root() {
        env.run(&args).expect_code(2).expect_stderr("Permission denied");
        return;
    }
    // Root reads any file: run as nobody (setpriv, util-linux), from a copy of the binary that
    // nobody may run, with the token in a directory nobody may enter.
    if !util::require("setpriv") {
        return;
    }
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = open.path().join("touchwire");
    std::fs::copy(env!("CARGO_BIN_EXE_touchwire"), &bin).unwrap();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(args)
        .env("XDG_CONFIG_HOME", env.join("xdg"))
        .env("HOME", open.path())
        .current_dir(open.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(path(&token)) && stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn a_watched_tree_moved_or_deleted_ends_the_watch_with_the_reason() {
    for how in ["moved", "deleted"] {
        let (project, mut watcher) = watched_project();
        let root = project.repo.root.clone();
        match how {
            "moved" => std::fs::rename(&root, project.env.join("elsewhere")).unwrap(),
            _ => std::fs::remove_dir_all(&root).unwrap(),
        }
        eventually("the watcher exits", || !watcher.is_alive());
        assert_eq!(watcher.terminate(), Some(1), "{how}: it exited by itself, with 1");
        let stderr = watcher.stderr();
        // Deleting may take the git directory first: either is named.
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(&root.display().to_string()) && last.contains("was moved or deleted"), "{how}: {stderr}");
    }
}

#[test]
fn a_held_index_lock_holds_a_burst_until_it_goes_or_is_stale() {
    let (project, watcher) = watched_project();
    let lock = project.repo.root.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    project.repo.write("app/views.py", "VALUE = 2\n");
    project.no_trigger("while git holds its lock", Duration::from_millis(800));
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(files(&project.receiver.wait_event("reload")), ["app/views.py"]);

    // A lock nobody removes: the burst is sent after 5 s anyway, with a warning about the lock.
    std::fs::write(&lock, "").unwrap();
    project.repo.write("app/views.py", "VALUE = 3\n");
    let stale = watcher.wait_event("stale_lock");
    assert_eq!(stale["path"], lock.canonicalize().unwrap().to_str().unwrap(), "{stale}");
    assert_eq!(files(&project.receiver.wait_event("reload")), ["app/views.py"]);
}

#[test]
fn a_touch_file_dated_in_the_future_still_advances_with_a_warning() {
    let env = Env::new();
    let file = env.join("app.reload");
    std::fs::write(&file, "").unwrap();
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(tomorrow).unwrap();
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let receiver: Listener = env.listen(&["--touch", path(&file)]);
    env.run(&["send", "--to", &receiver.addr]).expect_code(0);
    let after = std::fs::metadata(&file).unwrap().modified().unwrap();
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(after), secs(before) + 1, "touch-reload compares with `>`: going back to now would be no change");
    let warning = receiver.wait_event("clock");
    assert!(warning["ahead_s"].as_u64().unwrap() > 86_000, "{warning}");
    receiver.wait_stderr("in the future");

    // The mtime is now one this receiver set: going on is no news, and neither is the drift of
    // many touches in one second on a file with a right clock.
    let fresh = env.join("fresh.reload");
    let quick = env.listen(&["--touch", path(&fresh), "--settle", "0"]);
    for _ in 0..10 {
        env.run(&["send", "--to", &receiver.addr]).expect_code(0);
        env.run(&["send", "--to", &quick.addr]).expect_code(0);
    }
    let secs = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap().duration_since(SystemTime::UNIX_EPOCH);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert!(secs(&fresh).unwrap() > now + Duration::from_secs(2), "ten touches in a moment run ahead of the clock");
    let warned: Vec<_> =
        [&receiver, &quick].iter().flat_map(|r| r.named_within("clock", Duration::from_millis(300))).collect();
    assert!(warned.is_empty(), "warnings about a clock that is right: {warned:?}");
}

#[cfg(target_os = "linux")]
/// A network namespace whose resolver (127.0.0.1:53) takes queries and never answers; deleted,
/// with its resolv.conf, on drop.
struct MuteDns {
    ns: String,
    _socket: std::net::UdpSocket,
}

#[cfg(target_os = "linux")]
impl MuteDns {
    fn new() -> MuteDns {
        let ns = format!("tw-dns-{}", std::process::id());
        let run = |args: &[&str]| {
            let status = Command::new(args[0]).args(&args[1..]).status();
            assert!(status.is_ok_and(|s| s.success()), "{args:?} failed");
        };
        run(&["ip", "netns", "add", &ns]);
        // `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
        let etc = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n").unwrap();
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        // A socket made by a thread that entered the namespace stays in it.
        let path = format!("/var/run/netns/{ns}");
        let socket = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let handle = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) moves only this short-lived thread into the namespace.
            assert_eq!(unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 in the namespace")
        })
        .join()
        .unwrap();
        MuteDns { ns, _socket: socket }
    }
}

#[cfg(target_os = "linux")]
impl Drop for MuteDns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

#[test]
#[cfg(target_os = "linux")] // network namespaces
fn a_resolver_that_never_answers_costs_no_more_than_the_timeout() {
    if !util::require_root("a network namespace with a mute resolver") || !util::require("ip") {
        return;
    }
    let env = Env::new();
    let dns = MuteDns::new();
    let output = Command::new("ip")
        .args(["netns", "exec", &dns.ns, env!("CARGO_BIN_EXE_touchwire")])
        .args(["send", "--to", "app.guest.test", "--timeout", "500"])
        .env("XDG_CONFIG_HOME", env.join("xdg"))
        .env("HOME", env.path())
        .current_dir(env.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The resolver alone would take 10 s (two attempts of 5 s) before failing.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // The port tried is named: the address is completed once, where it is parsed.
    assert!(stderr.contains("app.guest.test:9001: the name did not resolve within 500 ms"), "{stderr}");
}

#[test]
fn a_frozen_guest_with_a_ready_check_is_owed_the_change_and_gets_it_when_it_thaws() {
    // A guest that stops answering without closing (a suspended VM): connections open, no greeting.
    let env = Env::new();
    let guest = env.join("guest");
    std::fs::create_dir(&guest).unwrap();
    let log = guest.join("app.log");
    let config = serde_json::json!({"targets": {"app": {
        "exec": ["sh", "-c", format!("echo 'app ready' >> {}", path(&log))],
        "ready": {"log": path(&log), "pattern": "app ready", "timeout_ms": 5000}}}});
    std::fs::write(guest.join(".touchwire.json"), config.to_string()).unwrap();
    let mut receiver = env.listen_in(&guest, &["--settle", "0"]);
    let repo = util::Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr, "--timeout", "500"]);
    watcher.wait_event("connected");

    receiver.signal(libc::SIGSTOP);
    repo.write("app.py", "X = 2\n");
    let undelivered = watcher.wait_event("undelivered");
    assert!(undelivered["error"].as_str().unwrap().contains("will send it when the guest is back"), "{undelivered}");
    receiver.signal(libc::SIGCONT);
    assert_eq!(files(&watcher.wait_event("catching_up")), ["app.py"]);
    let delivered = watcher.wait_event("trigger");
    assert_eq!((delivered["ok"].clone(), files(&delivered)), (serde_json::json!(true), vec!["app.py"]), "{delivered}");
    assert_eq!(delivered["ready"]["ok"], true, "the catch-up waits for the ready check too: {delivered}");
}

#[test]
fn a_refusing_guest_is_not_owed_anything() {
    let (project, watcher) = watched_project();
    drop(watcher);
    let token = project.env.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let wrong = project.env.join("wrong");
    std::fs::write(&wrong, "a-token-the-guest-does-not-have").unwrap();
    let touch = project.env.join("guarded.reload");
    let guarded = project.env.listen(&["--touch", path(&touch), "--token-file", path(&token)]);
    let args = ["--to", guarded.addr.as_str(), "--token-file", path(&wrong)];
    let (mut watcher, _) = project.env.watch_in(&project.repo.root, &args);
    watcher.wait_event("disconnected");
    project.repo.write("app/views.py", "VALUE = 2\n");
    let undelivered = watcher.wait_event("undelivered");
    let error = undelivered["error"].as_str().unwrap();
    assert!(error.contains("wrong token") && !error.contains("will send it"), "{undelivered}");
    // Nothing owed, so nothing lost at the stop: it exits 0.
    assert_eq!(watcher.terminate(), Some(0), "{}", watcher.stderr());
}

#[test]
fn a_reload_that_ran_before_the_guest_died_is_not_sent_again() {
    // The action kills its receiver: the request went out and ran, the reply never came.
    let env = Env::new();
    let ran = env.join("ran");
    let script = format!("echo run >> {}; kill -9 $PPID", path(&ran));
    let receiver = env.listen(&["--settle", "0", "--exec", "sh", "-c", &script]);
    let repo = util::Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    let (mut watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr]);
    watcher.wait_event("connected");
    repo.write("app.py", "X = 2\n");
    let undelivered = watcher.wait_event("undelivered");
    let error = undelivered["error"].as_str().unwrap();
    assert!(error.contains("may or may not have run") && !error.contains("will send it"), "{undelivered}");
    // Nothing owed: the stop has nothing to report lost, and the action ran once.
    assert_eq!(watcher.terminate(), Some(0), "{}", watcher.stderr());
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\n");
    drop(receiver);
}

#[test]
fn a_dead_app_server_is_reported_as_a_failed_reload_not_as_undelivered() {
    // A gunicorn master that died of an import error leaves a stale pidfile: the guest took the
    // trigger, and its action says the app is down. Nothing is owed, nothing is retried.
    let project = Project::new(&[("app/views.py", "VALUE = 1\n")], false);
    let pidfile = project.env.join("gunicorn.pid");
    std::fs::write(&pidfile, "99999999\n").unwrap();
    let receiver = project.env.listen(&["--pidfile", path(&pidfile), "--settle", "0"]);
    let (watcher, _) = project.env.watch_in(&project.repo.root, &["--to", &receiver.addr]);
    watcher.wait_event("connected");
    project.repo.write("app/views.py", "VALUE = 2\n");
    let failed = watcher.wait_event("reload_failed");
    assert_eq!(failed["code"], "action_failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("is the app running?"), "{failed}");
    let stderr = watcher.wait_stderr("reload failed: no process 99999999");
    assert!(!stderr.contains("not delivered"), "{stderr}");
}
