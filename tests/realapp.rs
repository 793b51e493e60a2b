//! A real Django project in a real guest over a real shared folder (issue 14): the guest is a
//! network namespace that sees the host's work tree through sshfs from the host's own sshd
//! (tests/util/guest.rs), as Lima and Colima give it, so it hears no file event of a host edit and
//! caches attributes; the app is `wagtail start mysite` (Django, ~1,600 modules) run by Debian's
//! uWSGI in the guest, with the virtualenv on the guest's side and the code on the mount.
//!
//! The virtualenv and the project come from scripts/realapp-setup, cached in
//! ~/.cache/touchwire-realapp (or $TOUCHWIRE_REALAPP_CACHE): its first run pip-installs Wagtail
//! (a minute or two); later runs take a moment. Needs root, iproute2, util-linux, openssh-server,
//! openssh-client, sshfs, fuse3, inotify-tools, uwsgi, uwsgi-plugin-python3, python3-venv and
//! git (scripts/test installs them). Locally a missing tool skips a test, saying so; in CI it fails.
#![cfg(target_os = "linux")]

#[path = "util/guest.rs"]
mod guest;
mod util;
#[path = "util/wagtail.rs"]
mod wagtail;

use guest::{GUEST_ADDR, Guest, MountOptions};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use util::Env;

/// Whether `tool` is installed: locally a missing one skips the test (saying so), in CI it fails.
fn need(tool: &str) -> bool {
    let found = guest::have(tool);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have {tool} installed (scripts/test installs it)"
        );
        eprintln!("skipping: {tool} is not installed (scripts/test installs it when run as root)");
    }
    found
}

