//! `touchwire send`: one explicit trigger to every remote in parallel, waiting for each acknowledgement.

use crate::UsageError;
use crate::cli::{Global, SendArgs};
use crate::client::fan_out;
use crate::config::Config;
use crate::output::{Log, millis};
use crate::protocol::{Op, Request};
use crate::watch::filter::Filter;
use anyhow::{Context, Result, anyhow};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sends one reload; fails (exit 1) if any remote did not acknowledge it.
pub fn command(global: &Global, args: SendArgs) -> Result<()> {
    let log = Log { json: args.json, quiet: global.quiet, verbose: global.verbose };
    // With --path, configuration comes from the file's own repository: an editor may run us from anywhere.
    let locate = match args.paths.first() {
        Some(path) => crate::locate_from(global, parent_dir(path)?)?,
        None => crate::locate(global)?,
    };
    let mut config = Config::load(&locate)?;
    let files = relevant_files(&args.paths, &config.extensions.value, log)?;
    if !args.paths.is_empty() && files.is_empty() {
        return Ok(());
    }
    if !args.to.is_empty() {
        config.remotes.set_by_flag(args.to.clone());
    }
    let remotes = config.remotes.value.clone();
    if remotes.is_empty() {
        return Err(
            UsageError("no remote to send to: pass --to ADDR or set \"remote\" in .touchwire.json".into()).into()
        );
    }
    let credentials = crate::credentials(&config)?;
    let reason = args.reason.clone().unwrap_or_else(|| if files.is_empty() { "manual" } else { "save" }.into());
    let request = Request {
        op: Some(Op::Reload),
        target: args.target.clone(),
        reason: Some(reason),
        files,
        ..Request::default()
    };
    let results = fan_out(&remotes, &credentials, &request, Duration::from_millis(args.timeout));
    let mut failures = Vec::new();
    for (remote, result) in remotes.iter().zip(results) {
        match result {
            Ok((reply, rtt)) => {
                let target = reply.target.clone().unwrap_or_default();
                let action = reply.action.clone().unwrap_or_default();
                let human = if reply.merged == Some(true) {
                    format!("{target} on {remote}: merged into a reload under way ({})", millis(rtt))
                } else {
                    format!("reloaded {target} on {remote} ({action}) in {}", millis(rtt))
                };
                let fields = json!({"remote": remote, "ok": true, "ms": rtt.as_secs_f64() * 1000.0, "reply": reply});
                log.event("sent", &human, fields);
            }
            Err(err) => {
                log.record("failed", json!({"remote": remote, "ok": false, "error": format!("{err:#}")}));
                failures.push(err);
            }
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if remotes.len() == 1 => Err(failures.remove(0)),
        n => {
            for err in &failures {
                eprintln!("touchwire: {err:#}");
            }
            Err(anyhow!("{n} of {} remotes failed", remotes.len()))
        }
    }
}

/// The directory holding `path` (which may be deleted already), made absolute.
fn parent_dir(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    Ok(parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf()))
}

/// The relevant ones among `paths`, relative to their work tree; says why each other one is left out (with -v).
fn relevant_files(paths: &[PathBuf], extensions: &[String], log: Log) -> Result<Vec<String>> {
    let Some(first) = paths.first() else { return Ok(Vec::new()) };
    let filter = match Filter::open(&parent_dir(first)?, extensions, false) {
        Ok(filter) => filter,
        Err(err) => {
            // An editor hook fires on every save, in a repository or not: outside one, nothing is relevant.
            log.debug(&format!("not sending: {err:#}"));
            return Ok(Vec::new());
        }
    };
    let mut files = Vec::new();
    for path in paths {
        let dir = parent_dir(path)?;
        let name = path.file_name().map(|n| dir.join(n)).unwrap_or(dir);
        let why = match filter.relative(&name) {
            None => Some(format!("it is outside {}", filter.workdir().display())),
            Some(rel) => match filter.why_irrelevant(&rel) {
                None => {
                    files.push(rel);
                    None
                }
                Some(why) => Some(why),
            },
        };
        if let Some(why) = why {
            log.debug(&format!("not sending for {}: {why}", path.display()));
        }
    }
    Ok(files)
}
