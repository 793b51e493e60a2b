//! `touchwire watch` and `send --path` against real git repositories and a real receiver.
#![cfg(unix)]

mod util;

use serde_json::Value;
use std::time::Duration;
use util::{Daemon, Env, Project, Repo};

/// How long to listen for a trigger that must not come.
const QUIET: Duration = Duration::from_millis(600);

type Setup = Project;

fn setup() -> Setup {
    Project::new(
        &[
            (".gitignore", "venv/\n*.log\n"),
            ("app/views.py", "VALUE = 1\n"),
            ("app/models.py", "MODEL = 1\n"),
            ("README.txt", "readme\n"),
            ("venv/lib/site.py", "# site\n"),
        ],
        false,
    )
}

impl Setup {
    fn watch(&self, extra: &[&str]) -> (Daemon, Value) {
        let mut args = vec!["--to", self.receiver.addr.as_str()];
        args.extend_from_slice(extra);
        let (watcher, ready) = self.env.watch_in(&self.repo.root, &args);
        watcher.wait_event("connected");
        (watcher, ready)
    }

    /// The files of the next trigger the receiver acts on.
    #[track_caller]
    fn next_trigger(&self) -> Vec<String> {
        let event = self.receiver.wait_event("reload");
        event["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
    }
}

#[test]
fn an_edit_of_a_tracked_py_file_is_one_trigger_naming_it() {
    let s = setup();
    let (_watcher, ready) = s.watch(&[]);
    assert_eq!(ready["relevant"], 2, "{ready}");
    s.repo.write("app/views.py", "VALUE = 2\n");
    assert_eq!(s.next_trigger(), ["app/views.py"]);
    s.no_trigger("an in-place save", QUIET);
}

#[test]
fn ignored_and_unwatched_files_send_nothing() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    s.repo.write("venv/lib/site.py", "# changed\n");
    s.repo.write("venv/lib/new_pkg/mod.py", "# new\n");
    s.repo.write("README.txt", "changed\n");
    s.repo.write("app/debug.log", "log\n");
    s.repo.write("app/views.pyc", "bytes\n");
    s.no_trigger("venv, .txt, .log, .pyc", QUIET);
    // The metadata of a relevant file alone is no change: the guest's touches never loop back.
    touchwire::listen::actions::touch(&s.repo.root.join("app/views.py"), "app", Default::default()).unwrap();
    s.no_trigger("a touch", QUIET);
    // The watcher is alive all along: a relevant change still comes through, alone.
    s.repo.write("app/models.py", "MODEL = 2\n");
    assert_eq!(s.next_trigger(), ["app/models.py"]);
}

#[test]
fn extensions_are_configurable() {
    let s = setup();
    let (_watcher, _) = s.watch(&["--ext", "py,txt"]);
    s.repo.write("README.txt", "changed\n");
    assert_eq!(s.next_trigger(), ["README.txt"]);
}

#[test]
fn untracked_files_count_unless_tracked_only() {
    let s = setup();
    let (watcher, _) = s.watch(&[]);
    s.repo.write("app/new.py", "NEW = 1\n");
    assert_eq!(s.next_trigger(), ["app/new.py"]);
    drop(watcher);

    let (_watcher, _) = s.watch(&["--tracked-only"]);
    s.repo.write("app/other.py", "OTHER = 1\n");
    s.no_trigger("an untracked file with --tracked-only", QUIET);
    // `git add` makes it tracked, and the watcher re-reads the index without a restart.
    s.repo.git(&["add", "app/other.py"]);
    std::thread::sleep(Duration::from_millis(200));
    s.repo.write("app/other.py", "OTHER = 2\n");
    assert_eq!(s.next_trigger(), ["app/other.py"]);
}

