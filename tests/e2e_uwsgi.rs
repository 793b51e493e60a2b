//! The user's whole story across a simulated VM network: a guest network namespace running a
//! real uWSGI and `touchwire listen` (with a token), a host namespace running `touchwire watch`
//! and git, joined by a veth pair. An edit on the host is served by the guest moments later.
//! Needs root, iproute2, uwsgi and uwsgi-plugin-python3, curl (scripts/test installs them).
#![cfg(unix)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{Env, Repo, WAIT};

const HOST_ADDR: &str = "10.213.0.1";
const GUEST_ADDR: &str = "10.213.0.2";

/// Two network namespaces joined by a veth pair; deleted (with everything started in them) on drop.
struct Network {
    host: String,
    guest: String,
    children: Vec<Child>,
}

fn run(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

impl Network {
    fn new(tag: &str) -> Network {
        let id = format!("{}{tag}", std::process::id());
        let network = Network { host: format!("tw-host-{id}"), guest: format!("tw-guest-{id}"), children: Vec::new() };
        let (veth_host, veth_guest) = (format!("twh{id}"), format!("twg{id}"));
        run(&["ip", "netns", "add", &network.host]);
        run(&["ip", "netns", "add", &network.guest]);
        run(&[
            "ip",
            "-n",
            &network.host,
            "link",
            "add",
            &veth_host,
            "type",
            "veth",
            "peer",
            "name",
            &veth_guest,
            "netns",
            &network.guest,
        ]);
        for (ns, dev, addr) in [(&network.host, &veth_host, HOST_ADDR), (&network.guest, &veth_guest, GUEST_ADDR)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        network
    }

    /// A command run inside namespace `ns`.
    fn command(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]).env("PATH", util::path_with_touchwire()).stdin(Stdio::null());
        cmd
    }

    /// Starts a long-running process inside `ns`; it is killed when the network goes.
    fn spawn(&mut self, mut cmd: Command, log: &Path) {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        self.children.push(child);
    }

    /// The body of `http://GUEST_ADDR:8000/` fetched from the host namespace, if it answers.
    fn fetch(&self) -> Option<String> {
        let output = self
            .command(&self.host, "curl")
            .args(["-s", "--max-time", "2", &format!("http://{GUEST_ADDR}:8000/")])
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until the guest serves `expected`.
    #[track_caller]
    fn expect_served(&self, expected: &str, log: &Path) {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.fetch();
            if last.as_deref() == Some(expected) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the guest never served {expected:?} (last answer {last:?}); uWSGI log:\n{log}");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for child in &mut self.children {
            // TERM first, so that uWSGI (--die-on-term) takes its workers down with it.
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the PID of a child we started and have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.host, &self.guest] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ready() -> bool {
    util::require_root("network namespaces")
        && ["ip", "uwsgi", "curl"].iter().all(|tool| util::require(tool))
        && (Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists() || util::require("uwsgi-plugin-python3"))
}

/// The app: its answer is `app/value.py`'s VALUE; each (re)load appends a line to `loads`.
fn app_repo(env: &Env) -> Repo {
    let repo = Repo::init(env.join("repo"));
    repo.write(".gitignore", "venv/\n__pycache__/\n");
    repo.write("app/__init__.py", "");
    repo.write("app/value.py", "VALUE = 'one'\n");
    let loads = env.join("loads");
    repo.write(
        "wsgi.py",
        &format!(
            "from app.value import VALUE\nwith open({loads:?}, 'a') as f:\n    f.write('load\\n')\n\n\
             def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [VALUE.encode()]\n",
            loads = loads.display().to_string()
        ),
    );
    repo.write("venv/lib/site.py", "# vendored\n");
    repo.commit_all("app");
    repo.git(&["checkout", "-q", "-b", "other"]);
    repo.write("app/value.py", "VALUE = 'branch'\n");
    repo.commit_all("other value");
    repo.git(&["checkout", "-q", "main"]);
    std::fs::write(
        repo.root.join(".touchwire.json"),
        format!("{{\"remote\": \"{GUEST_ADDR}:9001\", \"token_file\": \"token\"}}"),
    )
    .unwrap();
    std::fs::write(repo.root.join("token"), "0123456789abcdef0123456789abcdef\n").unwrap();
    repo
}

fn loads(env: &Env) -> usize {
    std::fs::read_to_string(env.join("loads")).map(|s| s.lines().count()).unwrap_or(0)
}

/// Starts uWSGI and the receiver in the guest, the watcher in the host, on the app repository.
fn start(env: &Env, repo: &Repo, tag: &str, uwsgi_reload: &[String], listen_action: &[String]) -> Network {
    let mut net = Network::new(tag);
    let root = repo.root.to_str().unwrap();
    let mut uwsgi = net.command(&net.guest, "uwsgi");
    uwsgi.args(["--plugin", "python3", "--master", "--processes", "1", "--http-socket", &format!("{GUEST_ADDR}:8000")]);
    uwsgi.args(["--chdir", root, "--pythonpath", root, "--wsgi-file", "wsgi.py", "--die-on-term"]);
    uwsgi.args(uwsgi_reload);
    net.spawn(uwsgi, &env.join("uwsgi.log"));
    net.expect_served("one", &env.join("uwsgi.log"));

    let mut listen = net.command(&net.guest, env!("CARGO_BIN_EXE_touchwire"));
    listen.args(["listen", "--addr", &format!("{GUEST_ADDR}:9001"), "--token-file", &format!("{root}/token")]);
    listen.args(listen_action);
    net.spawn(listen, &env.join("listen.log"));

    let mut watch = net.command(&net.host, env!("CARGO_BIN_EXE_touchwire"));
    watch.args(["watch", root]).env("XDG_CONFIG_HOME", env.join("xdg"));
    net.spawn(watch, &env.join("watch.log"));
    util::eventually("the watcher connects to the guest", || {
        std::fs::read_to_string(env.join("watch.log")).is_ok_and(|log| log.contains("connected to"))
    });
    net
}

/// `touchwire status` from the host: the guest is reachable, authenticated, and its target ready.
fn status_shows(env: &Env, repo: &Repo, net: &Network, health: &str) {
    let output = net
        .command(&net.host, env!("CARGO_BIN_EXE_touchwire"))
        .arg("status")
        .current_dir(&repo.root)
        .env("XDG_CONFIG_HOME", env.join("xdg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for needle in ["auth on, token accepted", "targets app (default app)", &format!("target app: action ok: {health}")]
    {
        assert!(stdout.contains(needle), "status lacks {needle:?}:\n{stdout}");
    }
}

/// Edit, ignored edit, branch checkout through the hooks: each checked by what the guest serves.
fn story(env: &Env, repo: &Repo, net: &Network) {
    let log = env.join("uwsgi.log");
    repo.write("app/value.py", "VALUE = 'two'\n");
    net.expect_served("two", &log);

    let before = loads(env);
    repo.write("venv/lib/site.py", "# edited\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(loads(env), before, "an edit under the ignored venv/ reloaded the app");

    env.run_in(&repo.root, &["hooks", "install"]).expect_code(0);
    repo.git(&["stash", "-q"]);
    let output =
        net.command(&net.host, "git").args(["checkout", "-q", "other"]).current_dir(&repo.root).output().unwrap();
    assert!(output.status.success(), "git checkout: {}", String::from_utf8_lossy(&output.stderr));
    net.expect_served("branch", &log);
}

#[test]
fn an_edit_on_the_host_is_served_by_uwsgi_in_the_guest_with_touch_reload() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let repo = app_repo(&env);
    let reload: PathBuf = env.join("app.reload");
    std::fs::write(&reload, "").unwrap();
    let reload = reload.to_str().unwrap().to_string();
    let net = start(&env, &repo, "t", &["--touch-reload".into(), reload.clone()], &["--touch".into(), reload.clone()]);
    // The touch file exists (uWSGI's touch-reload needs it): the probe says it is a file there.
    status_shows(&env, &repo, &net, &format!("{reload} exists"));
    story(&env, &repo, &net);
}

#[test]
fn an_edit_on_the_host_is_served_by_uwsgi_in_the_guest_with_the_master_fifo() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let repo = app_repo(&env);
    let fifo = env.join("master.fifo").to_str().unwrap().to_string();
    let net = start(&env, &repo, "f", &["--master-fifo".into(), fifo.clone()], &["--fifo".into(), fifo]);
    status_shows(&env, &repo, &net, "uWSGI is attached");
    story(&env, &repo, &net);
}
