//! The one renderer of a reload's outcome at one remote, for `watch`, `send` and `demo`: what
//! kind of outcome it is, the line people read, the guest's log excerpt, the JSON event and its
//! fields. Pure: the commands print what it returns. The wording is stable, since editors match
//! it (editor/vscode/tasks.json, the Vim and Emacs plugins show send's last line).

use crate::output::{millis, summary};
use crate::protocol::{Ready, Reply, escape_remote};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Which command reports: `watch` (and `demo`, which shows watch's lines) names the files of each
/// trigger; `send` names none, and fails with its failures' lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `touchwire watch` and `touchwire demo`.
    Watch,
    /// `touchwire send`; `wait` is whether `--wait` was asked (then a guest with nothing to
    /// wait on is said to have answered when the action was done).
    Send {
        /// `--wait` was given.
        wait: bool,
    },
}

/// What a command knows of one outcome.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Who reports it.
    pub command: Command,
    /// The remote the trigger went to.
    pub remote: &'a str,
    /// The files of the trigger (empty for a `send` without `--path`).
    pub files: &'a [String],
    /// The guest's reply and the round trip, or why there is none (already a sentence).
    pub result: Result<(&'a Reply, Duration), &'a str>,
    /// The target asked for (`None`: the guest's default), named when the reply does not.
    pub target: Option<&'a str>,
    /// The host's work tree, to name the failing file of a traceback by its path here.
    pub root: Option<&'a Path>,
}

/// The kinds of outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No answer from the guest: unreachable, refused, or the reply was lost.
    Undelivered,
    /// The guest took the trigger and its action failed (the app is down, or not reloadable).
    ActionFailed,
    /// The action ran and the ready check says the app did not come back.
    NotBack,
    /// The action ran and the ready check says the app is back.
    Back,
    /// The trigger was folded into a reload already under way.
    Merged,
    /// The action ran; nothing was waited for.
    Reloaded,
}

impl Kind {
    /// Whether the outcome is a failure: the command says so as a warning (`watch`) or fails (`send`).
    pub fn failed(self) -> bool {
        matches!(self, Kind::Undelivered | Kind::ActionFailed | Kind::NotBack)
    }
}

/// The outcome of a trigger the guest answered: a [`Kind`] but `Undelivered`, with what its
/// line tells, so that rendering an answer has no case it cannot be and no value to make up.
#[derive(Debug, Clone, PartialEq)]
enum Answered {
    ActionFailed,
    /// How the ready check failed.
    NotBack(Ready),
    /// How long the app took to come back, in ms.
    Back(u64),
    Merged,
    Reloaded,
}

impl From<&Answered> for Kind {
    fn from(answered: &Answered) -> Kind {
        match answered {
            Answered::ActionFailed => Kind::ActionFailed,
            Answered::NotBack(_) => Kind::NotBack,
            Answered::Back(_) => Kind::Back,
            Answered::Merged => Kind::Merged,
            Answered::Reloaded => Kind::Reloaded,
        }
    }
}

/// An outcome, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// What kind of outcome it is.
    pub kind: Kind,
    /// The JSON event's name.
    pub event: &'static str,
    /// The line for people (without the clock); for a failure of `send`, the message it fails with.
    pub line: String,
    /// The guest's log excerpt of a failed ready check, each line indented by two spaces:
    /// `send` prints it before its line, `watch` after it with `-v`.
    pub excerpt: Vec<String>,
    /// The JSON event's fields (without `event` and `time`).
    pub fields: Value,
}

/// `line` on one line: a receiver's text may hold a newline (the excerpt keeps them), and a line
/// of its own after the outcome could pass for one of ours (an editor's "reload failed").
fn one_line(line: String) -> String {
    match line.contains('\n') {
        true => line.replace('\n', "\\n"),
        false => line,
    }
}

