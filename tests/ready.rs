//! Ready checks against a real uWSGI on loopback: a good edit reports the time to ready, a
//! broken import reports the traceback's excerpt, a pattern that never appears times out, and
//! the watcher prints the same per trigger.
#![cfg(unix)]

mod util;

use serde_json::json;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use util::{Env, Repo};

/// uWSGI serving the repo's wsgi.py, reloaded by touching `reload`, logging to `uwsgi.log`.
struct Uwsgi(Child);

impl Drop for Uwsgi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uwsgi(env: &Env, repo: &Repo) -> Uwsgi {
    uwsgi_with(env, repo, &["--touch-reload", env.join("app.reload").to_str().unwrap()])
}

/// uWSGI as above, reloaded as `reload` says (`--touch-reload FILE`, `--master-fifo FIFO`).
fn uwsgi_with(env: &Env, repo: &Repo, reload: &[&str]) -> Uwsgi {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = repo.root.to_str().unwrap();
    let child = Command::new("uwsgi")
        .args(["--plugin", "python3", "--master", "--processes", "1", "--http-socket", &format!("127.0.0.1:{port}")])
        .args(["--chdir", root, "--pythonpath", root, "--wsgi-file", "wsgi.py"])
        .args(reload)
        .args(["--logto", env.join("uwsgi.log").to_str().unwrap(), "--log-reopen"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    util::eventually("uWSGI to load the app", || {
        std::fs::read_to_string(env.join("uwsgi.log")).is_ok_and(|log| log.contains("WSGI app 0 (mountpoint='') ready"))
    });
    Uwsgi(child)
}

fn ready_to_run() -> bool {
    util::require("uwsgi")
        && (Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() || util::require("uwsgi-plugin-python3"))
}

/// A repository with a WSGI app, and a receiver whose target checks uWSGI's log.
fn setup(ready: serde_json::Value) -> (Env, Repo, util::Listener) {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app/__init__.py", "");
    repo.write("app/value.py", "VALUE = 'one'\n");
    repo.write(
        "wsgi.py",
        "from app.value import VALUE\n\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [VALUE.encode()]\n",
    );
    repo.commit_all("app");
    std::fs::write(env.join("app.reload"), "").unwrap();
    let config = json!({"targets": {"app": {"touch": "app.reload", "ready": ready}}});
    std::fs::write(env.join("guest.json"), config.to_string()).unwrap();
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    repo.write(".touchwire.json", &json!({"remote": receiver.addr}).to_string());
    (env, repo, receiver)
}

#[test]
fn send_wait_reports_ready_or_the_traceback() {
    if !ready_to_run() {
        return;
    }
    let (env, repo, receiver) = setup(json!({"preset": "uwsgi", "log": "uwsgi.log", "timeout_ms": 15000}));
    let _uwsgi = uwsgi(&env, &repo);
    let status = env.run_in(&repo.root, &["status"]);
    assert!(status.stdout.contains("ready"), "{}", status.stdout);

    repo.write("app/value.py", "VALUE = 'two'\n");
    let run = env.run_in(&repo.root, &["send", "--wait", "--path", "app/value.py"]);
    run.expect_code(0);
    assert!(regex::Regex::new(r"reloaded app on \S+ in \d+ ms").unwrap().is_match(&run.stderr), "{}", run.stderr);

    repo.write("app/value.py", "import no_such_module\nVALUE = 'broken'\n");
    let run = env.run_in(&repo.root, &["send", "--wait", "--path", "app/value.py"]);
    run.expect_code(1).expect_stderr("Traceback");
    // The traceback first; last, one line with the place, named by its path here (what an
    // editor shows of the run).
    let last = run.stderr.lines().last().unwrap_or_default();
    let summary = regex::Regex::new(
        r"^touchwire: \S+: app did not come back at app/value\.py:1 after \d+ ms: ModuleNotFoundError: No module named 'no_such_module'$",
    )
    .unwrap();
    assert!(summary.is_match(last), "{}", run.stderr);
    assert_eq!(receiver.wait_event("not_ready")["ok"], false);

    repo.write("app/value.py", "VALUE = 'fixed'\n");
    env.run_in(&repo.root, &["send", "--wait"]).expect_code(0).expect_stderr("reloaded app on");
    // Without --wait the answer comes at once, with no ready object.
    let run = env.run_in(&repo.root, &["send", "--json"]);
    run.expect_code(0);
    assert!(!run.stdout.contains("\"ready\""), "{}", run.stdout);
}

#[test]
fn a_check_whose_line_never_comes_times_out_clearly() {
    if !ready_to_run() {
        return;
    }
    let (env, repo, _receiver) =
        setup(json!({"pattern": "this line never appears", "log": "uwsgi.log", "timeout_ms": 800}));
    let _uwsgi = uwsgi(&env, &repo);
    env.run_in(&repo.root, &["send", "--wait"])
        .expect_code(1)
        .expect_stderr("not ready after 800 ms: no line matching \"this line never appears\"");
}

#[test]
fn the_watcher_waits_and_names_the_failing_file_and_line() {
    if !ready_to_run() {
        return;
    }
    let (env, repo, _receiver) = setup(json!({"preset": "uwsgi", "log": "uwsgi.log", "timeout_ms": 15000}));
    let _uwsgi = uwsgi(&env, &repo);
    let (watcher, _) = env.watch_in(&repo.root, &[]);
    watcher.wait_event("connected");
    repo.write("app/value.py", "VALUE = 'three'\n");
    let event = watcher.wait_event("trigger");
    assert_eq!(event["ready"]["ok"], true, "{event}");
    repo.write("app/value.py", "import no_such_module\n");
    let event = watcher.wait_event("not_ready");
    assert!(event["ready"]["error"].as_str().unwrap().contains("no_such_module"), "{event}");
    // The guest's traceback path, named by its path in the host's work tree, for editors' problem matchers.
    util::eventually("the failure line naming app/value.py:1", || {
        watcher.stderr().contains("app: reload failed at app/value.py:1 after")
    });
    // VS Code's watch task turns that line into a problem at the file and line.
    let tasks = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/editor/vscode/tasks.json")).unwrap();
    let tasks = touchwire::editor::parse_jsonc(&tasks).unwrap();
    let watch = tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == "touchwire: watch").unwrap();
    let pattern = &watch["problemMatcher"][1]["pattern"];
    let re = regex::Regex::new(pattern["regexp"].as_str().unwrap()).unwrap();
    let stderr = watcher.stderr();
    let captures = stderr.lines().find_map(|line| re.captures(line)).expect("the problem matcher matches the line");
    assert_eq!((&captures[1], &captures[2]), ("app/value.py", "1"));
    assert!(captures[3].contains("No module named 'no_such_module'"), "{}", &captures[3]);
}

#[test]
fn a_log_rotated_during_the_wait_is_still_followed() {
    if !ready_to_run() {
        return;
    }
    let (env, repo, _receiver) = setup(json!({"preset": "uwsgi", "log": "uwsgi.log", "timeout_ms": 15000}));
    let _uwsgi = uwsgi(&env, &repo);
    repo.write("app/value.py", "VALUE = 'rotated'\n");
    let send =
        env.command(&repo.root, &["send", "--wait"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // logrotate's way: rename, and let the server open a new file (uWSGI's --log-reopen does, at the reload).
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::rename(env.join("uwsgi.log"), env.join("uwsgi.log.1")).unwrap();
    let output = send.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("reloaded app on"), "{stderr}");
    assert!(env.join("uwsgi.log").exists(), "uWSGI wrote its reload to a new log file");
}

#[test]
fn pings_leave_uwsgis_master_fifo_alone_so_waiting_sends_through_it_always_work() {
    if !ready_to_run() {
        return;
    }
    // uWSGI re-creates its master FIFO whenever a writer closes it: a ping that opened it to see
    // the reader (the watcher pings every 4 s; `send --wait` pings first) raced the reload.
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app/__init__.py", "");
    repo.write("app/value.py", "VALUE = 'one'\n");
    repo.write("wsgi.py", "from app.value import VALUE\n\ndef application(e, start):\n    start('200 OK', [])\n    return [VALUE.encode()]\n");
    repo.commit_all("app");
    let fifo = env.join("master.fifo");
    let _uwsgi = uwsgi_with(&env, &repo, &["--master-fifo", fifo.to_str().unwrap()]);
    let config = json!({"targets": {"app": {"fifo": fifo, "ready": {"preset": "uwsgi", "log": env.join("uwsgi.log"), "timeout_ms": 10000}}}});
    std::fs::write(env.join("guest.json"), config.to_string()).unwrap();
    // The default settle window: uWSGI stalls for its worker "mercy" (60 s) when told to reload
    // again within milliseconds of a reload, while its new worker starts.
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    repo.write(".touchwire.json", &json!({"remote": receiver.addr}).to_string());

    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&fifo).unwrap());
    let before = inode();
    let mut raw = util::Raw::connect(&receiver.addr);
    let pong = raw.request(r#"{"op":"ping"}"#).unwrap();
    assert_eq!(pong["health"]["app"]["ready_check"], true, "{pong}");
    assert!(pong["health"]["app"].get("ok").is_none(), "not probed unless asked: {pong}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(inode(), before, "a plain ping made uWSGI re-create its FIFO");

    for value in ["two", "three", "four"] {
        repo.write("app/value.py", &format!("VALUE = '{value}'\n"));
        let run = env.run_in(&repo.root, &["send", "--wait", "--path", "app/value.py"]);
        run.expect_code(0).expect_stderr("reloaded app on");
    }
    // `status` does probe, and says uWSGI is there.
    env.run_in(&repo.root, &["status"]).expect_code(0).expect_stdout("target app: action ok: uWSGI is attached");
}