#[test]
fn a_new_gitignore_rule_takes_effect_without_a_restart() {
    let s = setup();
    s.repo.write("gen/out.py", "# generated\n");
    let (_watcher, _) = s.watch(&[]);
    s.repo.write(".gitignore", "venv/\n*.log\ngen/\n");
    std::thread::sleep(Duration::from_millis(200));
    s.repo.write("gen/out.py", "# generated again\n");
    s.no_trigger("a file under a newly ignored folder", QUIET);
    s.repo.write("app/views.py", "VALUE = 9\n");
    assert_eq!(s.next_trigger(), ["app/views.py"], "the watcher is alive");
}

#[test]
fn an_atomic_save_is_one_trigger() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    let tmp = s.repo.root.join("app/.views.py.tmp123");
    std::fs::write(&tmp, "VALUE = 3\n").unwrap();
    std::fs::rename(&tmp, s.repo.root.join("app/views.py")).unwrap();
    assert_eq!(s.next_trigger(), ["app/views.py"]);
    s.no_trigger("an atomic save", QUIET);
}

#[test]
fn vim_backup_and_write_is_one_trigger_at_the_completed_write() {
    let s = setup();
    // A generous debounce, so that a test machine pausing between the rename and the write
    // cannot close the burst in between.
    let (_watcher, _) = s.watch(&["--debounce", "500"]);
    let (views, backup) = (s.repo.root.join("app/views.py"), s.repo.root.join("app/views.py~"));
    std::fs::rename(&views, &backup).unwrap();
    std::fs::write(&views, "VALUE = 4\n").unwrap();
    std::fs::remove_file(&backup).unwrap();
    assert_eq!(s.next_trigger(), ["app/views.py"]);
    s.no_trigger("a backup-and-write save", QUIET);
}

#[test]
fn a_deletion_is_one_trigger() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    std::fs::remove_file(s.repo.root.join("app/models.py")).unwrap();
    assert_eq!(s.next_trigger(), ["app/models.py"]);
    s.no_trigger("a deletion", QUIET);
}

#[test]
fn a_new_directory_is_watched_and_its_first_file_counts() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    s.repo.write("app/api/v2/handlers.py", "H = 1\n");
    assert_eq!(s.next_trigger(), ["app/api/v2/handlers.py"]);
    // The scan of the new directory may find the file before its write is closed; the close
    // then ends the burst with a second trigger for the same file, never a third.
    let more = s.receiver.named_within("reload", QUIET);
    assert!(
        more.len() <= 1 && more.iter().all(|e| e["files"] == serde_json::json!(["app/api/v2/handlers.py"])),
        "{more:?}"
    );
    s.repo.write("app/api/v2/handlers.py", "H = 2\n");
    assert_eq!(s.next_trigger(), ["app/api/v2/handlers.py"]);
}

