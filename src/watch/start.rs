//! `touchwire watch`: the configuration into the watcher's and the delivery's settings, then watch and deliver until stopped.

use super::delivery::{Delivery, Settings};
use super::{Options, Watcher};
use crate::cli::WatchArgs;
use crate::client::Credentials;
use crate::config::{Config, defaults};
use crate::output::Log;
use anyhow::{Context, Result};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Watches the work tree holding `args.dir` (or the current directory) and sends triggers, forever.
pub fn command(args: WatchArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let config = Config::load(&args.flags(), &dir)?;
    let log = args.sending.log();
    let live = livereload(&args, &config);
    let (mut options, settings) = settings(&config, args.sending.target.clone(), log)?;
    let mut live = live.map(|options| crate::livereload::LiveReload::start(&options, log)).transpose()?;
    // The watcher must report the pages' assets too; the LiveReload side keeps them from the guest.
    for ext in live.as_ref().map_or(&[][..], |live| live.assets()) {
        if !options.extensions.contains(ext) {
            options.extensions.push(ext.clone());
        }
    }
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
    // Each trigger that goes to the guests, as it goes (for tools: an editor's "reloading"
    // before the round's lines, which come with its outcome).
    let target = settings.target.clone();
    let route = |trigger| {
        let trigger = crate::livereload::route(live.as_ref(), trigger, remotes.len())?;
        log.record("triggered", json!({"files": trigger.files, "reason": trigger.reason, "target": target}));
        Some(trigger)
    };
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
    // With --json, a reader that went away ends the watch too (checked at least every second).
    let wake = if log.json { READER_CHECK } else { TREE_CHECK };
    let ended = loop {
        if log.json && crate::output::stdout_gone() {
            log.warn("stopping", "stopping: the reader of --json output is gone", json!({"reason": "stdout closed"}));
            break Ok(());
        }
        match watcher.step(wake) {
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

/// The watcher's and the delivery's settings from `config`, for triggers naming `target` (the
/// delivery's `root` is the work tree's, known once the watcher has found it).
pub(crate) fn settings(config: &Config, target: Option<String>, log: Log) -> Result<(Options, Settings)> {
    let options = Options {
        dir: config.cwd.clone(),
        extensions: config.extensions.value.clone(),
        tracked_only: config.tracked_only.value,
        debounce: Duration::from_millis(config.debounce_ms.value),
        poll: config.poll_ms.value.map(Duration::from_millis),
        log,
    };
    let settings = Settings {
        credentials: Credentials::of(config)?,
        target,
        timeout: Duration::from_millis(config.timeout_ms.value),
        log,
        root: None,
    };
    Ok((options, settings))
}

/// The LiveReload server `--livereload` asks for; started before the watcher so a taken port fails at once.
fn livereload(args: &WatchArgs, config: &Config) -> Option<crate::livereload::Options> {
    let port = args.livereload?;
    let assets = match args.livereload_assets.is_empty() {
        true => defaults::LIVERELOAD_ASSETS.iter().map(|e| e.to_string()).collect(),
        false => args.livereload_assets.clone(),
    };
    let origins = crate::livereload::origin::Origins::new(&args.livereload_origin);
    let debounce = Duration::from_millis(config.debounce_ms.value);
    Some(crate::livereload::Options { bind: args.livereload_bind.clone(), port, assets, debounce, origins })
}

/// Longest sleep of the watch loop while nothing happens.
const TREE_CHECK: Duration = Duration::from_secs(30);
/// Longest sleep with `--json`, whose reader may go away.
const READER_CHECK: Duration = Duration::from_secs(1);
