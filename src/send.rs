//! `touchwire send`: one explicit trigger to every remote in parallel, waiting for each acknowledgement.

use crate::UsageError;
use crate::cli::{Global, SendArgs};
use crate::client::fan_out;
use crate::config::Config;
use crate::output::{Log, millis};
use crate::protocol::{Op, Request};
use anyhow::{Result, anyhow};
use serde_json::json;
use std::time::Duration;

/// Sends one reload; fails (exit 1) if any remote did not acknowledge it.
pub fn command(global: &Global, args: SendArgs) -> Result<()> {
    let mut config = Config::load(&crate::locate(global)?)?;
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
    let request = Request {
        op: Some(Op::Reload),
        target: args.target.clone(),
        reason: Some(args.reason.clone()),
        ..Request::default()
    };
    let log = Log { json: args.json, quiet: global.quiet, verbose: global.verbose };
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
