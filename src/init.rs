//! `touchwire init`: writes `.touchwire.json` (committed, no secrets) and a fresh token under the
//! git directory (never tracked, yet shared with the guest along with the work tree). With
//! `--uwsgi` or `--gunicorn` it prints the fast setup for a real app instead (DESIGN.md, "A real
//! app, fast") and writes the warm-master helper next to the token.

use crate::cli::InitArgs;
use crate::config::{Config, FILE_NAME, Flags, defaults};
use crate::error::UsageError;
use anyhow::{Context, Result};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Sets up the repository holding `args.repo` (or the current directory).
pub fn command(args: InitArgs) -> Result<()> {
    if args.systemd_unit {
        // The guest's provisioning runs this, often as root in a folder owned by someone else:
        // no git needed.
        let dir = match &args.repo {
            Some(dir) => std::path::absolute(dir).context("cannot resolve --repo")?,
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        let binary = std::env::current_exe().context("cannot find this program's path")?;
        if let Some(warning) = unit_config_warning(&dir) {
            eprintln!("touchwire: warning: {warning}");
        }
        print!("{}", systemd_unit(&binary, &dir, args.user.as_deref()));
        return Ok(());
    }
    let start = match &args.repo {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if args.uwsgi || args.gunicorn {
        return fast_setup(&args, &start);
    }
    let repo = git2::Repository::discover(&start).map_err(|err| {
        UsageError(format!(
            "{} is not inside a git repository ({}); run init in your project or pass --repo",
            start.display(),
            err.message()
        ))
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| UsageError(format!("{} is a bare repository: init needs a work tree", repo.path().display())))?
        .to_path_buf();
    if let Some(editor) = args.editor {
        return crate::editor::install(editor, &workdir);
    }
    if args.token {
        return token_only(&repo, &workdir, &args.files.flags());
    }
    let config_path = workdir.join(FILE_NAME);
    if config_path.exists() && !args.force {
        return Err(
            UsageError(format!("{} exists already; pass --force to overwrite it", config_path.display())).into()
        );
    }
    // The common directory, so that linked worktrees share one token.
    let token_path = repo.commondir().join("touchwire").join("token");
    let fresh = write_token(&token_path)?;
    let token_setting = portable(&relative_to(&token_path, &workdir));
    let config = serde_json::json!({
        "remote": args.to,
        "listen": format!("0.0.0.0:{}", defaults::PORT),
        "token_file": token_setting,
        "targets": { defaults::TARGET_NAME: { "touch": args.touch } },
        "default_target": defaults::TARGET_NAME,
        "extensions": ["py"],
        "debounce_ms": 30,
        "settle_ms": 200,
    });
    let text = serde_json::to_string_pretty(&config).context("cannot format the config")? + "\n";
    std::fs::write(&config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
    println!("wrote {} (commit it: it holds no secret)", config_path.display());
    if fresh {
        println!("wrote a fresh token to {} (mode 0600, inside .git so never tracked)", token_path.display());
    } else {
        println!("kept the existing token in {}", token_path.display());
    }
    println!("in the guest, from the shared folder: touchwire listen");
    println!("on the host: touchwire send   (or touchwire status to check the guest)");
    Ok(())
}

/// `init --token`: the token file the repository's configuration names, created if missing (a
/// fresh clone of a repository with a committed `.touchwire.json` has none: it lives in `.git`).
fn token_only(repo: &git2::Repository, workdir: &Path, flags: &Flags) -> Result<()> {
    let config = Config::load(flags, workdir)?;
    if config.repo_file.is_none() {
        return Err(UsageError(format!(
            "no {FILE_NAME} in {}: run `touchwire init` (it writes the config and the token); \
             --token is for a clone whose {FILE_NAME} is committed",
            workdir.display()
        ))
        .into());
    }
    let configured = config.token_file.value.is_some();
    let path = match config.token_file.value {
        Some(path) => path,
        None => repo.commondir().join("touchwire").join("token"),
    };
    if write_token(&path)? {
        let from = match configured {
            true => format!("token_file from {}", config.token_file.source),
            false => "the default place".to_string(),
        };
        println!("wrote a fresh token to {} (mode 0600; {from})", path.display());
        println!("restart the guest's touchwire listen so that it reads it too");
    } else {
        println!("kept the existing token in {}", path.display());
    }
    if !configured {
        println!(
            "no token_file is configured: add \"token_file\": \"{}\" to .touchwire.json",
            portable(&relative_to(&path, workdir))
        );
    }
    Ok(())
}

/// Why the unit's `touchwire listen` in `dir` would not run as meant, if it would not: with no
/// configuration it runs on built-in defaults (127.0.0.1 only, auth off, no target of the app's),
/// which the host cannot reach; a configuration that does not load stops it at start.
fn unit_config_warning(dir: &Path) -> Option<String> {
    match Config::load(&Flags::default(), dir) {
        // The user's own config file does not count: the service may run as another user.
        Ok(config) if config.repo_file.is_none() => Some(format!(
            "no .touchwire.json in {} or above it: the unit will run `touchwire listen` on built-in \
             defaults (listening on 127.0.0.1 only, auth off), which the host cannot reach; \
             run `touchwire init` in the project (or copy its .touchwire.json there) first, \
             or pass --repo DIR naming the directory that holds it",
            dir.display()
        )),
        Ok(_) => None,
        Err(err) => Some(format!("the unit's `touchwire listen` will fail to start: {err:#}")),
    }
}

/// A systemd unit running `touchwire listen` in `dir`, restarted on failure, started at boot.
pub fn systemd_unit(binary: &Path, dir: &Path, user: Option<&str>) -> String {
    let user = user.map(|u| format!("User={u}\n")).unwrap_or_default();
    format!(
        "[Unit]\n\
         Description=touchwire listen: reload the app when the host's code changes\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         WorkingDirectory={dir}\n\
         ExecStart={binary} listen\n\
         {user}\
         Restart=on-failure\n\
         RestartSec=1\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        dir = dir.display(),
        binary = binary.display(),
    )
}

/// Writes a new random token unless one exists; returns whether it wrote one.
pub(crate) fn write_token(path: &Path) -> Result<bool> {
    if path.exists() {
        crate::auth::Token::read(path)?;
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    let token = crate::auth::random_hex(32)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create token file {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write token file {}", path.display()))?;
    Ok(true)
}

/// `path` relative to `base` when it lies inside it, else as it is.
/// A path as the committed config writes it: `/` between its parts, whatever the host, since
/// the guest (Linux or another Unix) reads the same file.
fn portable(path: &Path) -> String {
    let parts: Vec<_> = path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let joined = parts.join("/");
    // An absolute Unix path keeps its root; an absolute Windows path is the host's own anyway.
    if path.has_root() && cfg!(unix) { joined.replacen("//", "/", 1) } else { joined }
}

fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (path, base) = (canonical(path), canonical(base));
    path.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(path)
}

/// The warm-master helper, shipped inside the binary and written out by `init --uwsgi` and
/// `init --gunicorn` (its tests: guest/test_touchwire_warm.py, run by tests/fast_setup.rs).
pub const WARM_HELPER: &str = include_str!("../guest/touchwire_warm.py");
/// The helper's file name.
pub const WARM_HELPER_NAME: &str = "touchwire_warm.py";

/// The guest's paths of the fast setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastSetup {
    /// The work tree, as the guest sees it.
    pub root: String,
    /// The warm-master helper, as the guest sees it.
    pub helper: String,
    /// uWSGI's master FIFO.
    pub fifo: String,
    /// uWSGI's log file.
    pub logto: String,
    /// gunicorn's pidfile.
    pub pidfile: String,
}

/// Writes the helper and prints the fast setup for uWSGI or gunicorn: the server's lines on
/// stdout (so `> fast.ini` makes a file uWSGI reads with `--ini`), what to do with them on stderr.
fn fast_setup(args: &InitArgs, start: &Path) -> Result<()> {
    let repo = git2::Repository::discover(start);
    let (workdir, commondir) = match &repo {
        Ok(repo) => (repo.workdir().map(Path::to_path_buf), Some(repo.commondir().to_path_buf())),
        Err(_) => (None, None),
    };
    let helper = match (&args.helper, &commondir) {
        (Some(path), _) => std::path::absolute(path).context("cannot resolve --helper")?,
        (None, Some(dir)) => dir.join("touchwire").join(WARM_HELPER_NAME),
        (None, None) => {
            return Err(UsageError(format!(
                "{} is not inside a git repository: run init in your project, or pass --helper and --guest-root",
                start.display()
            ))
            .into());
        }
    };
    let root = match (&args.guest_root, &workdir) {
        (Some(root), _) => root.trim_end_matches('/').to_string(),
        (None, Some(dir)) => text(&canonical(dir), "the work tree")?.trim_end_matches('/').to_string(),
        (None, None) => return Err(UsageError("pass --guest-root: no work tree to take it from".into()).into()),
    };
    if !root.starts_with('/') {
        let why = match args.guest_root {
            Some(_) => format!("--guest-root {root:?} must be an absolute path in the guest, such as /vagrant"),
            // A Windows host: the guest's path of this work tree cannot be guessed from it.
            None => format!(
                "the guest sees this work tree at a path of its own, not {root:?}: pass --guest-root \
                 /path/in/the/guest (such as /vagrant, or /mnt/c/... in WSL)"
            ),
        };
        return Err(UsageError(why).into());
    }
    write_helper(&helper)?;
    // The guest reaches the helper through the shared folder: its path there is the guest root
    // plus its place in the work tree. A helper outside the work tree must be copied over.
    let inside =
        workdir.as_ref().and_then(|dir| canonical(&helper).strip_prefix(canonical(dir)).ok().map(Path::to_path_buf));
    let guest_helper = match &inside {
        // The guest's rules: `/` between the parts, whatever this host writes.
        Some(rel) => format!("{root}/{}", text(rel, "the helper's path")?.replace(std::path::MAIN_SEPARATOR, "/")),
        None => text(&helper, "the helper's path")?.to_string(),
    };
    let setup = FastSetup {
        root,
        helper: guest_helper,
        fifo: args.fifo.clone(),
        logto: args.logto.clone(),
        pidfile: args.pidfile.clone(),
    };
    for (flag, value) in [
        ("--guest-root", &setup.root),
        ("--fifo", &setup.fifo),
        ("--logto", &setup.logto),
        ("--pidfile", &setup.pidfile),
    ] {
        if value.contains(['\n', '\r']) {
            return Err(UsageError(format!("{flag} must be one line")).into());
        }
    }
    eprintln!("wrote the warm-master helper to {}", helper.display());
    if inside.is_none() {
        eprintln!("it lies outside the work tree: copy it into the guest as {}", setup.helper);
    }
    let (lines, target, server) = if args.uwsgi {
        (uwsgi_lines(&setup), uwsgi_target(&setup), "uWSGI's ini (merge into your [uwsgi] section, or add --ini FILE)")
    } else {
        (gunicorn_conf(&setup), gunicorn_target(&setup), "gunicorn.conf.py (gunicorn -c FILE ...)")
    };
    print!("{lines}");
    eprintln!("above: {server}");
    eprintln!(
        "in .touchwire.json, a target for it: \"targets\": {{\"app\": {}}}",
        serde_json::to_string(&target).context("cannot format the target")?
    );
    let listen = match args.uwsgi {
        true => format!("touchwire listen --fifo {} --fifo-command c", setup.fifo),
        false => format!("touchwire listen --signal HUP --pidfile {}", setup.pidfile),
    };
    eprintln!("in the guest: touchwire listen (with that target), or {listen}");
    Ok(())
}

/// uWSGI's lines of the fast setup, each with why (measured on a Wagtail project: DESIGN.md).
pub fn uwsgi_lines(setup: &FastSetup) -> String {
    let FastSetup { root, helper, fifo, logto, .. } = setup;
    format!(
        "[uwsgi]\n\
         ; touchwire's fast setup (touchwire init --uwsgi); README: \"Fast reloads on a real app\"\n\
         master = true\n\
         ; each worker imports the app itself, so a chain reload can replace them one at a time\n\
         lazy-apps = true\n\
         ; an old worker exits without Python's teardown: 30 ms instead of 1.4 s on Django\n\
         skip-atexit-teardown = true\n\
         ; touchwire writes `c` here: a chain reload, the old workers answer until new ones serve\n\
         master-fifo = {fifo}\n\
         ; touchwire learns here when a chain reload is over (\"chain reloading complete\")\n\
         logto = {logto}\n\
         ; the warm master: imports once, before the fork, every module the app uses outside the\n\
         ; work tree (never one inside it), so a new worker imports only the project's code\n\
         env = TOUCHWIRE_WARM_ROOT={root}\n\
         shared-pyimport = {helper}\n\
         ; which app to list: uWSGI's module/wsgi-file by default; which Python lists it: the\n\
         ; virtualenv's (home/virtualenv), else the system's\n\
         ; env = TOUCHWIRE_WARM_APP=mysite.wsgi\n\
         ; env = TOUCHWIRE_WARM_PYTHON=/path/to/venv/bin/python\n"
    )
}

/// The guest's target for uWSGI's fast setup: a chain reload over the master FIFO.
pub fn uwsgi_target(setup: &FastSetup) -> serde_json::Value {
    serde_json::json!({ "fifo": setup.fifo, "command": "c" })
}

/// A gunicorn.conf.py whose arbiter is warmed before it forks workers.
pub fn gunicorn_conf(setup: &FastSetup) -> String {
    // JSON strings are Python string literals.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "# gunicorn.conf.py: touchwire's fast setup (touchwire init --gunicorn).\n\
         # On HUP gunicorn forks new workers from its arbiter: an arbiter that has imported the\n\
         # third-party packages once spares every new worker importing them again.\n\
         import importlib.util\n\
         \n\
         # touchwire signals this pid (HUP) on each save.\n\
         pidfile = {pidfile}\n\
         # The arbiter must not import the app itself, or HUP would serve the old code.\n\
         preload_app = False\n\
         \n\
         \n\
         def on_starting(server):\n\
         \x20   \"\"\"Warms the arbiter before its first fork (touchwire_warm.py, shipped by touchwire).\"\"\"\n\
         \x20   spec = importlib.util.spec_from_file_location(\"touchwire_warm\", {helper})\n\
         \x20   helper = importlib.util.module_from_spec(spec)\n\
         \x20   spec.loader.exec_module(helper)\n\
         \x20   helper.warm(root={root}, app=server.app.app_uri)\n",
        pidfile = quote(&setup.pidfile),
        helper = quote(&setup.helper),
        root = quote(&setup.root),
    )
}

/// The guest's target for gunicorn: HUP to the arbiter.
pub fn gunicorn_target(setup: &FastSetup) -> serde_json::Value {
    serde_json::json!({ "signal": "HUP", "pidfile": setup.pidfile })
}

/// Writes the helper (readable by the app's user), unless the file already holds this version.
fn write_helper(path: &Path) -> Result<()> {
    if std::fs::read(path).is_ok_and(|now| now == WARM_HELPER.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    std::fs::write(path, WARM_HELPER).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `dir` (and its parents) readable by its owner only (Windows: the profile's ACLs,
/// inherited), where the token lives.
fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// `path` as text for a config line; a name that is not UTF-8 cannot be written into one.
fn text<'a>(path: &'a Path, what: &str) -> Result<&'a str> {
    path.to_str().ok_or_else(|| UsageError(format!("{what} {} is not UTF-8", path.display())).into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_paths_use_slashes() {
        assert_eq!(super::portable(std::path::Path::new(".git/touchwire/token")), ".git/touchwire/token");
        #[cfg(unix)]
        assert_eq!(super::portable(std::path::Path::new("/srv/app/.git/token")), "/srv/app/.git/token");
        #[cfg(windows)]
        assert_eq!(super::portable(std::path::Path::new(r".git\touchwire\token")), ".git/touchwire/token");
    }

    use super::*;

    fn setup() -> FastSetup {
        FastSetup {
            root: "/srv/app".into(),
            helper: "/srv/app/.git/touchwire/touchwire_warm.py".into(),
            fifo: "/tmp/f".into(),
            logto: "/tmp/l".into(),
            pidfile: "/tmp/p".into(),
        }
    }

    #[test]
    fn the_uwsgi_lines_hold_every_setting_of_the_fast_setup() {
        let lines = uwsgi_lines(&setup());
        for line in [
            "master = true",
            "lazy-apps = true",
            "skip-atexit-teardown = true",
            "master-fifo = /tmp/f",
            "logto = /tmp/l",
            "env = TOUCHWIRE_WARM_ROOT=/srv/app",
            "shared-pyimport = /srv/app/.git/touchwire/touchwire_warm.py",
        ] {
            assert!(lines.lines().any(|l| l == line), "{line:?} missing in\n{lines}");
        }
        assert_eq!(uwsgi_target(&setup()), serde_json::json!({"fifo": "/tmp/f", "command": "c"}));
    }

    #[test]
    fn the_gunicorn_conf_quotes_its_paths() {
        let mut odd = setup();
        odd.root = "/srv/it's \"here\"".into();
        let conf = gunicorn_conf(&odd);
        assert!(conf.contains(r#"helper.warm(root="/srv/it's \"here\"", app=server.app.app_uri)"#), "{conf}");
        assert!(conf.contains("pidfile = \"/tmp/p\""));
    }

    #[test]
    fn the_shipped_helper_is_the_guest_file() {
        assert!(WARM_HELPER.starts_with("\"\"\"touchwire_warm"));
    }
}
