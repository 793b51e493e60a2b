//! Git hooks: installed safely, and reloading after checkout, merge and rebase, through real git.
#![cfg(unix)]

mod util;

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;
use util::{Project, Repo};

const QUIET: Duration = Duration::from_millis(800);

type Setup = Project;

fn setup() -> Setup {
    Project::new(&[("app.py", "VALUE = 'main'\n"), ("README.md", "main\n")], true)
}

impl Setup {
    #[track_caller]
    fn git(&self, args: &[&str]) -> Output {
        let output = self.repo.git_as_user(&self.env, args, true, &[]);
        assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    fn install(&self) {
        self.env.run_in(&self.repo.root, &["hooks", "install"]).expect_code(0);
    }

    #[track_caller]
    fn trigger(&self) -> serde_json::Value {
        self.receiver.wait_event("reload")
    }

    /// A branch `name` off main whose commit changes `files`.
    fn branch(&self, name: &str, files: &[(&str, &str)]) {
        self.repo.git(&["checkout", "-q", "-b", name]);
        for (path, content) in files {
            self.repo.write(path, content);
        }
        self.repo.commit_all(name);
        self.repo.git(&["checkout", "-q", "main"]);
    }
}

fn files(event: &serde_json::Value) -> Vec<&str> {
    event["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect()
}

#[test]
fn install_into_a_fresh_repository_then_twice_changes_nothing() {
    let s = setup();
    s.install();
    let hooks = s.repo.root.join(".git/hooks");
    let before: Vec<Vec<u8>> = ["post-checkout", "post-merge", "post-rewrite"]
        .iter()
        .map(|name| {
            let path = hooks.join(name);
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755, "{name}");
            std::fs::read(path).unwrap()
        })
        .collect();
    s.install();
    for (name, bytes) in ["post-checkout", "post-merge", "post-rewrite"].iter().zip(&before) {
        assert_eq!(&std::fs::read(hooks.join(name)).unwrap(), bytes, "{name} changed on a second install");
        assert!(!hooks.join(format!("{name}.touchwire-chained")).exists());
    }
    s.env.run_in(&s.repo.root, &["hooks", "status"]).expect_code(0).expect_stdout("post-merge     installed\n");
    s.env
        .run_in(&s.repo.root, &["status"])
        .expect_stdout("post-checkout installed, post-merge installed, post-rewrite installed");
    s.env.run_in(&s.repo.root, &["hooks", "uninstall"]).expect_code(0);
    s.env.run_in(&s.repo.root, &["hooks", "status"]).expect_stdout("post-checkout  not installed\n");
}

#[test]
fn an_existing_hook_keeps_running_and_comes_back_byte_for_byte() {
    let s = setup();
    s.branch("feature", &[("app.py", "VALUE = 'feature'\n")]);
    let hook = s.repo.root.join(".git/hooks/post-checkout");
    let marker = s.env.join("marker");
    let original =
        format!("#!/bin/sh\n# my own hook\necho \"$1 $2 $3\" >> {}\necho my-hook-output\n", marker.display());
    std::fs::write(&hook, &original).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.install();
    s.env
        .run_in(&s.repo.root, &["hooks", "status"])
        .expect_stdout("post-checkout  installed, chained to your existing hook");

    let output = s.git(&["checkout", "-q", "feature"]);
    // git shows a hook's stdout on its stderr.
    let shown = String::from_utf8_lossy(&output.stderr);
    assert!(shown.contains("my-hook-output"), "the user's hook output is kept: {shown}");
    assert_eq!(files(&s.trigger()), ["app.py"]);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1, "the user's hook ran once");

    s.env.run_in(&s.repo.root, &["hooks", "uninstall"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), original);
    assert_eq!(std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777, 0o755);
}

#[test]
fn core_hooks_path_is_respected() {
    let s = setup();
    s.repo.git(&["config", "core.hooksPath", "githooks"]);
    s.install();
    assert!(s.repo.root.join("githooks/post-checkout").exists());
    assert!(!s.repo.root.join(".git/hooks/post-checkout").exists());
    s.branch("feature", &[("app.py", "VALUE = 'feature'\n")]);
    s.git(&["checkout", "-q", "feature"]);
    assert_eq!(files(&s.trigger()), ["app.py"]);
}

#[test]
fn checkouts_reload_only_when_a_relevant_file_differs() {
    let s = setup();
    s.branch("code", &[("app.py", "VALUE = 'code'\n"), ("lib/new.py", "NEW = 1\n")]);
    s.branch("docs", &[("README.md", "docs only\n")]);
    s.install();
    s.git(&["checkout", "-q", "code"]);
    assert_eq!(files(&s.trigger()), ["app.py", "lib/new.py"]);
    s.no_trigger("a branch checkout", QUIET);
    s.git(&["checkout", "-q", "-b", "copy"]);
    s.no_trigger("checkout -b (same tree)", QUIET);
    s.git(&["checkout", "-q", "main"]);
    s.trigger(); // back from code to main: app.py and lib/new.py differ again
    s.git(&["checkout", "-q", "docs"]);
    s.no_trigger("a checkout that changes README.md alone", QUIET);
}

#[test]
fn a_file_checkout_reloads() {
    let s = setup();
    s.install();
    s.repo.write("app.py", "VALUE = 'edited'\n");
    s.git(&["checkout", "--", "app.py"]);
    assert_eq!(s.trigger()["reason"], "file checkout");
}