#[test]
fn a_checkout_of_500_changed_files_is_at_most_two_triggers() {
    let s = setup();
    for i in 0..500 {
        s.repo.write(&format!("pkg/m{}/mod{i:03}.py", i % 20), "V = 'main'\n");
    }
    s.repo.commit_all("500 modules");
    s.repo.git(&["checkout", "-q", "-b", "other"]);
    for i in 0..500 {
        s.repo.write(&format!("pkg/m{}/mod{i:03}.py", i % 20), "V = 'other'\n");
    }
    s.repo.commit_all("500 changed modules");
    s.repo.git(&["checkout", "-q", "main"]);
    let (watcher, _) = s.watch(&[]);
    s.repo.git(&["checkout", "-q", "other"]);
    s.receiver.wait_event("reload");
    let more = s.receiver.named_within("reload", Duration::from_millis(2000));
    assert!(more.len() <= 1, "at most two triggers, got {}: {more:?}", more.len() + 1);
    // The watcher's own events list every file (the wire carries as many as fit in a line).
    let mut files: Vec<String> = Vec::new();
    for _ in 0..=more.len() {
        let trigger = watcher.wait_event("trigger");
        files.extend(trigger["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()));
    }
    files.sort();
    files.dedup();
    assert_eq!(files.len(), 500, "every changed file is named");
}

#[test]
fn the_watcher_survives_a_receiver_restart() {
    let s = setup();
    let (watcher, _) = s.watch(&[]);
    let port = s.receiver.port();
    let Setup { env, repo, receiver } = s;
    drop(receiver);
    repo.write("app/views.py", "VALUE = 5\n");
    let undelivered = watcher.wait_event("undelivered");
    assert!(undelivered["error"].as_str().unwrap().contains("connection refused"), "{undelivered}");

    let addr = format!("127.0.0.1:{port}");
    let receiver =
        env.listen_at(&addr, env.path(), &["--settle", "0", "--touch", env.join("app.reload").to_str().unwrap()]);
    // First the change it missed (tests/faults.rs covers that), then a new save as usual.
    assert_eq!(receiver.wait_event("reload")["reason"], "missed");
    repo.write("app/views.py", "VALUE = 6\n");
    let event = receiver.wait_event("reload");
    assert_eq!((event["files"][0].as_str(), event["reason"].as_str()), (Some("app/views.py"), Some("save")), "{event}");
}

#[test]
fn only_directories_that_can_hold_a_relevant_file_are_watched() {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write(".gitignore", "venv/\nnode_modules/\n");
    for i in 0..10 {
        repo.write(&format!("app/part{i}/code.py"), "X = 1\n");
    }
    for i in 0..200 {
        repo.write(&format!("venv/lib/pkg{i}/mod.py"), "# vendored\n");
        repo.write(&format!("node_modules/dep{i}/index.js"), "//\n");
    }
    repo.commit_all("tree");
    let receiver = env.listen(&["--touch", env.join("r").to_str().unwrap()]);
    let (_watcher, ready) = env.watch_in(&repo.root, &["--to", &receiver.addr]);
    // The root, app/, its ten parts, and the git directory: nothing under venv/ or node_modules/.
    assert_eq!(ready["dirs"], 1 + 1 + 10 + 1, "{ready}");
    assert_eq!(ready["relevant"], 10, "{ready}");
}

#[test]
fn the_watcher_works_in_a_linked_worktree() {
    let s = setup();
    let linked = s.env.join("linked");
    s.repo.git(&["worktree", "add", "-q", "-b", "feature", linked.to_str().unwrap()]);
    let (_watcher, ready) = s.env.watch_in(&linked, &["--to", &s.receiver.addr]);
    assert_eq!(ready["relevant"], 2, "{ready}");
    std::fs::write(linked.join("app/views.py"), "VALUE = 7\n").unwrap();
    assert_eq!(s.next_trigger(), ["app/views.py"]);
}

#[test]
fn send_path_sends_only_for_relevant_files() {
    let s = setup();
    let views = s.repo.root.join("app/views.py");
    // Run from elsewhere, as an editor may: the file's own repository decides.
    s.env
        .run_in(s.env.path(), &["send", "--to", &s.receiver.addr, "--path", views.to_str().unwrap()])
        .expect_code(0)
        .expect_stderr("reloaded app");
    assert_eq!(s.next_trigger(), ["app/views.py"]);

    let site = s.repo.root.join("venv/lib/site.py");
    let readme = s.repo.root.join("README.txt");
    s.env
        .run_in(
            s.env.path(),
            &[
                "send",
                "-v",
                "--to",
                &s.receiver.addr,
                "--path",
                site.to_str().unwrap(),
                "--path",
                readme.to_str().unwrap(),
            ],
        )
        .expect_code(0)
        .expect_stderr("git ignores it")
        .expect_stderr("its extension is not watched");
    s.no_trigger("send --path of irrelevant files", QUIET);
}

#[test]
fn send_path_outside_any_repository_sends_nothing() {
    let env = Env::new();
    let script = env.join("scratch.py");
    std::fs::write(&script, "print(1)\n").unwrap();
    env.run(&["send", "-v", "--to", "127.0.0.1:9", "--path", script.to_str().unwrap()])
        .expect_code(0)
        .expect_stderr("it is outside any git work tree");
}

#[test]
fn watch_outside_a_repository_is_a_usage_error() {
    let env = Env::new();
    env.run(&["watch", "--to", "127.0.0.1:9"]).expect_code(2).expect_stderr("is not inside a git repository");
}

#[test]
fn the_guests_touch_of_a_shared_relevant_file_never_loops_back() {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app/wsgi.py", "application = None\n");
    repo.write("app/views.py", "VALUE = 1\n");
    repo.commit_all("init");
    // uWSGI setups often touch-reload on wsgi.py itself; here the guest shares the host's inode.
    let receiver = env.listen(&["--settle", "0", "--touch", repo.root.join("app/wsgi.py").to_str().unwrap()]);
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr]);
    watcher.wait_event("connected");
    repo.write("app/views.py", "VALUE = 2\n");
    assert_eq!(receiver.wait_event("reload")["files"], serde_json::json!(["app/views.py"]));
    let extra = receiver.named_within("reload", QUIET);
    assert!(extra.is_empty(), "the touch came back as a trigger: {extra:?}");
}

