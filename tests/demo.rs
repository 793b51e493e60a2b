//! `touchwire demo`: the whole loop in one process, on its own sample repository. Each run gets
//! a fresh TMPDIR, which must be empty again however the demo ended.
#![cfg(unix)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// A fresh, empty directory for the demo's TMPDIR.
fn fresh_tmp(env: &util::Env) -> PathBuf {
    let tmp = env.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// Runs `touchwire ARGS` to completion with TMPDIR set to `tmp`.
fn run_with_tmp(env: &util::Env, tmp: &Path, args: &[&str]) -> util::Run {
    let output = env.command(env.path(), args).env("TMPDIR", tmp).stdin(Stdio::null()).output().unwrap();
    util::Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[track_caller]
fn assert_empty(tmp: &Path, run: &str) {
    let left: Vec<_> = walk(tmp);
    assert!(left.is_empty(), "the demo left {left:?} in its TMPDIR\n{run}");
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// A demo running in the background, its stdout read line by line (its stderr kept whole).
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(env: &util::Env, tmp: &Path, args: &[&str]) -> Running {
        let mut child = env
            .command(env.path(), args)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start touchwire");
        let (lines, stdout) = util::lines_of(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        Running { child, lines, seen: Vec::new(), stdout: Some(stdout), stderr: Some(stderr) }
    }

    /// Waits (at most util::WAIT) for a line holding `needle`; returns it.
    #[track_caller]
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + util::WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} within {:?}; stdout so far:\n{}", util::WAIT, self.seen.join("\n"));
    }

    /// Sends SIGINT, as Ctrl-C does, to the demo (only while it runs, by its own PID).
    fn interrupt(&mut self) {
        if let (Ok(None), Ok(pid)) = (self.child.try_wait(), libc::pid_t::try_from(self.child.id())) {
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
    }

    /// Waits (at most util::WAIT) for the exit; returns the exit code (None: killed by a
    /// signal), the stdout lines since the last wait_line, and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + util::WAIT;
        let status = loop {
            match self.child.try_wait().unwrap() {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!("the demo did not exit within {:?}; stdout:\n{}", util::WAIT, self.seen.join("\n"));
                }
                None => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let rest: Vec<String> = self.lines.iter().collect();
        let stderr = self.stderr.take().map(|reader| reader.join().unwrap()).unwrap_or_default();
        (status.code(), rest, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The readers end with the child's streams.
        if let Some(stdout) = self.stdout.take() {
            let _ = stdout.join();
        }
    }
}

#[test]
fn the_demo_script_shows_each_case_as_watch_says_it_and_removes_all_it_made() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let run = run_with_tmp(&env, &tmp, &["demo", "--once"]);
    run.expect_code(0);
    let out = &run.stdout;
    let section = |start: &str, end: &str| -> String {
        let from = out.find(start).unwrap_or_else(|| panic!("no {start:?} in:\n{out}"));
        let to = out[from..].find(end).map(|i| from + i).unwrap_or(out.len());
        out[from..to].to_string()
    };
    // The line `touchwire watch` prints for the same outcome, after the script's own indent.
    let save = section("1. save", "2. ");
    assert!(save.contains("  app: app/views.py -> 127.0.0.1:") && save.contains(" reloaded (touch) in "), "{save}");
    assert!(save.ends_with("  1 trigger\n"), "{save}");
    let atomic = section("2. atomic save", "3. ");
    assert!(atomic.contains("  app: app/models.py -> 127.0.0.1:") && atomic.ends_with("  1 trigger\n"), "{atomic}");
    let ignored = section("3. edit venv/", "4. ");
    assert!(ignored.contains("nothing sent"), "{ignored}");
    let checkout = section("4. git checkout feature", "\n\n");
    assert!(checkout.contains("  1 trigger") || checkout.contains("  2 triggers"), "{checkout}");
    assert!(!out.contains("trigger(s)") && !out.contains("not delivered"), "{out}");
    assert_empty(&tmp, &format!("{run:?}"));
}

#[test]
fn a_missing_or_unwatchable_dir_is_refused_before_the_script() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let missing = env.join("no-such-dir");
    let run = run_with_tmp(&env, &tmp, &["demo", missing.to_str().unwrap()]);
    run.expect_code(2).expect_stderr(&format!("cannot watch {}: there is no such directory", missing.display()));
    assert!(run.stdout.is_empty(), "the script played:\n{}", run.stdout);
    assert_empty(&tmp, &format!("{run:?}"));

    let plain = env.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let run = run_with_tmp(&env, &tmp, &["demo", plain.to_str().unwrap()]);
    run.expect_code(2).expect_stderr(&format!("cannot watch {}: it is not inside a git repository", plain.display()));
    assert!(run.stdout.is_empty(), "the script played:\n{}", run.stdout);
    assert_empty(&tmp, &format!("{run:?}"));
}

#[test]
fn a_dir_with_once_is_refused_with_the_reason() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let repo = util::Repo::init(env.join("mine"));
    let dir = repo.root.to_str().unwrap();
    let run = run_with_tmp(&env, &tmp, &["demo", dir, "--once"]);
    run.expect_code(2)
        .expect_stderr(&format!("cannot combine {dir} with --once"))
        .expect_stderr("DIR is watched only in the live part, which --once skips");
    assert!(run.stdout.is_empty(), "the script played:\n{}", run.stdout);
    assert_empty(&tmp, &format!("{run:?}"));
}

