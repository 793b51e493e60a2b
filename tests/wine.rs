//! The Windows build's `touchwire watch`, run under Wine, sending to this machine's Linux
//! `touchwire listen` on loopback. What the Windows watcher is checked on here:
//! save in place, atomic save, a new directory, a deletion, a burst, ignored files, and a save
//! made by a Windows program (cmd.exe), each on the receiver's `--json` events.
//!
//! `scripts/cross-check` builds what this needs: `x86_64-pc-windows-gnu/debug/touchwire.exe`
//! in the target directory, the test-only `bcryptprimitives.dll` next to it (tests/wine/), and
//! a Wine prefix in `target/wine/prefix`. Without them the test skips, saying why (with
//! CI=true it fails). Wine emulates ReadDirectoryChangesW over inotify: this proves the
//! Windows code path (notify's Windows backend, Windows paths, `\\?\Z:\` roots, the classifier
//! without closes, the Windows socket code), not Windows' own change notifications: see README,
//! "What the cross checks prove".
#![cfg(target_os = "linux")]

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use util::{Daemon, Env, Repo};

/// How long to listen for a trigger that must not come (Wine is slower than native).
const QUIET: Duration = Duration::from_millis(1000);

/// The target directory: the parent of the native binary's profile directory.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_touchwire")).parent().unwrap().parent().unwrap().to_path_buf()
}

/// The Windows binary and the Wine prefix, or why the test cannot run.
fn windows_build() -> Result<(PathBuf, PathBuf), String> {
    let exe = target_dir().join("x86_64-pc-windows-gnu/debug/touchwire.exe");
    let prefix = target_dir().join("wine/prefix");
    let dll = exe.with_file_name("bcryptprimitives.dll");
    if !util::require("wine") {
        return Err("wine is not installed".into());
    }
    for (path, what) in [(&exe, "the Windows binary"), (&dll, "the ProcessPrng shim"), (&prefix, "the Wine prefix")] {
        if !path.exists() {
            return Err(format!("{what} {} is missing: scripts/cross-check builds it", path.display()));
        }
    }
    Ok((exe, prefix))
}