/// Renders one outcome. What came from the receiver is escaped, whatever the receiver did.
pub fn render(input: &Input<'_>) -> Rendered {
    let remote = input.remote;
    let files = summary(input.files);
    let send = matches!(input.command, Command::Send { .. });
    let (reply, rtt) = match input.result {
        Ok((reply, rtt)) => (reply.escaped(), rtt),
        Err(error) => {
            let error = escape_remote(error);
            let line = match send {
                true => error.clone(),
                false => format!("not delivered: {files}: {error}"),
            };
            let fields = json!({"remote": remote, "files": input.files, "ok": false, "delivered": false,
                                "error": error});
            let event = if send { "failed" } else { "undelivered" };
            return Rendered { kind: Kind::Undelivered, event, line: one_line(line), excerpt: Vec::new(), fields };
        }
    };
    let ms = rtt.as_secs_f64() * 1000.0;
    // How the ready check failed, else what the guest said of it.
    let ready: Option<Ready> = reply.not_ready().or_else(|| reply.ready.clone());
    let answered = answered(&reply);
    let kind = Kind::from(&answered);
    let fallback = if kind == Kind::ActionFailed { "app" } else { "?" };
    let target = reply.target.clone().or_else(|| input.target.map(escape_remote)).unwrap_or_else(|| fallback.into());
    let mut excerpt = Vec::new();
    let mut failure = None;
    let line = match answered {
        Answered::ActionFailed => {
            let error = reply.error.as_deref().unwrap_or("failed without saying why");
            match send {
                true => format!("{remote}: {error}"),
                false => format!("{target}: reload failed: {error} ({files} -> {remote})"),
            }
        }
        Answered::NotBack(failed) => {
            let error = failed.error.unwrap_or_default();
            let (at, last) = failure_at(&error, input.root);
            // For tools (an editor's problem): where, and what, as the line says it.
            if let Some((file, line)) = &at {
                failure = Some(json!({"file": file, "line": line, "message": last}));
            } else if !last.is_empty() {
                failure = Some(json!({"message": last}));
            }
            let place = at.map_or_else(String::new, |(file, line)| format!(" at {file}:{line}"));
            excerpt = error.lines().map(|line| format!("  {line}")).collect();
            match send {
                true => {
                    let why = if last.is_empty() { String::new() } else { format!(": {last}") };
                    format!("{remote}: {target} did not come back{place} after {} ms{why}", failed.ms)
                }
                false => format!("{target}: reload failed{place} after {} ms: {last} ({files} -> {remote})", failed.ms),
            }
        }
        Answered::Back(ms) => match send {
            true => format!("reloaded {target} on {remote} in {ms} ms"),
            false => format!("{target}: {files} -> {remote} reloaded in {ms} ms"),
        },
        Answered::Merged => match send {
            true => format!("{target} on {remote}: merged into a reload under way in {}", millis(rtt)),
            false => format!("{target}: {files} -> {remote} merged into a reload under way in {}", millis(rtt)),
        },
        Answered::Reloaded => {
            let action = reply.action.as_deref().unwrap_or("?");
            match input.command {
                // Asked to wait, and the guest had nothing to wait on: say so, or the person
                // takes "reloaded" for "the app is back".
                Command::Send { wait: true } => format!(
                    "reloaded {target} on {remote} ({action}) in {}; no ready check on {target}: \
                     answered when the action was done",
                    millis(rtt)
                ),
                Command::Send { wait: false } => format!("reloaded {target} on {remote} ({action}) in {}", millis(rtt)),
                Command::Watch => format!("{target}: {files} -> {remote} reloaded ({action}) in {}", millis(rtt)),
            }
        }
    };
    let event = match (kind, send) {
        (_, true) if kind.failed() => "failed",
        (_, true) => "sent",
        (Kind::ActionFailed, false) => "reload_failed",
        (Kind::NotBack, false) => "not_ready",
        (_, false) => "trigger",
    };
    let mut fields = json!({"remote": remote, "files": input.files, "ok": !kind.failed(), "delivered": true, "target": target, "ms": ms});
    // Only what the guest said: a reply without a ready object was not waited for.
    if let Some(merged) = reply.merged {
        fields["merged"] = json!(merged);
    }
    if let Some(ready) = ready {
        fields["ready"] = json!(ready);
    }
    if let Some(failure) = failure {
        fields["failure"] = failure;
    }
    if kind == Kind::ActionFailed {
        fields["code"] = json!(reply.code);
        fields["error"] = json!(reply.error.as_deref().unwrap_or("failed without saying why"));
    }
    if send {
        fields["waited"] = json!(reply.ready.is_some() || kind == Kind::NotBack);
        fields["reply"] = json!(reply);
    }
    Rendered { kind, event, line: one_line(line), excerpt, fields }
}

/// What kind of outcome `result` is (the guest's reply, or why there is none): what [`render`]
/// says of it, for code that needs only the kind.
pub fn kind(result: Result<&Reply, &str>) -> Kind {
    match result {
        Ok(reply) => Kind::from(&answered(reply)),
        Err(_) => Kind::Undelivered,
    }
}

