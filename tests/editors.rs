//! The editor integrations in the real editors, headless: Vim and Neovim with only the shipped
//! plugin, Emacs in batch mode with touchwire.el, and VS Code's tasks and snippets run as VS
//! Code would run them.
#![cfg(unix)]

mod util;

use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use util::{Project, WAIT, eventually, require};

const QUIET: Duration = Duration::from_millis(800);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

type Setup = Project;

fn setup() -> Setup {
    Project::new(&[("app.py", "VALUE = 1\n"), ("notes.txt", "notes\n")], true)
}

/// An editor run: it saves, writes `SAVED`, then waits (bounded) for the test to create `DONE`,
/// and leaves its messages in `messages.txt`.
struct EditorRun {
    child: Child,
    dir: PathBuf,
}

impl EditorRun {
    /// Starts `editor` headless in `dir`, with the `touchwire` under test on its PATH.
    fn spawn(editor: &mut Command, dir: &Path, vars: &[(&str, &str)]) -> EditorRun {
        let child = editor
            .current_dir(dir)
            .env("PATH", util::path_with_touchwire())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        EditorRun { child, dir: dir.to_path_buf() }
    }

    /// Clears the files of an earlier run in `dir`.
    fn prepare(dir: &Path) {
        for name in ["SAVED", "DONE", "messages.txt"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }

    /// The editor's messages so far (it writes them out while it waits).
    fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.join("messages.txt")).unwrap_or_default()
    }

    fn saved(&self) -> bool {
        self.dir.join("SAVED").exists()
    }

    fn finish(mut self) -> String {
        std::fs::write(self.dir.join("DONE"), "").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the editor failed: {status}");
        std::fs::read_to_string(self.dir.join("messages.txt")).unwrap_or_default()
    }
}

impl Drop for EditorRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const VIM_WAIT: &str = "let n = 0 | while n < 400 && !filereadable('DONE') | sleep 50m | let n += 1 \
    | redir! > messages.txt | silent messages | redir END | endwhile";

/// Vim or Neovim with only the shipped plugin, editing `file` in the repo: `before` commands, then `:write`.
fn vim(editor: &str, dir: &Path, file: &str, before: &[&str], vars: &[(&str, &str)]) -> EditorRun {
    EditorRun::prepare(dir);
    let plugin = format!("source {ROOT}/editor/vim/plugin/touchwire.vim");
    let mut args: Vec<String> = match editor {
        "vim" => ["-N", "-u", "NONE", "-i", "NONE", "-es"].map(String::from).to_vec(),
        _ => ["--headless", "-u", "NONE", "-i", "NONE"].map(String::from).to_vec(),
    };
    args.extend(["--cmd".into(), plugin, file.into()]);
    for cmd in before.iter().copied().chain(["write", "call writefile(['saved'], 'SAVED')", VIM_WAIT]) {
        args.extend(["-c".into(), cmd.into()]);
    }
    args.extend(["-c".into(), "redir! > messages.txt | silent messages | redir END".into(), "-c".into(), "qa!".into()]);
    EditorRun::spawn(Command::new(editor).args(&args), dir, vars)
}

/// Emacs in batch mode with touchwire.el: `setup` forms, then save `file` after an edit.
fn emacs(dir: &Path, file: &str, setup: &str, vars: &[(&str, &str)]) -> EditorRun {
    EditorRun::prepare(dir);
    let program = format!(
        "(progn (global-touchwire-mode 1) (find-file {file:?}) {setup} (goto-char (point-max)) (insert \"# edit\\n\") \
         (save-buffer) (write-region \"saved\" nil \"SAVED\") \
         (let ((n 0)) (while (and (< n 400) (not (file-exists-p \"DONE\"))) (sleep-for 0.05) (setq n (1+ n)) \
           (with-current-buffer \"*Messages*\" (write-region nil nil \"messages.txt\" nil 'quiet)))) \
         (with-current-buffer \"*Messages*\" (write-region nil nil \"messages.txt\")))"
    );
    let script = format!("{ROOT}/editor/emacs/touchwire.el");
    EditorRun::spawn(Command::new("emacs").args(["--batch", "-Q", "-l", &script, "--eval", &program]), dir, vars)
}

