//! `touchwire listen`: the configuration into [`Options`], the bind rule enforced, the bound address printed first.

use super::{Options, Receiver};
use crate::cli::ListenArgs;
use crate::config::address::{Address, Use};
use crate::config::{Config, FILE_NAME, Source, TargetSpec};
use crate::error::UsageError;
use crate::output::Log;
use anyhow::{Context, Result};
use serde_json::json;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs the receiver until the process is stopped.
pub fn command(args: ListenArgs) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let config = Config::load(&args.flags(), &cwd)?;
    let log = args.global.log(&args.json);
    let (options, loopback_only) = options(&config, args.allow_unauthenticated, log)?;
    let addr = config.listen.value.clone();
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
    match config_line(&config, auth) {
        ConfigLine::Found(line) => log.say(&line),
        ConfigLine::NoneFound(line) => log.warn(
            "warning",
            &line,
            json!({"warning": "no config file", "searched_from": config.cwd.display().to_string()}),
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

/// Which configuration `config` is, in words (`auth` says whether a token is in force).
fn config_line(config: &Config, auth: bool) -> ConfigLine {
    let files: Vec<String> = config.files.iter().map(|p| p.display().to_string()).collect();
    if config.repo_file.is_some() {
        return ConfigLine::Found(format!("config: {}", files.join(", ")));
    }
    let mut from: Vec<String> = files.iter().map(|f| format!("user config {f}")).collect();
    let sources = [
        &config.listen.source,
        &config.token_file.source,
        &config.targets.source,
        &config.settle_ms.source,
        &config.max_connections.source,
        &config.read_timeout_ms.source,
    ];
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
        config.cwd.display(),
        from.join(" and "),
        if auth { "on" } else { "off" },
        config.listen.value,
    ))
}

/// The receiver's settings from `config`, and whether it binds loopback alone; enforces the bind
/// rule: beyond loopback, a token or `--allow-unauthenticated` (`allow`).
pub(crate) fn options(config: &Config, allow: bool, log: Log) -> Result<(Options, bool), UsageError> {
    let token = config.token()?;
    let addr = &config.listen.value;
    let address = Address::parse(addr, Use::Bind)
        .map_err(|msg| UsageError(format!("listen address {addr:?} (from {}): {msg}", config.listen.source)))?;
    let loopback_only = address
        .to_socket_addrs()
        .map_err(|err| {
            UsageError(format!("cannot resolve listen address {addr} (from {}): {err}", config.listen.source))
        })?
        .all(|a| a.ip().is_loopback());
    if !loopback_only && token.is_none() && !allow {
        return Err(UsageError(format!(
            "refusing to listen on {addr} without a token: anyone who can reach it could reload your app. \
             Run `touchwire init` on the host (the token travels with the shared folder), pass --token-file, \
             or pass --allow-unauthenticated"
        )));
    }
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
        max_connections: config.max_connections.value.max(1),
        read_timeout: Duration::from_millis(config.read_timeout_ms.value.max(1)),
        log,
    };
    Ok((options, loopback_only))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use std::path::Path;

    #[test]
    fn the_config_line_names_the_file_or_warns_with_what_is_in_force() {
        let cwd = Path::new("/srv/app");
        let defaults = Config::defaults(cwd);
        let ConfigLine::NoneFound(line) = config_line(&defaults, false) else { panic!() };
        assert_eq!(
            line,
            "warning: no .touchwire.json found from /srv/app: built-in defaults (auth off, 127.0.0.1:9001); to use \
             the repository's, start listen in the shared folder or pass --config FILE (`touchwire init` on the \
             host writes one)"
        );
        let mut flagged = Config::defaults(cwd);
        flagged.apply_flags(&Flags { listen: Some("0.0.0.0:9001".into()), ..Flags::default() });
        let ConfigLine::NoneFound(line) = config_line(&flagged, true) else { panic!() };
        assert!(line.contains(": the command line and built-in defaults (auth on, 0.0.0.0:9001)"), "{line}");

        let file = Path::new("/srv/app/.touchwire.json");
        let found = Config::from_file_text("{}", file).unwrap();
        assert_eq!(config_line(&found, false), ConfigLine::Found("config: /srv/app/.touchwire.json".into()));
    }

    #[test]
    fn options_come_from_every_layer_and_the_bind_rule_holds() {
        let file = Path::new("/srv/app/.touchwire.json");
        let text = r#"{"listen": "127.0.0.1:0", "root": "/srv/app", "settle_ms": 50,
                       "targets": {"web": {"touch": "/tmp/web.reload"}, "api": {"touch": "/tmp/api.reload", "root": "/srv/api"}}}"#;
        let mut config = Config::from_file_text(text, file).unwrap();
        config.apply_flags(&Flags { max_connections: Some(7), read_timeout_ms: Some(250), ..Flags::default() });
        let (resolved, loopback) = options(&config, false, Log::default()).unwrap();
        assert!(loopback);
        assert_eq!((resolved.max_connections, resolved.read_timeout), (7, Duration::from_millis(250)));
        assert_eq!(resolved.settle, Duration::from_millis(50));
        assert_eq!(resolved.targets["web"].root.as_deref(), Some(Path::new("/srv/app")), "inherits the config's root");
        assert_eq!(resolved.targets["api"].root.as_deref(), Some(Path::new("/srv/api")), "keeps its own");
        assert_eq!(resolved.default_target, None, "two targets, none named app or default");

        config.apply_flags(&Flags { listen: Some("0.0.0.0:9001".into()), ..Flags::default() });
        let err = options(&config, false, Log::default()).map(|_| ()).unwrap_err().0;
        assert!(err.starts_with("refusing to listen on 0.0.0.0:9001 without a token"), "{err}");
        assert!(options(&config, true, Log::default()).is_ok(), "--allow-unauthenticated");
    }
}
