//! The VS Code extension (editor/vscode/extension) in real VS Code: packaged by
//! scripts/package-vscode, installed into a fresh code-server, driven by headless chromium over
//! the DevTools protocol on a work tree whose guest is a real `touchwire listen`. Its target's
//! action loads the app's module with python3, as an app server would, and writes the app's log
//! the way uWSGI does: its ready line, or the traceback of a module that does not import. Files
//! are saved in the editor and written behind its back (as git or another tool would): the
//! extension shows what touchwire's events say of each, whoever wrote it.
#![cfg(target_os = "linux")] // /proc, to find the watcher the extension runs

mod util;

#[path = "util/cdp.rs"]
mod cdp;
#[path = "util/code_server.rs"]
mod code_server;

use code_server::{CTRL, SHIFT, key, type_and_save, type_text};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// scripts/package-vscode into `out`; panics with what it printed if it fails.
fn package(out: &Path) -> PathBuf {
    let what = format!("scripts/package-vscode {}", out.display());
    util::succeed(Command::new(format!("{ROOT}/scripts/package-vscode")).arg(out), &what);
    assert!(out.is_file(), "no {} after scripts/package-vscode", out.display());
    out.to_path_buf()
}

/// The guest: a receiver whose target `app` runs `python3 GUEST/app/views.py` (GUEST is the
/// work tree seen through a link, as a VM sees it through its mount), writes the app's log as
/// uWSGI would, and waits for that log (preset uwsgi).
fn guest(env: &util::Env, repo: &util::Repo) -> util::Listener {
    let log = env.join("app.log");
    std::fs::write(&log, "").unwrap();
    std::os::unix::fs::symlink(&repo.root, env.join("guest")).unwrap();
    let module = env.join("guest/app/views.py");
    let errors = env.join("app.err");
    // A second's boot, then the import; a traceback reaches the log in one write, as uWSGI's does.
    let script = format!(
        "sleep 1; if python3 '{module}' 2>'{errors}'; then \
         echo \"WSGI app 0 (mountpoint='') ready in 1 seconds on interpreter 0x1 pid: $$ (default app)\" >>'{log}'; \
         else cat '{errors}' >>'{log}'; fi",
        module = module.display(),
        errors = errors.display(),
        log = log.display()
    );
    let target = json!({"exec": ["sh", "-c", script], "ready": {"log": log, "preset": "uwsgi", "timeout_ms": 10000}});
    std::fs::write(env.join("guest.json"), json!({"targets": {"app": target}}).to_string()).unwrap();
    env.listen(&["--settle", "0", "--config", env.join("guest.json").to_str().unwrap()])
}

/// The text of the extension's status bar item ("" while there is none).
const STATUS: &str = "(Array.from(document.querySelectorAll('.statusbar-item')).map(e => e.textContent.trim()).find(t => t.startsWith('touchwire')) || '')";
/// Whether that item has the error background.
const STATUS_IS_ERROR: &str = "Array.from(document.querySelectorAll('.statusbar-item.error-kind')).some(e => e.textContent.trim().startsWith('touchwire'))";
/// The Problems count in the status bar.
const PROBLEMS: &str = "((document.querySelector('[id=\"status.problems\"]') || {getAttribute: () => ''}).getAttribute('aria-label') || '')";
/// The rows of the Problems panel.
const ROWS: &str = "Array.from(document.querySelectorAll('.markers-panel .monaco-list-row')).map(r => r.getAttribute('aria-label') || r.textContent).join('\\n')";
/// The text of the active editor.
const EDITOR: &str =
    "((document.querySelector('.editor-instance .view-lines') || {}).innerText || '').replace(/\\u00a0/g, ' ')";
