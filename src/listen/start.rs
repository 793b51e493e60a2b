//! `touchwire listen`: turns config and flags into [`Options`], enforces the bind rule, prints the bound address first.

use super::{Options, Receiver};
use crate::UsageError;
use crate::cli::{Global, ListenArgs};
use crate::config::{ActionSpec, Config, TargetSpec, validate_fifo_command};
use crate::output::Log;
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs the receiver until the process is stopped.
pub fn command(global: &Global, args: ListenArgs) -> Result<()> {
    let mut config = Config::load(&crate::locate(global)?)?;
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
    let loopback_only = addr
        .to_socket_addrs()
        .map_err(|err| UsageError(format!("cannot resolve listen address {addr:?}: {err}")))?
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
    let receiver = Receiver::bind(&addr, options.clone())?;
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
               "default_target": options.default_target}),
    );
    if !auth && !loopback_only {
        log.warn(
            "warning",
            &format!("warning: no token: anyone who can reach {bound} can reload your app"),
            json!({"warning": "unauthenticated non-loopback listener"}),
        );
    }
    // SIGINT, SIGTERM, SIGHUP (a closed terminal): stop accepting, run what is owed, join, return.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|err| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {err}"))?;
    receiver.serve_until(&stop)
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
