//! VS Code's watch task problem matchers on what `touchwire watch` prints, paths with spaces
//! included; and, where code-server is installed, the tasks in real VS Code (code-server)
//! driven by headless chromium over the DevTools protocol.
#![cfg(target_os = "linux")] // util/site.rs: network namespaces

mod util;

use serde_json::Value;
use util::Project;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn matchers() -> Vec<Value> {
    let tasks = touchwire::editor::parse_jsonc(touchwire::editor::VSCODE_TASKS).unwrap();
    let watch = tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == "touchwire: watch").unwrap().clone();
    watch["problemMatcher"].as_array().unwrap().clone()
}

fn captures(matcher: &Value, line: &str) -> Option<Vec<String>> {
    // VS Code's regexes are JavaScript's; these use nothing Rust's regex reads differently.
    let re = regex::Regex::new(matcher["pattern"]["regexp"].as_str().unwrap()).unwrap();
    re.captures(line).map(|c| c.iter().skip(1).map(|m| m.map_or(String::new(), |m| m.as_str().to_string())).collect())
}

#[test]
fn problem_matchers_take_paths_with_spaces() {
    let m = matchers();
    let line = "12:00:00.000 not delivered: my app/views.py: 127.0.0.1:9: connection refused; will send it when the guest is back";
    assert_eq!(
        captures(&m[0], line).unwrap(),
        ["my app/views.py", "127.0.0.1:9: connection refused; will send it when the guest is back"]
    );
    let line = "12:00:00.000 not delivered: my app/a.py, b.py and 2 more: 127.0.0.1:9: refused";
    assert_eq!(captures(&m[0], line).unwrap()[0], "my app/a.py");
    let line = "12:00:00.000 app: reload failed at my app/views.py:3 after 380 ms: ModuleNotFoundError: No module named 'foo' (my app/views.py -> 10.0.0.2:9001)";
    let got = captures(&m[1], line).unwrap();
    assert_eq!(got[..2], ["my app/views.py", "3"]);
    assert!(got[2].starts_with("ModuleNotFoundError: No module named 'foo'"), "{got:?}");
    let line = "12:00:00.000 app: reload failed: the action failed: touch: Permission denied (my app/a.py, b.py -> 10.0.0.2:9001)";
    assert_eq!(captures(&m[2], line).unwrap(), ["the action failed: touch: Permission denied", "my app/a.py"]);
    // A failed ready check with no traceback is a problem at the first file; one with a place is m[1]'s.
    let line = "12:00:00.000 app: reload failed after 300 ms: 127.0.0.1:8000: connection refused (a.py -> h:1)";
    assert_eq!(captures(&m[2], line).unwrap(), ["127.0.0.1:8000: connection refused", "a.py"]);
    assert_eq!(captures(&m[2], "12:00:00.000 app: reload failed at a.py:3 after 300 ms: E (a.py -> h:1)"), None);
}

#[test]
fn every_matcher_shares_one_round_that_a_good_reload_ends() {
    let m = matchers();
    for key in ["beginsPattern", "endsPattern"] {
        assert!(m.iter().all(|x| x["background"][key] == m[0]["background"][key]), "{key} differs");
    }
    let matches =
        |key: &str, line: &str| regex::Regex::new(m[0]["background"][key].as_str().unwrap()).unwrap().is_match(line);
    assert!(matches("beginsPattern", "12:00:00.000 touchwire: reloading web (2 files)"));
    assert!(matches("beginsPattern", "12:00:00.000 10.0.0.2:9001 is back: sending the changes it missed"));
    for end in [
        "12:00:00.000 app: my app/views.py -> 10.0.0.2:9001 reloaded in 412 ms",
        "12:00:00.000 app: a.py, b.py -> 10.0.0.2:9001 reloaded (touch) in 3.1 ms",
        "12:00:00.000 app: a.py -> 10.0.0.2:9001 merged into a reload under way in 2.0 ms",
        "12:00:00.000 touchwire: reload failed",
        "12:00:00.000 touchwire: not delivered",
    ] {
        assert!(matches("endsPattern", end), "{end}");
    }
    // The problem lines themselves never end a round (VS Code reads no problem from an end line).
    assert!(!matches("endsPattern", "12:00:00.000 app: reload failed at a.py:1 after 300 ms: E (a.py -> h:1)"));
    assert!(!matches("endsPattern", "12:00:00.000 not delivered: a.py: refused"));
}

