//! `touchwire status`: the resolved configuration with the source of each value, then a ping of
//! every remote with its round trip, auth result and targets.

use crate::cli::StatusArgs;
use crate::client::{Connection, Credentials};
use crate::config::{Config, Setting};
use crate::hooks;
use crate::output::millis;
use crate::protocol::{Health, Op, Reply, Request, escape_remote};
use anyhow::{Context, Result, anyhow};
use std::fmt::Display;
use std::time::{Duration, Instant};

/// Prints the configuration and pings every remote; fails (exit 1) if any remote fails or has a
/// target whose action cannot run now.
pub fn command(args: StatusArgs) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let config = Config::load(&args.flags(), &cwd)?;
    println!("touchwire {}", env!("CARGO_PKG_VERSION"));
    let files: Vec<_> = config.files.iter().map(|p| p.display().to_string()).collect();
    println!(
        "config files     {}",
        if files.is_empty() { "none (built-in defaults)".into() } else { files.join(", ") }
    );
    row("remote", &config.remotes, config.remotes.value.join(", "));
    let token = match &config.token_file.value {
        None => "none (authentication off)".to_string(),
        Some(path) if path.is_file() => format!("{}", path.display()),
        Some(path) => format!("{} (missing: `touchwire init --token` creates it)", path.display()),
    };
    row("token_file", &config.token_file, token);
    row("listen", &config.listen, &config.listen.value);
    let targets: Vec<_> = config.targets.value.iter().map(|(name, spec)| format!("{name}: {}", spec.action)).collect();
    row("targets", &config.targets, targets.join("; "));
    row("default_target", &config.default_target, config.resolved_default_target().unwrap_or_else(|| "none".into()));
    row("extensions", &config.extensions, config.extensions.value.join(", "));
    row("debounce_ms", &config.debounce_ms, config.debounce_ms.value);
    row("settle_ms", &config.settle_ms, config.settle_ms.value);
    row("hook_timeout_ms", &config.hook_timeout_ms, config.hook_timeout_ms.value);
    row("timeout_ms", &config.timeout_ms, config.timeout_ms.value);
    let poll = config.poll_ms.value.map_or("off (the OS's file events)".into(), |ms| format!("every {ms} ms"));
    row("poll_ms", &config.poll_ms, poll);
    row("tracked_only", &config.tracked_only, config.tracked_only.value);
    row("max_connections", &config.max_connections, config.max_connections.value);
    row("read_timeout_ms", &config.read_timeout_ms, config.read_timeout_ms.value);

    hooks_line();
    let credentials = Credentials::of(&config);
    let timeout = Duration::from_millis(config.timeout_ms.value);
    let mut failed = Vec::new();
    for remote in &config.remotes.value {
        let result = credentials.as_ref().map_err(|e| anyhow!("{remote}: {e}")).and_then(|c| ping(remote, c, timeout));
        match result {
            Ok((line, blocked)) => {
                println!("{remote}: {line}");
                if !blocked.is_empty() {
                    failed.push(format!("{remote} (cannot act: {})", blocked.join(", ")));
                }
            }
            Err(err) => {
                println!("{remote}: FAILED: {}", escape_remote(&format!("{err:#}")));
                failed.push(remote.clone());
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => {
            let of = crate::output::count(config.remotes.value.len(), "remote", "remotes");
            Err(anyhow!("{n} of {of} failed: {}", failed.join(", ")))
        }
    }
}

/// What `touchwire hooks` installed in the current repository, if in one.
fn hooks_line() {
    let Ok(cwd) = std::env::current_dir() else { return };
    let Ok(dir) = hooks::hooks_dir(&cwd) else { return };
    let states: Vec<String> = hooks::HOOKS
        .iter()
        .map(|(name, _)| {
            let state = match hooks::state(&dir, name) {
                hooks::State::Installed => "installed",
                hooks::State::Chained => "installed (chained)",
                hooks::State::Foreign | hooks::State::Missing => "not installed",
            };
            format!("{name} {state}")
        })
        .collect();
    println!("{:<16} {}    [{}]", "git hooks", states.join(", "), dir.display());
}

fn row(name: &str, setting: &Setting<impl Sized>, value: impl Display) {
    println!("{name:<16} {value}    [{}]", setting.source);
}

/// The remote's line, and the targets whose action cannot run now.
fn ping(remote: &str, credentials: &crate::client::Credentials, timeout: Duration) -> Result<(String, Vec<String>)> {
    let start = Instant::now();
    let mut connection = Connection::open(remote, credentials, timeout)?;
    let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    let ping = Request { op: Some(Op::Ping), probe: true, ..Request::default() };
    // Everything in it is printed: escaped again, whatever the receiver did.
    let reply: Reply = connection.request(ping, left)?.escaped();
    let auth = if connection.auth_required() {
        "auth on, token accepted"
    } else {
        "auth off (anyone who reaches it can reload)"
    };
    let targets = reply.targets.unwrap_or_default().join(", ");
    let default = reply.default_target.unwrap_or_else(|| "none".into());
    let version = reply.version.unwrap_or_else(|| "?".into());
    let mut line = format!(
        "ok in {}; {auth}; touchwire {version}; targets {targets} (default {default})",
        millis(start.elapsed())
    );
    let mut blocked = Vec::new();
    for (name, health) in reply.health.unwrap_or_default() {
        if health.ok == Some(false) {
            blocked.push(name.clone());
        }
        line.push_str(&format!("\n  {}", target_line(&name, &health)));
    }
    Ok((line, blocked))
}

/// One target's probe, for people: whether its action can run now (not whether the app is
/// ready: that is the ready check's word), and whether it has a ready check, which decides what
/// `send --wait` waits for (or that the receiver did not say).
fn target_line(name: &str, health: &Health) -> String {
    let state = match health.ok {
        Some(true) => "action ok",
        Some(false) => "CANNOT ACT",
        None => "action not probed",
    };
    let check = match health.ready_check {
        Some(true) => "has a ready check",
        Some(false) => "no ready check (send --wait answers when the action is done)",
        // An older or another receiver: it may well have one.
        None => "ready check: not reported by the receiver",
    };
    format!("target {name}: {state}: {}; {check}", health.detail.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::target_line;
    use crate::protocol::{Health, Reply};

    fn health(ok: Option<bool>, ready_check: bool) -> Health {
        Health { ok, detail: Some("uWSGI is attached".into()), ready_check: Some(ready_check), wait_ms: None }
    }

    #[test]
    fn the_probe_says_whether_the_action_can_run_and_whether_there_is_a_ready_check() {
        let line = target_line("app", &health(Some(true), true));
        assert_eq!(line, "target app: action ok: uWSGI is attached; has a ready check");
        let line = target_line("app", &health(Some(false), false));
        assert!(line.starts_with("target app: CANNOT ACT: uWSGI is attached; no ready check"), "{line}");
        assert!(!target_line("app", &health(None, false)).contains(" ready:"));
    }

    #[test]
    fn a_receiver_that_does_not_report_a_ready_check_is_not_said_to_have_none() {
        // As from an older or another receiver: its health has no `ready_check`.
        let json = r#"{"ok":true,"op":"ping","targets":["app"],"health":{"app":{"ok":true,"detail":"d"}}}"#;
        let reply: Reply = serde_json::from_str(json).unwrap();
        let health = reply.health.unwrap_or_default();
        let line = target_line("app", &health["app"]);
        assert_eq!(line, "target app: action ok: d; ready check: not reported by the receiver");
    }
}