#[test]
fn a_directory_moved_out_of_the_tree_is_a_trigger_for_its_files() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    std::fs::rename(s.repo.root.join("app"), s.env.join("trash-app")).unwrap();
    let mut files = s.next_trigger();
    files.sort();
    assert_eq!(files, ["app/models.py", "app/views.py"]);
}

#[test]
fn polling_sees_edits_but_not_touches() {
    let s = setup();
    let (_watcher, _) = s.watch(&["--poll=100"]);
    s.repo.write("app/views.py", "VALUE = 'polled'\n");
    assert_eq!(s.next_trigger(), ["app/views.py"]);
    std::thread::sleep(Duration::from_millis(300));
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::open(s.repo.root.join("app/views.py")).unwrap().set_modified(later).unwrap();
    s.no_trigger("an mtime change under --poll", QUIET);
}

#[test]
fn the_watcher_says_when_its_token_is_wrong() {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    let (good, bad) = (env.join("good-token"), env.join("bad-token"));
    std::fs::write(&good, "the-right-token-0123").unwrap();
    std::fs::write(&bad, "the-wrong-token-0123").unwrap();
    let receiver = env.listen(&["--touch", env.join("r").to_str().unwrap(), "--token-file", good.to_str().unwrap()]);
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr, "--token-file", bad.to_str().unwrap()]);
    let event = watcher.wait_event("disconnected");
    assert!(event["error"].as_str().unwrap().contains("unauthorized: wrong token"), "{event}");
}

#[test]
fn a_slow_action_is_reported_once_and_never_run_twice() {
    let env = Env::new();
    let repo = Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    let runs = env.join("runs");
    let script = format!("echo run >> {}; sleep 1", runs.display());
    let receiver = env.listen(&["--settle", "0", "--exec", "sh", "-c", &script]);
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr, "--timeout", "300"]);
    watcher.wait_event("connected");
    repo.write("app.py", "X = 2\n");
    let event = watcher.wait_event("undelivered");
    assert!(event["error"].as_str().unwrap().contains("the action may still be running"), "{event}");
    receiver.wait_event("reload");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1, "the trigger was not sent again");
}

#[test]
fn a_stopping_watcher_sends_the_changes_it_still_holds() {
    let s = setup();
    // A long debounce holds the deletion (a removal never leads) in the open burst.
    let (mut watcher, _) = s.watch(&["--debounce", "5000"]);
    std::fs::remove_file(s.repo.root.join("app/models.py")).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // for the watcher to take the event in
    assert_eq!(watcher.terminate(), Some(0), "{}", watcher.stderr());
    assert_eq!(s.next_trigger(), ["app/models.py"]);
}

