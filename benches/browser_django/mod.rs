//! The same Django app two ways, for the browser bench: uWSGI reloaded by touchwire (fifo, ready
//! check) with touchwire's script tag, and `manage.py runserver` with django-browser-reload (its
//! own autoreloader restarts the server; the page reloads when the new server answers its
//! event stream). Django and django-browser-reload come from PyPI into a virtualenv made with
//! Debian's python3 (the one uWSGI's python3 plugin embeds).

use super::{Run, cdp, unix_seconds, util};
use serde_json::json;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const VERSION_DJANGO: &str = "5.2.19";
pub const VERSION_PEER: &str = "1.21.0";

const SETTINGS: &str = r#"import os
SECRET_KEY = "bench"
DEBUG = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
PEER = bool(os.environ.get("PEER"))
INSTALLED_APPS = ["django.contrib.staticfiles"] + (["django_browser_reload"] if PEER else [])
MIDDLEWARE = ["django_browser_reload.middleware.BrowserReloadMiddleware"] if PEER else []
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
STATIC_URL = "static/"
DATABASES = {}
USE_TZ = True
"#;

const URLS: &str = r#"import os
from django.http import HttpResponse
from django.urls import include, path
from app.views import MESSAGE


def page(request):
    script = os.environ.get("LIVERELOAD_JS")
    tag = '<script src="%s"></script>' % script if script else ""
    return HttpResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>shop</title></head>"
        "<body><h1 id='msg'>%s</h1><input id='name'>%s</body></html>" % (MESSAGE, tag)
    )


urlpatterns = [path("", page)]
if os.environ.get("PEER"):
    urlpatterns.append(path("__reload__/", include("django_browser_reload.urls")))
"#;

const WSGI: &str = "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\nfrom django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n";
const MANAGE: &str = "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\nfrom django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n";

/// The virtualenv (`BENCH_DJANGO_VENV`, else made once in the temp dir), or why there is none.
pub fn venv() -> Result<PathBuf, String> {
    let venv = std::env::var_os("BENCH_DJANGO_VENV")
        .map_or_else(|| std::env::temp_dir().join("touchwire-bench-django-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let has = |python: &Path| {
        Command::new(python)
            .args(["-c", "import django, django_browser_reload"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has(&python) {
        return Ok(venv);
    }
    let made = Command::new("/usr/bin/python3").arg("-m").arg("venv").arg(&venv).status();
    if !made.is_ok_and(|s| s.success()) {
        return Err(format!("cannot make a virtualenv at {} with /usr/bin/python3", venv.display()));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            &format!("django=={VERSION_DJANGO}"),
            &format!("django-browser-reload=={VERSION_PEER}"),
        ])
        .status();
    match pip.is_ok_and(|s| s.success()) && has(&python) {
        true => Ok(venv),
        false => Err("pip could not install django and django-browser-reload".into()),
    }
}

/// A child killed by its PID (runserver's own reloader child with it: its process group) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on the process group this bench created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

fn project(env: &util::Env) -> util::Repo {
    let repo = util::Repo::init(env.join("repo"));
    repo.write("manage.py", MANAGE);
    repo.write("shop/__init__.py", "");
    repo.write("shop/settings.py", SETTINGS);
    repo.write("shop/urls.py", URLS);
    repo.write("shop/wsgi.py", WSGI);
    repo.write("app/__init__.py", "");
    repo.write("app/views.py", "MESSAGE = 'start'\n");
    repo.commit_all("django");
    repo
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(command: &mut Command) -> Guard {
    std::os::unix::process::CommandExt::process_group(command, 0);
    Guard(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

/// The saves against the app at `url`, the page open in chromium; `pause` between saves.
fn saves(repo: &util::Repo, url: &str, edits: usize, pause: Duration, mut told: impl FnMut(f64) -> Option<f64>) -> Run {
    util::eventually("the app to answer", || {
        super::get(url.trim_start_matches("http://").trim_end_matches('/')).is_some_and(|b| b.contains("start"))
    });
    let mut browser = cdp::Chromium::start(&[]);
    let tab = browser.open(url);
    browser.wait_for(&tab, "the page", "document.title === 'shop'", "document.title");
    std::thread::sleep(Duration::from_secs(1));
    let mut run = Run::default();
    for edit in 0..edits {
        let text = format!("v{edit}{}", "x".repeat(edit % 3));
        let saved = unix_seconds();
        run.save(&mut browser, &tab, url, &text, || repo.write("app/views.py", &format!("MESSAGE = '{text}'\n")));
        if let Some(ms) = told(saved) {
            run.told.push(ms);
        }
        // Let the page's own reload machinery settle (a fresh page connects again).
        std::thread::sleep(pause);
    }
    run
}

/// touchwire: uWSGI (the venv as its home), master FIFO, ready check; `watch --livereload`, the
/// script tag's URL ending in `query` (`?swap`: no navigation).
pub fn touchwire(venv: &Path, edits: usize, query: &str) -> Run {
    let env = util::Env::new();
    let repo = project(&env);
    let (fifo, log) = (env.join("master.fifo"), env.join("uwsgi.log"));
    let guest = json!({"targets": {"app": {"fifo": fifo, "root": repo.root,
        "ready": {"preset": "uwsgi", "log": log, "timeout_ms": 15000}}}});
    std::fs::write(env.join("guest.json"), guest.to_string()).unwrap();
    let receiver = env.listen(&["--config", env.join("guest.json").to_str().unwrap()]);
    repo.write(".touchwire.json", &json!({"remote": receiver.addr}).to_string());
    let watcher = env.spawn(&repo.root, &["watch", "--json", "--livereload=0"]);
    let livereload = watcher.wait_event("livereload")["addr"].as_str().unwrap().to_string();
    watcher.wait_event("ready");
    let port = port();
    let root = repo.root.to_str().unwrap();
    let _uwsgi = spawn(
        Command::new("uwsgi")
            .args([
                "--plugin",
                "python3",
                "--master",
                "--processes",
                "1",
                "--http-socket",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--chdir",
                root,
                "--pythonpath",
                root,
                "--home",
                venv.to_str().unwrap(),
                "--module",
                "shop.wsgi:application",
            ])
            .args(["--master-fifo", fifo.to_str().unwrap(), "--logto", log.to_str().unwrap()])
            .args(["--env", &format!("LIVERELOAD_JS=http://{livereload}/livereload.js{query}")]),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let run = saves(&repo, &url, edits, Duration::from_millis(300), |saved| {
        let time = watcher.wait_event("browser")["time"].as_f64()?;
        Some((time - saved) * 1000.0)
    });
    drop(receiver);
    run
}

/// The peer: runserver (its reloader restarts the server on a change) and django-browser-reload.
pub fn peer(venv: &Path, edits: usize) -> Run {
    let env = util::Env::new();
    let repo = project(&env);
    let port = port();
    let _server = spawn(
        Command::new(venv.join("bin/python"))
            .args(["manage.py", "runserver", &format!("127.0.0.1:{port}")])
            .current_dir(&repo.root)
            .env("PEER", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    // runserver's reloader polls once a second; a save every 1.5 s lets each restart finish.
    saves(&repo, &format!("http://127.0.0.1:{port}/"), edits, Duration::from_millis(1500), |_| None)
}