#[test]
fn the_watcher_prints_what_the_matchers_read_for_a_path_with_spaces() {
    let s = Project::new(&[("my app/views.py", "VALUE = 1\n")], true);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut watcher = s.env.command(&s.repo.root, &["watch", "--to", &dead]);
    let mut child = watcher.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (lines, reader) = util::lines_of(child.stderr.take().unwrap());
    let m = matchers();
    let wait = |pattern: &str| {
        let re = regex::Regex::new(pattern).unwrap();
        let deadline = std::time::Instant::now() + util::WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if re.is_match(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line matching {pattern}")
    };
    wait(m[0]["background"]["endsPattern"].as_str().unwrap());
    s.repo.write("my app/views.py", "VALUE = 2\n");
    // A round per save: its begin line, the problem, then the line that ends the round.
    let begin = wait(m[0]["background"]["beginsPattern"].as_str().unwrap());
    assert!(begin.ends_with("touchwire: reloading (1 file)"), "{begin}");
    let line = wait(m[0]["pattern"]["regexp"].as_str().unwrap());
    assert_eq!(captures(&m[0], &line).unwrap()[0], "my app/views.py", "{line}");
    let end = wait(m[0]["background"]["endsPattern"].as_str().unwrap());
    assert!(end.ends_with("touchwire: not delivered"), "{end}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = ROOT;
}

#[path = "util/cdp.rs"]
mod cdp;
#[path = "util/site.rs"]
mod site;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// code-server: `TOUCHWIRE_CODE_SERVER`, else `code-server` on PATH (see `util::require`).
fn code_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOUCHWIRE_CODE_SERVER") {
        return Some(PathBuf::from(path));
    }
    util::require("code-server").then(|| PathBuf::from("code-server"))
}

/// A code-server child, killed by its PID's process group (it starts helpers) on drop.
struct CodeServer(Child);

impl Drop for CodeServer {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on the process group this test created for its own code-server.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Whether a `touchwire watch` started by VS Code runs in `dir` (its cwd).
fn watching_in(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"touchwire"))
            && args.get(1) == Some(&&b"watch"[..])
            && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir)
    })
}

fn key(browser: &mut cdp::Chromium, page: &cdp::Page, key: &str, code: &str, vk: u32, modifiers: u32) {
    for kind in ["keyDown", "keyUp"] {
        let event =
            json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": vk, "modifiers": modifiers});
        browser.call(Some(page), "Input.dispatchKeyEvent", event).unwrap();
    }
}

const CTRL: u32 = 2;
const SHIFT: u32 = 8;

/// Replaces the active editor's text with `text` and saves, as a person would (Ctrl+A, type, Ctrl+S).
fn type_and_save(browser: &mut cdp::Chromium, page: &cdp::Page, text: &str) {
    key(browser, page, "a", "KeyA", 65, CTRL);
    browser.call(Some(page), "Input.insertText", json!({"text": text})).unwrap();
    key(browser, page, "s", "KeyS", 83, CTRL);
}

