//! A web app as a user has it: a git work tree holding a small WSGI app (a page with the
//! LiveReload script tag, a stylesheet served from the tree), served by a real uWSGI reloaded
//! through its master FIFO by `touchwire listen` with a ready check on uWSGI's log, and
//! `touchwire watch --livereload` on the work tree. On loopback with ephemeral ports, or across
//! two network namespaces ([`Net`]): the guest's (uWSGI, the receiver) and the host's (the
//! watcher, the browser), joined by a veth pair.

#![allow(dead_code)]

use crate::util::{Daemon, Env, Listener, Repo};
use serde_json::json;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

/// The app: the page shows `app.views.MESSAGE`; `/static/*` is read from the tree per request.
pub const WSGI: &str = r#"import os
from app.views import MESSAGE

ROOT = os.path.dirname(os.path.abspath(__file__))
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<link rel="stylesheet" href="/static/site.css"></head>
<body><h1 id="msg">{message}</h1><input id="name">
<script src="{livereload}"></script></body></html>"""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/static/"):
        with open(os.path.join(ROOT, path.lstrip("/")), "rb") as f:
            body = f.read()
        start_response("200 OK", [("Content-Type", "text/css"), ("Cache-Control", "no-cache")])
        return [body]
    page = PAGE.format(message=MESSAGE, livereload=os.environ["LIVERELOAD_JS"])
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
    return [page.encode()]
"#;

/// The site and everything serving it; children are killed by their PID on drop.
pub struct Site {
    pub env: Env,
    pub repo: Repo,
    pub receiver: Listener,
    /// `touchwire watch --livereload`, unless the site was started without it.
    pub watcher: Option<Daemon>,
    /// The LiveReload server's address, HOST:PORT (the default port without a watcher).
    pub livereload: String,
    /// The page's URL.
    pub url: String,
    uwsgi: Child,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.uwsgi.kill();
        let _ = self.uwsgi.wait();
    }
}

/// Whether uWSGI with its Python plugin is here (see `util::require`).
pub fn uwsgi_installed() -> bool {
    crate::util::require("uwsgi")
        && (std::path::Path::new("/usr/lib/uwsgi/plugins/python3_plugin.so").exists()
            || crate::util::require("uwsgi-plugin-python3"))
}

/// Two network namespaces joined by a veth pair, deleted on drop (stop what runs in them first).
pub struct Net {
    pub host: String,
    pub guest: String,
}

/// The guest's address on the veth pair (a namespace of our own: nothing else is there).
pub const GUEST_ADDR: &str = "10.213.7.2";
const HOST_ADDR: &str = "10.213.7.1";

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("cannot run ip");
    assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

impl Net {
    /// Creates the pair of namespaces (needs root and iproute2).
    pub fn new() -> Net {
        let id = std::process::id();
        let net = Net { host: format!("twb-host-{id}"), guest: format!("twb-guest-{id}") };
        let (veth_host, veth_guest) = (format!("twbh{id}"), format!("twbg{id}"));
        ip(&["netns", "add", &net.host]);
        ip(&["netns", "add", &net.guest]);
        ip(&[
            "-n",
            &net.host,
            "link",
            "add",
            &veth_host,
            "type",
            "veth",
            "peer",
            "name",
            &veth_guest,
            "netns",
            &net.guest,
        ]);
        for (ns, dev, addr) in [(&net.host, &veth_host, HOST_ADDR), (&net.guest, &veth_guest, GUEST_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// Moves the calling thread into namespace `ns`: what it spawns and the sockets it opens
    /// from now on are there. Use it on a thread of its own.
    pub fn enter(ns: &str) {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns(2) on a descriptor we hold open; a network namespace may be entered per thread.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {ns}");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.host, &self.guest] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Site {
    /// Starts it all on loopback; `watch_args` are added to `touchwire watch` (`None`: no
    /// watcher, as when an editor starts it).
    pub fn start(watch_args: Option<&[&str]>) -> Site {
        Site::build(watch_args, None, "")
    }

    /// As [`Site::start`], with the script tag asking for swaps (`livereload.js?swap`).
    pub fn start_swapping(watch_args: &[&str]) -> Site {
        Site::build(Some(watch_args), None, "?swap")
    }

    /// Starts uWSGI and the receiver in `net`'s guest namespace; the watcher (with the token, as
    /// a non-loopback receiver demands) where the calling thread is: call it from a thread that
    /// entered the host namespace.
    pub fn start_across(net: &Net, watch_args: &[&str]) -> Site {
        Site::build(Some(watch_args), Some(net), "")
    }

    fn build(watch_args: Option<&[&str]>, net: Option<&Net>, query: &str) -> Site {
        let env = Env::new();
        let repo = Repo::init(env.join("repo"));
        repo.write("app/__init__.py", "");
        repo.write("app/views.py", "MESSAGE = 'one'\n");
        repo.write("wsgi.py", WSGI);
        repo.write("static/site.css", "h1 { color: rgb(0, 0, 255); }\n");
        repo.commit_all("app");
        let (fifo, log, token) = (env.join("master.fifo"), env.join("uwsgi.log"), env.join("token"));
        std::fs::write(&token, touchwire::auth::random_hex(32).unwrap()).unwrap();
        // `root` makes the receiver drop a saved module's stale .pyc (two saves in one second).
        let guest = json!({"token_file": token, "targets": {"app": {
            "fifo": fifo, "root": repo.root,
            "ready": {"preset": "uwsgi", "log": log, "timeout_ms": 15000}}}});
        std::fs::write(env.join("guest.json"), guest.to_string()).unwrap();
        let host = match net {
            Some(_) => GUEST_ADDR.to_string(),
            None => "127.0.0.1".to_string(),
        };
        let port = match net {
            Some(_) => 8000, // a fresh namespace has every port free
            None => TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        };
        let receiver = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if let Some(net) = net {
                        Net::enter(&net.guest);
                    }
                    env.listen_at(
                        &format!("{host}:0"),
                        env.path(),
                        &["--config", env.join("guest.json").to_str().unwrap()],
                    )
                })
                .join()
                .unwrap()
        });
        repo.write(".touchwire.json", &json!({"remote": receiver.addr, "token_file": token}).to_string());
        let (watcher, livereload) = match watch_args {
            Some(watch_args) => {
                let mut args = vec!["watch", "--json", "--livereload=0"];
                args.extend_from_slice(watch_args);
                let watcher = env.spawn(&repo.root, &args);
                let livereload = watcher.wait_event("livereload")["addr"].as_str().unwrap().to_string();
                watcher.wait_event("ready");
                (Some(watcher), livereload)
            }
            None => (None, "127.0.0.1:35729".to_string()),
        };

        let root = repo.root.to_str().unwrap();
        let mut uwsgi = Command::new("uwsgi");
        uwsgi
            .args(["--plugin", "python3", "--master", "--processes", "1"])
            .args(["--http-socket", &format!("{host}:{port}")])
            .args(["--chdir", root, "--pythonpath", root, "--wsgi-file", "wsgi.py"])
            .args(["--master-fifo", fifo.to_str().unwrap()])
            .args(["--env", &format!("LIVERELOAD_JS=http://{livereload}/livereload.js{query}")])
            .args(["--logto", log.to_str().unwrap()])
            .stdin(Stdio::null());
        let uwsgi = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if let Some(net) = net {
                        Net::enter(&net.guest);
                    }
                    uwsgi.spawn().expect("cannot start uwsgi")
                })
                .join()
                .unwrap()
        });
        let site = Site { env, repo, receiver, watcher, livereload, url: format!("http://{host}:{port}/"), uwsgi };
        crate::util::eventually("uWSGI to load the app", || {
            std::fs::read_to_string(&log).is_ok_and(|log| log.contains("WSGI app 0 (mountpoint='') ready"))
        });
        site
    }

    /// The watcher; panics for a site started without one.
    pub fn watcher(&self) -> &Daemon {
        self.watcher.as_ref().expect("this site has no watcher")
    }

    /// Saves `app/views.py` with `source`.
    pub fn save_views(&self, source: &str) {
        self.repo.write("app/views.py", source);
    }
}