/// [`windows_build`], or None after saying why the test is skipped (a failure in CI).
fn windows_build_or_skip() -> Option<(PathBuf, PathBuf)> {
    match windows_build() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI: {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// `wine ARGS` in `prefix`, quiet, bounded by `timeout`.
fn wine(prefix: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["120", "wine"])
        .args(args)
        .current_dir(cwd)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run wine")
}

struct Scenario {
    env: Env,
    repo: Repo,
    receiver: Daemon,
    prefix: PathBuf,
    /// Milliseconds from each change to the receiver's first reload for it.
    latencies: Vec<(&'static str, f64)>,
}

impl Scenario {
    /// Waits for the trigger(s) for one change: the receiver's reloads must name exactly
    /// `files` between them, in at most two triggers (without closes, a write leads a burst and
    /// its end may trigger once more).
    #[track_caller]
    fn expect(&mut self, what: &'static str, since: Instant, files: &[&str]) -> usize {
        let first = self.receiver.wait_event("reload");
        self.latencies.push((what, since.elapsed().as_secs_f64() * 1000.0));
        let mut triggers = vec![first];
        triggers.extend(self.receiver.named_within("reload", QUIET));
        let named: BTreeSet<String> = triggers
            .iter()
            .flat_map(|t| t["files"].as_array().unwrap().iter())
            .map(|f| f.as_str().unwrap().into())
            .collect();
        let wanted: BTreeSet<String> = files.iter().map(|f| f.to_string()).collect();
        assert_eq!(named, wanted, "{what}: triggers {triggers:?}");
        assert!(triggers.len() <= 2, "{what}: {} triggers {triggers:?}", triggers.len());
        triggers.len()
    }

    #[track_caller]
    fn no_trigger(&self, what: &str) {
        let extra = self.receiver.named_within("reload", QUIET);
        assert!(extra.is_empty(), "{what}: unexpected trigger(s) {extra:?}");
    }
}

#[test]
fn the_windows_watcher_under_wine_sends_to_a_linux_listener() {
    let Some((exe, prefix)) = windows_build_or_skip() else { return };
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    let token = repo.root.join(".git/touchwire/token");
    repo.write(".git/touchwire/token", &format!("{}\n", "5a".repeat(32)));
    let receiver = env.listen(&[
        "--settle",
        "0",
        "--touch",
        env.join("app.reload").to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    // The Windows watcher finds the remote and the token (a path with `/`, relative to the
    // file) in the committed config, as a Windows host would.
    let config = serde_json::json!({"remote": receiver.addr, "token_file": ".git/touchwire/token"});
    repo.write(".touchwire.json", &config.to_string());
    for (path, content) in [
        (".gitignore", "venv/\n*.log\n"),
        ("app/views.py", "VALUE = 1\n"),
        ("app/models.py", "MODEL = 1\n"),
        ("README.txt", "readme\n"),
        ("venv/lib/site.py", "# site\n"),
    ] {
        repo.write(path, content);
    }
    repo.commit_all("init");
    let mut s = Scenario { env, repo, receiver, prefix, latencies: Vec::new() };

    // Starts wineserver for the prefix, so that the watcher's start is not a cold one.
    let warm = wine(&s.prefix, s.env.path(), &["cmd", "/c", "exit"]);
    assert!(warm.status.success(), "wine cmd /c exit: {warm:?}");

    // `wine touchwire.exe ARGS`, SIGINT at its default (a background job may inherit it
    // ignored): Wine turns a SIGINT into the console's Ctrl-C for a Windows program.
    let script = format!(
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); \
         os.execvp('wine', ['wine', {:?}] + sys.argv[2:])",
        exe.display().to_string()
    );
    let wine_env = [format!("WINEPREFIX={}", s.prefix.display())];
    let wrapper = ["env", &wine_env[0], "WINEDEBUG=-all", "python3", "-c", &script];
    let watcher = s.env.spawn_via(&wrapper, &s.repo.root, &["watch", "--json"]);
    let ready = watcher.wait_event("ready");
    assert_eq!(ready["backend"], "recursive", "{ready}");
    assert_eq!(ready["relevant"], 2, "{ready}");
    assert!(ready["root"].as_str().unwrap().starts_with(r"\\?\Z:\"), "{ready}");
    watcher.wait_event("connected");

    // Ignored (.gitignore'd folder and pattern) and unwatched (extension) files send nothing.
    s.repo.write("venv/lib/site.py", "# changed\n");
    s.repo.write("venv/lib/new_pkg/mod.py", "# new\n");
    s.repo.write("app/debug.log", "log\n");
    s.repo.write("README.txt", "changed\n");
    s.no_trigger("venv/, *.log, .txt");

    let mut counts = Vec::new();
    let t = Instant::now();
    s.repo.write("app/views.py", "VALUE = 2\n");
    counts.push(("save in place", s.expect("save in place", t, &["app/views.py"])));

    let t = Instant::now();
    let tmp = s.repo.root.join("app/.views.py.tmp123");
    std::fs::write(&tmp, "VALUE = 3\n").unwrap();
    std::fs::rename(&tmp, s.repo.root.join("app/views.py")).unwrap();
    counts.push(("atomic save", s.expect("atomic save", t, &["app/views.py"])));

    let t = Instant::now();
    s.repo.write("app/api/v2/handlers.py", "H = 1\n");
    counts.push(("new directory", s.expect("new directory", t, &["app/api/v2/handlers.py"])));
    let t = Instant::now();
    s.repo.write("app/api/v2/handlers.py", "H = 2\n");
    counts.push(("new directory, 2nd save", s.expect("new directory, 2nd save", t, &["app/api/v2/handlers.py"])));

    let t = Instant::now();
    std::fs::remove_file(s.repo.root.join("app/models.py")).unwrap();
    counts.push(("delete", s.expect("delete", t, &["app/models.py"])));

    let burst: Vec<String> = (1..=8).map(|i| format!("app/burst/m{i}.py")).collect();
    let t = Instant::now();
    for (i, file) in burst.iter().enumerate() {
        s.repo.write(file, &format!("B = {i}\n"));
    }
    let names: Vec<&str> = burst.iter().map(String::as_str).collect();
    counts.push(("burst of 8", s.expect("burst of 8", t, &names)));

    // A save by a Windows program: cmd.exe's redirection, through Wine's file layer.
    let t = Instant::now();
    let saved = wine(&s.prefix, &s.repo.root, &["cmd", "/c", r"echo VALUE = 9 > app\views.py"]);
    assert!(saved.status.success(), "cmd /c echo: {saved:?}");
    counts.push(("save by cmd.exe", s.expect("save by cmd.exe (includes wine's start)", t, &["app/views.py"])));

    s.no_trigger("after the last change");
    drop(watcher);

    // Ctrl-C (a SIGINT, which Wine makes a console Ctrl-C) stops the watcher once it has sent
    // the change a long debounce still holds. (A SIGTERM ends a Windows program under Wine at
    // once, as TerminateProcess would: nothing to test there.)
    let mut watcher = s.env.spawn_via(&wrapper, &s.repo.root, &["watch", "--json", "--debounce", "5000"]);
    watcher.wait_event("ready");
    watcher.wait_event("connected");
    let t = Instant::now();
    std::fs::remove_file(s.repo.root.join("app/views.py")).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // for the watcher to take the event in
    watcher.signal(libc::SIGINT);
    counts.push(("held at Ctrl-C", s.expect("held at Ctrl-C", t, &["app/views.py"])));
    let stopped = Instant::now();
    while watcher.is_alive() && stopped.elapsed() < util::WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(watcher.terminate(), Some(0), "{}", watcher.stderr());
    for ((what, ms), (_, count)) in s.latencies.iter().zip(&counts) {
        eprintln!("wine: {what}: first trigger after {ms:.0} ms, {count} trigger(s)");
    }
}

#[test]
fn a_windows_host_never_reads_guest_paths_with_its_own_rules() {
    let Some((exe, prefix)) = windows_build_or_skip() else { return };
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app.py", "VALUE = 1\n");
    repo.commit_all("init");
    let exe = exe.to_str().unwrap();
    // The work tree is Z:\...\repo here: the guest's path of it cannot be guessed.
    let out = wine(&prefix, &repo.root, &[exe, "init", "--uwsgi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("pass --guest-root") && !stderr.contains("must be an absolute path"), "{stderr}");
    // Given it, every guest path is written with `/`.
    let out = wine(&prefix, &repo.root, &[exe, "init", "--uwsgi", "--guest-root", "/vagrant"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("shared-pyimport = /vagrant/.git/touchwire/touchwire_warm.py"), "{stdout}");
    assert!(!stdout.contains('\\'), "{stdout}");
}
