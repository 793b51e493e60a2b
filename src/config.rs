//! Configuration: `.touchwire.json` discovery, layering (flags > environment > repo file > user
//! file > defaults) and validation. Every resolved value remembers where it came from.

pub mod address;

use crate::UsageError;
use crate::protocol::DEFAULT_PORT;
use crate::ready::ReadyCheck;
use address::{Address, Use};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the per-repository configuration file.
pub const FILE_NAME: &str = ".touchwire.json";
/// Target name used for a target given by flags, and by the built-in default.
pub const DEFAULT_TARGET_NAME: &str = "app";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Built into touchwire.
    Default,
    /// The user's own config file.
    UserFile(PathBuf),
    /// The repository's `.touchwire.json`, or the file given by `--config`/`TOUCHWIRE_CONFIG`.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("built-in default"),
            Source::UserFile(p) => write!(f, "user config {}", p.display()),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Flag => f.write_str("command line"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    /// The value in force.
    pub value: T,
    /// Where it was set.
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting { value, source: Source::Default }
    }
    /// Replaces the value, recording that a flag set it.
    pub fn set_by_flag(&mut self, value: T) {
        *self = Setting { value, source: Source::Flag };
    }
}

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

/// A target as written in a config file; exactly one of `touch`, `fifo`, `pidfile`, `exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    touch: Option<PathBuf>,
    fifo: Option<PathBuf>,
    command: Option<String>,
    poke: Option<bool>,
    pidfile: Option<PathBuf>,
    signal: Option<String>,
    exec: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded_ms")]
    timeout_ms: Option<u64>,
    ready: Option<ReadyFile>,
    root: Option<PathBuf>,
}

/// A ready check as written in a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyFile {
    log: PathBuf,
    preset: Option<String>,
    pattern: Option<String>,
    error_pattern: Option<String>,
    url: Option<String>,
    #[serde(default, deserialize_with = "bounded_ms")]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an address \"HOST:PORT\" or a list of them")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The longest any duration setting may be: an hour is far beyond any sensible timeout or
/// window, and keeps every instant computed from one far from overflowing.
pub const MAX_MS: u64 = 3_600_000;

/// A duration in ms of at most [`MAX_MS`].
fn bounded_ms<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Millis>::deserialize(de)?.map(|Millis(ms)| ms))
}

/// A `*_ms` value: its errors say "a number of milliseconds", not serde's "u64".
struct Millis(u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Millis, D::Error> {
        de.deserialize_u64(MillisVisitor)
    }
}

struct MillisVisitor;

impl serde::de::Visitor<'_> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a number of milliseconds from 0 to {MAX_MS}, such as 200")
    }

    fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<Millis, E> {
        if ms > MAX_MS {
            return Err(E::custom(format!("{ms} ms is longer than an hour ({MAX_MS} ms), the most allowed")));
        }
        Ok(Millis(ms))
    }

    fn visit_i64<E: serde::de::Error>(self, ms: i64) -> Result<Millis, E> {
        match u64::try_from(ms) {
            Ok(ms) => self.visit_u64(ms),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(ms), &self)),
        }
    }
}

/// The content of one config file. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    remote: Option<OneOrMany>,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    targets: Option<BTreeMap<String, TargetFile>>,
    default_target: Option<String>,
    extensions: Option<Vec<String>>,
    root: Option<PathBuf>,
    #[serde(default, deserialize_with = "bounded_ms")]
    debounce_ms: Option<u64>,
    #[serde(default, deserialize_with = "bounded_ms")]
    settle_ms: Option<u64>,
    #[serde(default, deserialize_with = "bounded_ms")]
    hook_timeout_ms: Option<u64>,
}

