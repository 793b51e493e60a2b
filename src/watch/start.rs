//! `touchwire watch`: config and flags into [`Options`], then watch and deliver until stopped.

use super::delivery::{Delivery, Settings};
use super::{Options, Watcher};
use crate::UsageError;
use crate::cli::{Global, WatchArgs};
use crate::config::Config;
use crate::output::Log;
use anyhow::{Context, Result};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Watches the work tree holding `args.dir` (or the current directory) and sends triggers, forever.
pub fn command(global: &Global, args: WatchArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.canonicalize().map_err(|err| UsageError(format!("cannot watch {}: {err}", dir.display())))?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let mut config = Config::load(&crate::locate_from(global, dir.clone())?)?;
    if !args.to.is_empty() {
        config.remotes.set_by_flag(args.to.clone());
    }
    if !args.ext.is_empty() {
        config.extensions.set_by_flag(args.ext.clone());
    }
    if let Some(ms) = args.debounce {
        config.debounce_ms.set_by_flag(ms);
    }
    let log = Log { json: args.json, quiet: global.quiet, verbose: global.verbose };
    let options = Options {
        dir,
        extensions: config.extensions.value.clone(),
        tracked_only: args.tracked_only,
        debounce: Duration::from_millis(config.debounce_ms.value),
        poll: match args.poll {
            Some(0) => {
                return Err(UsageError("--poll=0 would poll without pause: give an interval in ms".into()).into());
            }
            ms => ms.map(Duration::from_millis),
        },
        log,
    };
    let settings = Settings {
        credentials: crate::credentials(&config)?,
        target: args.target.clone(),
        timeout: Duration::from_millis(args.timeout),
        log,
        root: None,
    };
    let remotes = config.remotes_required()?;
    let mut watcher = Watcher::start(&options)?;
    log.event(
        "sending",
        &format!("sending triggers to {}", remotes.join(", ")),
        json!({"remotes": remotes, "root": watcher.root().display().to_string()}),
    );
    let settings = Settings { root: Some(watcher.root().to_path_buf()), ..settings };
    let (outcomes_tx, outcomes) = std::sync::mpsc::channel();
    let delivery = Delivery::start(&remotes, &settings, Some(outcomes_tx))?;
    // SIGINT/SIGTERM: wake the loop, which sends what the open burst holds before exiting.
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, wake) = (Arc::clone(&stop), watcher.waker());
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        wake();
    })
    .map_err(|err| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {err}"))?;
    // A step returns at least once a second, to see a stop request and a work tree gone.
    let ended = loop {
        match watcher.step(Duration::from_secs(1)) {
            Ok(triggers) => triggers.iter().for_each(|trigger| delivery.send(trigger)),
            Err(err) => break Err(err),
        }
        // Outcomes are printed by the delivery threads; here they only tell a stop when to end.
        while outcomes.try_recv().is_ok() {}
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
    };
    // On an error, main prints why once the changes held are sent.
    log.warn("stopping", "stopping: sending the changes not sent yet first", json!({}));
    if let Some(trigger) = watcher.flush() {
        delivery.send(&trigger);
        // One outcome per remote, each bounded by the delivery's own timeouts.
        let deadline = std::time::Instant::now() + settings.timeout * 3 + crate::client::WAIT_REPLY;
        for _ in 0..remotes.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if outcomes.recv_timeout(left).is_err() {
                break;
            }
        }
    }
    delivery.finish();
    ended
}
