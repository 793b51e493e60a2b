//! What a target is: its action, its ready check, its root; the guest's side of the
//! configuration, plain data the host can show too.

use crate::ready::ReadyCheck;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What a target does when triggered, as configured in the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionSpec {
    /// Advance the mtime of a file (uWSGI `touch-reload`).
    Touch { path: PathBuf },
    /// Write a command to uWSGI's master FIFO, then poke it until the reload is under way.
    Fifo { path: PathBuf, command: String, poke: bool },
    /// Send a signal to the process whose PID the pidfile holds.
    Signal { pidfile: PathBuf, signal: Signal },
    /// Run a program (no shell), bounded by a timeout.
    Exec { argv: Vec<String>, timeout: Duration },
}

impl ActionSpec {
    /// The action's kind, as named on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Touch { .. } => "touch",
            ActionSpec::Fifo { .. } => "fifo",
            ActionSpec::Signal { .. } => "signal",
            ActionSpec::Exec { .. } => "exec",
        }
    }
}

impl fmt::Display for ActionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionSpec::Touch { path } => write!(f, "touch {}", path.display()),
            ActionSpec::Fifo { path, command, poke } => {
                write!(f, "fifo {} ({command:?}{})", path.display(), if *poke { ", poke" } else { "" })
            }
            ActionSpec::Signal { pidfile, signal } => {
                write!(f, "signal {} to pid in {}", signal.name, pidfile.display())
            }
            ActionSpec::Exec { argv, timeout } => write!(f, "exec {:?} (timeout {} ms)", argv, timeout.as_millis()),
        }
    }
}

/// A configured target: its action, and the check that tells when the app is back.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// What a trigger does.
    pub action: ActionSpec,
    /// Follows the app's log after the action, if configured.
    pub ready: Option<ReadyCheck>,
    /// The guest's path of the work tree: the files a trigger names (relative to it) are
    /// refreshed there before the action (DESIGN.md, "The last save is served"). Without it no
    /// path on the wire is ever acted on.
    pub root: Option<PathBuf>,
}

impl From<ActionSpec> for TargetSpec {
    fn from(action: ActionSpec) -> TargetSpec {
        TargetSpec { action, ready: None, root: None }
    }
}

/// A signal by name (its number is the guest's: it differs between Unixes, and a Windows host
/// only reads the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// Its name without `SIG`.
    pub name: &'static str,
}

const SIGNALS: &[&str] = &["HUP", "INT", "QUIT", "TERM", "USR1", "USR2", "TTIN", "TTOU", "WINCH", "KILL"];

#[cfg(unix)]
impl Signal {
    /// The signal's number on this system.
    pub fn number(self) -> libc::c_int {
        match self.name {
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "TERM" => libc::SIGTERM,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "TTIN" => libc::SIGTTIN,
            "TTOU" => libc::SIGTTOU,
            "WINCH" => libc::SIGWINCH,
            "KILL" => libc::SIGKILL,
            _ => libc::SIGHUP,
        }
    }
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .iter()
            .find(|name| **name == bare)
            .map(|&name| Signal { name })
            .ok_or_else(|| format!("unknown signal {s:?} (known: {})", SIGNALS.join(", ")))
    }
}

/// A fifo command is one or more of uWSGI's single-letter master FIFO commands.
pub fn validate_fifo_command(command: &str) -> Result<(), String> {
    if command.is_empty() || !command.chars().all(|c| c.is_ascii_alphanumeric() || "+-".contains(c)) {
        return Err(format!("fifo command {command:?} is not a uWSGI master FIFO command such as \"r\" or \"c\""));
    }
    Ok(())
}