/// Writes `content` at the relative path `rel`, given as bytes (a name that may not be UTF-8).
fn write_bytes(repo: &Repo, rel: &[u8], content: &str) {
    use std::os::unix::ffi::OsStrExt;
    let path = repo.root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn names_that_are_not_utf8_trigger_and_travel_lossily() {
    let s = setup();
    write_bytes(&s.repo, b"app/caf\xe9.py", "A = 1\n");
    write_bytes(&s.repo, b"d\xff/m.py", "M = 1\n");
    s.repo.commit_all("latin-1 names");
    let (_watcher, ready) = s.watch(&[]);
    assert_eq!(ready["relevant"], 4, "{ready}");
    write_bytes(&s.repo, b"app/caf\xe9.py", "A = 2\n");
    assert_eq!(s.next_trigger(), ["app/caf\u{fffd}.py"]);
    write_bytes(&s.repo, b"d\xff/m.py", "M = 2\n");
    assert_eq!(s.next_trigger(), ["d\u{fffd}/m.py"]);
    // A new directory whose name is not UTF-8 is watched like any other.
    write_bytes(&s.repo, b"n\xfe/new.py", "N = 1\n");
    assert_eq!(s.next_trigger(), ["n\u{fffd}/new.py"]);
}

#[test]
fn a_dangling_link_and_a_close_without_a_write_are_no_change() {
    let s = setup();
    let (_watcher, _) = s.watch(&[]);
    // Emacs's lock file: a link to "user@host.pid:boot", made when a buffer is modified and
    // removed at the save.
    let lock = s.repo.root.join("app/.#views.py");
    std::os::unix::fs::symlink("user@host.12345:1700000000", &lock).unwrap();
    std::fs::remove_file(&lock).unwrap();
    // A bare `touch` of an existing file: open for writing, set both times, close; nothing
    // written. (Setting the mtime alone reports IN_MODIFY, which inotify cannot tell from a write.)
    let views = s.repo.root.join("app/views.py");
    assert!(std::process::Command::new("touch").arg(&views).status().unwrap().success());
    s.no_trigger("an Emacs lock file and a touch", QUIET);
    s.repo.write("app/views.py", "VALUE = 3\n");
    assert_eq!(s.next_trigger(), ["app/views.py"], "the watcher is alive");
}

#[test]
fn a_link_to_a_directory_is_never_followed_nor_watched() {
    let s = setup();
    s.repo.write("app/sub/deep.py", "D = 1\n");
    s.repo.commit_all("sub");
    let outside = s.env.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.py"), "S = 1\n").unwrap();
    std::os::unix::fs::symlink(&outside, s.repo.root.join("app/out")).unwrap();
    let (watcher, ready) = s.watch(&["--tracked-only"]);
    let dirs = ready["dirs"].clone();
    // A link to the tree's own `app`, renamed in while watching (`ln -s .. /tmp/l && mv /tmp/l app/sub/loop`).
    let tmp = s.env.join("l");
    std::os::unix::fs::symlink("..", &tmp).unwrap();
    std::fs::rename(&tmp, s.repo.root.join("app/sub/loop")).unwrap();
    std::fs::write(outside.join("secret.py"), "S = 2\n").unwrap();
    s.no_trigger("a link to a directory, and a file outside the tree", QUIET);
    s.repo.write("app/sub/deep.py", "D = 2\n");
    assert_eq!(s.next_trigger(), ["app/sub/deep.py"]);
    s.repo.write("app/views.py", "VALUE = 2\n");
    assert_eq!(s.next_trigger(), ["app/views.py"], "no remapped watch: never app/sub/loop/views.py");
    // With the link gone, tracked files keep triggering under their own names.
    std::fs::remove_file(s.repo.root.join("app/sub/loop")).unwrap();
    s.repo.write("app/sub/deep.py", "D = 3\n");
    assert_eq!(s.next_trigger(), ["app/sub/deep.py"]);
    s.repo.write("app/models.py", "MODEL = 3\n");
    assert_eq!(s.next_trigger(), ["app/models.py"]);
    let triggers: Vec<Value> = watcher.events_within(Duration::from_millis(100));
    assert!(triggers.iter().all(|e| !e.to_string().contains("loop/")), "{triggers:?}");
    assert_eq!(dirs, ready["dirs"], "{ready}");
}

#[test]
fn polling_never_opens_a_fifo_or_reads_a_device() {
    let s = setup();
    std::os::unix::fs::symlink("/dev/zero", s.repo.root.join("app/zero.py")).unwrap();
    s.repo.commit_all("a tracked link to /dev/zero");
    let fifo = std::ffi::CString::new(s.repo.root.join("app/x.py").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Ready at all: the FIFO has no writer and /dev/zero has no end.
    let (_watcher, ready) = s.watch(&["--poll=100"]);
    assert_eq!(ready["relevant"], 2, "views and models; a link to a device is no Python file: {ready}");
    s.repo.write("app/views.py", "VALUE = 'polled'\n");
    assert_eq!(s.next_trigger(), ["app/views.py"]);
}

/// utime + stime of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf(3) reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn a_checkout_rewriting_1000_gitignore_files_is_one_prompt_trigger() {
    let s = setup();
    for i in 0..1000 {
        s.repo.write(&format!("g/d{}/e{i:04}/.gitignore", i % 40), "*.log\n");
    }
    s.repo.commit_all("1000 ignore files");
    s.repo.git(&["checkout", "-q", "-b", "other"]);
    for i in 0..1000 {
        s.repo.write(&format!("g/d{}/e{i:04}/.gitignore", i % 40), "*.log\n*.tmp\n");
    }
    s.repo.write("app/views.py", "VALUE = 'other'\n");
    s.repo.commit_all("rewritten rules");
    s.repo.git(&["checkout", "-q", "main"]);
    let (watcher, _) = s.watch(&[]);
    let cpu_before = cpu_time(watcher.pid());
    s.repo.git(&["checkout", "-q", "other"]);
    let ended = std::time::Instant::now();
    // Before the fix each .gitignore event scanned the whole tree: 53-75 s for this checkout.
    assert_eq!(s.next_trigger(), ["app/views.py"]);
    let (late, cpu) = (ended.elapsed(), cpu_time(watcher.pid()) - cpu_before);
    eprintln!("trigger {} ms after the checkout, watcher CPU {} ms", late.as_millis(), cpu.as_millis());
    // Generous bounds for a debug build on a loaded machine; `cargo bench --bench watch` measures.
    assert!(late < Duration::from_secs(5) && cpu < Duration::from_secs(5), "{late:?}, {cpu:?} of CPU");
    // The subtrees were re-evaluated: a new rule holds there.
    s.repo.write("g/d3/e0003/new.tmp", "x\n");
    s.repo.write("g/d3/e0003/new.py", "X = 1\n");
    assert_eq!(s.next_trigger(), ["g/d3/e0003/new.py"]);
}

/// The directories under `root`, itself included, links not followed (bounded: a test tree).
fn count_dirs(root: &std::path::Path) -> usize {
    let (mut stack, mut count) = (vec![root.to_path_buf()], 0);
    while let Some(dir) = stack.pop().filter(|_| count < 100_000) {
        count += 1;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    count
}

/// Whether this machine lets an unprivileged user namespace lower its own inotify limit (the
/// test of the limit needs no root and leaves the machine's setting alone).
fn user_namespaces() -> bool {
    let works = std::process::Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", "echo 30 > /proc/sys/user/max_inotify_watches"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must allow user namespaces (unshare -U -r)");
        eprintln!("skipping: `unshare -U -r` cannot set user.max_inotify_watches here");
    }
    works
}