/// The status after a good reload.
const RELOADED: &str = "/^touchwire: reloaded app in \\d+ ms$/";
/// The status while a reload is under way.
const SPINNER: &str = "touchwire: reloading";
/// Installs `window.twSeen`, every text the status item has shown since, each change noted as
/// the page shows it: a spinner of a second is not missed between two polls.
const RECORD: &str = "(() => { window.twSeen = []; \
    const note = () => { const t = STATUS; if (window.twSeen[window.twSeen.length - 1] !== t) window.twSeen.push(t); }; \
    new MutationObserver(note).observe(document.getElementById('workbench.parts.statusbar') || document.body, \
        {subtree: true, childList: true, characterData: true, attributes: true}); \
    note(); return true; })()";

/// The statuses seen so far (see [`RECORD`]).
fn seen(browser: &mut cdp::Chromium, page: &cdp::Page) -> Vec<String> {
    let value = browser.eval(page, "window.twSeen").unwrap_or_default();
    serde_json::from_value(value).unwrap_or_default()
}

/// Waits until the statuses seen after the first `from` show the spinner, then one that
/// `outcome` (a JavaScript regex) matches, that one being the status now.
#[track_caller]
fn wait_spin_then(browser: &mut cdp::Chromium, page: &cdp::Page, what: &str, from: usize, outcome: &str) {
    let check = format!(
        "(s => {{ const i = s.indexOf('{SPINNER}'); return i >= 0 && s.slice(i + 1).some(t => {outcome}.test(t)) \
         && {outcome}.test({STATUS}); }})(window.twSeen.slice({from}))"
    );
    browser.wait_for(page, what, &check, "window.twSeen");
}

