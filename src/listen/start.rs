//! `touchwire listen`: turns config and flags into [`Options`], enforces the bind rule, prints the bound address first.

use super::{Options, Receiver};
use crate::UsageError;
use crate::cli::{Global, ListenArgs};
use crate::config::address::{Address, Use};
use crate::config::{ActionSpec, Config, FILE_NAME, Source, TargetSpec, validate_fifo_command};
use crate::output::Log;
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs the receiver until the process is stopped.
pub fn command(global: &Global, args: ListenArgs) -> Result<()> {
    let locate = crate::locate(global)?;
    let mut config = Config::load(&locate)?;
    if let Some(action) = flag_action(&args)? {
        config.targets.set_by_flag(BTreeMap::from([(args.target.clone(), action.into())]));
        config.default_target.set_by_flag(Some(args.target.clone()));
    }
    if let Some(addr) = &args.addr {
        config.listen.set_by_flag(addr.clone());
    }
    if let Some(ms) = args.settle {
        config.settle_ms.set_by_flag(ms);
    }
    let token = crate::credentials(&config)?.token;
    let addr = config.listen.value.clone();
    let address = Address::parse(&addr, Use::Bind)
        .map_err(|msg| UsageError(format!("listen address {addr:?} (from {}): {msg}", config.listen.source)))?;
    let loopback_only = address
        .to_socket_addrs()
        .map_err(|err| {
            UsageError(format!("cannot resolve listen address {addr} (from {}): {err}", config.listen.source))
        })?
        .all(|a| a.ip().is_loopback());
    if !loopback_only && token.is_none() && !args.allow_unauthenticated {
        return Err(UsageError(format!(
            "refusing to listen on {addr} without a token: anyone who can reach it could reload your app. \
             Run `touchwire init` on the host (the token travels with the shared folder), pass --token-file, \
             or pass --allow-unauthenticated"
        ))
        .into());
    }
    let log = Log { json: args.json, quiet: global.quiet, verbose: global.verbose };
    let options = Options {
        default_target: config.resolved_default_target(),
        // A target without its own `root` takes the configuration's.
        targets: config
            .targets
            .value
            .iter()
            .map(|(name, spec)| {
                let root = spec.root.clone().or_else(|| config.root.value.clone());
                (name.clone(), TargetSpec { root, ..spec.clone() })
            })
            .collect(),
        extensions: config.extensions.value.clone(),
        token,
        settle: Duration::from_millis(config.settle_ms.value),
        max_connections: args.max_connections.max(1),
        read_timeout: Duration::from_millis(args.read_timeout.max(1)),
        log,
    };
    let auth = options.token.is_some();
    let mut receiver = Receiver::bind(&addr, options.clone())?;
    let bound = receiver.local_addr()?;
    let targets: Vec<_> = options.targets.iter().map(|(name, spec)| format!("{name}: {}", spec.action)).collect();
    // Always the first line, even with --quiet: scripts and tests read the port from it.
    log.warn(
        "listening",
        &format!(
            "touchwire listening on {bound} (auth {}; targets: {})",
            if auth { "on" } else { "off" },
            targets.join("; ")
        ),
        json!({"addr": bound.to_string(), "auth": auth, "targets": options.targets.keys().collect::<Vec<_>>(),
               "default_target": options.default_target,
               "config": config.repo_file.as_ref().map(|p| p.display().to_string())}),
    );
    if !auth && !loopback_only {
        log.warn(
            "warning",
            &format!("warning: no token: anyone who can reach {bound} can reload your app"),
            json!({"warning": "unauthenticated non-loopback listener"}),
        );
    }
    // The lines about this listener's limits and settings come before any about connections.
    receiver.say_cap_note();
    match config_line(&config, &locate.cwd, auth) {
        ConfigLine::Found(line) => log.say(&line),
        ConfigLine::NoneFound(line) => log.warn(
            "warning",
            &line,
            json!({"warning": "no config file", "searched_from": locate.cwd.display().to_string()}),
        ),
    }
    // SIGINT, SIGTERM, SIGHUP (a closed terminal): stop accepting, run what is owed, join, return.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|err| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {err}"))?;
    receiver.serve_until(&stop)
}

