//! What touchwire says when something is not right: each message names the cause and the fix,
//! and promises nothing that will not happen (issue 16).
// The harness and the guest side (a FIFO, listen) are Unix-only, as in the other tests.
#![cfg(unix)]

mod util;

use util::{Env, Repo, eventually};

/// A repository with one committed Python file.
fn repo(env: &Env) -> Repo {
    let repo = Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    repo
}

#[test]
fn a_watcher_with_the_wrong_token_is_told_it_was_refused_and_how_to_fix_it() {
    let env = Env::new();
    let repo = repo(&env);
    let (good, bad) = (env.join("good-token"), env.join("bad-token"));
    std::fs::write(&good, "the-right-token-0123").unwrap();
    std::fs::write(&bad, "the-wrong-token-0123").unwrap();
    let receiver = env.listen(&["--touch", env.join("r").to_str().unwrap(), "--token-file", good.to_str().unwrap()]);
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr, "--token-file", bad.to_str().unwrap()]);
    watcher.wait_event("disconnected");
    eventually("the watcher's refusal line", || watcher.stderr().contains("refused"));
    let said = watcher.stderr();
    let line = said.lines().find(|l| l.contains("refused")).unwrap();
    assert!(line.contains("wrong token"), "{said}");
    assert!(line.contains(bad.to_str().unwrap()) && line.contains("TOUCHWIRE_TOKEN_FILE"), "{said}");
    assert!(!said.contains("will retry") && !said.contains("cannot reach"), "{said}");
}