/// The shared scenario for every editor: a .py save sends one trigger naming it; a .txt save
/// sends nothing; turned off, nothing; with a mute guest the save returns at once and the
/// failure is reported once.
fn scenario(start: impl Fn(&Setup, &str, bool, &[(&str, &str)]) -> EditorRun) {
    let s = setup();
    let run = start(&s, "app.py", true, &[]);
    let event = s.receiver.wait_event("reload");
    assert_eq!(event["files"], json!(["app.py"]), "{event}");
    // The result shows where the user saved.
    let shown = format!("reloaded app on {}", s.receiver.addr);
    eventually("the editor to show the result", || run.messages().contains(&shown));
    run.finish();
    s.no_trigger("one save", QUIET);

    start(&s, "notes.txt", true, &[]).finish();
    s.no_trigger("a .txt save", QUIET);

    start(&s, "app.py", false, &[]).finish();
    s.no_trigger("turned off", QUIET);

    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap().to_string();
    let run = start(&s, "app.py", true, &[("TOUCHWIRE_TO", &addr)]);
    eventually("the save to return", || run.saved());
    // The guest has not answered (it never greets), yet the save is done: the editor did not wait.
    mute.set_nonblocking(true).unwrap();
    let mut accepted = None;
    eventually("touchwire to connect to the guest", || {
        accepted = mute.accept().ok();
        accepted.is_some()
    });
    let (connection, _) = accepted.unwrap();
    connection.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(connection.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(open, "the save returned only after touchwire gave up");
    std::thread::sleep(Duration::from_millis(1500)); // send's own timeout is 1 s
    let messages = run.finish();
    let failures = messages.matches(&format!("touchwire: {addr}: no answer within 1000 ms")).count();
    assert_eq!(failures, 1, "the failure is shown once:\n{messages}");
}

#[test]
fn vim_sends_on_save_without_waiting() {
    if require("vim") {
        scenario(|s, file, on, vars| vim("vim", &s.repo.root, file, if on { &[] } else { &["TouchwireToggle"] }, vars));
    }
}

#[test]
fn neovim_sends_on_save_without_waiting() {
    if require("nvim") {
        scenario(|s, file, on, vars| {
            vim("nvim", &s.repo.root, file, if on { &[] } else { &["TouchwireToggle"] }, vars)
        });
    }
}

/// A guest whose app fails to reload with a traceback (its action writes one to the log its
/// ready check follows); the repo's `.touchwire.json` names it.
fn failing_guest() -> Setup {
    let env = util::Env::new();
    let repo = util::Repo::init(env.join("repo"));
    let log = env.join("app.log");
    std::fs::write(&log, "").unwrap();
    let traceback = "Traceback (most recent call last):\n  File \"/srv/app.py\", line 2, in <module>\n    import nothing_here\nModuleNotFoundError: No module named 'nothing_here'\n";
    let script = format!("printf '%s' \"$1\" >> {}", log.display());
    let target = json!({"exec": ["sh", "-c", script, "sh", traceback], "ready": {"log": log, "preset": "uwsgi", "timeout_ms": 10000}});
    std::fs::write(env.join("guest.json"), json!({"targets": {"app": target}}).to_string()).unwrap();
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    repo.write(".touchwire.json", &json!({"remote": receiver.addr}).to_string());
    repo.write("app.py", "VALUE = 1\n");
    repo.commit_all("init");
    Setup { env, repo, receiver }
}

/// A failed reload: the editor shows one line, `touchwire:` and the place; the traceback is in
/// its message history.
fn failure_scenario(start: impl Fn(&Setup) -> EditorRun) {
    let s = failing_guest();
    let run = start(&s);
    assert_eq!(s.receiver.wait_event("not_ready")["ok"], false);
    let shown = format!("touchwire: {}: app did not come back at app.py:2 after", s.receiver.addr);
    eventually("the editor to show the failure", || run.messages().contains(&shown));
    let messages = run.finish();
    assert!(messages.contains("Traceback (most recent call last):"), "the traceback is kept:\n{messages}");
    assert!(messages.contains("File \"/srv/app.py\", line 2"), "{messages}");
    let last = messages.lines().rfind(|line| !line.trim().is_empty()).unwrap_or_default();
    assert!(last.starts_with("touchwire: ") && last.contains("No module named 'nothing_here'"), "{messages}");
}

#[test]
fn vim_keeps_a_failed_reload_s_traceback_in_messages() {
    if require("vim") {
        failure_scenario(|s| vim("vim", &s.repo.root, "app.py", &[], &[]));
    }
}

#[test]
fn neovim_keeps_a_failed_reload_s_traceback_in_messages() {
    if require("nvim") {
        failure_scenario(|s| vim("nvim", &s.repo.root, "app.py", &[], &[]));
    }
}

#[test]
fn emacs_keeps_a_failed_reload_s_traceback_in_messages() {
    if require("emacs") {
        failure_scenario(|s| emacs(&s.repo.root, "app.py", "", &[]));
    }
}

#[test]
fn emacs_sends_on_save_without_waiting() {
    if require("emacs") {
        scenario(|s, file, on, vars| emacs(&s.repo.root, file, if on { "" } else { "(touchwire-mode -1)" }, vars));
    }
}

fn jsonc(path: &str) -> Value {
    touchwire::editor::parse_jsonc(&std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()).unwrap()
}

/// A task's command line with VS Code's variables substituted, run from its cwd.
fn task_command(task: &Value, workspace: &Path) -> Command {
    let substitute = |s: &str| s.replace("${workspaceFolder}", workspace.to_str().unwrap());
    let mut cmd = Command::new(task["command"].as_str().unwrap());
    cmd.args(task["args"].as_array().unwrap().iter().map(|a| substitute(a.as_str().unwrap())));
    cmd.current_dir(substitute(task["options"]["cwd"].as_str().unwrap()));
    cmd.env("PATH", util::path_with_touchwire()).env("XDG_CONFIG_HOME", "/nonexistent").stdin(Stdio::null());
    cmd
}

fn task<'a>(tasks: &'a Value, label: &str) -> &'a Value {
    tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == label).unwrap()
}

