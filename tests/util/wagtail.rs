//! The real Django project of tests/realapp.rs and benches/realapp.rs: `wagtail start mysite`
//! in a virtualenv made by scripts/realapp-setup (cached between runs), copied per test into a
//! git work tree; `GET /marker/` answers `MARKER PID`, MARKER from `mysite/marker.py` (the file a
//! save changes), PID the worker's. `?hold=MS` keeps the worker busy, so that concurrent
//! requests reach every worker. Depends on nothing else in tests/util; returns errors.
#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file a save changes, relative to the work tree.
pub const MARKER_FILE: &str = "mysite/marker.py";
/// The route that serves the marker.
pub const MARKER_PATH: &str = "/marker/";
/// The settings module `manage.py` and the WSGI module default to.
pub const SETTINGS: &str = "mysite.settings.dev";
/// Most the set-up may take: a first run pip-installs Wagtail.
const SETUP_LIMIT: Duration = Duration::from_secs(900);

/// The cached virtualenv and the pristine project.
#[derive(Debug, Clone)]
pub struct Cache {
    pub venv: PathBuf,
    pub project: PathBuf,
}

/// Runs scripts/realapp-setup (at once when cached; a first run downloads Wagtail from PyPI).
pub fn setup() -> Result<Cache> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/realapp-setup");
    let out = tempfile::tempfile()?;
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let deadline = Instant::now() + SETUP_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} still running after {} s (killed)", script.display(), SETUP_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    let mut out = out;
    std::io::Seek::rewind(&mut out)?;
    std::io::Read::read_to_string(&mut out, &mut text)?;
    if !status.success() {
        bail!("{} failed ({status}): {text}", script.display());
    }
    let dir = PathBuf::from(text.lines().last().unwrap_or("").trim());
    let cache = Cache { venv: dir.join("venv"), project: dir.join("project") };
    if !cache.venv.join("bin/python").exists() || !cache.project.join("manage.py").exists() {
        bail!("{} printed {dir:?}, which holds no venv and project", script.display());
    }
    Ok(cache)
}

fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("git")
        .args(["-c", "user.name=touchwire test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Copies the project into `repo` (a new directory), writes `config` as its `.touchwire.json`
/// and `token` as `.git/touchwire/token`, and commits it all.
pub fn new_repo(cache: &Cache, repo: &Path, config: &serde_json::Value, token: &str) -> Result<()> {
    if repo.exists() {
        bail!("{} exists already", repo.display());
    }
    let output = Command::new("cp").arg("-a").arg(&cache.project).arg(repo).output().context("cannot run cp")?;
    if !output.status.success() {
        bail!("cp -a {}: {}", cache.project.display(), String::from_utf8_lossy(&output.stderr));
    }
    std::fs::write(repo.join(".touchwire.json"), serde_json::to_string_pretty(config)?)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    std::fs::create_dir_all(repo.join(".git/touchwire"))?;
    std::fs::write(repo.join(".git/touchwire/token"), format!("{token}\n"))?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", "wagtail start mysite"])?;
    Ok(())
}

/// What `mysite/marker.py` holds for `marker`: saves of markers of one length have one length.
pub fn marker_source(marker: &str) -> String {
    format!("MARKER = \"{marker}\"\n")
}

/// Saves `marker` into the host's work tree, as an editor does (in place).
pub fn save(repo: &Path, marker: &str) -> Result<()> {
    std::fs::write(repo.join(MARKER_FILE), marker_source(marker)).context("cannot save the marker")
}

/// The marker and the worker's pid of an answer `MARKER PID`.
pub fn parse(body: &str) -> Option<(String, u32)> {
    let (marker, pid) = body.trim().rsplit_once(' ')?;
    Some((marker.to_string(), pid.parse().ok()?))
}

/// uWSGI's arguments for the project at `chdir` (the guest's path) with the `venv`, serving HTTP
/// on `http` with `processes` workers; the reload method's options go after.
pub fn uwsgi_args(venv: &Path, chdir: &Path, http: &str, processes: usize) -> Vec<String> {
    let mut args: Vec<String> = ["--plugin", "python3", "--master", "--die-on-term", "--disable-logging"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--virtualenv".into(), venv.display().to_string()]);
    args.extend(["--chdir".into(), chdir.display().to_string()]);
    args.extend(["--module".into(), "mysite.wsgi:application".into()]);
    args.extend(["--env".into(), format!("DJANGO_SETTINGS_MODULE={SETTINGS}")]);
    args.extend(["--processes".into(), processes.to_string(), "--http-socket".into(), http.into()]);
    args
}
