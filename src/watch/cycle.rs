//! The lines that frame each reload cycle in the watcher's output, for tools that follow it (VS
//! Code's background problem matcher clears a problem only when a new round of output between a
//! begin line and an end line no longer reports it).
//!
//! A cycle's lines are printed together once a trigger's outcome is known (a trigger waiting for
//! the app to come back is answered later, on a thread of its own). It begins with
//! `touchwire: reloading (2 files)` (`touchwire: reloading web (2 files)` with `--target web`)
//! and ends with the outcome line
//! when the app was reloaded (`… reloaded in 412 ms`, `… merged into a reload under way in …`);
//! a failure's outcome line is the problem, so the cycle ends on the line after it,
//! `touchwire: reload failed` or `touchwire: not delivered` (VS Code reads no problem from the
//! line that ends a round). The wording is stable: editor/vscode/tasks.json matches it.

use super::delivery::Outcome;
use crate::outcome::Kind;
use crate::output::Log;
use serde_json::json;
use std::sync::Mutex;

/// The begin line for a trigger of `files` files to `target` (the guest's default when `None`).
pub fn begin_line(target: Option<&str>, files: usize) -> String {
    let noun = if files == 1 { "file" } else { "files" };
    match target {
        Some(target) => format!("touchwire: reloading {} ({files} {noun})", crate::output::clean(target)),
        None => format!("touchwire: reloading ({files} {noun})"),
    }
}

/// Prints `outcome`'s whole round at once: its begin line, what `report` prints, and the end
/// line where one is needed. One round at a time in the whole process: triggers waiting for a
/// ready check end on threads of their own, and a round must never open inside another (VS
/// Code would then end the wrong one and keep a problem a later save fixed).
///
/// With `--quiet` a round is printed whole when it failed, and when it is the first success
/// after a failure: that round is what clears the failure's problems in an editor. Other
/// successful rounds print nothing, and leave nothing an editor would have cleared.
pub fn round(log: Log, target: Option<&str>, outcome: &Outcome, report: impl FnOnce(Log)) {
    // Held for the whole round; it says whether the last round ended on a failure.
    static LAST_FAILED: Mutex<bool> = Mutex::new(false);
    let mut last_failed = LAST_FAILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let end = end_line(outcome);
    let after_failure = std::mem::replace(&mut *last_failed, end.is_some());
    // The round's lines, and `report`'s outcome line, are printed with this log.
    let log = match end.is_some() || after_failure {
        true => Log { quiet: false, ..log },
        false => log,
    };
    let line = begin_line(target, outcome.files.len());
    log.event("reloading", &line, json!({"files": outcome.files, "target": target}));
    report(log);
    if let Some(line) = end {
        log.say(line);
    }
}

/// The line that ends the cycle after `outcome`'s own line, or `None` when that line ends it.
/// It follows the outcome's kind as its line does, so that no failure line goes without it.
pub fn end_line(outcome: &Outcome) -> Option<&'static str> {
    match crate::outcome::kind(outcome.result.as_ref().map(|(reply, _)| reply).map_err(String::as_str)) {
        Kind::Undelivered => Some("touchwire: not delivered"),
        kind if kind.failed() => Some("touchwire: reload failed"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Ready, Reply};
    use std::time::Duration;

    fn outcome(result: Result<Reply, &str>) -> Outcome {
        Outcome {
            remote: "10.0.0.2:9001".into(),
            files: vec!["app/views.py".into()],
            result: result.map(|reply| (reply, Duration::from_millis(3))).map_err(String::from),
            triggers: 1,
        }
    }

    #[test]
    fn the_begin_line_names_the_target_and_counts_files() {
        assert_eq!(begin_line(None, 1), "touchwire: reloading (1 file)");
        assert_eq!(begin_line(Some("web"), 2), "touchwire: reloading web (2 files)");
        assert_eq!(begin_line(Some("a\nb"), 0), "touchwire: reloading a\u{fffd}b (0 files)");
    }

    #[test]
    fn only_a_failure_needs_an_end_line_of_its_own() {
        let ok = Reply { ok: true, ..Reply::default() };
        assert_eq!(end_line(&outcome(Ok(ok.clone()))), None);
        let back = Reply { ready: Some(Ready { ok: true, ms: 300, error: None }), ..ok.clone() };
        assert_eq!(end_line(&outcome(Ok(back))), None);
        let down = Reply { ready: Some(Ready { ok: false, ms: 300, error: Some("boom".into()) }), ..ok };
        assert_eq!(end_line(&outcome(Ok(down))), Some("touchwire: reload failed"));
        let not_ready = Reply { ok: false, code: Some(ErrorCode::NotReady), ..Reply::default() };
        assert_eq!(end_line(&outcome(Ok(not_ready))), Some("touchwire: reload failed"));
        let action = Reply { ok: false, code: Some(ErrorCode::ActionFailed), ..Reply::default() };
        assert_eq!(end_line(&outcome(Ok(action))), Some("touchwire: reload failed"));
        assert_eq!(end_line(&outcome(Err("refused"))), Some("touchwire: not delivered"));
        // A receiver that says ok with a not_ready code: its line is a failure, so it ends one.
        let mixed = Reply { ok: true, code: Some(ErrorCode::NotReady), error: Some("down".into()), ..Reply::default() };
        assert_eq!(end_line(&outcome(Ok(mixed))), Some("touchwire: reload failed"));
    }
}