/// Root, the guest's tools and `extra`.
fn guest_ready(extra: &[&str]) -> bool {
    if !util::require_root("network namespaces, sshd and a FUSE mount") {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have /dev/fuse");
        eprintln!("skipping: no /dev/fuse");
        return false;
    }
    guest::TOOLS.iter().map(|(tool, _)| *tool).chain(extra.iter().copied()).all(need)
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
fn within<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines inotifywait printed after it said it was watching.
fn events(log: &str) -> Vec<String> {
    let after = log.split_once("Watches established.").map_or("", |(_, rest)| rest);
    after.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn inotify_in_the_guest_hears_nothing_of_a_host_edit_while_its_bytes_arrive() {
    if !guest_ready(&["inotifywait"]) {
        return;
    }
    let env = Env::new();
    let shared = env.join("shared");
    fs::create_dir_all(shared.join("app")).unwrap();
    fs::write(shared.join("app/value.py"), "VALUE = 'one'\n").unwrap();
    let mut guest = Guest::start("i", &shared, MountOptions::default()).expect("cannot start the guest");
    let seen = guest.mount.join("app/value.py");
    assert_eq!(fs::read_to_string(&seen).unwrap(), "VALUE = 'one'\n", "the guest reads the shared file");

    let mut inotify = guest.guest("inotifywait");
    inotify.args(["-m", "-r", "-e", "modify,close_write,moved_to,create,delete,attrib", "--format", "%e %w%f"]);
    inotify.arg(&guest.mount);
    guest.spawn("inotifywait", inotify).unwrap();
    within(Duration::from_secs(10), || guest.said("inotifywait").contains("Watches established.").then_some(()))
        .unwrap_or_else(|| panic!("inotifywait never watched the mount: {}", guest.said("inotifywait")));

    // The host edits the file, as an editor on the host does: the guest's inotify must stay silent.
    let edited = Instant::now();
    fs::write(shared.join("app/value.py"), "VALUE = 'two, a longer line'\n").unwrap();
    fs::write(shared.join("app/new.py"), "NEW = 1\n").unwrap();
    let arrived = within(Duration::from_secs(60), || {
        (fs::read_to_string(&seen).ok()? == "VALUE = 'two, a longer line'\n").then(|| edited.elapsed())
    });
    let arrived = arrived.unwrap_or_else(|| {
        panic!("the host's edit never reached the guest in 60 s: it reads {:?}", fs::read_to_string(&seen))
    });
    assert!(guest.mount.join("app/new.py").exists(), "a new host file is seen by the guest");
    std::thread::sleep(Duration::from_millis(500));
    let heard = events(&guest.said("inotifywait"));
    assert!(heard.is_empty(), "inotify in the guest heard a host-side edit over sshfs: {heard:?}");
    eprintln!("the host's edit reached the guest after {} ms; its inotify heard nothing", arrived.as_millis());

    // Control: a write made through the mount in the guest is heard, so the silence above is sshfs's.
    fs::write(guest.mount.join("app/guest.py"), "X = 1\n").unwrap();
    within(Duration::from_secs(10), || {
        events(&guest.said("inotifywait")).iter().any(|e| e.ends_with("guest.py")).then_some(())
    })
    .unwrap_or_else(|| panic!("inotifywait missed a write in the guest itself: {}", guest.said("inotifywait")));
    assert_eq!(
        fs::read_to_string(shared.join("app/guest.py")).unwrap(),
        "X = 1\n",
        "the guest's write reached the host"
    );
}

// ---------------------------------------------------------------------------------------------
// The Wagtail app under uWSGI in the guest, reloaded by touchwire's fifo `r` + poke
// ---------------------------------------------------------------------------------------------

/// The uWSGI tests run one at a time: two Wagtail apps reloading side by side on two cores only
/// make each slower.
static ONE_APP_AT_A_TIME: Mutex<()> = Mutex::new(());

const WORKERS: usize = 2;
const HTTP_PORT: u16 = 8000;
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// Longest a (re)load of the app may take here: two busy cores, ~1,600 modules.
const RELOAD_LIMIT: Duration = Duration::from_secs(60);
/// How long a worker holds a request, so that [`WORKERS`] concurrent requests reach every worker.
const HOLD_MS: u64 = 300;

/// The project in the host's work tree, uWSGI and `touchwire listen` in the guest.
struct App {
    env: Env,
    repo: PathBuf,
    guest: Guest,
}

impl App {
    fn start(tag: &str) -> App {
        let cache = wagtail::setup().expect("scripts/realapp-setup failed");
        let env = Env::new();
        let shared = env.join("host");
        fs::create_dir_all(&shared).unwrap();
        let repo = shared.join("mysite");
        let mut guest = Guest::start(tag, &shared, MountOptions::default()).expect("cannot start the guest");
        let fifo = guest.local("uwsgi.fifo");
        // One config for both sides, shared like the code: `root` "." is the work tree, wherever it is seen.
        let config = json!({
            "remote": format!("{GUEST_ADDR}:9001"),
            "listen": format!("{GUEST_ADDR}:9001"),
            "token_file": ".git/touchwire/token",
            "root": ".",
            "extensions": ["py", "html"],
            "targets": {"app": {"fifo": fifo, "command": "r"}},
            "default_target": "app",
        });
        wagtail::new_repo(&cache, &repo, &config, TOKEN).unwrap();
        let seen = guest.guest_path(&repo).unwrap();
        let mut uwsgi = guest.guest("uwsgi");
        uwsgi.args(wagtail::uwsgi_args(&cache.venv, &seen, &format!("{GUEST_ADDR}:{HTTP_PORT}"), WORKERS));
        uwsgi.arg("--master-fifo").arg(&fifo);
        guest.spawn("uwsgi", uwsgi).unwrap();
        let app = App { env, repo, guest };
        app.expect_every_worker("start", "the first start");

        let mut listen = app.guest.guest(env!("CARGO_BIN_EXE_touchwire"));
        listen.args(["listen", "--json"]).current_dir(&seen);
        listen.env("HOME", app.env.path()).env("XDG_CONFIG_HOME", app.env.join("xdg"));
        let mut app = app;
        app.guest.spawn("listen", listen).unwrap();
        within(Duration::from_secs(10), || app.guest.said("listen").contains("\"listening\"").then_some(()))
            .unwrap_or_else(|| panic!("touchwire listen never listened: {}", app.guest.said("listen")));
        app
    }

    /// `touchwire send --path mysite/marker.py` from the host namespace, started now.
    fn send(&self) -> std::process::Child {
        let mut send = self.guest.host(env!("CARGO_BIN_EXE_touchwire"));
        send.args(["send", "--timeout", "20000", "--path", wagtail::MARKER_FILE]).current_dir(&self.repo);
        send.env("HOME", self.env.path()).env("XDG_CONFIG_HOME", self.env.join("xdg"));
        send.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot run touchwire send")
    }

    /// One round of [`WORKERS`] concurrent held requests: each answer's marker and pid.
    fn round(&self) -> Vec<Result<(String, u32), String>> {
        let addr = format!("{GUEST_ADDR}:{HTTP_PORT}").parse().unwrap();
        let path = format!("{}?hold={HOLD_MS}", wagtail::MARKER_PATH);
        let answers = self.guest.in_host(|| {
            std::thread::scope(|scope| {
                let asks: Vec<_> = (0..WORKERS)
                    .map(|_| scope.spawn(|| guest::http_get(addr, &path, Duration::from_secs(10))))
                    .collect();
                asks.into_iter().map(|ask| ask.join().expect("a request thread panicked")).collect::<Vec<_>>()
            })
        });
        answers
            .expect("cannot reach the host namespace")
            .into_iter()
            .map(|answer| match answer {
                Ok((200, body)) => wagtail::parse(&body).ok_or(format!("unreadable answer {body:?}")),
                Ok((code, body)) => Err(format!("HTTP {code}: {}", body.chars().take(200).collect::<String>())),
                Err(err) => Err(format!("{err:#}")),
            })
            .collect()
    }

    /// Whether one round's answers all carry `marker`, from [`WORKERS`] different workers.
    fn every_worker(answers: &[Result<(String, u32), String>], marker: &str) -> bool {
        let pids: std::collections::BTreeSet<u32> =
            answers.iter().filter_map(|a| a.as_ref().ok()).filter(|(m, _)| m == marker).map(|(_, pid)| *pid).collect();
        pids.len() == WORKERS && answers.iter().all(|a| a.is_ok())
    }

    /// Waits (at most [`RELOAD_LIMIT`]) until every worker serves `marker`, then checks that three
    /// more rounds say the same; panics with what was served and the logs otherwise.
    #[track_caller]
    fn expect_every_worker(&self, marker: &str, what: &str) -> Duration {
        let began = Instant::now();
        let mut last = Vec::new();
        let served = within(RELOAD_LIMIT, || {
            last = self.round();
            App::every_worker(&last, marker).then(|| began.elapsed())
        });
        let Some(took) = served else {
            panic!(
                "{what}: the workers did not all serve {marker:?} within {RELOAD_LIMIT:?}; last answers {last:?}\n\
                 uWSGI:\n{}\nlisten:\n{}",
                tail(&self.guest.said("uwsgi")),
                tail(&self.guest.said("listen"))
            );
        };
        for _ in 0..3 {
            let answers = self.round();
            assert!(
                App::every_worker(&answers, marker),
                "{what}: every worker served {marker:?}, then not: {answers:?}\nuWSGI:\n{}\nlisten:\n{}",
                tail(&self.guest.said("uwsgi")),
                tail(&self.guest.said("listen"))
            );
        }
        took
    }
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits (at most 60 s) for a `touchwire send` and returns its exit code and what it printed.
fn finish(mut send: std::process::Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while matches!(send.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = send.kill();
    let output = send.wait_with_output().expect("cannot wait for touchwire send");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text.trim().to_string())
}

fn app_ready() -> bool {
    guest_ready(&["uwsgi", "git"])
        && (Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() || need("uwsgi-plugin-python3"))
        && (Path::new("/usr/bin/python3").exists() || need("python3"))
}

#[test]
fn a_save_on_the_host_is_served_by_every_uwsgi_worker_of_a_wagtail_app_in_the_guest() {
    if !app_ready() {
        return;
    }
    let _one = ONE_APP_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let app = App::start("s");
    for (i, marker) in ["first", "second"].into_iter().enumerate() {
        wagtail::save(&app.repo, marker).unwrap();
        let (code, said) = finish(app.send());
        assert_eq!(code, 0, "save {}: touchwire send failed: {said}\nlisten:\n{}", i + 1, app.guest.said("listen"));
        let took = app.expect_every_worker(marker, &format!("save {}", i + 1));
        eprintln!("save {} served by every worker {} ms after send returned", i + 1, took.as_millis());
    }
}

/// Two saves of one length, the second `gap` after the first, each with its `touchwire send`
/// started at once (as an editor's hook does): every worker must end on the second.
fn double_save(app: &App, trial: usize, gap: Duration, same_second: bool) {
    if same_second {
        // Start early in a whole second, so that both saves fall in it (their mtimes' seconds equal).
        within(Duration::from_secs(2), || {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            (now.subsec_millis() < 100).then_some(())
        })
        .unwrap();
    }
    let (first, second) = (format!("t{trial}a"), format!("t{trial}b"));
    wagtail::save(&app.repo, &first).unwrap();
    let send_first = app.send();
    std::thread::sleep(gap);
    wagtail::save(&app.repo, &second).unwrap();
    let send_second = app.send();
    let (first_code, first_said) = finish(send_first);
    let (second_code, second_said) = finish(send_second);
    let what = format!(
        "trial {trial} (gap {} ms{}; sends exited {first_code}: {first_said:?} and {second_code}: {second_said:?})",
        gap.as_millis(),
        if same_second { ", one whole second" } else { "" }
    );
    let took = app.expect_every_worker(&second, &what);
    eprintln!("{what}: the second save served by every worker {} ms after the sends returned", took.as_millis());
}

#[test]
fn the_last_of_two_quick_saves_of_one_length_is_served_by_every_worker() {
    if !app_ready() {
        return;
    }
    let _one = ONE_APP_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let app = App::start("d");
    double_save(&app, 0, Duration::from_millis(300), true);
    for trial in 1..5 {
        let gap = 50 + u64::from(getrandom::u32().unwrap() % 1451);
        double_save(&app, trial, Duration::from_millis(gap), false);
    }
}
