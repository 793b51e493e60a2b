//! Configuration, resolved once: `.touchwire.json` discovery and the layers (flags >
//! environment > repo file > user file > defaults) into one [`Config`] whose every value
//! remembers where it came from. Each command turns it into its own typed settings.

pub mod address;
pub mod defaults;
mod file;
mod target;

pub use target::{ActionSpec, Signal, TargetSpec, validate_fifo_command};

use crate::auth::Token;
use crate::error::UsageError;
use address::{Address, Use};
use file::read_file;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Name of the per-repository configuration file.
pub const FILE_NAME: &str = ".touchwire.json";

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

    /// Sets `value` from `source`, if there is one.
    pub(crate) fn set(&mut self, value: Option<T>, source: &Source) {
        if let Some(value) = value {
            *self = Setting { value, source: source.clone() };
        }
    }
}

/// The command line's layer, the highest: what the flags of the command being run set. A field
/// is `None` (or empty, or false) when no flag set it, so what a file or the environment says
/// stands. `cli` builds it from each command's flags; addresses arrive checked and completed.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`: read this file instead of discovering `.touchwire.json`.
    pub config: Option<PathBuf>,
    /// `--token-file FILE`.
    pub token_file: Option<PathBuf>,
    /// `--to ADDR`, repeated.
    pub remotes: Vec<String>,
    /// `listen --addr`.
    pub listen: Option<String>,
    /// The target `listen`'s action flags define (`--target` names it): it replaces the
    /// configured targets and is the default.
    pub target: Option<(String, ActionSpec)>,
    /// `watch --ext`.
    pub extensions: Vec<String>,
    /// `watch --debounce`.
    pub debounce_ms: Option<u64>,
    /// `listen --settle`.
    pub settle_ms: Option<u64>,
    /// `--timeout`.
    pub timeout_ms: Option<u64>,
    /// `watch --poll[=MS]`.
    pub poll_ms: Option<u64>,
    /// `watch --tracked-only` (true) or `--no-tracked-only` (false).
    pub tracked_only: Option<bool>,
    /// `listen --max-connections`.
    pub max_connections: Option<usize>,
    /// `listen --read-timeout`.
    pub read_timeout_ms: Option<u64>,
}

/// The resolved configuration of both ends.
#[derive(Debug, Clone)]
pub struct Config {
    /// Config files read, lowest precedence first.
    pub files: Vec<PathBuf>,
    /// The repository's `.touchwire.json` (or the `--config` file) in force, if one was found.
    pub repo_file: Option<PathBuf>,
    /// Where discovery started (the current directory, or the directory of the file a command
    /// is about).
    pub cwd: PathBuf,
    /// Guests that `send`, `watch` and `status` talk to.
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
    /// How long the host waits for a guest's answer, in ms (a git hook: `hook_timeout_ms`,
    /// unless a flag says).
    pub timeout_ms: Setting<u64>,
    /// `watch` polls every this many ms instead of using the OS's file events.
    pub poll_ms: Setting<Option<u64>>,
    /// Only files git tracks are relevant, not untracked ones.
    pub tracked_only: Setting<bool>,
    /// Most connections a receiver serves at once.
    pub max_connections: Setting<usize>,
    /// A receiver closes a connection that sends no complete request for this long, in ms.
    pub read_timeout_ms: Setting<u64>,
}

impl Config {
    /// Built-in defaults only (discovery starting at `cwd`).
    pub fn defaults(cwd: &Path) -> Config {
        let touch = ActionSpec::Touch { path: defaults::TOUCH_FILE.into() };
        Config {
            files: Vec::new(),
            repo_file: None,
            cwd: cwd.to_path_buf(),
            remotes: Setting::default(vec![defaults::address()]),
            listen: Setting::default(defaults::address()),
            token_file: Setting::default(None),
            targets: Setting::default(BTreeMap::from([(defaults::TARGET_NAME.to_string(), touch.into())])),
            default_target: Setting::default(None),
            extensions: Setting::default(defaults::EXTENSIONS.iter().map(|e| e.to_string()).collect()),
            root: Setting::default(None),
            debounce_ms: Setting::default(defaults::DEBOUNCE_MS),
            settle_ms: Setting::default(defaults::SETTLE_MS),
            hook_timeout_ms: Setting::default(defaults::HOOK_TIMEOUT_MS),
            timeout_ms: Setting::default(defaults::TIMEOUT_MS),
            poll_ms: Setting::default(None),
            tracked_only: Setting::default(false),
            max_connections: Setting::default(defaults::MAX_CONNECTIONS),
            read_timeout_ms: Setting::default(defaults::READ_TIMEOUT_MS),
        }
    }