#[test]
fn a_pull_bringing_py_changes_reloads_once() {
    let s = setup();
    let bare = s.env.join("origin.git");
    s.repo.git(&["clone", "-q", "--bare", s.repo.root.to_str().unwrap(), bare.to_str().unwrap()]);
    s.repo.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    s.repo.git(&["fetch", "-q", "origin"]);
    s.repo.git(&["branch", "-q", "--set-upstream-to", "origin/main"]);
    // Someone else pushes a change to app.py.
    let other = Repo::init(s.env.join("other"));
    other.git(&["pull", "-q", bare.to_str().unwrap(), "main"]);
    other.write("app.py", "VALUE = 'pushed'\n");
    other.commit_all("upstream change");
    other.git(&["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);

    s.install();
    s.git(&["pull", "-q", "--ff-only"]);
    let event = s.trigger();
    assert_eq!(files(&event), ["app.py"]);
    assert_eq!(event["reason"], "merge");
    s.no_trigger("a pull", QUIET);
}

#[test]
fn a_rebase_that_rewrites_py_files_reloads() {
    let s = setup();
    s.branch("topic", &[("topic.py", "T = 1\n")]);
    s.repo.write("app.py", "VALUE = 'moved on'\n");
    s.repo.commit_all("main moves on");
    s.repo.git(&["checkout", "-q", "topic"]);
    s.install();
    s.git(&["rebase", "-q", "main"]);
    let event = s.trigger();
    assert_eq!(event["reason"], "rebase", "post-rewrite reloads, post-checkout keeps out of the rebase: {event}");
    assert!(files(&event).contains(&"app.py"), "{event}");
    s.no_trigger("a rebase", QUIET);
}

#[test]
fn with_the_guest_down_every_git_command_still_succeeds() {
    let s = setup();
    s.branch("feature", &[("app.py", "VALUE = 'feature'\n")]);
    s.install();
    let Setup { env, repo, receiver } = s;
    drop(receiver);
    for args in [
        &["checkout", "-q", "feature"][..],
        &["checkout", "-q", "main"],
        &["checkout", "--", "app.py"],
        &["merge", "-q", "feature"],
    ] {
        let output = repo.git_as_user(&env, args, true, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "git {args:?} failed with the guest down: {stderr}");
        assert!(stderr.contains("connection refused"), "git {args:?}: the hook says why: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("touchwire:")).count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_mute_guest_costs_no_more_than_the_hook_timeout() {
    let s = setup();
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap().to_string();
    s.repo.write(".touchwire.json", &json!({"remote": addr, "hook_timeout_ms": 300}).to_string());
    s.repo.commit_all("mute guest");
    s.install();
    s.repo.write("app.py", "VALUE = 'edited'\n");
    let output = s.repo.git_as_user(&s.env, &["checkout", "--", "app.py"], true, &[]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no answer within 300 ms"), "{stderr}");
}

#[test]
fn touchwire_skip_and_a_missing_binary_send_nothing_and_fail_nothing() {
    let s = setup();
    s.branch("feature", &[("app.py", "VALUE = 'feature'\n")]);
    s.install();
    let output = s.repo.git_as_user(&s.env, &["checkout", "-q", "feature"], true, &[("TOUCHWIRE_SKIP", "1")]);
    assert!(output.status.success());
    s.no_trigger("TOUCHWIRE_SKIP=1", QUIET);

    let output = s.repo.git_as_user(&s.env, &["checkout", "-q", "main"], false, &[]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("touchwire: not found on PATH"), "{stderr}");
    s.no_trigger("touchwire not on PATH", QUIET);
}

#[test]
fn send_changed_between_compares_trees() {
    let s = setup();
    s.branch("code", &[("app.py", "VALUE = 'code'\n")]);
    s.branch("docs", &[("README.md", "docs\n")]);
    s.env.run_in(&s.repo.root, &["send", "--changed-between", "main", "code"]).expect_code(0);
    assert_eq!(files(&s.trigger()), ["app.py"]);
    s.env
        .run_in(&s.repo.root, &["send", "-v", "--changed-between", "main", "docs"])
        .expect_code(0)
        .expect_stderr("nothing to send");
    s.no_trigger("a diff without relevant files", QUIET);
    s.env
        .run_in(&s.repo.root, &["send", "--changed-between", "main", "no-such-branch"])
        .expect_code(1)
        .expect_stderr("unknown revision no-such-branch");
}

#[test]
fn linked_worktrees_share_the_common_hooks_and_exit_codes_pass_through() {
    let s = setup();
    let linked = s.env.join("linked");
    s.repo.git(&["worktree", "add", "-q", "-b", "side", linked.to_str().unwrap()]);
    s.env.run(&["hooks", "install", "--repo", linked.to_str().unwrap()]).expect_code(0);
    assert!(s.repo.root.join(".git/hooks/post-merge").exists(), "hooks go to the common git directory");

    // A user's post-checkout that fails keeps failing the same way: its status is git's.
    let hook = s.repo.root.join(".git/hooks/post-checkout");
    s.env.run_in(&s.repo.root, &["hooks", "uninstall"]).expect_code(0);
    std::fs::write(&hook, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.install();
    s.repo.write("app.py", "VALUE = 'edited'\n");
    let output = s.repo.git_as_user(&s.env, &["checkout", "--", "app.py"], true, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    s.trigger();
}
