//! `touchwire init`: writes `.touchwire.json` (committed, no secrets) and a fresh token under the
//! git directory (never tracked, yet shared with the guest along with the work tree).

use crate::UsageError;
use crate::cli::InitArgs;
use crate::config::{DEFAULT_TARGET_NAME, FILE_NAME};
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
        print!("{}", systemd_unit(&binary, &dir, args.user.as_deref()));
        return Ok(());
    }
    let start = match &args.repo {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
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
    let config_path = workdir.join(FILE_NAME);
    if config_path.exists() && !args.force {
        return Err(
            UsageError(format!("{} exists already; pass --force to overwrite it", config_path.display())).into()
        );
    }
    // The common directory, so that linked worktrees share one token.
    let token_path = repo.commondir().join("touchwire").join("token");
    let fresh = write_token(&token_path)?;
    let token_setting = relative_to(&token_path, &workdir);
    let config = serde_json::json!({
        "remote": args.to,
        "listen": format!("0.0.0.0:{}", crate::protocol::DEFAULT_PORT),
        "token_file": token_setting,
        "targets": { DEFAULT_TARGET_NAME: { "touch": args.touch } },
        "default_target": DEFAULT_TARGET_NAME,
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
fn write_token(path: &Path) -> Result<bool> {
    if path.exists() {
        crate::auth::Token::read(path)?;
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        let mut builder = DirBuilder::new();
        builder.recursive(true);
        // Only its owner may read the token (Windows: the profile's ACLs, inherited).
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
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
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let (path, base) = (canonical(path), canonical(base));
    path.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(path)
}