    /// Every layer, lowest first: defaults, the user's file, the repository's `.touchwire.json`
    /// found from `cwd` upwards (or the `--config`/`TOUCHWIRE_CONFIG` file), the environment,
    /// and the command line's `flags`; then checked as a whole.
    pub fn load(flags: &Flags, cwd: &Path) -> Result<Config, UsageError> {
        let mut config = Config::defaults(cwd);
        if let Some(user) = user_config_file().filter(|p| p.is_file()) {
            let file = read_file(&user)?;
            config.apply(file, &user, Source::UserFile(user.clone()))?;
        }
        let explicit = match &flags.config {
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
            None => discover(cwd),
        };
        if let Some(path) = repo_file {
            let file = read_file(&path)?;
            config.apply(file, &path, Source::File(path.clone()))?;
            config.repo_file = Some(path);
        }
        config.apply_env()?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    /// The defaults with one config file's `text` (as if read from `path`) applied and checked:
    /// what `load` does with a file, without touching the file system.
    pub fn from_file_text(text: &str, path: &Path) -> Result<Config, UsageError> {
        let mut config = Config::defaults(path.parent().unwrap_or(Path::new(".")));
        config.apply(file::parse_file(text, path)?, path, Source::File(path.to_path_buf()))?;
        config.repo_file = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    /// `TOUCHWIRE_TO` and `TOUCHWIRE_TOKEN_FILE` (`TOUCHWIRE_CONFIG` chose the file).
    fn apply_env(&mut self) -> Result<(), UsageError> {
        if let Some(to) = std::env::var("TOUCHWIRE_TO").ok().filter(|s| !s.trim().is_empty()) {
            let list = to
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|text| {
                    remote_address(text).map_err(|msg| UsageError(format!("environment TOUCHWIRE_TO: {text:?}: {msg}")))
                })
                .collect::<Result<_, _>>()?;
            self.remotes.set(Some(list), &Source::Env("TOUCHWIRE_TO"));
        }
        let token_file = std::env::var_os("TOUCHWIRE_TOKEN_FILE").filter(|p| !p.is_empty());
        self.token_file.set(token_file.map(|p| Some(p.into())), &Source::Env("TOUCHWIRE_TOKEN_FILE"));
        Ok(())
    }

    /// The command line's layer over everything else.
    pub fn apply_flags(&mut self, flags: &Flags) {
        let flag = &Source::Flag;
        self.token_file.set(flags.token_file.clone().map(Some), flag);
        self.remotes.set(Some(flags.remotes.clone()).filter(|r| !r.is_empty()), flag);
        self.listen.set(flags.listen.clone(), flag);
        if let Some((name, action)) = &flags.target {
            self.targets.set(Some(BTreeMap::from([(name.clone(), action.clone().into())])), flag);
            self.default_target.set(Some(Some(name.clone())), flag);
        }
        self.extensions.set(Some(flags.extensions.clone()).filter(|e| !e.is_empty()), flag);
        self.debounce_ms.set(flags.debounce_ms, flag);
        self.settle_ms.set(flags.settle_ms, flag);
        self.timeout_ms.set(flags.timeout_ms, flag);
        self.poll_ms.set(flags.poll_ms.map(Some), flag);
        self.tracked_only.set(flags.tracked_only, flag);
        self.max_connections.set(flags.max_connections, flag);
        self.read_timeout_ms.set(flags.read_timeout_ms, flag);
    }

    /// The shared token, read from `token_file`; `None` when none is configured (no
    /// authentication). A file that cannot be read is a usage error that says how to make one.
    pub fn token(&self) -> Result<Option<Token>, UsageError> {
        let Some(path) = &self.token_file.value else { return Ok(None) };
        Token::read(path).map(Some).map_err(|err| {
            UsageError(format!(
                "{err:#} (token_file from {}; `touchwire init --token` creates it)",
                self.token_file.source
            ))
        })
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
            _ => names.iter().find(|n| *n == defaults::TARGET_NAME).cloned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use defaults::MAX_MS;
    use std::time::Duration;

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
