//! The last save is served by a real uWSGI (issue 14): a save made while uWSGI reloads is never
//! swallowed. On loopback, with uWSGI's master FIFO: `r` (the new master reads its FIFO only
//! after it imported the app, which takes a while here), `c` with lazy-apps (uWSGI ignores a
//! `c` during a chain reload), and touch-reload (a touch while the new master imports the app). Needs uwsgi and uwsgi-plugin-python3 (scripts/test installs them).
#![cfg(unix)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{Env, WAIT};

/// A uWSGI serving `app.py` from `dir` on `port`, killed (with its workers) when dropped.
struct Uwsgi {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Uwsgi {
    fn start(dir: &Path, fifo: &Path, extra: &[&str]) -> Uwsgi {
        Uwsgi::start_with(dir, &[&["--master-fifo"], &[fifo.to_str().unwrap()], extra].concat())
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Uwsgi {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("uwsgi.log");
        let mut cmd = Command::new("uwsgi");
        cmd.args(["--plugin", "python3", "--master", "--processes", "2", "--die-on-term"])
            .args(["--http-socket", &format!("127.0.0.1:{port}"), "--chdir"])
            .arg(dir)
            .args(["--wsgi-file", "app.py"])
            .arg("--logto")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let uwsgi = Uwsgi { child: cmd.spawn().expect("cannot start uwsgi"), port, log };
        uwsgi.until("uWSGI to serve", |answers| answers.iter().any(|a| a.starts_with("v0 ")));
        uwsgi
    }

    /// One answer: "VERSION PID".
    fn get(&self) -> Option<String> {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "2", &format!("http://127.0.0.1:{}/", self.port)])
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Polls until `done` holds for the answers of the last round (every worker asked a few times).
    fn until(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = (0..6).filter_map(|_| self.get()).collect();
            if done(&last) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("timed out waiting for {what}; last answers {last:?}; uwsgi log:\n{log}");
    }
}

impl Drop for Uwsgi {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child (--die-on-term: it takes its workers with it).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready() -> bool {
    util::require("uwsgi")
        && util::require("curl")
        && (Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() || util::require("uwsgi-plugin-python3"))
}

/// The app: answers its version and the worker's pid; its import takes `import_ms`.
fn write_app(dir: &Path, version: &str, import_ms: u64) {
    let app = format!(
        "import os, time\ntime.sleep({})\nVERSION = {version:?}\n\ndef application(env, start):\n    \
         start('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s %d' % (VERSION, os.getpid())).encode()]\n",
        import_ms as f64 / 1000.0
    );
    std::fs::write(dir.join("app.py"), app).unwrap();
}

/// Every answer of a round is `version`, from at least two workers.
fn all_serve(version: &str) -> impl Fn(&[String]) -> bool + '_ {
    move |answers: &[String]| {
        let pids: std::collections::BTreeSet<_> = answers.iter().filter_map(|a| a.split(' ').nth(1)).collect();
        answers.len() >= 4 && answers.iter().all(|a| a.starts_with(&format!("{version} "))) && pids.len() >= 2
    }
}

fn second_save_is_served(command: &str, extra: &[&str]) {
    let env = Env::new();
    let fifo = env.join("master.fifo");
    write_app(env.path(), "v0", 0);
    let uwsgi = Uwsgi::start(env.path(), &fifo, extra);
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap(), "--fifo-command", command]);
    two_saves(&env, &uwsgi, &listener.addr, true);
}

/// Two saves, the second while the reload the first started still imports the app: every
/// worker ends on the second.
fn two_saves(env: &Env, uwsgi: &Uwsgi, addr: &str, merged: bool) {
    // The first save starts a reload whose app import takes 1.5 s (a chain of two workers: 3 s,
    // as long as a poke lasts); the second save comes while it runs.
    write_app(env.path(), "v1", 1500);
    env.run(&["send", "--to", addr]).expect_code(0);
    std::thread::sleep(Duration::from_millis(800));
    write_app(env.path(), "v2", 1500);
    let second = env.run(&["send", "--to", addr]);
    second.expect_code(0);
    // Merged into the reload under way (fifo: held until uWSGI reads its FIFO again); a touch
    // target's window is only settle_ms, so there it is a reload of its own.
    if merged {
        second.expect_stderr("merged");
    }
    uwsgi.until("every worker to serve the last save", all_serve("v2"));
}

#[test]
fn a_save_during_a_graceful_reload_is_served() {
    if !ready() {
        return;
    }
    second_save_is_served("r", &[]);
}

#[test]
fn a_save_during_a_chain_reload_leads_to_one_more_chain_reload() {
    if !ready() {
        return;
    }
    second_save_is_served("c", &["--lazy-apps"]);
}

#[test]
fn a_save_during_a_touch_reload_is_served() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let touch = env.join("app.reload");
    std::fs::write(&touch, "").unwrap();
    write_app(env.path(), "v0", 0);
    let uwsgi = Uwsgi::start_with(env.path(), &["--touch-reload", touch.to_str().unwrap()]);
    let listener = env.listen(&["--touch", touch.to_str().unwrap()]);
    two_saves(&env, &uwsgi, &listener.addr, false);
}