#[test]
fn vscode_reload_task_and_run_on_save_reach_the_guest() {
    let s = setup();
    let tasks = jsonc("editor/vscode/tasks.json");
    let output = task_command(task(&tasks, "touchwire: reload guest"), &s.repo.root).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(s.receiver.wait_event("reload")["reason"], "vscode");

    // Run on Save runs the command through a shell, from the workspace, with ${file} substituted.
    let settings = jsonc("editor/vscode/settings.json");
    let command = &settings["emeraldwalk.runonsave"]["commands"][0];
    let file = s.repo.root.join("app.py");
    assert!(regex::Regex::new(command["match"].as_str().unwrap()).unwrap().is_match(file.to_str().unwrap()));
    let line = command["cmd"].as_str().unwrap().replace("${file}", file.to_str().unwrap());
    let output = Command::new("sh")
        .args(["-c", &line])
        .current_dir(&s.repo.root)
        .env("PATH", util::path_with_touchwire())
        .output()
        .unwrap();
    assert!(output.status.success(), "{line}: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(s.receiver.wait_event("reload")["files"], json!(["app.py"]));

    let keybindings = jsonc("editor/vscode/keybindings.json");
    let label = keybindings[0]["args"].as_str().unwrap();
    task(&tasks, label); // the keybinding runs a task that exists
}

#[test]
fn vscode_watch_task_signals_ready_and_reports_failures_as_problems() {
    let s = setup();
    let tasks = jsonc("editor/vscode/tasks.json");
    let watch = task(&tasks, "touchwire: watch");
    assert_eq!(watch["runOptions"]["runOn"], "folderOpen");
    let matcher = &watch["problemMatcher"][0];
    let re = |key: &Value| regex::Regex::new(key.as_str().unwrap()).unwrap();
    let (begins, ends) = (re(&matcher["background"]["beginsPattern"]), re(&matcher["background"]["endsPattern"]));
    let problem = re(&matcher["pattern"]["regexp"]);

    // A dead guest, so that the change cannot be delivered.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut child =
        task_command(watch, &s.repo.root).env("TOUCHWIRE_TO", &dead).stderr(Stdio::piped()).spawn().unwrap();
    let (lines, reader) = util::lines_of(child.stderr.take().unwrap());
    let next = |what: &str, re: &regex::Regex| -> String {
        let deadline = std::time::Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if re.is_match(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line matching the {what} pattern {re}")
    };
    next("beginsPattern", &begins);
    next("endsPattern", &ends);
    s.repo.write("app.py", "VALUE = 2\n");
    let line = next("problem", &problem);
    let captures = problem.captures(&line).unwrap();
    assert_eq!(&captures[1], "app.py", "{line}");
    assert!(captures[2].contains("connection refused"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = reader.join();
}

#[test]
fn init_editor_vscode_merges_into_a_commented_tasks_json() {
    let s = setup();
    let existing = "{\n  // keep me\n  \"version\": \"2.0.0\",\n  \"tasks\": [\n    { \"label\": \"build\", \"type\": \"shell\", \"command\": \"make\" },\n  ],\n}\n";
    s.repo.write(".vscode/tasks.json", existing);
    s.env.run_in(&s.repo.root, &["init", "--editor", "vscode"]).expect_code(0).expect_stdout("emeraldwalk.runonsave");
    let merged = std::fs::read_to_string(s.repo.root.join(".vscode/tasks.json")).unwrap();
    assert!(merged.contains("// keep me"), "{merged}");
    let value = touchwire::editor::parse_jsonc(&merged).unwrap();
    let labels: Vec<&str> = value["tasks"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["build", "touchwire: reload guest", "touchwire: watch"]);
    s.env.run_in(&s.repo.root, &["init", "--editor", "vscode"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(s.repo.root.join(".vscode/tasks.json")).unwrap(), merged, "idempotent");
}

#[test]
fn init_editor_vim_and_emacs_install_into_the_home_directory() {
    let s = setup();
    s.env.run_in(&s.repo.root, &["init", "--editor", "vim"]).expect_code(0);
    let home = s.env.path();
    let plugin = std::fs::read_to_string(format!("{ROOT}/editor/vim/plugin/touchwire.vim")).unwrap();
    assert_eq!(
        std::fs::read_to_string(home.join(".vim/pack/touchwire/start/touchwire/plugin/touchwire.vim")).unwrap(),
        plugin
    );
    assert!(home.join(".vim/pack/touchwire/start/touchwire/doc/touchwire.txt").exists());
    s.env
        .run_in(&s.repo.root, &["init", "--editor", "emacs"])
        .expect_code(0)
        .expect_stdout("(global-touchwire-mode 1)");
    assert!(home.join(".emacs.d/lisp/touchwire.el").exists());
}