/// Default fifo command: uWSGI's graceful reload.
pub const DEFAULT_FIFO_COMMAND: &str = "r";
/// Default timeout of an `exec` action.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// The resolved configuration of both ends.
#[derive(Debug, Clone)]
pub struct Config {
    /// Config files read, lowest precedence first.
    pub files: Vec<PathBuf>,
    /// The repository's `.touchwire.json` (or the `--config` file) in force, if one was found.
    pub repo_file: Option<PathBuf>,
    /// Guests that `send` and `status` talk to.
    pub remotes: Setting<Vec<String>>,
    /// Address `listen` binds.
    pub listen: Setting<String>,
    /// The shared token's file; no file means no authentication.
    pub token_file: Setting<Option<PathBuf>>,
    /// Named targets and their actions (guest side).
    pub targets: Setting<BTreeMap<String, TargetSpec>>,
    /// Target used when a request names none.
    pub default_target: Setting<Option<String>>,
    /// Extensions of relevant files (watcher; and the receiver's refresh under `root`).
    pub extensions: Setting<Vec<String>>,
    /// The guest's path of the work tree, for targets that do not set their own `root`.
    pub root: Setting<Option<PathBuf>>,
    /// Quiet time that ends a burst on the host, in ms.
    pub debounce_ms: Setting<u64>,
    /// Coalescing window per target on the guest, in ms.
    pub settle_ms: Setting<u64>,
    /// How long a git hook waits for the guests, in ms.
    pub hook_timeout_ms: Setting<u64>,
}