/// What the guest's answer says. A failed ready check wins over `ok`, whatever the receiver
/// set it to: the app is not back.
fn answered(reply: &Reply) -> Answered {
    match (reply.not_ready(), &reply.ready) {
        (None, _) if !reply.ok => Answered::ActionFailed,
        (Some(failed), _) => Answered::NotBack(failed),
        (None, Some(back)) => Answered::Back(back.ms),
        (None, None) if reply.merged == Some(true) => Answered::Merged,
        (None, None) => Answered::Reloaded,
    }
}

/// Where a Python traceback says the failure is (" at FILE:LINE", from its last `File "…", line N`)
/// and what failed (the exception line that follows the frames, else the excerpt's last line).
/// The guest's path becomes the path in `root` that it ends with (`/vagrant/app/views.py` is
/// `app/views.py`), when there is one.
pub fn failure_place<'a>(excerpt: &'a str, root: Option<&Path>) -> (String, &'a str) {
    let (at, last) = failure_at(excerpt, root);
    (at.map_or_else(String::new, |(file, line)| format!(" at {file}:{line}")), last)
}

/// [`failure_place`]'s parts: the file (by its path on the host where `root` has it) and line
/// of the last frame, if the excerpt has one, and the exception's line.
pub fn failure_at<'a>(excerpt: &'a str, root: Option<&Path>) -> (Option<(String, u64)>, &'a str) {
    let lines: Vec<&str> = excerpt.lines().collect();
    let frame = lines.iter().rposition(|line| line.trim_start().starts_with("File \""));
    let at = frame.and_then(|i| {
        let rest = lines[i].trim().strip_prefix("File \"")?;
        let (file, rest) = rest.split_once('"')?;
        let number: String = rest.strip_prefix(", line ")?.chars().take_while(char::is_ascii_digit).collect();
        Some((host_path(file, root), number.parse().ok()?))
    });
    // After the last frame come its indented source lines, then the exception.
    let exception = frame.and_then(|i| lines[i + 1..].iter().find(|l| !l.starts_with(' ') && !l.trim().is_empty()));
    let last = exception.or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty())).map_or("", |l| l.trim());
    (at, last)
}

