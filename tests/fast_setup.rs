//! The fast setup of a real app (issue 14, item 3): `touchwire init --uwsgi` prints it, and a
//! real Debian uWSGI on loopback run with exactly those lines (lazy-apps, skip-atexit-teardown,
//! the warm master, master FIFO, logto) and two workers serves every save after a chain reload
//! `c`, without any worker importing the slow third-party package again: only the master did,
//! once. A project module imported by a third-party package is refused by the warm master, so the
//! workers serve its new code. gunicorn HUP from a warmed arbiter, when gunicorn can be
//! installed. The warm helper's own unit tests run here too. Timings are printed, never asserted
//! beyond a loose bound.
#![cfg(unix)]

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{Env, Repo};

/// The Python uWSGI's Debian plugin embeds (the same one its master runs).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn uwsgi_ready() -> bool {
    util::require("uwsgi")
        && (Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() || util::require("uwsgi-plugin-python3"))
}

/// The loose bound on save → every worker serving it. Without the warm master a chain of two
/// workers takes at least 2 s of `time.sleep` alone; with it, a few hundred ms here.
const SERVED_WITHIN: Duration = Duration::from_secs(20);

/// One HTTP/1.0 GET on loopback; the body, if the server answered.
fn get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.trim().to_string())
}

/// Polls until every answer of a round is "`version` PID", from at least two workers; returns how
/// long it took, or panics with the last answers and the server's log.
fn until_all_serve(port: u16, version: &str, log: &Path, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < limit {
        last = (0..8).filter_map(|_| get(port)).collect::<Vec<_>>();
        let pids: std::collections::BTreeSet<_> = last.iter().filter_map(|a| a.split(' ').nth(1)).collect();
        if last.len() >= 6 && last.iter().all(|a| a.starts_with(&format!("{version} "))) && pids.len() >= 2 {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("not every worker serves {version} after {limit:?}; last answers {last:?}; log:\n{log}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A project (a git work tree) whose app answers "VERSION PID", VERSION from the project's
/// `version.py`, imported through `via` (a module name); plus a "third-party" directory outside
/// the work tree.
struct Project {
    env: Env,
    repo: Repo,
    site: PathBuf,
}

impl Project {
    fn new(via: &str) -> Project {
        let env = Env::new();
        let repo = Repo::init(env.join("project"));
        let site = env.join("third-party");
        // Slow to import, as Django or Wagtail are; it says in which process it was imported.
        write(
            &site.join("slowlib/__init__.py"),
            "import os, sys, time\nsys.stderr.write('slowlib imported in pid %d\\n' % os.getpid())\ntime.sleep(1)\n",
        );
        // A third-party package that imports a module of the project (as a settings module is).
        write(&site.join("sneaky/__init__.py"), "import version\n\ndef current():\n    return version.VERSION\n");
        let project = Project { env, repo, site };
        project.save("v0");
        let answer = match via {
            "sneaky" => "sneaky.current()",
            _ => "version.VERSION",
        };
        write(
            &project.repo.root.join("app.py"),
            &format!(
                "import os\nimport slowlib\nimport {via}\n\n\ndef application(env, start):\n    \
                 start('200 OK', [('Content-Type', 'text/plain')])\n    \
                 return [('%s %d' % ({answer}, os.getpid())).encode()]\n"
            ),
        );
        project
    }

    /// A save: the project's version module changes (its length too, so no stale .pyc).
    fn save(&self, version: &str) {
        write(&self.repo.root.join("version.py"), &format!("VERSION = {version:?}\n"));
    }

    /// `touchwire init ARGS` in the work tree; its stdout, checked to succeed.
    fn init(&self, args: &[&str]) -> String {
        let mut full = vec!["init"];
        full.extend_from_slice(args);
        let run = self.env.run_in(&self.repo.root, &full);
        run.expect_code(0);
        run.stdout.clone()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A server we started, ended by its pid (and its workers with it) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child: uWSGI (--die-on-term) and gunicorn both take
        // their workers with them.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The master's pid, from uWSGI's "spawned uWSGI master process (pid: N)".
fn uwsgi_master_pid(log: &str) -> Option<u32> {
    let rest = log.split("spawned uWSGI master process (pid: ").nth(1)?;
    rest.split(')').next()?.parse().ok()
}

/// Starts uWSGI with the fast setup `touchwire init --uwsgi` printed, 2 workers, on `port`.
fn start_uwsgi(project: &Project, port: u16) -> (Server, PathBuf) {
    let fifo = project.env.join("master.fifo");
    let log = project.env.join("uwsgi.log");
    let ini = project.init(&["--uwsgi", "--fifo", fifo.to_str().unwrap(), "--logto", log.to_str().unwrap()]);
    let ini_path = project.env.join("fast.ini");
    std::fs::write(&ini_path, ini).unwrap();
    let child = Command::new("uwsgi")
        .arg("--ini")
        .arg(&ini_path)
        .args(["--plugin", "python3", "--processes", "2", "--die-on-term"])
        .args(["--http-socket", &format!("127.0.0.1:{port}"), "--chdir"])
        .arg(&project.repo.root)
        .args(["--wsgi-file", "app.py", "--python-path"])
        .arg(&project.site)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start uwsgi");
    (Server { child, log }, fifo)
}

/// The pids that imported slowlib, from its own log line.
fn slow_importers(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.strip_prefix("slowlib imported in pid "))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Saves `v1`, sends, and waits until every worker serves it; returns how long that took.
fn save_and_reload(project: &Project, listener: &util::Listener, port: u16, log: &Path) -> Duration {
    let start = Instant::now();
    project.save("v1");
    project.env.run(&["send", "--to", &listener.addr]).expect_code(0);
    let served = until_all_serve(port, "v1", log, SERVED_WITHIN);
    let total = start.elapsed();
    eprintln!("save -> every worker serving it: {} ms (poll ended {} ms)", total.as_millis(), served.as_millis());
    total
}

#[test]
fn the_warm_helper_passes_its_unit_tests() {
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let output = Command::new(python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(&guest)
        .args(["-p", "test_*.py"])
        // No bytecode in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output();
    let Ok(output) = output else {
        assert!(!in_ci(), "CI must have python3");
        eprintln!("skipping: {} cannot run", python());
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the helper's unit tests failed:\n{stderr}");
    assert!(stderr.contains("OK"), "{stderr}");
}

#[test]
fn init_uwsgi_prints_the_fast_setup_and_writes_the_shipped_helper() {
    let project = Project::new("version");
    let run = project.env.run_in(&project.repo.root, &["init", "--uwsgi", "--guest-root", "/vagrant"]);
    run.expect_code(0);
    for line in [
        "master = true",
        "lazy-apps = true",
        "skip-atexit-teardown = true",
        "master-fifo = /tmp/touchwire-uwsgi.fifo",
        "logto = /tmp/touchwire-uwsgi.log",
        "env = TOUCHWIRE_WARM_ROOT=/vagrant",
        "shared-pyimport = /vagrant/.git/touchwire/touchwire_warm.py",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "{line:?} missing:\n{}", run.stdout);
    }
    run.expect_stderr(r#"{"fifo":"/tmp/touchwire-uwsgi.fifo","command":"c"}"#);
    let written = std::fs::read_to_string(project.repo.root.join(".git/touchwire/touchwire_warm.py")).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/touchwire_warm.py")).unwrap();
    assert_eq!(written, shipped);
    assert!(!project.repo.root.join(".touchwire.json").exists(), "the fast setup only prints");
    let gunicorn = project.env.run_in(&project.repo.root, &["init", "--gunicorn"]);
    gunicorn.expect_code(0).expect_stdout("def on_starting(server):").expect_stderr(r#""signal":"HUP""#);
    let outside = project.env.join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    project.env.run_in(&outside, &["init", "--uwsgi"]).expect_code(2).expect_stderr("not inside a git repository");
}

#[test]
fn a_chain_reload_from_a_warm_master_serves_the_save_without_importing_the_slow_package_again() {
    if !uwsgi_ready() {
        return;
    }
    let project = Project::new("version");
    let port = free_port();
    let (uwsgi, fifo) = start_uwsgi(&project, port);
    until_all_serve(port, "v0", &uwsgi.log, SERVED_WITHIN);
    let log = std::fs::read_to_string(&uwsgi.log).unwrap();
    let master = uwsgi_master_pid(&log).expect("uWSGI logs its master's pid");
    assert_eq!(slow_importers(&log), vec![master], "only the master imported slowlib:\n{log}");
    assert!(
        log.contains(&format!("touchwire_warm[pid {master}]: imported"))
            && log.lines().any(|l| l.contains("packages: ") && l.contains("slowlib")),
        "the helper says it imported slowlib in the master:\n{log}"
    );

    let listener = project.env.listen(&["--fifo", fifo.to_str().unwrap(), "--fifo-command", "c"]);
    save_and_reload(&project, &listener, port, &uwsgi.log);
    // With a warm master the new workers serve before uWSGI logs the chain's end.
    let ended = || std::fs::read_to_string(&uwsgi.log).unwrap_or_default().contains("chain reloading complete");
    util::eventually("uWSGI to log the chain reload's end", ended);
    let log = std::fs::read_to_string(&uwsgi.log).unwrap();
    assert_eq!(slow_importers(&log), vec![master], "no new worker imported slowlib:\n{log}");
}

#[test]
fn a_project_module_imported_by_a_third_party_package_is_refused_so_workers_serve_its_new_code() {
    if !uwsgi_ready() {
        return;
    }
    let project = Project::new("sneaky");
    let port = free_port();
    let (uwsgi, fifo) = start_uwsgi(&project, port);
    until_all_serve(port, "v0", &uwsgi.log, SERVED_WITHIN);
    let log = std::fs::read_to_string(&uwsgi.log).unwrap();
    assert!(log.contains("refused sneaky: it imports the project's version"), "{log}");
    let listener = project.env.listen(&["--fifo", fifo.to_str().unwrap(), "--fifo-command", "c"]);
    save_and_reload(&project, &listener, port, &uwsgi.log);
}

/// A virtualenv with gunicorn, made once under the target directory and kept between runs; None
/// (skipped, said) when it cannot be made here, a failure in CI.
fn gunicorn_venv() -> Option<PathBuf> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = base.join("fast-setup-gunicorn-venv");
    let complete = venv.join("touchwire-complete");
    // One test process makes it at a time (two `cargo test` runs may share target/); the lock
    // goes with the file when this function returns.
    let lock = std::fs::File::create(base.join("fast-setup-gunicorn-venv.lock")).unwrap();
    // SAFETY: flock(2) on a descriptor we own for the whole call.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if complete.exists() {
        return Some(venv);
    }
    // A virtualenv's scripts name its own path, so it is made in place; one left half made by a
    // run that stopped is made again.
    let _ = std::fs::remove_dir_all(&venv);
    let steps: [(PathBuf, Vec<&str>); 2] = [
        (PathBuf::from(python()), vec!["-m", "venv", venv.to_str().unwrap()]),
        (
            venv.join("bin/pip"),
            vec!["install", "--quiet", "--disable-pip-version-check", "--timeout", "30", "gunicorn"],
        ),
    ];
    for (program, args) in steps {
        let why = match Command::new(&program).args(&args).output() {
            Ok(out) if out.status.success() => continue,
            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(err) => err.to_string(),
        };
        assert!(!in_ci(), "CI must be able to install gunicorn: {} {args:?}: {why}", program.display());
        eprintln!("skipping: cannot install gunicorn ({} {args:?}: {why})", program.display());
        return None;
    }
    std::fs::write(&complete, "").unwrap();
    Some(venv)
}

#[test]
fn gunicorn_hup_from_a_warm_arbiter_serves_the_save_without_importing_the_slow_package_again() {
    let Some(venv) = gunicorn_venv() else { return };
    let project = Project::new("version");
    let port = free_port();
    let pidfile = project.env.join("gunicorn.pid");
    let conf = project.init(&["--gunicorn", "--pidfile", pidfile.to_str().unwrap()]);
    let conf_path = project.env.join("gunicorn.conf.py");
    std::fs::write(&conf_path, conf).unwrap();
    let log = project.env.join("gunicorn.log");
    let child = Command::new(venv.join("bin/gunicorn"))
        .arg("-c")
        .arg(&conf_path)
        .args(["--workers", "2", "--bind", &format!("127.0.0.1:{port}"), "--chdir"])
        .arg(&project.repo.root)
        .arg("--pythonpath")
        .arg(&project.site)
        .arg("app:application")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start gunicorn");
    let gunicorn = Server { child, log };
    until_all_serve(port, "v0", &gunicorn.log, SERVED_WITHIN);
    let arbiter = gunicorn.child.id();
    let text = std::fs::read_to_string(&gunicorn.log).unwrap();
    assert_eq!(slow_importers(&text), vec![arbiter], "only the arbiter imported slowlib:\n{text}");
    assert!(text.contains(&format!("touchwire_warm[pid {arbiter}]: imported")), "{text}");

    let listener = project.env.listen(&["--signal", "HUP", "--pidfile", pidfile.to_str().unwrap()]);
    save_and_reload(&project, &listener, port, &gunicorn.log);
    let text = std::fs::read_to_string(&gunicorn.log).unwrap();
    assert_eq!(slow_importers(&text), vec![arbiter], "no new worker imported slowlib:\n{text}");
}