/// Where to look for configuration: what `--config` and `--token-file` said, and the directory to start from.
#[derive(Debug, Clone, Default)]
pub struct Locate {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--token-file FILE`.
    pub token_file: Option<PathBuf>,
    /// Where discovery starts (the current directory).
    pub cwd: PathBuf,
}

impl Config {
    /// Built-in defaults only.
    pub fn defaults() -> Config {
        let default_touch = std::env::temp_dir().join("touchwire-app.reload");
        Config {
            files: Vec::new(),
            repo_file: None,
            remotes: Setting::default(vec![format!("127.0.0.1:{DEFAULT_PORT}")]),
            listen: Setting::default(format!("127.0.0.1:{DEFAULT_PORT}")),
            token_file: Setting::default(None),
            targets: Setting::default(BTreeMap::from([(
                DEFAULT_TARGET_NAME.to_string(),
                ActionSpec::Touch { path: default_touch }.into(),
            )])),
            default_target: Setting::default(None),
            extensions: Setting::default(vec!["py".into()]),
            root: Setting::default(None),
            debounce_ms: Setting::default(30),
            settle_ms: Setting::default(200),
            hook_timeout_ms: Setting::default(500),
        }
    }

    /// Loads defaults, the user's file, the repo's (or `--config`) file, then the environment and `--token-file`.
    pub fn load(locate: &Locate) -> Result<Config, UsageError> {
        let mut config = Config::defaults();
        if let Some(user) = user_config_file().filter(|p| p.is_file()) {
            let file = read_file(&user)?;
            config.apply(file, &user, Source::UserFile(user.clone()))?;
        }
        let explicit = match &locate.config {
            Some(path) => Some((path.clone(), Source::Flag)),
            None => std::env::var_os("TOUCHWIRE_CONFIG").map(|p| (PathBuf::from(p), Source::Env("TOUCHWIRE_CONFIG"))),
        };
        let repo_file = match explicit {
            Some((path, source)) => {
                if !path.is_file() {
                    return Err(UsageError(format!("config file {} (from {source}) does not exist", path.display())));
                }
                Some(path)
            }
            None => discover(&locate.cwd),
        };
        if let Some(path) = repo_file {
            let file = read_file(&path)?;
            config.apply(file, &path, Source::File(path.clone()))?;
            config.repo_file = Some(path);
        }
        if let Some(to) = std::env::var("TOUCHWIRE_TO").ok().filter(|s| !s.trim().is_empty()) {
            let list = to
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|text| {
                    remote_address(text).map_err(|msg| UsageError(format!("environment TOUCHWIRE_TO: {text:?}: {msg}")))
                })
                .collect::<Result<_, _>>()?;
            config.remotes = Setting { value: list, source: Source::Env("TOUCHWIRE_TO") };
        }
        if let Some(path) = &locate.token_file {
            config.token_file = Setting { value: Some(path.clone()), source: Source::Flag };
        } else if let Some(path) = std::env::var_os("TOUCHWIRE_TOKEN_FILE").filter(|p| !p.is_empty()) {
            config.token_file = Setting { value: Some(path.into()), source: Source::Env("TOUCHWIRE_TOKEN_FILE") };
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults with one config file's `text` (as if read from `path`) applied and checked:
    /// what `load` does with a file, without touching the file system.
    pub fn from_file_text(text: &str, path: &Path) -> Result<Config, UsageError> {
        let mut config = Config::defaults();
        config.apply(parse_file(text, path)?, path, Source::File(path.to_path_buf()))?;
        config.repo_file = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, file: ConfigFile, path: &Path, source: Source) -> Result<(), UsageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        self.files.push(path.to_path_buf());
        let key_error = |key: &str, text: &str, msg: String| {
            UsageError(format!("{}: key `{key}`: {text:?}: {msg}", path.display()))
        };
        if let Some(remote) = file.remote {
            let value = match remote {
                OneOrMany::One(r) => vec![remote_address(&r).map_err(|msg| key_error("remote", &r, msg))?],
                OneOrMany::Many(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, r)| remote_address(r).map_err(|msg| key_error(&format!("remote[{i}]"), r, msg)))
                    .collect::<Result<_, _>>()?,
            };
            self.remotes = Setting { value, source: source.clone() };
        }
        if let Some(listen) = file.listen {
            let value = bind_address(&listen).map_err(|msg| key_error("listen", &listen, msg))?;
            self.listen = Setting { value, source: source.clone() };
        }
        if let Some(token) = file.token_file {
            self.token_file = Setting { value: Some(dir.join(token)), source: source.clone() };
        }
        if let Some(targets) = file.targets {
            if targets.is_empty() {
                let msg = "names no target; give at least one, e.g. {\"app\": {\"touch\": \"/tmp/app.reload\"}}";
                return Err(UsageError(format!("{}: key `targets`: {msg}", path.display())));
            }
            let mut resolved = BTreeMap::new();
            for (name, target) in targets {
                let spec = target_spec(target, dir)
                    .map_err(|msg| UsageError(format!("{}: key `targets.{name}`: {msg}", path.display())))?;
                resolved.insert(name, spec);
            }
            self.targets = Setting { value: resolved, source: source.clone() };
        }
        if let Some(name) = file.default_target {
            self.default_target = Setting { value: Some(name), source: source.clone() };
        }
        if let Some(ext) = file.extensions {
            self.extensions = Setting { value: ext, source: source.clone() };
        }
        if let Some(root) = file.root {
            self.root = Setting { value: Some(guest_path(dir, root)), source: source.clone() };
        }
        if let Some(ms) = file.debounce_ms {
            self.debounce_ms = Setting { value: ms, source: source.clone() };
        }
        if let Some(ms) = file.settle_ms {
            self.settle_ms = Setting { value: ms, source: source.clone() };
        }
        if let Some(ms) = file.hook_timeout_ms {
            self.hook_timeout_ms = Setting { value: ms, source: source.clone() };
        }
        Ok(())
    }

    /// Checks what no single key can: the default target names a configured target.
    pub fn validate(&self) -> Result<(), UsageError> {
        if let Some(name) = &self.default_target.value
            && !self.targets.value.contains_key(name)
        {
            return Err(UsageError(format!(
                "default_target {name:?} (from {}) is not a configured target (known: {})",
                self.default_target.source,
                self.target_names().join(", ")
            )));
        }
        Ok(())
    }

    /// The target a request without `target` goes to: `default_target`, else the only target, else `app`.
    pub fn resolved_default_target(&self) -> Option<String> {
        if let Some(name) = &self.default_target.value {
            return Some(name.clone());
        }
        let names = self.target_names();
        match names.as_slice() {
            [only] => Some(only.clone()),
            _ => names.iter().find(|n| *n == DEFAULT_TARGET_NAME).cloned(),
        }
    }

    /// The remotes, or the usage error that says how to name one.
    pub fn remotes_required(&self) -> Result<Vec<String>, UsageError> {
        if self.remotes.value.is_empty() {
            return Err(UsageError("no remote to send to: pass --to ADDR or set \"remote\" in .touchwire.json".into()));
        }
        Ok(self.remotes.value.clone())
    }

    /// Names of the configured targets, sorted.
    pub fn target_names(&self) -> Vec<String> {
        self.targets.value.keys().cloned().collect()
    }
}

/// A remote as given (`guest`, `[::1]:9101`), checked and written in full (`guest:9001`), or
/// the sentence that says how to write it.
pub fn remote_address(text: &str) -> Result<String, String> {
    Address::parse(text, Use::Connect).map(|addr| addr.to_string())
}

/// A listen address as given (`0.0.0.0`, `127.0.0.1:0`), checked and written in full, or the
/// sentence that says how to write it.
pub fn bind_address(text: &str) -> Result<String, String> {
    Address::parse(text, Use::Bind).map(|addr| addr.to_string())
}

/// The user's config file (e.g. `~/.config/touchwire/config.json` on Linux).
pub fn user_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "touchwire").map(|dirs| dirs.config_dir().join("config.json"))
}

/// Looks for `.touchwire.json` from `start` upwards, stopping at the repository root (a directory holding `.git`).
pub fn discover(start: &Path) -> Option<PathBuf> {
    for dir in start.ancestors() {
        let candidate = dir.join(FILE_NAME);
        if candidate.is_file() {
            return Some(candidate);
        }
        if dir.join(".git").exists() {
            return None;
        }
    }
    None
}

fn read_file(path: &Path) -> Result<ConfigFile, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| UsageError(format!("cannot read config file {}: {err}", path.display())))?;
    parse_file(&text, path)
}

/// Parses a config file's text; errors name `path` and the key.
fn parse_file(text: &str, path: &Path) -> Result<ConfigFile, UsageError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let file = serde_path_to_error::deserialize(&mut de)
        .map_err(|err| UsageError(format!("{}: {}", path.display(), describe(&err))))?;
    de.end().map_err(|err| UsageError(format!("{}: JSON syntax error: {err}", path.display())))?;
    Ok(file)
}

/// Where in the file an error is, and what: a key the error is about is named as such; a
/// syntax error (whose next key could not be read, so the path ends in an unknown segment) is
/// placed inside the object that holds it, never at key `?`.
fn describe(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_path_to_error::Segment;
    let mut known = String::new();
    let mut unknown = false;
    for segment in err.path().iter() {
        match segment {
            Segment::Unknown => unknown = true,
            Segment::Seq { index } => known.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !known.is_empty() {
                    known.push('.');
                }
                known.push_str(key);
            }
        }
    }
    let inner = err.inner();
    let syntax = matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
    let what = if syntax { "JSON syntax error" } else { "error" };
    match (known.is_empty(), unknown, syntax) {
        (true, false, false) => inner.to_string(),
        (true, _, _) => format!("{what} at the top level: {inner}"),
        (false, true, _) => format!("{what} inside `{known}`: {inner}"),
        (false, false, true) => format!("{what} at key `{known}`: {inner}"),
        (false, false, false) => format!("key `{known}`: {inner}"),
    }
}

/// A path the guest uses (an action's file, a ready check's log, `root`), relative ones joined to
/// the config file's directory. Only a Unix process is a guest (`listen` is Unix-only); on a
/// Windows host, which only shows these (`status`), the path stays as written: Windows' rules
/// would make `/tmp/app.reload` `C:/tmp/app.reload` and join `app.reload` to the host's folder.
#[cfg(unix)]
fn guest_path(dir: &Path, written: PathBuf) -> PathBuf {
    dir.join(written)
}

/// See the Unix version: elsewhere a guest path is kept as the file wrote it.
#[cfg(not(unix))]
fn guest_path(_dir: &Path, written: PathBuf) -> PathBuf {
    written
}

fn target_spec(mut t: TargetFile, dir: &Path) -> Result<TargetSpec, String> {
    let root = t.root.take().map(|root| guest_path(dir, root));
    let ready = match t.ready.take() {
        Some(r) => Some(
            ReadyCheck::new(
                guest_path(dir, r.log),
                r.preset.as_deref(),
                r.pattern.as_deref(),
                r.error_pattern.as_deref(),
                r.url,
                r.timeout_ms.map(Duration::from_millis),
            )
            .map_err(|msg| format!("`ready`: {msg}"))?,
        ),
        None => None,
    };
    Ok(TargetSpec { action: target_action(t, dir)?, ready, root })
}

fn target_action(t: TargetFile, dir: &Path) -> Result<ActionSpec, String> {
    let kinds = [t.touch.is_some(), t.fifo.is_some(), t.pidfile.is_some(), t.exec.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err("a target needs exactly one of `touch`, `fifo`, `pidfile` (with `signal`) or `exec`".into());
    }
    let only_with = |present: bool, key: &str, action: &str| -> Result<(), String> {
        if present { Err(format!("`{key}` applies to `{action}` targets only")) } else { Ok(()) }
    };
    only_with((t.command.is_some() || t.poke.is_some()) && t.fifo.is_none(), "command`/`poke", "fifo")?;
    only_with(t.signal.is_some() && t.pidfile.is_none(), "signal", "pidfile")?;
    only_with(t.timeout_ms.is_some() && t.exec.is_none(), "timeout_ms", "exec")?;
    if let Some(path) = t.touch {
        return Ok(ActionSpec::Touch { path: guest_path(dir, path) });
    }
    if let Some(path) = t.fifo {
        let command = t.command.unwrap_or_else(|| DEFAULT_FIFO_COMMAND.into());
        validate_fifo_command(&command)?;
        return Ok(ActionSpec::Fifo { path: guest_path(dir, path), command, poke: t.poke.unwrap_or(true) });
    }
    if let Some(pidfile) = t.pidfile {
        let signal = t.signal.as_deref().unwrap_or("HUP").parse()?;
        return Ok(ActionSpec::Signal { pidfile: guest_path(dir, pidfile), signal });
    }
    let argv = t.exec.unwrap_or_default();
    if argv.is_empty() || argv[0].is_empty() {
        return Err("`exec` needs a program: a list like [\"systemctl\", \"reload\", \"app\"]".into());
    }
    let timeout = t.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_EXEC_TIMEOUT);
    Ok(ActionSpec::Exec { argv, timeout })
}

/// A fifo command is one or more of uWSGI's single-letter master FIFO commands.
pub fn validate_fifo_command(command: &str) -> Result<(), String> {
    if command.is_empty() || !command.chars().all(|c| c.is_ascii_alphanumeric() || "+-".contains(c)) {
        return Err(format!("fifo command {command:?} is not a uWSGI master FIFO command such as \"r\" or \"c\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, UsageError> {
        Config::from_file_text(json, &Path::new("/project").join(FILE_NAME))
    }

    #[test]
    fn the_design_example_loads() {
        let config = parse(
            r#"{"remote": "192.168.56.10:9001", "listen": "0.0.0.0:9001", "token_file": ".git/touchwire/token",
                "targets": {"app": {"touch": "/tmp/touchwire/app.reload"},
                            "api": {"fifo": "/tmp/uwsgi-api.fifo", "command": "r"}},
                "default_target": "app", "extensions": ["py"], "debounce_ms": 30, "settle_ms": 200}"#,
        )
        .unwrap();
        assert_eq!(config.remotes.value, vec!["192.168.56.10:9001"]);
        assert!(config.token_file.value.as_ref().unwrap().ends_with(".git/touchwire/token"));
        assert_eq!(config.target_names(), vec!["api", "app"]);
        assert_eq!(
            config.targets.value["api"].action,
            ActionSpec::Fifo { path: "/tmp/uwsgi-api.fifo".into(), command: "r".into(), poke: true }
        );
        assert_eq!(config.resolved_default_target().as_deref(), Some("app"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = parse(r#"{"settle_ms": "fast"}"#).unwrap_err().0;
        assert!(err.contains(FILE_NAME) && err.contains("key `settle_ms`"), "{err}");
        let err = parse(r#"{"remot": "x"}"#).unwrap_err().0;
        assert!(err.contains("unknown field `remot`"), "{err}");
        let err = parse(r#"{"targets": {"app": {"touch": "/x", "colour": 1}}}"#).unwrap_err().0;
        assert!(err.contains("targets.app") && err.contains("colour"), "{err}");
        let err = parse(r#"{"targets": {"app": {"touch": "/x", "exec": ["y"]}}}"#).unwrap_err().0;
        assert!(err.contains("key `targets.app`") && err.contains("exactly one"), "{err}");
        let err = parse(r#"{"targets": {"app": {"pidfile": "/p", "signal": "BOOM"}}}"#).unwrap_err().0;
        assert!(err.contains("unknown signal"), "{err}");
        let err = parse(r#"{"remote": 5}"#).unwrap_err().0;
        assert!(err.contains("key `remote`") && err.contains("an address"), "{err}");
        let err = parse(r#"{} trailing"#).unwrap_err().0;
        assert!(err.contains("trailing characters"), "{err}");
        let err = parse(r#"{"settle_ms": 99999999999999999}"#).unwrap_err().0;
        assert!(err.contains("key `settle_ms`") && err.contains("longer than an hour"), "{err}");
        let err = parse(r#"{"targets": {"app": {"touch": "/r", "ready": {"log": "l", "timeout_ms": 3600001}}}}"#);
        assert!(err.unwrap_err().0.contains("targets.app.ready.timeout_ms"));
        let err = parse(r#"{"targets": {}}"#).unwrap_err().0; // found by fuzzing
        assert!(err.contains("key `targets`: names no target"), "{err}");
        let err = parse(r#"{"default_target": "web"}"#).unwrap_err().0;
        assert!(err.contains("default_target \"web\""), "{err}");
    }

    #[test]
    fn syntax_errors_are_placed_in_their_object_never_at_key_question_mark() {
        let err = parse(r#"{"settle_ms": 30,}"#).unwrap_err().0;
        assert!(
            err.ends_with(".touchwire.json: JSON syntax error at the top level: trailing comma at line 1 column 18"),
            "{err}"
        );
        let err = parse(r#"{"targets": {"app": {"touch": "/x",}}}"#).unwrap_err().0;
        assert!(err.contains("JSON syntax error inside `targets.app`: trailing comma"), "{err}");
        let err = parse(r#"{"remote": ["a" "b"]}"#).unwrap_err().0;
        assert!(err.contains("JSON syntax error inside `remote`") || err.contains("at key `remote"), "{err}");
        let err = parse("{\"targets\": {\"app\": {\"touch\": \"/x\"}}\n").unwrap_err().0;
        assert!(err.contains("JSON syntax error at the top level: EOF while parsing an object"), "{err}");
        for json in [r#"{"settle_ms": 30,}"#, r#"{"targets": {"app": {"touch": "/x",}}}"#, r#"{"a": }"#, "{"] {
            let err = parse(json).unwrap_err().0;
            assert!(!err.contains('?'), "{json}: {err}");
        }
    }

    #[test]
    fn a_wrong_duration_asks_for_a_number_of_milliseconds() {
        for json in [
            r#"{"settle_ms": "fast"}"#,
            r#"{"debounce_ms": -1}"#,
            r#"{"hook_timeout_ms": 1.5}"#,
            r#"{"targets": {"app": {"exec": ["x"], "timeout_ms": "10s"}}}"#,
        ] {
            let err = parse(json).unwrap_err().0;
            assert!(err.contains("expected a number of milliseconds") && !err.contains("u64"), "{json}: {err}");
        }
        assert_eq!(parse(r#"{"settle_ms": 0}"#).unwrap().settle_ms.value, 0);
        assert_eq!(parse(r#"{"settle_ms": null}"#).unwrap().settle_ms.value, 200);
        assert_eq!(parse(r#"{"settle_ms": 3600000}"#).unwrap().settle_ms.value, MAX_MS);
    }

    #[test]
    fn addresses_are_checked_and_completed_with_the_default_port() {
        let config = parse(r#"{"remote": ["guest", "::1", "[::1]:7000"], "listen": "0.0.0.0"}"#).unwrap();
        assert_eq!(config.remotes.value, vec!["guest:9001", "[::1]:9001", "[::1]:7000"]);
        assert_eq!(config.listen.value, "0.0.0.0:9001");
        assert_eq!(parse(r#"{"listen": "127.0.0.1:0"}"#).unwrap().listen.value, "127.0.0.1:0");
        for (json, says) in [
            (r#"{"remote": "guest:99999"}"#, "key `remote`: \"guest:99999\": port 99999 is out of range"),
            (
                r#"{"remote": ["a", "http://b:9001"]}"#,
                "key `remote[1]`: \"http://b:9001\": http:// is not part of an address: write HOST:PORT without a scheme: b:9001",
            ),
            (r#"{"remote": ""}"#, "key `remote`: \"\": the address is empty"),
            (
                r#"{"listen": "::1:9101"}"#,
                "key `listen`: \"::1:9101\": an IPv6 address with a port needs brackets: write [::1]:9101",
            ),
            (r#"{"remote": "g:abc"}"#, "port \"abc\" is not a number"),
        ] {
            let err = parse(json).unwrap_err().0;
            let file = Path::new("/project").join(FILE_NAME);
            assert!(err.starts_with(&format!("{}: ", file.display())) && err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn relative_paths_are_relative_to_the_file() {
        let config = parse(r#"{"targets": {"app": {"touch": "reload"}}, "token_file": "t"}"#).unwrap();
        let ActionSpec::Touch { path } = &config.targets.value["app"].action else { panic!() };
        assert!(path.is_absolute() && path.ends_with("reload"));
    }

    #[test]
    #[cfg(not(unix))]
    fn a_windows_host_keeps_guest_paths_as_written() {
        let text = r#"{"targets": {"app": {"touch": "app.reload", "ready": {"preset": "uwsgi", "log": "/var/log/app.log"}},
                       "web": {"fifo": "/tmp/web.fifo", "root": "/srv/app"}}}"#;
        let config = parse(text).unwrap();
        let ActionSpec::Touch { path } = &config.targets.value["app"].action else { panic!() };
        assert_eq!(path.to_str(), Some("app.reload"));
        assert_eq!(config.targets.value["app"].ready.as_ref().unwrap().log.to_str(), Some("/var/log/app.log"));
        let ActionSpec::Fifo { path, .. } = &config.targets.value["web"].action else { panic!() };
        assert_eq!(path.to_str(), Some("/tmp/web.fifo"));
        assert_eq!(config.targets.value["web"].root.as_deref().and_then(Path::to_str), Some("/srv/app"));
    }

    #[test]
    fn remote_may_be_a_list_and_signal_defaults_to_hup() {
        let config = parse(r#"{"remote": ["a:1", "b"], "targets": {"web": {"pidfile": "/run/g.pid"}}}"#).unwrap();
        assert_eq!(config.remotes.value, vec!["a:1", "b:9001"], "the port is completed once, at load");
        let ActionSpec::Signal { signal, .. } = config.targets.value["web"].action else { panic!() };
        assert_eq!(signal.name, "HUP");
        assert_eq!(config.resolved_default_target().as_deref(), Some("web"));
    }

    #[test]
    fn a_ready_check_takes_a_preset_and_its_errors_name_the_key() {
        let config = parse(r#"{"targets": {"app": {"touch": "/r", "ready": {"preset": "uwsgi", "log": "app.log", "timeout_ms": 5000}}}}"#)
            .unwrap();
        let ready = config.targets.value["app"].ready.as_ref().unwrap();
        assert!(ready.log.ends_with("app.log") && ready.timeout == Duration::from_secs(5));
        #[cfg(unix)]
        assert!(ready.log.is_absolute());
        let err = parse(r#"{"targets": {"app": {"touch": "/r", "ready": {"log": "a.log"}}}}"#).unwrap_err().0;
        assert!(err.contains("targets.app") && err.contains("`pattern` or a `preset`"), "{err}");
        let err = parse(r#"{"targets": {"app": {"touch": "/r", "ready": {"log": "a", "pattern": "x", "colour": 1}}}}"#)
            .unwrap_err()
            .0;
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn signal_names_parse_with_or_without_sig() {
        #[cfg(unix)]
        assert_eq!("sigusr1".parse::<Signal>().unwrap().number(), libc::SIGUSR1);
        assert_eq!("TERM".parse::<Signal>().unwrap().name, "TERM");
        assert!("".parse::<Signal>().is_err());
    }
}