#[test]
fn directories_beyond_the_watch_limit_are_polled_and_said_once() {
    if !user_namespaces() {
        return;
    }
    let s = setup();
    for i in 0..20 {
        s.repo.write(&format!("pkg/m{i}/mod.py"), "M = 1\n");
    }
    s.repo.commit_all("20 packages");
    // 30 watches for this user namespace: the tree takes about 25, new directories run out. The
    // recursive backend watches every directory (`.git/objects` too): a few more than it holds.
    let limit = match std::env::var("TOUCHWIRE_WATCH_BACKEND").as_deref() {
        Ok("recursive") => count_dirs(&s.repo.root) + 5,
        _ => 30,
    };
    let script = format!("echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"");
    let wrapper = ["unshare", "-U", "-r", "sh", "-c", &script];
    let watcher = s.env.spawn_via(&wrapper, &s.repo.root, &["watch", "--json", "--to", s.receiver.addr.as_str()]);
    watcher.wait_event("ready");
    watcher.wait_event("connected");
    for i in 0..20 {
        s.repo.write(&format!("new/n{i:02}/x.py"), "X = 1\n");
    }
    // The first saves lead, the rest come in the burst (those in directories without a watch
    // with the next poll, 500 ms on: the quiet that ends the wait is longer than that); then a
    // late edit in the last directory, which has no watch, is seen by polling.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < deadline
        && !s.receiver.named_within("reload", Duration::from_millis(800)).is_empty()
    {}
    s.repo.write("new/n19/x.py", "X = 2\n");
    assert_eq!(s.next_trigger(), ["new/n19/x.py"]);
    let stderr = watcher.wait_stderr("fs.inotify.max_user_watches");
    assert_eq!(stderr.matches("limit on inotify watches is reached").count(), 1, "said once:\n{stderr}");
    assert!(stderr.contains("sudo sysctl fs.inotify.max_user_watches="), "{stderr}");
}

/// The whole file again with the recursive backend (the code path of macOS and Windows, on
/// notify's inotify in recursive mode), in a child run of this test binary.
#[test]
fn every_test_here_passes_with_the_recursive_backend_too() {
    if std::env::var("TOUCHWIRE_WATCH_BACKEND").is_ok_and(|b| !b.is_empty()) {
        return; // this is the child run (or the caller chose a backend)
    }
    let me = std::env::current_exe().unwrap();
    let output = std::process::Command::new(me)
        .args(["--skip", "every_test_here_passes_with_the_recursive_backend_too", "--test-threads", "1"])
        .env("TOUCHWIRE_WATCH_BACKEND", "recursive")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "with TOUCHWIRE_WATCH_BACKEND=recursive:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_json_watcher_whose_reader_went_away_stops() {
    use std::io::BufRead;
    let s = setup();
    let mut child = s
        .env
        .command(&s.repo.root, &["watch", "--json", "--to", &s.receiver.addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Bounded: the watcher says "ready" within its first few lines.
    for _ in 0..20 {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 || line.contains("\"event\":\"ready\"") {
            break;
        }
    }
    assert!(line.contains("\"event\":\"ready\""), "no ready event: {line}");
    // The reader (an editor's extension host, say) is gone.
    drop(stdout);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the watcher kept running with nobody reading its --json output");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping: the reader of --json output is gone"), "{stderr}");
}

#[test]
fn send_path_follows_tracked_only_from_the_config() {
    let s = setup();
    s.repo.write("app/draft.py", "DRAFT = 1\n");
    s.repo.write(".touchwire.json", r#"{"tracked_only": true}"#);
    let draft = s.repo.root.join("app/draft.py");
    let send = |extra: &[&str]| {
        let mut args = vec!["send", "-v", "--to", &s.receiver.addr, "--path", draft.to_str().unwrap()];
        args.extend_from_slice(extra);
        s.env.run_in(s.env.path(), &args)
    };
    send(&[]).expect_code(0).expect_stderr("not sending for");
    s.no_trigger("an untracked file with tracked_only", QUIET);
    // The file says tracked only; a watcher's flag says otherwise for its run.
    let (watcher, _) = s.watch(&["--no-tracked-only"]);
    s.repo.write("app/draft.py", "DRAFT = 2\n");
    assert_eq!(s.next_trigger(), ["app/draft.py"]);
    drop(watcher);
}