#[test]
fn real_vscode_runs_the_watch_task_and_a_failed_reload_becomes_a_problem() {
    let Some(program) = code_server() else { return };
    if !(util::require("chromium") && site::uwsgi_installed()) {
        return;
    }
    let site = site::Site::start(None);
    let repo = site.repo.root.canonicalize().unwrap();
    site.env.run_in(&repo, &["init", "--editor", "vscode"]).expect_code(0);
    let data = site.env.join("vscode");
    let settings = json!({"task.allowAutomaticTasks": "on", "security.workspace.trust.enabled": false,
                          "workbench.startupEditor": "none", "files.autoSave": "off",
                          "editor.autoClosingBrackets": "never", "editor.autoClosingQuotes": "never"});
    // VS Code finds a task's program on the PATH of a login shell (which resets PATH): the
    // touchwire under test goes first in ~/.profile, as rustup puts ~/.cargo/bin there.
    let bin = Path::new(env!("CARGO_BIN_EXE_touchwire")).parent().unwrap().to_path_buf();
    std::fs::write(site.env.join(".profile"), format!("export PATH=\"{}:$PATH\"\n", bin.display())).unwrap();
    std::fs::create_dir_all(data.join("User")).unwrap();
    std::fs::write(data.join("User/settings.json"), settings.to_string()).unwrap();
    std::fs::write(site.env.join("code-server.yaml"), "auth: none\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(&program);
    command
        .args(["--bind-addr", &format!("127.0.0.1:{port}"), "--auth", "none", "--disable-telemetry"])
        .args(["--disable-update-check", "--disable-workspace-trust", "--config"])
        .arg(site.env.join("code-server.yaml"))
        .arg("--user-data-dir")
        .arg(&data)
        .arg("--extensions-dir")
        .arg(site.env.join("extensions"))
        .env("PATH", util::path_with_touchwire())
        .env("XDG_CONFIG_HOME", site.env.join("xdg"))
        .env("HOME", site.env.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let _server = CodeServer(command.spawn().expect("cannot start code-server"));
    util::eventually("code-server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let mut browser = cdp::Chromium::start(&[]);
    let page = browser.open(&format!("http://127.0.0.1:{port}/?folder={}", repo.display()));
    browser.wait_for(&page, "the workbench", "!!document.querySelector('.monaco-workbench')", "document.title");
    // The watch task starts with the folder (automatic tasks allowed in the user settings).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !watching_in(&repo) {
        if Instant::now() > deadline {
            if let Ok(dir) = std::env::var("TOUCHWIRE_SCREENSHOTS") {
                let _ = browser.screenshot(&page, &Path::new(&dir).join("vscode-no-task.png"));
            }
            panic!("VS Code did not start the watch task within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Open app/views.py with Quick Open and save a broken module.
    let shot = |browser: &mut cdp::Chromium, name: &str| {
        if let Ok(dir) = std::env::var("TOUCHWIRE_SCREENSHOTS") {
            let _ = browser.screenshot(&page, &Path::new(&dir).join(name));
        }
    };
    let opened =
        "!!document.querySelector('.tab.active[aria-label^=\"views.py\"]') || document.title.startsWith('views.py')";
    let deadline = Instant::now() + util::WAIT;
    while browser.eval(&page, opened) != Ok(json!(true)) {
        assert!(Instant::now() < deadline, "views.py did not open: title {:?}", browser.eval(&page, "document.title"));
        key(&mut browser, &page, "p", "KeyP", 80, CTRL);
        std::thread::sleep(Duration::from_millis(500));
        browser.call(Some(&page), "Input.insertText", json!({"text": "app/views.py"})).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        key(&mut browser, &page, "Enter", "Enter", 13, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    shot(&mut browser, "vscode-opened.png");
    type_and_save(&mut browser, &page, "import no_such_module\n");
    let reload = site.receiver.wait_event("reload");
    assert_eq!(reload["files"], json!(["app/views.py"]), "{reload}");
    assert_eq!(std::fs::read_to_string(repo.join("app/views.py")).unwrap(), "import no_such_module\n");

    // The watcher's "reload failed at app/views.py:1" line becomes a problem at that file and line.
    let problems = "(document.querySelector('[id=\"status.problems\"]') || {}).getAttribute ? document.querySelector('[id=\"status.problems\"]').getAttribute('aria-label') : ''";
    browser.wait_for(&page, "a problem in the status bar", &format!("/Errors: 1/.test({problems})"), problems);
    key(&mut browser, &page, "M", "KeyM", 77, CTRL | SHIFT);
    let rows = "Array.from(document.querySelectorAll('.markers-panel .monaco-list-row')).map(r => r.getAttribute('aria-label') || r.textContent).join('\\n')";
    browser.wait_for(&page, "the problem in the Problems panel", &format!("/no_such_module/.test({rows})"), rows);
    shot(&mut browser, "vscode-problem.png");
    let listed = browser.eval(&page, rows).unwrap();
    let listed = listed.as_str().unwrap();
    assert!(listed.contains("views.py"), "{listed}");
    assert!(listed.contains("No module named 'no_such_module'"), "{listed}");
    assert!(listed.contains("line 1") || listed.contains("Ln 1") || listed.contains("[1,"), "{listed}");

    // The fix reaches the guest, and the watcher's next round ("touchwire: reloading (1 file)"
    // to "reloaded in N ms") no longer reports the problem, so VS Code clears it.
    key(&mut browser, &page, "1", "Digit1", 49, CTRL);
    type_and_save(&mut browser, &page, "MESSAGE = 3\n");
    // A reload of its own, or, on a loaded machine, the trailing reload the receiver owes a save
    // made while the broken one was under way (whose event may name no files).
    site.receiver.wait_event("reload");
    // That reload may be the trailing one, before VS Code's save reached the disk.
    util::eventually("the fixed save on disk", || {
        std::fs::read_to_string(repo.join("app/views.py")).is_ok_and(|text| text == "MESSAGE = 3\n")
    });
    let cleared = format!("(l => l !== '' && !/Errors: [1-9]/.test(l))({problems})");
    browser.wait_for(&page, "the problem cleared after the fixed save", &cleared, problems);
    browser.wait_for(&page, "the Problems panel emptied", &format!("!/no_such_module/.test({rows})"), rows);
    shot(&mut browser, "vscode-cleared.png");
}