#[test]
fn status_fails_when_a_target_cannot_act_and_says_which_have_a_ready_check() {
    let env = Env::new();
    // A FIFO nobody reads: the action cannot run now.
    let fifo = env.join("master.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let listener = env.listen(&["--fifo", fifo.to_str().unwrap()]);
    let run = env.run(&["status", "--to", &listener.addr]);
    run.expect_code(1).expect_stdout("target app: CANNOT ACT: no reader on").expect_stdout("; no ready check");
    assert!(!run.stdout.contains("NOT READY") && !run.stdout.contains(": ready:"), "{}", run.stdout);
    run.expect_stderr("cannot act: app");

    // A touch target whose guest config gives it a ready check.
    std::fs::write(env.join("app.reload"), "").unwrap();
    std::fs::write(env.join("app.log"), "").unwrap();
    let config = serde_json::json!({"targets": {"app": {"touch": "app.reload",
        "ready": {"preset": "uwsgi", "log": env.join("app.log")}}}});
    std::fs::write(env.join("guest.json"), config.to_string()).unwrap();
    let checked = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    let run = env.run(&["status", "--to", &checked.addr]);
    run.expect_code(0).expect_stdout("target app: action ok: ").expect_stdout("; has a ready check");
}

#[test]
fn send_wait_to_a_target_without_a_ready_check_says_it_did_not_wait() {
    let env = Env::new();
    let listener = env.listen(&["--touch", env.join("app.reload").to_str().unwrap()]);
    let run = env.run(&["send", "--wait", "--to", &listener.addr]);
    run.expect_code(0);
    let said = "no ready check on app: answered when the action was done";
    assert_eq!(run.stderr.matches(said).count(), 1, "{}", run.stderr);
    // Without --wait there was nothing to wait for, and nothing to say about it.
    let run = env.run(&["send", "--to", &listener.addr]);
    run.expect_code(0);
    assert!(!run.stderr.contains("no ready check"), "{}", run.stderr);
}

#[test]
fn send_path_says_exactly_why_a_file_was_not_sent() {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write(".gitignore", "venv/\n");
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    let listener = env.listen(&["--touch", env.join("app.reload").to_str().unwrap()]);
    let send = |path: &std::path::Path| {
        let run = env.run_in(env.path(), &["send", "-v", "--to", &listener.addr, "--path", path.to_str().unwrap()]);
        run.expect_code(0);
        assert!(
            !run.stderr.contains("is not inside a git repository") && !run.stderr.contains("class="),
            "{}",
            run.stderr
        );
        run
    };
    // In an ignored directory that exists, and in one that does not (a venv deleted, a path typed).
    repo.write("venv/lib/site.py", "# site\n");
    send(&repo.root.join("venv/lib/site.py")).expect_stderr("git ignores it (a .gitignore rule");
    send(&repo.root.join("venv/gone/x.py")).expect_stderr("git ignores it (a .gitignore rule");
    // Outside any work tree.
    std::fs::create_dir_all(env.join("scratch")).unwrap();
    std::fs::write(env.join("scratch/x.py"), "print(1)\n").unwrap();
    send(&env.join("scratch/x.py")).expect_stderr("it is outside any git work tree");
    assert!(listener.named_within("reload", std::time::Duration::from_millis(300)).is_empty());
}

#[test]
fn an_unknown_revision_is_named_without_libgit2s_codes() {
    let env = Env::new();
    let repo = repo(&env);
    let run = env.run_in(&repo.root, &["send", "--to", "127.0.0.1:9", "--changed-between", "main", "no-such-rev"]);
    run.expect_code(1).expect_stderr("unknown revision no-such-rev");
    assert!(!run.stderr.contains("class=") && !run.stderr.contains("code=NotFound"), "{}", run.stderr);
}

#[test]
fn a_systemd_unit_without_a_config_comes_with_a_warning_and_its_fix() {
    let env = Env::new();
    let bare = env.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let run = env.run_in(&bare, &["init", "--systemd-unit"]);
    run.expect_code(0).expect_stdout("ExecStart=").expect_stderr("warning: no .touchwire.json");
    run.expect_stderr("built-in defaults").expect_stderr("touchwire init");
    assert!(!run.stdout.contains("warning"), "the unit on stdout stays clean:\n{}", run.stdout);

    let configured = env.join("configured");
    std::fs::create_dir_all(&configured).unwrap();
    std::fs::write(configured.join(".touchwire.json"), r#"{"listen": "0.0.0.0:9001"}"#).unwrap();
    let run = env.run_in(&configured, &["init", "--systemd-unit"]);
    run.expect_code(0).expect_stdout("ExecStart=");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[test]
fn the_editor_docs_name_the_command_the_plugins_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
    let (vim, emacs, vscode) = (
        read("editor/vim/plugin/touchwire.vim"),
        read("editor/emacs/touchwire.el"),
        read("editor/vscode/settings.json"),
    );
    assert!(vim.contains("send --wait --path") && emacs.contains("\"send\" \"--wait\""), "the plugins changed");
    assert!(vscode.contains("send --wait --path"), "the VS Code snippet changed");
    for doc in ["editor/README.md", "README.md"] {
        let text = read(doc).replace('\n', " ");
        assert!(text.contains("runs `touchwire send --wait --path FILE`"), "{doc} names another command");
        assert!(!text.contains("runs `touchwire send --path FILE`"), "{doc} still says send --path");
    }
}

#[test]
fn a_fresh_clone_gets_its_token_from_init_token() {
    let env = Env::new();
    let origin = repo(&env);
    origin.write(".touchwire.json", r#"{"remote": "127.0.0.1:9", "token_file": ".git/touchwire/token"}"#);
    origin.commit_all("config");
    let clone = env.join("clone");
    let cloned = std::process::Command::new("git")
        .args(["clone", "-q", origin.root.to_str().unwrap(), clone.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(cloned.status.success(), "{cloned:?}");
    let token = clone.join(".git/touchwire/token");
    assert!(!token.exists());
    // Without it, every command says how to get it; plain init refuses to reset the committed config.
    env.run_in(&clone, &["send"]).expect_code(2).expect_stderr("`touchwire init --token` creates it");
    env.run_in(&clone, &["init"]).expect_code(2).expect_stderr("exists already");
    let run = env.run_in(&clone, &["init", "--token"]);
    run.expect_code(0).expect_stdout("wrote a fresh token to");
    let text = std::fs::read_to_string(&token).unwrap();
    assert_eq!(text.trim().len(), 64, "{text:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(clone.join(".touchwire.json")).unwrap().contains("127.0.0.1:9"),
        "the committed config is untouched"
    );
    // Again: kept, never replaced (the guest may be using it).
    env.run_in(&clone, &["init", "--token"]).expect_code(0).expect_stdout("kept the existing token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), text);
    // And it works: a guest reading the same file accepts the host's trigger.
    let receiver = env.listen(&["--touch", env.join("r").to_str().unwrap(), "--token-file", token.to_str().unwrap()]);
    env.run_in(&clone, &["send", "--to", &receiver.addr]).expect_code(0);
    assert_eq!(receiver.wait_event("reload")["reason"], "manual");
}

#[test]
fn send_says_a_failed_action_was_delivered() {
    let env = Env::new();
    let repo = repo(&env);
    let config = serde_json::json!({"targets": {"app": {"exec": ["false"], "timeout_ms": 5000}}});
    std::fs::write(env.join("guest.json"), config.to_string()).unwrap();
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    let run = env.run_in(&repo.root, &["send", "--json", "--to", &receiver.addr]);
    run.expect_code(1);
    let event: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap_or_default()).unwrap_or_default();
    assert_eq!((event["event"].as_str(), event["delivered"].as_bool()), (Some("failed"), Some(true)), "{}", run.stdout);
    assert_eq!(event["code"], "action_failed", "{}", run.stdout);
    assert!(event["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{}", run.stdout);
}

#[test]
fn init_token_without_a_config_says_to_run_init() {
    let env = Env::new();
    let repo = repo(&env);
    env.run_in(&repo.root, &["init", "--token"]).expect_code(2).expect_stderr("run `touchwire init`");
    assert!(!repo.root.join(".git/touchwire/token").exists(), "nothing written");
}

#[test]
fn a_quiet_watcher_prints_the_rounds_an_editor_needs_and_nothing_else() {
    let env = Env::new();
    let repo = repo(&env);
    // The action fails while this file exists.
    let broken = env.join("broken");
    std::fs::write(&broken, "").unwrap();
    let check = format!("test ! -e '{}'", broken.display());
    // No settle window: each save runs the action, none is merged into the one before.
    let config =
        serde_json::json!({"settle_ms": 0, "targets": {"app": {"exec": ["sh", "-c", check], "timeout_ms": 5000}}});
    std::fs::write(env.join("guest.json"), config.to_string()).unwrap();
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    let (watcher, _) = env.watch_in(&repo.root, &["-q", "--to", &receiver.addr]);
    // What the watcher printed, without the clock, from line `skip` on.
    let lines = |skip: usize| -> Vec<String> {
        let said = watcher.stderr();
        said.lines().skip(skip).map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string()).collect()
    };
    // A save, and its action run on the guest.
    let save = |n: usize, outcome: &str| {
        repo.write("app.py", &format!("X = {n}\n"));
        let event = watcher.wait_event(outcome);
        let ran = match outcome {
            "trigger" => event["merged"] == false && receiver.wait_event("reload")["target"] == "app",
            _ => receiver.wait_event("reload_failed")["target"] == "app",
        };
        assert!(ran, "the action ran for this save: {event}");
    };
    let (begin, end) = ("touchwire: reloading (1 file)", "touchwire: reload failed");
    let problem = format!("(app.py -> {})", receiver.addr);
    let a_failed_round = |round: &[String]| {
        round.len() == 3
            && round[0] == begin
            && round[1].starts_with("app: reload failed: ")
            && round[1].ends_with(&problem)
            && round[2] == end
    };

    save(2, "reload_failed");
    eventually("the failed round's end line", || lines(0).last().is_some_and(|l| l == end));
    assert!(a_failed_round(&lines(0)), "begin, problem, end: {:#?}", lines(0));

    // Fixed: this round ends on its success line, which clears the problem in an editor.
    std::fs::remove_file(&broken).unwrap();
    save(3, "trigger");
    watcher.wait_stderr(" reloaded (exec) in ");
    let fixed = lines(3);
    assert_eq!(fixed.len(), 2, "begin, success: {fixed:#?}");
    assert_eq!(fixed[0], begin);
    assert!(fixed[1].starts_with(&format!("app: app.py -> {} reloaded (exec) in ", receiver.addr)), "{fixed:#?}");

    // Another success prints nothing: the next failure's round follows the fixed one directly.
    save(4, "trigger");
    std::fs::write(&broken, "").unwrap();
    save(5, "reload_failed");
    eventually("the second failed round's end line", || lines(5).last().is_some_and(|l| l == end));
    assert!(a_failed_round(&lines(5)), "nothing between the fixed round and the next failure: {:#?}", lines(0));

    // VS Code's matcher opens and closes each of these rounds, and reads no end from a problem.
    let tasks = touchwire::editor::parse_jsonc(touchwire::editor::VSCODE_TASKS).unwrap();
    let watch = tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == "touchwire: watch").unwrap();
    let background = &watch["problemMatcher"][0]["background"];
    let pattern = |name: &str| regex::Regex::new(background[name].as_str().unwrap()).unwrap();
    let (begins, ends) = (pattern("beginsPattern"), pattern("endsPattern"));
    let printed = watcher.stderr();
    let kinds: Vec<(bool, bool)> = printed.lines().map(|l| (begins.is_match(l), ends.is_match(l))).collect();
    let (open, close, neither) = ((true, false), (false, true), (false, false));
    assert_eq!(kinds, [open, neither, close, open, close, open, neither, close], "{printed}");
}