/// What `listen` says about its configuration, after the first line.
#[derive(Debug, PartialEq)]
enum ConfigLine {
    /// The files it read.
    Found(String),
    /// No `.touchwire.json`: a warning, since the built-in defaults (loopback, no token) are
    /// rarely what a guest that the host must reach wants.
    NoneFound(String),
}

/// Which configuration `config` is, in words, for a listener started in `cwd` (`auth` says
/// whether a token is in force).
fn config_line(config: &Config, cwd: &Path, auth: bool) -> ConfigLine {
    let files: Vec<String> = config.files.iter().map(|p| p.display().to_string()).collect();
    if config.repo_file.is_some() {
        return ConfigLine::Found(format!("config: {}", files.join(", ")));
    }
    let mut from: Vec<String> = files.iter().map(|f| format!("user config {f}")).collect();
    let sources = [&config.listen.source, &config.token_file.source, &config.targets.source, &config.settle_ms.source];
    if sources.iter().any(|s| **s == Source::Flag) {
        from.push("the command line".into());
    }
    if sources.iter().any(|s| matches!(s, Source::Env(_))) {
        from.push("the environment".into());
    }
    from.push("built-in defaults".into());
    ConfigLine::NoneFound(format!(
        "warning: no {FILE_NAME} found from {}: {} (auth {}, {}); to use the repository's, start listen in the \
         shared folder or pass --config FILE (`touchwire init` on the host writes one)",
        cwd.display(),
        from.join(" and "),
        if auth { "on" } else { "off" },
        config.listen.value,
    ))
}

/// The target defined by `--touch`, `--fifo`, `--pidfile` or `--exec`, if any.
fn flag_action(args: &ListenArgs) -> Result<Option<ActionSpec>, UsageError> {
    if let Some(path) = &args.touch {
        return Ok(Some(ActionSpec::Touch { path: path.clone() }));
    }
    if let Some(path) = &args.fifo {
        validate_fifo_command(&args.fifo_command).map_err(|msg| UsageError(format!("--fifo-command: {msg}")))?;
        return Ok(Some(ActionSpec::Fifo {
            path: path.clone(),
            command: args.fifo_command.clone(),
            poke: !args.no_poke,
        }));
    }
    if let Some(pidfile) = &args.pidfile {
        let signal =
            args.signal.as_deref().unwrap_or("HUP").parse().map_err(|msg| UsageError(format!("--signal: {msg}")))?;
        return Ok(Some(ActionSpec::Signal { pidfile: pidfile.clone(), signal }));
    }
    if let Some(argv) = &args.exec {
        return Ok(Some(ActionSpec::Exec { argv: argv.clone(), timeout: Duration::from_millis(args.exec_timeout) }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_line_names_the_file_or_warns_with_what_is_in_force() {
        let cwd = Path::new("/srv/app");
        let defaults = Config::defaults();
        let ConfigLine::NoneFound(line) = config_line(&defaults, cwd, false) else { panic!() };
        assert_eq!(
            line,
            "warning: no .touchwire.json found from /srv/app: built-in defaults (auth off, 127.0.0.1:9001); to use \
             the repository's, start listen in the shared folder or pass --config FILE (`touchwire init` on the \
             host writes one)"
        );
        let mut flagged = Config::defaults();
        flagged.listen.set_by_flag("0.0.0.0:9001".into());
        let ConfigLine::NoneFound(line) = config_line(&flagged, cwd, true) else { panic!() };
        assert!(line.contains(": the command line and built-in defaults (auth on, 0.0.0.0:9001)"), "{line}");

        let file = Path::new("/srv/app/.touchwire.json");
        let found = Config::from_file_text("{}", file).unwrap();
        assert_eq!(config_line(&found, cwd, false), ConfigLine::Found("config: /srv/app/.touchwire.json".into()));
    }
}