/// The longest tail of the guest's `file` path that names a file in `root`, or `file` itself
/// (longest first: `pkg/app.py` must not become the root's `app.py`).
pub fn host_path(file: &str, root: Option<&Path>) -> String {
    let Some(root) = root else { return file.to_string() };
    let parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len())
        .map(|start| parts[start..].join("/"))
        .find(|tail| root.join(tail).is_file())
        .unwrap_or_else(|| file.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    const REMOTE: &str = "10.0.0.2:9001";
    const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line 3, in <module>\n    import foo\nModuleNotFoundError: No module named 'foo'\n";
    const WATCH: Command = Command::Watch;
    const SEND: Command = Command::Send { wait: false };
    const SEND_WAIT: Command = Command::Send { wait: true };

    fn files() -> Vec<String> {
        vec!["my app/views.py".into(), "b.py".into()]
    }

    fn reloaded() -> Reply {
        Reply { ok: true, target: Some("app".into()), action: Some("touch".into()), ..Reply::default() }
    }

    fn merged() -> Reply {
        Reply { merged: Some(true), ..reloaded() }
    }

    fn back() -> Reply {
        Reply { ready: Some(Ready { ok: true, ms: 412, error: None }), ..reloaded() }
    }

    fn not_back(excerpt: &str) -> Reply {
        Reply { ready: Some(Ready { ok: false, ms: 300, error: Some(excerpt.into()) }), ..reloaded() }
    }

    /// A bare `not_ready` answer, as from a receiver that says no more than the code and why.
    fn not_ready_code() -> Reply {
        Reply {
            ok: false,
            code: Some(ErrorCode::NotReady),
            target: Some("app".into()),
            error: Some(TRACEBACK.into()),
            ..Reply::default()
        }
    }

    fn action_failed() -> Reply {
        Reply {
            ok: false,
            code: Some(ErrorCode::ActionFailed),
            error: Some("cannot touch /x\u{1b}[2J".into()),
            ..Reply::default()
        }
    }

    fn rendered(command: Command, result: Result<&Reply, &str>) -> Rendered {
        let files = files();
        let files = if matches!(command, Command::Watch) { files } else { Vec::new() };
        render(&Input {
            command,
            remote: REMOTE,
            files: &files,
            result: result.map(|reply| (reply, Duration::from_micros(3100))),
            target: None,
            root: None,
        })
    }

    fn line(command: Command, result: Result<&Reply, &str>) -> String {
        rendered(command, result).line
    }

    #[test]
    fn watch_names_the_files_and_the_remote_of_every_outcome() {
        let undelivered = "10.0.0.2:9001: connection refused; will send it when the guest is back";
        assert_eq!(line(WATCH, Err(undelivered)), format!("not delivered: my app/views.py, b.py: {undelivered}"));
        assert_eq!(
            line(WATCH, Ok(&action_failed())),
            "app: reload failed: cannot touch /x\\x1b[2J (my app/views.py, b.py -> 10.0.0.2:9001)"
        );
        assert_eq!(
            line(WATCH, Ok(&not_back(TRACEBACK))),
            "app: reload failed at /srv/app/views.py:3 after 300 ms: ModuleNotFoundError: No module named 'foo' \
             (my app/views.py, b.py -> 10.0.0.2:9001)"
        );
        assert_eq!(
            line(WATCH, Ok(&not_back("127.0.0.1:8000: connection refused"))),
            "app: reload failed after 300 ms: 127.0.0.1:8000: connection refused (my app/views.py, b.py -> 10.0.0.2:9001)"
        );
        assert_eq!(line(WATCH, Ok(&back())), "app: my app/views.py, b.py -> 10.0.0.2:9001 reloaded in 412 ms");
        assert_eq!(
            line(WATCH, Ok(&merged())),
            "app: my app/views.py, b.py -> 10.0.0.2:9001 merged into a reload under way in 3.1 ms"
        );
        assert_eq!(
            line(WATCH, Ok(&reloaded())),
            "app: my app/views.py, b.py -> 10.0.0.2:9001 reloaded (touch) in 3.1 ms"
        );
    }

    #[test]
    fn send_names_the_target_and_the_remote_of_every_outcome() {
        for send in [SEND, SEND_WAIT] {
            assert_eq!(line(send, Err("10.0.0.2:9001: connection refused")), "10.0.0.2:9001: connection refused");
            assert_eq!(line(send, Ok(&action_failed())), "10.0.0.2:9001: cannot touch /x\\x1b[2J");
            assert_eq!(
                line(send, Ok(&not_back(TRACEBACK))),
                "10.0.0.2:9001: app did not come back at /srv/app/views.py:3 after 300 ms: \
                 ModuleNotFoundError: No module named 'foo'"
            );
            assert_eq!(
                line(send, Ok(&not_ready_code())),
                "10.0.0.2:9001: app did not come back at /srv/app/views.py:3 after 0 ms: \
                 ModuleNotFoundError: No module named 'foo'"
            );
            assert_eq!(line(send, Ok(&not_back(""))), "10.0.0.2:9001: app did not come back after 300 ms");
            assert_eq!(line(send, Ok(&back())), "reloaded app on 10.0.0.2:9001 in 412 ms");
            assert_eq!(line(send, Ok(&merged())), "app on 10.0.0.2:9001: merged into a reload under way in 3.1 ms");
        }
        assert_eq!(line(SEND, Ok(&reloaded())), "reloaded app on 10.0.0.2:9001 (touch) in 3.1 ms");
        assert_eq!(
            line(SEND_WAIT, Ok(&reloaded())),
            "reloaded app on 10.0.0.2:9001 (touch) in 3.1 ms; no ready check on app: answered when the action was done"
        );
    }

    #[test]
    fn each_outcome_has_its_kind_event_and_fields() {
        let cases: [(Result<Reply, &str>, Kind, &str, &str); 6] = [
            (Err("refused"), Kind::Undelivered, "undelivered", "failed"),
            (Ok(action_failed()), Kind::ActionFailed, "reload_failed", "failed"),
            (Ok(not_back(TRACEBACK)), Kind::NotBack, "not_ready", "failed"),
            (Ok(back()), Kind::Back, "trigger", "sent"),
            (Ok(merged()), Kind::Merged, "trigger", "sent"),
            (Ok(reloaded()), Kind::Reloaded, "trigger", "sent"),
        ];
        for (result, kind, watch_event, send_event) in cases {
            for (command, event) in [(WATCH, watch_event), (SEND, send_event), (SEND_WAIT, send_event)] {
                let got = rendered(command, result.as_ref().map_err(|e| *e));
                assert_eq!((got.kind, got.event), (kind, event), "{command:?} {result:?}");
                let fields = &got.fields;
                assert_eq!(fields["remote"], REMOTE);
                assert_eq!(fields["ok"], !kind.failed(), "{fields}");
                assert_eq!(fields["delivered"], kind != Kind::Undelivered, "{fields}");
                let files = if command == WATCH { serde_json::to_value(self::files()).unwrap() } else { json!([]) };
                assert_eq!(fields["files"], files);
                match kind {
                    Kind::Undelivered => assert_eq!(fields["error"], "refused"),
                    Kind::ActionFailed => {
                        assert_eq!(
                            (&fields["code"], &fields["error"]),
                            (&json!("action_failed"), &json!("cannot touch /x\\x1b[2J"))
                        );
                    }
                    _ => assert_eq!(fields["target"], "app"),
                }
                if kind == Kind::NotBack || kind == Kind::Back {
                    assert_eq!(fields["ready"]["ok"], kind == Kind::Back, "{fields}");
                }
                if command != WATCH && kind != Kind::Undelivered {
                    assert_eq!(fields["waited"], matches!(kind, Kind::NotBack | Kind::Back), "{fields}");
                    let reply = result.as_ref().map(|reply| serde_json::to_value(reply.escaped()).unwrap());
                    assert_eq!(Ok(&fields["reply"]), reply.as_ref(), "the reply, escaped");
                }
            }
        }
        assert_eq!(rendered(WATCH, Ok(&merged())).fields["merged"], true);
        for command in [WATCH, SEND, SEND_WAIT] {
            let fields = rendered(command, Ok(&reloaded())).fields;
            assert!(fields.get("ready").is_none() && fields.get("merged").is_none(), "nothing waited for: {fields}");
        }
        assert_eq!(rendered(WATCH, Ok(&reloaded())).fields["ms"], 3.1);
    }

    #[test]
    fn a_failed_ready_check_keeps_the_guests_excerpt_indented_and_escaped() {
        let excerpt = format!("{TRACEBACK}\u{1b}]0;owned\u{7}");
        for command in [WATCH, SEND, SEND_WAIT] {
            let got = rendered(command, Ok(&not_back(&excerpt)));
            assert_eq!(got.excerpt.len(), 5, "{:?}", got.excerpt);
            assert_eq!(got.excerpt[0], "  Traceback (most recent call last):");
            assert_eq!(got.excerpt[4], "  \\x1b]0;owned\\x07");
            assert!(got.excerpt.iter().chain([&got.line]).all(|l| !l.contains('\u{1b}')), "{got:?}");
            assert!(rendered(command, Ok(&back())).excerpt.is_empty());
        }
    }

    #[test]
    fn a_target_is_named_by_the_reply_else_by_the_request() {
        let files = files();
        let line = |reply: &Reply, target: Option<&str>| {
            let result = Ok((reply, Duration::ZERO));
            render(&Input { command: WATCH, remote: REMOTE, files: &files, result, target, root: None }).line
        };
        assert!(line(&action_failed(), Some("web")).starts_with("web: reload failed: "));
        assert!(line(&reloaded(), Some("web")).starts_with("app: "), "the reply's target wins");
        assert!(line(&Reply { target: None, ..reloaded() }, None).starts_with("?: "));
        assert!(line(&action_failed(), None).starts_with("app: reload failed: "));
    }

    #[test]
    fn vscode_reads_a_problem_from_each_failure_watch_prints_and_a_round_ends_on_each_success() {
        let tasks = crate::editor::parse_jsonc(crate::editor::VSCODE_TASKS).unwrap();
        let watch = tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == "touchwire: watch").unwrap();
        let matchers = watch["problemMatcher"].as_array().unwrap();
        let regex = |value: &Value| regex::Regex::new(value.as_str().unwrap()).unwrap();
        let problem = |i: usize, line: &str| {
            let printed = format!("12:00:00.000 {line}");
            let captures = regex(&matchers[i]["pattern"]["regexp"]).captures(&printed).map(|c| {
                c.iter().skip(1).map(|m| m.map_or(String::new(), |m| m.as_str().to_string())).collect::<Vec<_>>()
            });
            captures.unwrap_or_else(|| panic!("matcher {i} reads nothing from {printed:?}"))
        };
        let ends = regex(&matchers[0]["background"]["endsPattern"]);
        assert_eq!(problem(0, &line(WATCH, Err("refused")))[..], ["my app/views.py", "refused"]);
        let got = problem(1, &line(WATCH, Ok(&not_back(TRACEBACK))));
        assert_eq!(got[..2], ["/srv/app/views.py", "3"]);
        assert!(got[2].starts_with("ModuleNotFoundError: No module named 'foo'"), "{got:?}");
        let got = problem(2, &line(WATCH, Ok(&action_failed())));
        assert_eq!(got[..], ["cannot touch /x\\x1b[2J", "my app/views.py"]);
        let got = problem(2, &line(WATCH, Ok(&not_back("127.0.0.1:8000: connection refused"))));
        assert_eq!(got[..], ["127.0.0.1:8000: connection refused", "my app/views.py"]);
        for failure in [Err("refused"), Ok(&not_back(TRACEBACK)), Ok(&action_failed())] {
            let printed = format!("12:00:00.000 {}", line(WATCH, failure));
            assert!(!ends.is_match(&printed), "a problem line never ends a round: {printed}");
        }
        for success in [back(), merged(), reloaded()] {
            let printed = format!("12:00:00.000 {}", line(WATCH, Ok(&success)));
            assert!(ends.is_match(&printed), "{printed}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_answer_renders_as_its_kind_and_names_the_remote(
            ok: bool,
            code in proptest::option::of(0..ErrorCode::SENT.len()),
            merged: Option<bool>,
            ready in proptest::option::of((proptest::bool::ANY, proptest::num::u64::ANY, proptest::option::of("(.|\n){0,200}"))),
            error in proptest::option::of("(.|\n){0,200}"),
            target in proptest::option::of(".{0,20}"),
        ) {
            let ready = ready.map(|(ok, ms, error)| Ready { ok, ms, error });
            let code = code.map(|i| ErrorCode::SENT[i]);
            let reply = Reply { ok, code, merged, ready, error, target, ..Reply::default() };
            for command in [WATCH, SEND, SEND_WAIT] {
                let got = rendered(command, Ok(&reply));
                proptest::prop_assert_eq!(got.kind, kind(Ok(&reply)));
                proptest::prop_assert!(got.kind != Kind::Undelivered);
                proptest::prop_assert_eq!(&got.fields["ok"], &json!(!got.kind.failed()));
                proptest::prop_assert!(got.line.contains(REMOTE), "{:?}", got.line);
                proptest::prop_assert!(!got.line.contains('\u{1b}'), "{:?}", got.line);
                proptest::prop_assert!(!got.line.contains('\n'), "one line: {:?}", got.line);
            }
        }
    }

    #[test]
    fn the_json_says_where_a_reload_failed_as_the_line_does() {
        for command in [WATCH, SEND_WAIT] {
            let got = rendered(command, Ok(&not_back(TRACEBACK)));
            let message = "ModuleNotFoundError: No module named 'foo'";
            assert_eq!(got.fields["failure"], json!({"file": "/srv/app/views.py", "line": 3, "message": message}));
            assert!(got.line.contains("at /srv/app/views.py:3") && got.line.contains(message), "{}", got.line);
        }
        let got = rendered(WATCH, Ok(&not_back("not ready after 100 ms")));
        assert_eq!(got.fields["failure"], json!({"message": "not ready after 100 ms"}));
        assert_eq!(rendered(WATCH, Ok(&reloaded())).fields.get("failure"), None);
    }

    #[test]
    fn a_traceback_names_the_place_of_the_failure() {
        let excerpt = "Traceback (most recent call last):\n  File \"/srv/wsgi.py\", line 1, in <module>\n    from app.views import x\n  File \"/srv/app/views.py\", line 3, in <module>\n    import foo\nModuleNotFoundError: No module named 'foo'\nunable to load app 0\n";
        let (place, last) = failure_place(excerpt, None);
        assert_eq!(place, " at /srv/app/views.py:3");
        assert_eq!(last, "ModuleNotFoundError: No module named 'foo'");
        assert_eq!(failure_place("not ready after 100 ms", None), (String::new(), "not ready after 100 ms"));
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("app")).unwrap();
        std::fs::write(root.path().join("app/views.py"), "").unwrap();
        assert_eq!(failure_place(excerpt, Some(root.path())).0, " at app/views.py:3");
        std::fs::write(root.path().join("views.py"), "").unwrap();
        assert_eq!(failure_place(excerpt, Some(root.path())).0, " at app/views.py:3", "longest tail first");
        assert_eq!(host_path("/elsewhere/none.py", Some(root.path())), "/elsewhere/none.py");
    }
}
