//! Ready checks as configured (DESIGN.md, "Knowing the app is back"): the app's log, the lines
//! that say it is back or that it failed, an optional URL, a timeout; and the presets for known
//! servers. Plain data, on every platform: the host reads the same `.touchwire.json` as the
//! guest. Following a log and waiting for the outcome is the receiver's part ([`crate::listen`]).

use anyhow::{Context, Result, bail};
use regex::Regex;
use std::path::PathBuf;
use std::time::Duration;

/// A known server's log lines.
pub struct Preset {
    /// Its name in `"preset"`.
    pub name: &'static str,
    /// A line that says the app is back.
    pub ready: &'static str,
    /// A line that says it failed.
    pub error: &'static str,
    /// How long after the ready line an error may still come: gunicorn says "Booting worker"
    /// before the worker imports the app, so a failed import follows it.
    pub grace: Duration,
}

/// The servers whose log lines ship with touchwire (recorded in tests/fixtures/).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "uwsgi",
        ready: r"WSGI app \d+ \(mountpoint='[^']*'\) ready in",
        // A SyntaxError in the module uWSGI loads is logged without a "Traceback" line: its
        // location line (`File "…", line N` with no ", in …") starts the excerpt instead.
        error: r#"Traceback|^\s*File "[^"]+", line \d+\s*$|unable to load app|no python application found"#,
        grace: Duration::ZERO,
    },
    Preset {
        name: "gunicorn",
        ready: r"Booting worker with pid",
        error: r"Traceback|Worker failed to boot|Exception in worker process",
        grace: Duration::from_millis(1000),
    },
    Preset {
        name: "django",
        ready: r"Starting development server at",
        error: r"Traceback|Error: ",
        grace: Duration::ZERO,
    },
    Preset {
        name: "uvicorn",
        ready: r"Application startup complete",
        error: r"Traceback|Error loading ASGI app",
        grace: Duration::ZERO,
    },
];

/// How long the default check waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured ready check.
#[derive(Debug, Clone)]
pub struct ReadyCheck {
    /// The app's log file.
    pub log: PathBuf,
    /// A line that says the app is back.
    pub pattern: Regex,
    /// A line that says it failed.
    pub error_pattern: Option<Regex>,
    /// Asked after the ready line; any answer below 500 is ready.
    pub url: Option<String>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Wait this long after the ready line for an error before calling it ready.
    pub grace: Duration,
}

impl PartialEq for ReadyCheck {
    fn eq(&self, other: &Self) -> bool {
        self.log == other.log
            && self.pattern.as_str() == other.pattern.as_str()
            && self.error_pattern.as_ref().map(Regex::as_str) == other.error_pattern.as_ref().map(Regex::as_str)
            && self.url == other.url
            && self.timeout == other.timeout
            && self.grace == other.grace
    }
}

impl ReadyCheck {
    /// A check from its parts: `preset` gives the patterns that `pattern`/`error_pattern` do not.
    pub fn new(
        log: PathBuf,
        preset: Option<&str>,
        pattern: Option<&str>,
        error_pattern: Option<&str>,
        url: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<ReadyCheck, String> {
        let preset = match preset {
            Some(name) => Some(PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
                format!("unknown preset {name:?} (known: {})", names.join(", "))
            })?),
            None => None,
        };
        let regex =
            |text: &str, key: &str| Regex::new(text).map_err(|err| format!("`{key}` is not a valid regex: {err}"));
        let pattern = match (pattern, preset) {
            (Some(p), _) => regex(p, "pattern")?,
            (None, Some(preset)) => regex(preset.ready, "pattern")?,
            (None, None) => return Err("a ready check needs a `pattern` or a `preset`".into()),
        };
        let error_pattern = match (error_pattern, preset) {
            (Some(p), _) => Some(regex(p, "error_pattern")?),
            (None, Some(preset)) => Some(regex(preset.error, "error_pattern")?),
            (None, None) => None,
        };
        let grace = preset.map_or(Duration::ZERO, |p| p.grace);
        if let Some(url) = &url {
            parse_url(url).map_err(|err| format!("`url`: {err}"))?;
        }
        Ok(ReadyCheck { log, pattern, error_pattern, url, timeout: timeout.unwrap_or(DEFAULT_TIMEOUT), grace })
    }
}

/// `http://HOST[:PORT][/PATH]` split into the address and the path.
pub(crate) fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs are checked")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("no host in {url:?}");
    }
    let addr = if host.contains(':') && !host.ends_with(']') { host.to_string() } else { format!("{host}:80") };
    Ok((addr, path.to_string()))
}
