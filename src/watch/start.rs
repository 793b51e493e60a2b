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
    let mut live = livereload(&args, Duration::from_millis(config.debounce_ms.value), log)?;
    let mut options = Options {
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
    // The watcher must report the pages' assets too; the LiveReload side keeps them from the guest.
    for ext in live.as_ref().map_or(&[][..], |live| live.assets()) {
        if !options.extensions.contains(ext) {
            options.extensions.push(ext.clone());
        }
    }
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
    let outcomes = live.as_mut().map(|live| live.outcomes(settings.root.clone())).transpose()?;
    let delivery = Delivery::start(&remotes, &settings, outcomes)?;
    let route = |trigger| crate::livereload::route(live.as_ref(), trigger, remotes.len());
    // SIGINT/SIGTERM: wake the loop, which sends what the open burst holds before exiting. A
    // second one exits at once, for whoever will not wait for a guest that does not answer.
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, wake) = (Arc::clone(&stop), watcher.waker());
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        wake();
    })
    .map_err(|err| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {err}"))?;
    // A stop request wakes the step; otherwise it returns on events, and every half minute to
    // see that the work tree is still where it was (a parent directory's move sends no event).
    let ended = loop {
        match watcher.step(TREE_CHECK) {
            Ok(triggers) => triggers.into_iter().filter_map(route).for_each(|trigger| delivery.send(&trigger)),
            Err(err) => break Err(err),
        }
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
    };
    // From here a Ctrl-C (the first, after an error) quits at once.
    let again = if stop.swap(true, Ordering::SeqCst) { "again " } else { "" };
    let line = format!("stopping: sending the changes not sent yet first (Ctrl-C {again}to quit now)");
    log.warn("stopping", &line, json!({}));
    let lost = delivery.finish(watcher.flush().and_then(route))?;
    if let Some(live) = live {
        live.stop();
    }
    let lost = (lost > 0).then(|| {
        let files = if lost == 1 { "file" } else { "files" };
        format!("{lost} changed {files} never reached a guest (listed above)")
    });
    // On an error, main prints why, after the changes held were sent.
    match (ended, lost) {
        (Err(err), Some(lost)) => Err(err.context(lost)),
        (Err(err), None) => Err(err),
        (Ok(()), Some(lost)) => Err(anyhow::anyhow!("stopped: {lost}")),
        (Ok(()), None) => Ok(()),
    }
}

/// The LiveReload server `--livereload` asks for, started before the watcher so a taken port fails at once.
fn livereload(args: &WatchArgs, debounce: Duration, log: Log) -> Result<Option<crate::livereload::LiveReload>> {
    let Some(port) = args.livereload else { return Ok(None) };
    let assets = match args.livereload_assets.is_empty() {
        true => vec!["css".to_string()],
        false => args.livereload_assets.clone(),
    };
    let origins = crate::livereload::origin::Origins::new(&args.livereload_origin);
    let options = crate::livereload::Options { bind: args.livereload_bind.clone(), port, assets, debounce, origins };
    crate::livereload::LiveReload::start(&options, log).map(Some)
}

/// Longest sleep of the watch loop while nothing happens.
const TREE_CHECK: Duration = Duration::from_secs(30);
