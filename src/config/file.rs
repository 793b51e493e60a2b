//! One config file: its schema (unknown keys are errors), its parsing with errors that name the
//! file and the key, and how its values apply over the layers below it.

use super::target::validate_fifo_command;
use super::{ActionSpec, Config, Setting, Source, TargetSpec, bind_address, defaults, remote_address};
use crate::error::UsageError;
use crate::ready::ReadyCheck;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A duration in ms of at most [`defaults::MAX_MS`].
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
        write!(f, "a number of milliseconds from 0 to {}, such as 200", defaults::MAX_MS)
    }

    fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<Millis, E> {
        if ms > defaults::MAX_MS {
            return Err(E::custom(format!(
                "{ms} ms is longer than an hour ({} ms), the most allowed",
                defaults::MAX_MS
            )));
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
pub(super) struct ConfigFile {
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
    #[serde(default, deserialize_with = "bounded_ms")]
    timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "bounded_ms")]
    poll_ms: Option<u64>,
    tracked_only: Option<bool>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "bounded_ms")]
    read_timeout_ms: Option<u64>,
}

pub(super) fn read_file(path: &Path) -> Result<ConfigFile, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| UsageError(format!("cannot read config file {}: {err}", path.display())))?;
    parse_file(&text, path)
}

/// Parses a config file's text; errors name `path` and the key.
pub(super) fn parse_file(text: &str, path: &Path) -> Result<ConfigFile, UsageError> {
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
        let command = t.command.unwrap_or_else(|| defaults::FIFO_COMMAND.into());
        validate_fifo_command(&command)?;
        return Ok(ActionSpec::Fifo { path: guest_path(dir, path), command, poke: t.poke.unwrap_or(true) });
    }
    if let Some(pidfile) = t.pidfile {
        let signal = t.signal.as_deref().unwrap_or(defaults::SIGNAL).parse()?;
        return Ok(ActionSpec::Signal { pidfile: guest_path(dir, pidfile), signal });
    }
    let argv = t.exec.unwrap_or_default();
    if argv.is_empty() || argv[0].is_empty() {
        return Err("`exec` needs a program: a list like [\"systemctl\", \"reload\", \"app\"]".into());
    }
    let timeout = t.timeout_ms.map(Duration::from_millis).unwrap_or(defaults::EXEC_TIMEOUT);
    Ok(ActionSpec::Exec { argv, timeout })
}

impl Config {
    /// Applies one file read from `path` over what is set (`source` says which layer it is).
    pub(super) fn apply(&mut self, file: ConfigFile, path: &Path, source: Source) -> Result<(), UsageError> {
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
        self.timeout_ms.set(file.timeout_ms, &source);
        let counts =
            [("poll_ms", file.poll_ms), ("read_timeout_ms", file.read_timeout_ms), ("timeout_ms", file.timeout_ms)];
        let max_connections = ("max_connections", file.max_connections.map(|n| n as u64));
        if let Some((key, _)) = counts.into_iter().chain([max_connections]).find(|(_, n)| *n == Some(0)) {
            return Err(UsageError(format!("{}: key `{key}`: 0 would not work: give at least 1", path.display())));
        }
        self.poll_ms.set(file.poll_ms.map(Some), &source);
        self.tracked_only.set(file.tracked_only, &source);
        self.max_connections.set(file.max_connections, &source);
        self.read_timeout_ms.set(file.read_timeout_ms, &source);
        Ok(())
    }
}