/// Opens `rel` (in the folder) with Quick Open; its tab's label is its file name.
fn open(browser: &mut cdp::Chromium, page: &cdp::Page, rel: &str) {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let opened = format!(
        "!!document.querySelector('.tab.active[aria-label^=\"{name}\"]') || document.title.startsWith('{name}')"
    );
    let deadline = Instant::now() + util::WAIT;
    while browser.eval(page, &opened) != Ok(json!(true)) {
        assert!(Instant::now() < deadline, "{rel} did not open: title {:?}", browser.eval(page, "document.title"));
        key(browser, page, "p", "KeyP", 80, CTRL);
        std::thread::sleep(Duration::from_millis(500));
        type_text(browser, page, rel);
        std::thread::sleep(Duration::from_millis(500));
        key(browser, page, "Enter", "Enter", 13, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The app's helper: the app fails its start when check() raises, at line 4 of app/helpers.py.
const HELPERS: &str = "def check(message):\n    \"\"\"Refuses a message above 2.\"\"\"\n    if message > 2:\n        raise ValueError(f'message {message} is too big')\n";

#[test]
fn the_extension_shows_reloads_and_failures_in_real_vscode() {
    let started = Instant::now();
    let Some(program) = code_server::program() else { return };
    if !(util::require("chromium") && util::require("npm") && util::require("python3")) {
        return;
    }
    let env = util::Env::new();
    let vsix = package(&env.join("touchwire.vsix"));
    let repo = util::Repo::init(env.join("repo"));
    let receiver = guest(&env, &repo);
    repo.write(".touchwire.json", &json!({"remote": receiver.addr}).to_string());
    repo.write(".gitignore", "scratch.py\n");
    repo.write("app/views.py", "import helpers\nMESSAGE = 1\nhelpers.check(MESSAGE)\n");
    repo.write("app/helpers.py", HELPERS);
    repo.commit_all("init");
    repo.write("app/scratch.py", "# ignored by git: touchwire sends nothing for it\n");
    let root = repo.root.canonicalize().unwrap();

    // Quick Open lists the ignored file too, so that the test can open it.
    let settings = json!({"touchwire.path": env!("CARGO_BIN_EXE_touchwire"),
                          "security.workspace.trust.enabled": false, "workbench.startupEditor": "none",
                          "files.autoSave": "off", "extensions.autoUpdate": false,
                          "extensions.autoCheckUpdates": false, "telemetry.telemetryLevel": "off",
                          "editor.autoClosingBrackets": "never", "editor.autoClosingQuotes": "never",
                          "search.useIgnoreFiles": false});
    let dirs = code_server::Dirs::new(&env, &settings);
    dirs.install_extension(&program, &env, &vsix);
    let _logs = dirs.logs_on_failure("touchwire");
    let server = code_server::CodeServer::start(&program, &env, &dirs);
    let mut browser = cdp::Chromium::start(&[]);
    let page = browser.open(&server.url(&root));
    let shot = |browser: &mut cdp::Chromium, name: &str| {
        if let Ok(dir) = std::env::var("TOUCHWIRE_SCREENSHOTS") {
            let _ = browser.screenshot(&page, &Path::new(&dir).join(name));
        }
    };
    browser.wait_for(&page, "the workbench", "!!document.querySelector('.monaco-workbench')", "document.title");

    // The extension starts `touchwire watch --json` in the folder, as a child of VS Code's
    // extension host, and says when it watches.
    let deadline = Instant::now() + Duration::from_secs(60);
    let watcher = loop {
        if let [pid] = code_server::touchwire_in(&root, &["watch", "--json"])[..] {
            break pid;
        }
        if Instant::now() > deadline {
            shot(&mut browser, "extension-no-watcher.png");
            panic!("the extension did not start touchwire watch within 60 s: status {:?}", browser.eval(&page, STATUS));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let parent = code_server::parent_command(watcher);
    assert!(parent.contains("extensionHost"), "the watcher's parent is {parent:?}");
    browser.wait_for(&page, "the watcher to be ready", &format!("{STATUS} === 'touchwire: watching'"), STATUS);
    assert_eq!(browser.eval(&page, &RECORD.replace("STATUS", STATUS)), Ok(json!(true)), "recording the status");

    // A change made outside the editor, to a file it has not opened: the spinner while the app
    // boots (a second), then the reload and its time.
    let from = seen(&mut browser, &page).len();
    repo.write("app/views.py", "import helpers\nMESSAGE = 2\nhelpers.check(MESSAGE)\n");
    let reload = receiver.wait_event("reload");
    assert_eq!(reload["files"], json!(["app/views.py"]), "{reload}");
    wait_spin_then(&mut browser, &page, "the outside change's spinner, then its reload", from, RELOADED);
    shot(&mut browser, "extension-reloaded.png");

    // A save in the editor of a file git ignores: touchwire sends nothing, so no spinner.
    open(&mut browser, &page, "app/scratch.py");
    let from = seen(&mut browser, &page).len();
    type_and_save(&mut browser, &page, "IGNORED = 1\n");
    let scratch = root.join("app/scratch.py");
    util::eventually("the ignored file saved", || {
        std::fs::read_to_string(&scratch).unwrap_or_default() == "IGNORED = 1\n"
    });
    let sent = receiver.named_within("reload", Duration::from_secs(1));
    assert!(sent.is_empty(), "touchwire sent the ignored file: {sent:?}");
    let after: Vec<String> = seen(&mut browser, &page).into_iter().skip(from).collect();
    assert!(!after.iter().any(|status| status == SPINNER), "a spinner for the ignored file: {after:?}");

    // A broken save in the editor: views.py calls helpers.check, which raises at its line 4;
    // the app's traceback becomes a problem there, in helpers.py, not in the file saved.
    open(&mut browser, &page, "app/views.py");
    let from = seen(&mut browser, &page).len();
    type_and_save(&mut browser, &page, "import helpers\nMESSAGE = 3\nhelpers.check(MESSAGE)\n");
    assert_eq!(receiver.wait_event("not_ready")["ok"], false);
    wait_spin_then(&mut browser, &page, "the save's spinner, then the failure", from, "/^touchwire: reload failed$/");
    assert_eq!(browser.eval(&page, STATUS_IS_ERROR), Ok(json!(true)), "the failure has the error colour");
    browser.wait_for(&page, "a problem in the status bar", &format!("/Errors: 1/.test({PROBLEMS})"), PROBLEMS);
    key(&mut browser, &page, "M", "KeyM", 77, CTRL | SHIFT);
    browser.wait_for(&page, "the problem in the Problems panel", &format!("/too big/.test({ROWS})"), ROWS);
    shot(&mut browser, "extension-problem.png");
    let listed = browser.eval(&page, ROWS).unwrap();
    let listed = listed.as_str().unwrap_or_default();
    assert!(listed.contains("helpers.py"), "{listed}");
    assert!(!listed.contains("views.py"), "the problem is in helpers.py, not in the file saved: {listed}");
    assert!(listed.contains("ValueError: message 3 is too big"), "{listed}");
    assert!(listed.contains("line 4") || listed.contains("Ln 4"), "{listed}");

    // The fix, written behind the editor's back while it shows the file: the editor shows the
    // new text, the spinner and the reload show, and the problem is cleared.
    let from = seen(&mut browser, &page).len();
    repo.write("app/views.py", "import helpers\nMESSAGE = 2\nhelpers.check(MESSAGE)\n");
    receiver.wait_event("reload");
    wait_spin_then(&mut browser, &page, "the fix's spinner, then its reload", from, RELOADED);
    let cleared = format!("(l => l !== '' && !/Errors: [1-9]/.test(l))({PROBLEMS})");
    browser.wait_for(&page, "the problem cleared after the fix", &cleared, PROBLEMS);
    browser.wait_for(&page, "the Problems panel emptied", &format!("!/too big/.test({ROWS})"), ROWS);
    browser.wait_for(&page, "the editor showing the fix", &format!("/MESSAGE = 2/.test({EDITOR})"), EDITOR);
    shot(&mut browser, "extension-cleared.png");

    // "touchwire: Reload guest" from the command palette: `touchwire send --wait`, shown the same way.
    let from = seen(&mut browser, &page).len();
    key(&mut browser, &page, "F1", "F1", 112, 0);
    std::thread::sleep(Duration::from_millis(300));
    type_text(&mut browser, &page, "touchwire: Reload guest");
    let first = "((document.querySelector('.quick-input-list .monaco-list-row') || {}).textContent || '')";
    browser.wait_for(&page, "the command in the palette", &format!("/touchwire: Reload guest/.test({first})"), first);
    key(&mut browser, &page, "Enter", "Enter", 13, 0);
    let reload = receiver.wait_event("reload");
    assert_eq!(reload["reason"], "vscode", "{reload}");
    wait_spin_then(&mut browser, &page, "the command's spinner, then its reload", from, RELOADED);

    // With the guest gone, a change is not delivered.
    drop(receiver);
    repo.write("app/views.py", "import helpers\nMESSAGE = 1\nhelpers.check(MESSAGE)\n");
    let undelivered = format!("{STATUS} === 'touchwire: not delivered'");
    browser.wait_for(&page, "the change not delivered", &undelivered, STATUS);
    shot(&mut browser, "extension-undelivered.png");

    // Reloading the window deactivates the extension in the extension host: its watcher stops,
    // and the new window's host starts one of its own.
    key(&mut browser, &page, "F1", "F1", 112, 0);
    std::thread::sleep(Duration::from_millis(300));
    type_text(&mut browser, &page, "Developer: Reload Window");
    browser.wait_for(&page, "the reload command", &format!("/Developer: Reload Window/.test({first})"), first);
    key(&mut browser, &page, "Enter", "Enter", 13, 0);
    let gone = || !Path::new(&format!("/proc/{watcher}")).exists() || is_zombie(watcher);
    util::eventually("the first watcher to stop on deactivate", gone);
    util::eventually("a new watcher", || {
        code_server::touchwire_in(&root, &["watch", "--json"]).iter().any(|pid| *pid != watcher)
    });
    drop(server);
    eprintln!("the extension test took {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether `pid` has exited and waits for its parent to reap it.
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}