#[test]
fn ctrl_c_during_the_script_stops_cleanly_and_removes_all() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let mut demo = Running::start(&env, &tmp, &["demo"]);
    demo.wait_line("1. save app/views.py");
    demo.interrupt();
    let (code, rest, stderr) = demo.finish();
    assert_eq!(code, Some(0), "stdout after the interrupt: {rest:?}\nstderr:\n{stderr}");
    let last = rest.iter().rev().find(|l| !l.is_empty());
    assert!(last.is_some_and(|l| l.starts_with("stopped; removed ")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("Now live")), "{rest:?}");
    assert_empty(&tmp, &format!("stdout: {rest:?}\nstderr:\n{stderr}"));
}

#[test]
fn ctrl_c_in_the_live_part_prints_only_the_stop_line_and_removes_all() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let mut demo = Running::start(&env, &tmp, &["demo"]);
    let live = demo.wait_line("Now live: edit ");
    let views =
        live.strip_prefix("Now live: edit ").and_then(|l| l.strip_suffix(" and save. Ctrl-C to stop.")).unwrap();
    std::fs::write(views, "MESSAGE = 'live'\n").unwrap();
    demo.wait_line("app/views.py"); // its reload line
    demo.interrupt();
    let (code, rest, stderr) = demo.finish();
    assert_eq!(code, Some(0), "stdout after the interrupt: {rest:?}\nstderr:\n{stderr}");
    let printed: Vec<&String> = rest.iter().filter(|l| !l.is_empty()).collect();
    assert!(printed.len() == 1 && printed[0].starts_with("stopped; removed "), "after Ctrl-C: {rest:?}");
    assert!(!stderr.contains("reloaded") && !stderr.contains(" -> "), "{stderr}");
    assert_empty(&tmp, &format!("stdout: {rest:?}\nstderr:\n{stderr}"));
}

#[test]
fn demo_dir_watches_that_repository_live_and_leaves_it_as_it_was() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let repo = util::Repo::init(env.join("mine"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("mine");
    let mut demo = Running::start(&env, &tmp, &["demo", repo.root.to_str().unwrap()]);
    demo.wait_line("Now live on ");
    repo.write("app.py", "X = 2\n");
    demo.wait_line("app.py"); // its reload line
    demo.interrupt();
    let (code, rest, stderr) = demo.finish();
    assert_eq!(code, Some(0), "stdout after the interrupt: {rest:?}\nstderr:\n{stderr}");
    assert_eq!(repo.git(&["status", "--porcelain"]), " M app.py\n", "the demo changed the repository");
    assert_eq!(repo.git(&["branch", "--show-current"]), "main\n");
    assert_empty(&tmp, &format!("stdout: {rest:?}\nstderr:\n{stderr}"));
}

#[test]
fn an_error_after_the_script_started_removes_all_it_made() {
    let env = util::Env::new();
    let tmp = fresh_tmp(&env);
    let repo = util::Repo::init(env.join("mine"));
    let mut demo = Running::start(&env, &tmp, &["demo", repo.root.to_str().unwrap()]);
    demo.wait_line("1. save app/views.py");
    // DIR was checked at start; gone by the live part, watching it fails.
    std::fs::remove_dir_all(&repo.root).unwrap();
    let (code, rest, stderr) = demo.finish();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}; stdout: {rest:?}\nstderr:\n{stderr}");
    assert!(stderr.contains(&format!("{}", repo.root.display())), "{stderr}");
    assert!(!rest.iter().any(|l| l.contains("Now live")), "{rest:?}");
    assert_empty(&tmp, &format!("stdout: {rest:?}\nstderr:\n{stderr}"));
}
