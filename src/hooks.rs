//! `touchwire hooks install|uninstall|status`: the git hooks in `hooks/`, embedded in the binary.
//! An existing hook that is not ours is kept: renamed to `NAME.touchwire-chained`, and ours runs
//! it first with the same arguments and input, and exits with its status.

use crate::cli::{HooksAction, HooksArgs};
use crate::error::UsageError;
use anyhow::{Context, Result};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The hooks we install: name and script.
pub const HOOKS: [(&str, &str); 3] = [
    ("post-checkout", include_str!("../hooks/post-checkout")),
    ("post-merge", include_str!("../hooks/post-merge")),
    ("post-rewrite", include_str!("../hooks/post-rewrite")),
];

/// What a hook file is, as far as we are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Ours, running after the user's own hook.
    Chained,
    /// Ours, alone.
    Installed,
    /// Someone else's hook; `install` would chain it.
    Foreign,
    /// No hook.
    Missing,
}

const MARKER: &str = "# touchwire hook:";
const CHAINED_SUFFIX: &str = ".touchwire-chained";

/// Runs `hooks install|uninstall|status`.
pub fn command(args: HooksArgs) -> Result<()> {
    let start = match &args.repo {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let dir = hooks_dir(&start)?;
    match args.action {
        HooksAction::Install => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, script) in HOOKS {
                let state = install(&dir, name, script)?;
                let note = if state == State::Chained { " (runs your existing hook first)" } else { "" };
                println!("installed {}{note}", dir.join(name).display());
            }
        }
        HooksAction::Uninstall => {
            for (name, _) in HOOKS {
                let before = state(&dir, name);
                uninstall(&dir, name)?;
                match before {
                    State::Chained => println!("removed {}, your own hook is back in place", dir.join(name).display()),
                    State::Installed => println!("removed {}", dir.join(name).display()),
                    State::Foreign | State::Missing => println!("{}: not ours, left alone", dir.join(name).display()),
                }
            }
        }
        HooksAction::Status => {
            println!("hooks directory: {}", dir.display());
            for (name, _) in HOOKS {
                let what = match state(&dir, name) {
                    State::Installed => "installed",
                    State::Chained => "installed, chained to your existing hook",
                    State::Foreign => "not installed: another hook is there (install would chain it)",
                    State::Missing => "not installed",
                };
                println!("{name:<14} {what}");
            }
        }
    }
    Ok(())
}

/// The directory git runs hooks from: `core.hooksPath` if set, else the common git directory's
/// `hooks` (shared by linked worktrees).
pub fn hooks_dir(start: &Path) -> Result<PathBuf> {
    let repo = git2::Repository::discover(start)
        .map_err(|err| UsageError(format!("{} is not inside a git repository ({})", start.display(), err.message())))?;
    let configured = repo.config().ok().and_then(|config| config.get_path("core.hooksPath").ok());
    Ok(match configured {
        // git resolves a relative hooksPath against the directory hooks run in: the work tree's root.
        Some(path) if path.is_relative() => repo.workdir().unwrap_or(repo.path()).join(path),
        Some(path) => path,
        None => repo.commondir().join("hooks"),
    })
}

/// What `dir/name` is.
pub fn state(dir: &Path, name: &str) -> State {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) if text.contains(MARKER) => {
            if dir.join(format!("{name}{CHAINED_SUFFIX}")).exists() {
                State::Chained
            } else {
                State::Installed
            }
        }
        Ok(_) => State::Foreign,
        // A hook that is not text (a binary) is foreign too.
        Err(_) if dir.join(name).exists() => State::Foreign,
        Err(_) => State::Missing,
    }
}

/// Installs one hook, chaining a foreign one; installing again changes nothing.
pub fn install(dir: &Path, name: &str, script: &str) -> Result<State> {
    let path = dir.join(name);
    if state(dir, name) == State::Foreign {
        let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
        if chained.exists() {
            return Err(UsageError(format!(
                "{} exists and so does {}: move one of them away, then install again",
                path.display(),
                chained.display()
            ))
            .into());
        }
        std::fs::rename(&path, &chained).with_context(|| format!("cannot move {} aside", path.display()))?;
    }
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    // Git for Windows runs hooks through its own sh: only Unix needs the executable bit.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))?;
    Ok(state(dir, name))
}

/// Removes our hook and puts back the one it chained, byte for byte; leaves foreign hooks alone.
pub fn uninstall(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match state(dir, name) {
        State::Installed => std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display())),
        State::Chained => {
            let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
            std::fs::rename(&chained, &path).with_context(|| format!("cannot restore {}", chained.display()))
        }
        State::Foreign | State::Missing => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_carries_the_marker_and_is_posix_sh() {
        for (name, script) in HOOKS {
            assert!(script.starts_with("#!/bin/sh\n"), "{name}");
            assert!(script.contains(MARKER), "{name}");
            assert!(script.contains(CHAINED_SUFFIX), "{name}");
            assert!(script.contains("TOUCHWIRE_SKIP"), "{name}");
        }
    }

    #[test]
    fn a_missing_binary_is_told_the_install_ways_readme_gives() {
        // No crate named touchwire is published: the hint names what README's Install offers.
        for (name, script) in HOOKS {
            assert!(!script.contains("cargo install"), "{name}");
            assert!(script.contains("pipx install touchwire") && script.contains("release binary"), "{name}");
        }
    }

    #[test]
    fn install_chains_and_uninstall_restores() {
        let dir = tempfile::tempdir().unwrap();
        let own = "#!/bin/sh\necho mine\n";
        std::fs::write(dir.path().join("post-merge"), own).unwrap();
        assert_eq!(state(dir.path(), "post-merge"), State::Foreign);
        assert_eq!(install(dir.path(), "post-merge", HOOKS[1].1).unwrap(), State::Chained);
        assert_eq!(install(dir.path(), "post-merge", HOOKS[1].1).unwrap(), State::Chained, "idempotent");
        uninstall(dir.path(), "post-merge").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("post-merge")).unwrap(), own);
        assert!(!dir.path().join("post-merge.touchwire-chained").exists());
        assert_eq!(install(dir.path(), "post-checkout", HOOKS[0].1).unwrap(), State::Installed);
        uninstall(dir.path(), "post-checkout").unwrap();
        assert_eq!(state(dir.path(), "post-checkout"), State::Missing);
    }
}
