//! Wire protocol v1: the messages and the pure parsing of a request line (DESIGN.md, "Wire protocol v1").

use crate::auth::Token;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read};

/// Protocol version announced in the greeting.
pub const VERSION: u32 = 1;
/// Longest accepted line, without its `\n`.
pub const MAX_LINE: usize = 4096;
/// Port used when an address names none.
pub const DEFAULT_PORT: u16 = 9001;

/// First line the receiver writes on every connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Greeting {
    /// Protocol version, always 1 here.
    pub touchwire: u32,
    /// Fresh per connection, 32 lowercase hex digits; the MAC is computed over it.
    pub nonce: String,
    /// Whether requests must carry a `mac`.
    pub auth: bool,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Run the target's action.
    Reload,
    /// Answer with version and targets; no action.
    Ping,
}

impl Op {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Reload => "reload",
            Op::Ping => "ping",
        }
    }
}

/// One request line from a client. Unknown fields are ignored, for forward compatibility.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Request {
    /// `reload` or `ping`.
    pub op: Option<Op>,
    /// Target name; the default target when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why the trigger was sent (for the receiver's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Changed files (for the receiver's log).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Answer only once the target's ready check has ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// HMAC-SHA256 of the nonce, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// With `ping`: check whether each target's action could run now (`status` asks). Not for
    /// every ping: opening uWSGI's master FIFO to see its reader makes uWSGI re-create it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

/// What kind of failure a reply reports: the word a client branches on (the `error` text is for
/// people and may change).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A token is required and the request did not prove it.
    Unauthorized,
    /// The receiver is at its connection cap: try again shortly.
    Busy,
    /// No such target, or none named and no default target.
    UnknownTarget,
    /// Not a valid request (bad JSON, no `op`, no whole line in time).
    BadRequest,
    /// The request line was longer than [`MAX_LINE`].
    TooLong,
    /// The target's action failed.
    ActionFailed,
    /// The action ran, but its ready check failed or timed out: the app is not back.
    NotReady,
    /// The receiver itself failed.
    Internal,
    /// A code this version does not know (from a newer receiver): treated like `ActionFailed`.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a receiver sends (all but [`ErrorCode::Unknown`], a client's name for a code
    /// it does not know). `as_str`'s match makes a new variant a compile error; add it here too.
    pub const SENT: [ErrorCode; 8] = [
        ErrorCode::Unauthorized,
        ErrorCode::Busy,
        ErrorCode::UnknownTarget,
        ErrorCode::BadRequest,
        ErrorCode::TooLong,
        ErrorCode::ActionFailed,
        ErrorCode::NotReady,
        ErrorCode::Internal,
    ];

    /// The word used on the wire (`unknown` for a code this version does not know).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
            ErrorCode::UnknownTarget => "unknown_target",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLong => "too_long",
            ErrorCode::ActionFailed => "action_failed",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The receiver's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// With `ok:false`: what kind of failure, for programs. Absent from receivers older than the
    /// field (then only the `error` text tells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Echo of the request's op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The target acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The kind of action the target runs (`touch`, `fifo`, `signal`, `exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// True when the trigger was folded into an action already taken or scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,
    /// Receiver version (ping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Target names (ping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// Default target (ping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_target: Option<String>,
    /// Per target, whether its action could run now and why not (ping; an extension of v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<std::collections::BTreeMap<String, Health>>,
    /// The ready check's result, for a request with `"wait":true` to a target that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// What went wrong, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A failure reply: its `code` for programs and a message for a person.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply { ok: false, code: Some(code), error: Some(message.into()), ..Reply::default() }
    }

    /// How the ready check ended when the app did not come back: a `ready` with `ok:false`, or a
    /// `not_ready` failure (whose excerpt is in `ready.error`, else in `error`). `None` otherwise.
    pub fn not_ready(&self) -> Option<Ready> {
        match (&self.ready, self.code) {
            (Some(ready), _) if !ready.ok => Some(ready.clone()),
            (ready, Some(ErrorCode::NotReady)) => Some(Ready {
                ok: false,
                ms: ready.as_ref().map_or(0, |r| r.ms),
                error: ready.as_ref().and_then(|r| r.error.clone()).or_else(|| self.error.clone()),
            }),
            _ => None,
        }
    }

    /// The reply with every string in it passed through [`escape_remote`]: what a client prints
    /// or logs of a reply, since a hostile or older receiver may not have escaped it.
    pub fn escaped(&self) -> Reply {
        let mut reply = self.clone();
        let mut health = reply.health.take().map(|h| h.into_iter().collect::<Vec<_>>());
        for text in texts_mut(&mut reply, health.as_mut()) {
            *text = escape_remote(text);
        }
        reply.health = health.map(|entries| entries.into_iter().collect());
        reply
    }
}

/// What `ping` tells of a target: whether it has a ready check, and (when probed) whether its
/// action could run now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// Probed: true when nothing stands in the action's way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Probed: what was checked, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Whether the target has a ready check (so `wait` is worth asking for). touchwire's
    /// receiver always says; `None` from one that does not (older, or another implementation):
    /// then nobody here knows, and nothing may say there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_check: Option<bool>,
    /// With a ready check: the longest a `wait` request to this target can take, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// How a ready check ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    /// The app is back.
    pub ok: bool,
    /// From the action's start to the end of the check.
    pub ms: u64,
    /// Why not, with an excerpt of the app's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one received line means.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON object request.
    Request(Request),
    /// Not a JSON object (the `.` of `echo . | nc`): a reload of the default target, unauthenticated.
    Legacy,
    /// A JSON object that is not a valid request, or bytes that are not UTF-8.
    Invalid(String),
}

/// Classifies one line (without its `\n`). Never panics, whatever the bytes.
///
/// A line starting with `{` is meant as a JSON object: if it is not one serde can take (a
/// syntax error, a number out of range, nesting too deep, a lone surrogate), it is invalid,
/// never the legacy line: a broken request must not turn into a reload.
pub fn parse_line(line: &[u8]) -> Incoming {
    let Ok(text) = std::str::from_utf8(line) else {
        return Incoming::Invalid("request is not valid UTF-8".into());
    };
    let text = text.trim_end_matches('\r');
    let meant_as_object = text.trim_ascii_start().starts_with('{');
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => match serde_json::from_value::<Request>(value) {
            Ok(Request { op: None, .. }) => Incoming::Invalid("request has no \"op\"".into()),
            Ok(request) => Incoming::Request(request),
            Err(err) => Incoming::Invalid(format!("invalid request: {err}")),
        },
        Err(err) if meant_as_object => Incoming::Invalid(format!("invalid request: not valid JSON: {err}")),
        _ => Incoming::Legacy,
    }
}

/// What the receiver does with one line, decided before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Answer with version, targets and health; `probe` checks each target's action.
    Ping {
        /// Whether the request asked for the targets to be probed.
        probe: bool,
    },
    /// Run the target's action.
    Reload(Request),
    /// Answer with an error; `close` ends the connection afterwards.
    Refuse {
        /// For the client to branch on.
        code: ErrorCode,
        /// For the client and the log.
        error: String,
        /// Whether to close the connection after answering.
        close: bool,
    },
}

/// Decides what one line (without its `\n`) may do on a connection greeted with `nonce`.
/// With a `token`, only a request carrying the nonce's MAC gets through, and anything wrong
/// closes the connection: a client that has not proven the token gets no second guess.
pub fn admit(line: &[u8], nonce: &str, token: Option<&Token>) -> Admission {
    let unauthorized =
        |error: &str| Admission::Refuse { code: ErrorCode::Unauthorized, error: error.into(), close: true };
    let request = match (parse_line(line), token) {
        (Incoming::Invalid(error), _) => {
            return Admission::Refuse { code: ErrorCode::BadRequest, error, close: token.is_some() };
        }
        (Incoming::Legacy, Some(_)) => {
            return unauthorized(
                "unauthorized: this receiver requires a token; plain lines are accepted only with auth off",
            );
        }
        (Incoming::Legacy, None) => {
            Request { op: Some(Op::Reload), reason: Some("plain line".into()), ..Request::default() }
        }
        (Incoming::Request(request), Some(token)) => match &request.mac {
            None => return unauthorized("unauthorized: this receiver requires a token (no mac sent)"),
            Some(mac) if !token.verify(nonce, mac) => {
                return unauthorized("unauthorized: wrong token (mac does not match)");
            }
            Some(_) => request,
        },
        (Incoming::Request(request), None) => request,
    };
    match request.op {
        Some(Op::Ping) => Admission::Ping { probe: request.probe },
        _ => Admission::Reload(request),
    }
}

/// Drops files from the end of a request until its line fits in [`MAX_LINE`], noting how many
/// were left out in `reason`: the list is for the receiver's log, the reload happens regardless.
pub fn fit(mut request: Request) -> Request {
    if to_line(&request).len() <= MAX_LINE {
        return request;
    }
    // A reason is a note for the log: a few hundred characters of it are plenty.
    if let Some(reason) = &mut request.reason
        && let Some((cut, _)) = reason.char_indices().nth(200)
    {
        reason.truncate(cut);
    }
    let total = request.files.len();
    let reason = request.reason.take().unwrap_or_default();
    // Each file costs at least its length plus quotes and a comma: a cheap first cut.
    let mut budget = MAX_LINE;
    let first_cut =
        request.files.iter().take_while(|f| budget.checked_sub(f.len() + 3).map(|b| budget = b).is_some()).count();
    request.files.truncate(first_cut);
    loop {
        let dropped = total - request.files.len();
        request.reason = Some(if dropped == 0 {
            reason.clone()
        } else {
            format!("{reason} (+{dropped} more files)").trim_start().to_string()
        });
        if to_line(&request).len() <= MAX_LINE || request.files.pop().is_none() {
            return request;
        }
    }
}

/// One line read from a connection (the framing both sides use).
pub enum Line {
    /// A complete line is in the buffer.
    Complete,
    /// The line exceeded [`MAX_LINE`].
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes into `buf` (without the `\n`).
pub fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let n = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Complete);
    }
    // No newline: either the cap cut the line, or the peer closed after a last unterminated line.
    Ok(if buf.len() > MAX_LINE { Line::TooLong } else { Line::Complete })
}

/// Serializes a message as one protocol line, `\n` included.
pub fn to_line<T: Serialize>(message: &T) -> String {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no floats.
    let mut line = serde_json::to_string(message).unwrap_or_else(|_| "{}".into());
    line.push('\n');
    line
}

/// Text that came from a log or a command, made safe for a terminal: control characters (C0
/// but `\n`, DEL, C1) become visible escapes (`\x1b`, `\u{9b}`), so they cannot move the cursor,
/// colour the screen or forge lines. `\n` stays: excerpts are multi-line. Applying it twice
/// changes nothing more.
pub fn escape_remote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push(c),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// Shortest (in serialized bytes) a string is cut to before whole entries are left out.
const KEEP: usize = 64;
/// What marks the place a string was cut.
const ELLIPSIS: &str = "…";

/// A reply as one protocol line, `\n` included, never longer than [`MAX_LINE`] without it.
///
/// The text fields (`error`, `ready.error`, health `detail`) are escaped with
/// [`escape_remote`] first. Strings that do not fit are cut, keeping their start and end with
/// `…` where they were cut (the longest ones first, none below a few dozen bytes); if that is
/// not enough, entries are left out of the middle of `targets` and `health` (never the default
/// target's). Sizes are measured as serialized, since JSON escaping can make a byte six.
pub fn reply_line(reply: &Reply) -> String {
    let mut whole = reply.clone();
    for text in [whole.error.as_mut(), whole.ready.as_mut().and_then(|r| r.error.as_mut())].into_iter().flatten() {
        *text = escape_remote(text);
    }
    for health in whole.health.iter_mut().flat_map(|h| h.values_mut()) {
        if let Some(detail) = &mut health.detail {
            *detail = escape_remote(detail);
        }
    }
    // No string can be longer than the whole line: cutting them to that first keeps each
    // round below cheap, however large a string came in.
    let mut health = whole.health.take().map(|h| h.into_iter().collect::<Vec<_>>());
    for text in texts_mut(&mut whole, health.as_mut()) {
        if text.len() > MAX_LINE {
            *text = cut(text, MAX_LINE);
        }
    }
    whole.health = health.map(|entries| entries.into_iter().collect());
    // Each round fits, or cuts strings so that it fits, or leaves entries out of `whole` and
    // cuts again from there (so strings get the room the entries freed): a few rounds, and it
    // ends, since a round that does not fit leaves out at least one entry or stops.
    for _ in 0..64 {
        let line = to_line(&whole);
        let Some(excess) = over(&line) else { return line };
        let line = to_line(&cut_strings(&whole, excess));
        let Some(still) = over(&line) else { return line };
        // Even with every string short, too long: leave out entries in proportion.
        let share = |n: usize| (n * still).div_ceil(line.len()).max(1);
        let default = whole.default_target.clone();
        let spare = |name: &String| Some(name) == default.as_ref();
        let dropped_targets = whole.targets.as_mut().is_some_and(|t| drop_middle(t, share(t.len()), spare));
        let mut health = whole.health.take().map(|h| h.into_iter().collect::<Vec<_>>());
        let dropped_health = health.as_mut().is_some_and(|h| drop_middle(h, share(h.len()), |(n, _)| spare(n)));
        whole.health = health.map(|entries| entries.into_iter().collect());
        if !dropped_targets && !dropped_health {
            break;
        }
    }
    // Unreachable with the fields a reply has; a bound is a bound all the same.
    let code = if whole.ok { None } else { whole.code.or(Some(ErrorCode::Internal)) };
    let error = "the reply did not fit in one protocol line".to_string();
    to_line(&Reply {
        ok: whole.ok,
        code,
        op: whole.op.map(|op| cut(&op, KEEP)),
        error: Some(error),
        ..Reply::default()
    })
}

/// By how many bytes `line` (ending in `\n`) is longer than [`MAX_LINE`], if it is.
fn over(line: &str) -> Option<usize> {
    line.len().saturating_sub(1).checked_sub(MAX_LINE).filter(|&excess| excess > 0)
}

/// `reply` with its strings cut to save `excess` serialized bytes: the longest ones first, each
/// to the largest size that saves enough, none below [`KEEP`] (so it may save less).
fn cut_strings(reply: &Reply, excess: usize) -> Reply {
    let mut reply = reply.clone();
    let mut health = reply.health.take().map(|h| h.into_iter().collect::<Vec<_>>());
    {
        let mut texts = texts_mut(&mut reply, health.as_mut());
        let sizes: Vec<usize> = texts.iter().map(|t| json_len(t)).collect();
        let saved = |cap: usize| sizes.iter().map(|&s| s.saturating_sub(cap)).sum::<usize>();
        // The largest cap that saves enough; bisection, since `saved` falls as the cap grows.
        let (mut low, mut high) = (KEEP, sizes.iter().copied().max().unwrap_or(KEEP).max(KEEP));
        while low < high {
            let mid = (low + high).div_ceil(2);
            if saved(mid) >= excess { low = mid } else { high = mid - 1 }
        }
        for text in texts.iter_mut() {
            **text = cut(text, low);
        }
    }
    reply.health = health.map(|entries| entries.into_iter().collect());
    reply
}

/// Every string of a reply (with its health map as a list, whose names are mutable).
fn texts_mut<'a>(reply: &'a mut Reply, health: Option<&'a mut Vec<(String, Health)>>) -> Vec<&'a mut String> {
    let Reply { op, target, action, version, targets, default_target, ready, error, .. } = reply;
    let mut texts: Vec<&mut String> = [op, target, action, version, default_target, error]
        .into_iter()
        .filter_map(Option::as_mut)
        .chain(ready.as_mut().and_then(|r| r.error.as_mut()))
        .collect();
    texts.extend(targets.iter_mut().flatten());
    for (name, health) in health.into_iter().flatten() {
        texts.push(name);
        texts.extend(health.detail.as_mut());
    }
    texts
}

/// Removes `count` items from the middle of `items`, sparing those `spare` says to keep.
/// Returns whether it removed any.
fn drop_middle<T>(items: &mut Vec<T>, count: usize, spare: impl Fn(&T) -> bool) -> bool {
    let removable = items.iter().filter(|item| !spare(item)).count();
    let count = count.min(removable);
    if count == 0 {
        return false;
    }
    // Which of the removable items go: those from `first` on, `count` of them, centred.
    let first = (removable - count) / 2;
    let mut seen = 0;
    items.retain(|item| {
        if spare(item) {
            return true;
        }
        seen += 1;
        !(first < seen && seen <= first + count)
    });
    true
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\x08' | '\x0c' | '\n' | '\r' | '\t' => 2,
        '\0'..='\x1f' => 6,
        _ => c.len_utf8(),
    }
}

/// How many bytes `text` takes inside a JSON string, quotes not counted.
fn json_len(text: &str) -> usize {
    text.chars().map(json_char_len).sum()
}

/// `text` cut to at most `budget` serialized bytes, keeping its start and end, with `…` where it
/// was cut (on char boundaries).
fn cut(text: &str, budget: usize) -> String {
    if json_len(text) <= budget {
        return text.to_string();
    }
    let Some(room) = budget.checked_sub(json_len(ELLIPSIS)) else { return String::new() };
    let (mut head, mut used) = (0, 0);
    for (i, c) in text.char_indices() {
        if used + json_char_len(c) > room.div_ceil(2) {
            break;
        }
        used += json_char_len(c);
        head = i + c.len_utf8();
    }
    let mut tail = text.len();
    for (i, c) in text[head..].char_indices().rev() {
        if used + json_char_len(c) > room {
            break;
        }
        used += json_char_len(c);
        tail = head + i;
    }
    format!("{}{ELLIPSIS}{}", &text[..head], &text[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn parses_a_full_request() {
        let line =
            br#"{"op":"reload","target":"app","reason":"save","files":["a.py"],"mac":"ab","wait":true,"future":1}"#;
        let Incoming::Request(r) = parse_line(line) else { panic!("not a request") };
        assert_eq!(r.op, Some(Op::Reload));
        assert_eq!(r.target.as_deref(), Some("app"));
        assert_eq!(r.files, vec!["a.py"]);
        assert!(r.wait);
        assert_eq!(r.mac.as_deref(), Some("ab"));
    }

    #[test]
    fn non_objects_are_the_legacy_line() {
        for line in [&b"."[..], b"", b"hello", b"[1,2]", b"[1]", b"42", b"\"op\"", b" .", b"1e999", b"[{}]"] {
            assert_eq!(parse_line(line), Incoming::Legacy, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn bad_objects_and_bytes_are_invalid() {
        assert!(matches!(parse_line(br#"{"op":"explode"}"#), Incoming::Invalid(_)));
        assert!(matches!(parse_line(br#"{"target":"app"}"#), Incoming::Invalid(_)));
        assert!(matches!(parse_line(br#"{"op":"ping","files":"x"}"#), Incoming::Invalid(_)));
        assert!(matches!(parse_line(&[0xff, 0xfe, b'{']), Incoming::Invalid(_)));
    }

    #[test]
    fn a_long_file_list_is_trimmed_to_fit_one_line() {
        let files: Vec<String> = (0..500).map(|i| format!("pkg/module_{i:04}.py")).collect();
        let request = Request {
            op: Some(Op::Reload),
            reason: Some("burst".into()),
            files,
            mac: Some("ab".repeat(32)),
            ..Request::default()
        };
        let fitted = fit(request);
        let line = to_line(&fitted);
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        let kept = fitted.files.len();
        assert!(kept > 100 && kept < 500, "{kept}");
        assert_eq!(fitted.reason.unwrap(), format!("burst (+{} more files)", 500 - kept));
        let small = Request { op: Some(Op::Reload), files: vec!["a.py".into()], ..Request::default() };
        assert_eq!(fit(small.clone()), small);
        let chatty = Request { op: Some(Op::Reload), reason: Some("é".repeat(5000)), ..Request::default() };
        let fitted = fit(chatty);
        assert!(to_line(&fitted).len() <= MAX_LINE);
        assert_eq!(fitted.reason.unwrap(), "é".repeat(200), "no file was dropped, so no note of it");
    }

    #[test]
    fn lines_end_with_newline_and_omit_empty_fields() {
        let line = to_line(&Request { op: Some(Op::Ping), ..Request::default() });
        assert_eq!(line, "{\"op\":\"ping\"}\n");
        let reply = to_line(&Reply::error(ErrorCode::ActionFailed, "nope"));
        assert_eq!(reply, "{\"ok\":false,\"code\":\"action_failed\",\"error\":\"nope\"}\n");
        assert_eq!(reply_line(&Reply::error(ErrorCode::ActionFailed, "nope")), reply);
    }

    fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for _ in 0..10 {
            match read_line(&mut reader, &mut buf).unwrap() {
                Line::Complete => out.push(String::from_utf8_lossy(&buf).into_owned()),
                Line::TooLong => out.push("<too long>".into()),
                Line::Eof => break,
            }
        }
        out
    }

    #[test]
    fn lines_are_split_and_a_last_unterminated_line_counts() {
        assert_eq!(lines(b"a\nbc\n\nlast"), vec!["a", "bc", "", "last"]);
    }

    #[test]
    fn the_line_cap_is_4096_bytes_without_the_newline() {
        let exact = [vec![b'x'; MAX_LINE], vec![b'\n']].concat();
        assert_eq!(lines(&exact)[0].len(), MAX_LINE);
        let over = [vec![b'x'; MAX_LINE + 1], vec![b'\n']].concat();
        assert_eq!(lines(&over)[0], "<too long>");
    }

    #[test]
    fn admit_lets_through_only_the_nonces_mac_when_a_token_is_set() {
        let token = Token::new("0123456789abcdef0123").unwrap();
        let with_mac = |mac: &str| format!(r#"{{"op":"reload","mac":"{mac}"}}"#);
        let good = with_mac(&token.mac("n1"));
        assert!(matches!(admit(good.as_bytes(), "n1", Some(&token)), Admission::Reload(_)));
        let replayed = admit(good.as_bytes(), "n2", Some(&token));
        let unauthorized = ErrorCode::Unauthorized;
        assert!(matches!(replayed, Admission::Refuse { close: true, code, ref error }
            if code == unauthorized && error.contains("wrong token")));
        let bare = admit(br#"{"op":"ping"}"#, "n1", Some(&token));
        assert!(matches!(bare, Admission::Refuse { close: true, code, ref error }
            if code == unauthorized && error.contains("no mac")));
        let plain = admit(b".", "n1", Some(&token));
        assert!(matches!(plain, Admission::Refuse { close: true, code: ErrorCode::Unauthorized, .. }));
        let bytes = admit(b"\xff", "n1", Some(&token));
        assert!(matches!(bytes, Admission::Refuse { close: true, code: ErrorCode::BadRequest, .. }));
    }

    #[test]
    fn admit_without_a_token_takes_plain_lines_and_keeps_bad_ones_open() {
        let plain = admit(b".", "n", None);
        assert!(matches!(plain, Admission::Reload(Request { reason: Some(ref r), .. }) if r == "plain line"));
        assert_eq!(admit(br#"{"op":"ping"}"#, "n", None), Admission::Ping { probe: false });
        assert_eq!(admit(br#"{"op":"ping","probe":true}"#, "n", None), Admission::Ping { probe: true });
        let nope = admit(br#"{"op":"nope"}"#, "n", None);
        assert!(matches!(nope, Admission::Refuse { close: false, code: ErrorCode::BadRequest, .. }));
    }

    /// Lines meant as JSON objects that serde cannot take.
    fn broken_objects() -> Vec<Vec<u8>> {
        let deep = format!(r#"{{"op":"reload","x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        vec![
            b"{not json".to_vec(),
            b"{".to_vec(),
            b"  {\"op\":\"reload\"".to_vec(),
            br#"{"op":"reload","x":1e999}"#.to_vec(),
            br#"{"op":"reload","target":"\ud800"}"#.to_vec(),
            br#"{"op":"reload","reason":"\ud800"}"#.to_vec(),
            br#"{"op":"reload"} trailing"#.to_vec(),
            deep.into_bytes(),
        ]
    }

    #[test]
    fn a_line_meant_as_an_object_is_invalid_not_the_legacy_line() {
        for line in broken_objects() {
            let shown = String::from_utf8_lossy(&line).chars().take(60).collect::<String>();
            assert!(matches!(parse_line(&line), Incoming::Invalid(ref e) if e.contains("invalid request")), "{shown}");
            let unsigned = admit(&line, "n", None);
            assert!(
                matches!(unsigned, Admission::Refuse { code: ErrorCode::BadRequest, close: false, .. }),
                "{shown}: {unsigned:?}"
            );
            let token = Token::new("0123456789abcdef0123").unwrap();
            let signed = admit(&line, "n", Some(&token));
            assert!(matches!(signed, Admission::Refuse { code: ErrorCode::BadRequest, close: true, .. }), "{shown}");
        }
        // The same with a valid MAC in it: still the bad request it is.
        let token = Token::new("0123456789abcdef0123").unwrap();
        let line = format!(r#"{{"op":"reload","mac":"{}","x":1e999}}"#, token.mac("n"));
        let signed = admit(line.as_bytes(), "n", Some(&token));
        assert!(matches!(signed, Admission::Refuse { code: ErrorCode::BadRequest, close: true, .. }));
    }

    #[test]
    fn error_codes_have_their_wire_names_and_unknown_ones_are_kept_apart() {
        for code in ErrorCode::SENT {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&format!("\"{code}\"")).unwrap(), code);
        }
        assert_eq!(ErrorCode::UnknownTarget.as_str(), "unknown_target");
        let newer: Reply = serde_json::from_str(r#"{"ok":false,"code":"on_fire","error":"x"}"#).unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Unknown));
        let older: Reply = serde_json::from_str(r#"{"ok":false,"error":"busy: 16 connections"}"#).unwrap();
        assert_eq!(older.code, None);
    }

    #[test]
    fn control_characters_become_visible_escapes_but_newlines_stay() {
        assert_eq!(escape_remote("a\x1b[31mb\nc\td\r\x7f\u{9b}é…"), "a\\x1b[31mb\nc\\x09d\\x0d\\x7f\\u{9b}é…");
        assert_eq!(escape_remote("\0"), "\\x00");
        let once = escape_remote("\x1b\u{85}\u{9f}x");
        assert_eq!(escape_remote(&once), once);
    }

    /// The line is within the bound, ends with one `\n`, and parses back.
    fn bounded(reply: &Reply) -> Reply {
        let line = reply_line(reply);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert!(line.len() - 1 <= MAX_LINE, "{} bytes", line.len() - 1);
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn a_long_error_is_cut_keeping_its_start_and_end() {
        // Each quote is `\"` in the message, 4 bytes once serialized.
        let name = "\"".repeat(2000);
        let error = format!("unknown target {name:?} (known: app, api)");
        let back = bounded(&Reply::error(ErrorCode::UnknownTarget, error.clone()));
        let text = back.error.unwrap();
        assert!(text.starts_with("unknown target \"\\\"\\\"") && text.ends_with("\\\"\" (known: app, api)"), "{text}");
        assert!(text.contains('…'));
        assert!(reply_line(&back_again(&text)).len() > MAX_LINE - 64, "uses the room it has");
        assert_eq!(back.code, Some(ErrorCode::UnknownTarget));
        assert!(!back.ok);
    }

    fn back_again(error: &str) -> Reply {
        Reply::error(ErrorCode::UnknownTarget, error)
    }

    #[test]
    fn an_error_of_control_bytes_is_escaped_and_cut() {
        let error: String = (0..2000u32).map(|i| char::from_u32(i % 32).unwrap_or('?')).collect();
        let error = format!("BEGIN{error}END");
        let back = bounded(&Reply::error(ErrorCode::ActionFailed, error));
        let text = back.error.unwrap();
        assert!(text.starts_with("BEGIN\\x00\\x01") && text.ends_with("\\x0fEND"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }

    #[test]
    fn a_ready_excerpt_with_a_long_line_keeps_its_first_and_last_lines() {
        let excerpt = format!("Traceback (most recent call last):\n{}\nImportError: boom\n", "é\x1b".repeat(2500));
        let reply = Reply {
            ok: false,
            code: Some(ErrorCode::NotReady),
            op: Some("reload".into()),
            target: Some("app".into()),
            ready: Some(Ready { ok: false, ms: 30_000, error: Some(excerpt) }),
            error: Some("app did not come back".into()),
            ..Reply::default()
        };
        let back = bounded(&reply);
        let ready = back.ready.clone().unwrap();
        let text = ready.error.unwrap();
        assert!(text.starts_with("Traceback (most recent call last):\né\\x1b"), "{text}");
        assert!(text.ends_with("é\\x1b\nImportError: boom\n"), "{text}");
        assert_eq!((ready.ms, back.error.as_deref()), (30_000, Some("app did not come back")), "short ones stay whole");
        assert_eq!(back.target.as_deref(), Some("app"));
        assert_eq!(back.not_ready().map(|r| r.ms), Some(30_000));
    }

    #[test]
    fn many_health_entries_are_cut_and_thinned_to_fit() {
        let names: Vec<String> = (0..2000).map(|i| format!("target{i:04}")).collect();
        let health = names
            .iter()
            .map(|n| {
                let detail = format!("{n}: fifo /run/{n}.fifo has no reader\x1b[0m {}", "x".repeat(300));
                (n.clone(), Health { ok: Some(false), detail: Some(detail), ready_check: Some(true), wait_ms: Some(1) })
            })
            .collect();
        let reply = Reply {
            ok: true,
            op: Some("ping".into()),
            version: Some("0.1.0".into()),
            targets: Some(names.clone()),
            default_target: Some("target1000".into()),
            health: Some(health),
            ..Reply::default()
        };
        let back = bounded(&reply);
        let (targets, health) = (back.targets.unwrap(), back.health.unwrap());
        assert!(!targets.is_empty() && !health.is_empty());
        assert_eq!(targets.first().map(String::as_str), Some("target0000"), "the start is kept");
        assert_eq!(targets.last().map(String::as_str), Some("target1999"), "the end is kept");
        assert!(targets.contains(&"target1000".to_string()) && health.contains_key("target1000"), "the default stays");
        assert!(health.contains_key("target0000") && health.contains_key("target1999"));
        let detail = health["target1000"].detail.clone().unwrap();
        assert!(detail.starts_with("target1000: fifo") && detail.ends_with("xxx") && detail.contains('…'), "{detail}");
        assert!(!detail.contains('\x1b'));
        assert_eq!(back.version.as_deref(), Some("0.1.0"));
    }

    #[test]
    fn every_string_field_is_bounded_and_any_reply_fits() {
        let long = "\"\\\u{1}é".repeat(3000);
        let reply = Reply {
            ok: false,
            code: Some(ErrorCode::Internal),
            op: Some(long.clone()),
            target: Some(long.clone()),
            action: Some(long.clone()),
            merged: Some(true),
            version: Some(long.clone()),
            targets: Some(vec![long.clone(); 50]),
            default_target: Some(long.clone()),
            health: Some(
                (0..50)
                    .map(|i| {
                        (
                            format!("{i}{long}"),
                            Health { ok: None, detail: Some(long.clone()), ready_check: Some(false), wait_ms: None },
                        )
                    })
                    .collect(),
            ),
            ready: Some(Ready { ok: false, ms: 1, error: Some(long.clone()) }),
            error: Some(long),
        };
        let back = bounded(&reply);
        assert_eq!(back.code, Some(ErrorCode::Internal));
        assert!(back.default_target.is_some_and(|d| d.starts_with('"') && d.ends_with('é')));
    }

    #[test]
    fn cutting_keeps_char_boundaries_and_the_budget() {
        for budget in [3, 4, 5, 10, 11, 64] {
            for text in
                ["ééééééééééééééééééééé", "\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}", "abcdefghijklmnopqrstuvwxyz"]
            {
                let cut = cut(text, budget);
                assert!(json_len(&cut) <= budget, "{text:?} to {budget}: {cut:?}");
            }
        }
        assert_eq!(cut("abcdefghij", 7), "ab…ij");
        assert_eq!(cut("short", 64), "short");
    }

    #[test]
    fn a_reply_says_when_the_app_did_not_come_back() {
        let old =
            Reply { ok: true, ready: Some(Ready { ok: false, ms: 5, error: Some("e".into()) }), ..Reply::default() };
        assert_eq!(old.not_ready(), Some(Ready { ok: false, ms: 5, error: Some("e".into()) }));
        let new = Reply::error(ErrorCode::NotReady, "not back after 5 ms");
        assert_eq!(new.not_ready(), Some(Ready { ok: false, ms: 0, error: Some("not back after 5 ms".into()) }));
        let fine = Reply { ok: true, ready: Some(Ready { ok: true, ms: 5, error: None }), ..Reply::default() };
        assert_eq!(fine.not_ready(), None);
        assert_eq!(Reply::error(ErrorCode::ActionFailed, "x").not_ready(), None);
    }

    #[test]
    fn a_ready_check_goes_out_as_a_boolean_and_an_absent_one_reads_as_unknown() {
        let health = |ready_check| Health { ok: None, detail: None, ready_check, wait_ms: None };
        assert_eq!(serde_json::to_string(&health(Some(true))).unwrap(), r#"{"ready_check":true}"#);
        assert_eq!(serde_json::to_string(&health(Some(false))).unwrap(), r#"{"ready_check":false}"#);
        assert_eq!(serde_json::from_str::<Health>(r#"{"ok":true}"#).unwrap().ready_check, None);
    }

    #[test]
    fn an_escaped_reply_has_no_control_characters_left() {
        let reply = Reply {
            ok: false,
            target: Some("a\x1bb".into()),
            error: Some("x\u{9b}2J\ny".into()),
            ..Reply::error(ErrorCode::ActionFailed, "")
        };
        let escaped = reply.escaped();
        assert_eq!(escaped.target.as_deref(), Some("a\\x1bb"));
        assert_eq!(escaped.error.as_deref(), Some("x\\u{9b}2J\ny"));
    }

    proptest::proptest! {
        // Each case builds and cuts a reply of up to a few hundred kilobytes: fewer cases than the default.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn any_reply_goes_out_as_one_bounded_line_that_keeps_the_start_of_its_error(
            error in proptest::collection::vec(proptest::char::any(), 0..3000),
            excerpt in proptest::collection::vec(proptest::char::any(), 0..6000),
            names in proptest::collection::vec("[a-z\"\\\\\u{1}-\u{1f}é]{1,40}", 0..150),
            detail in "(.|\n){0,400}",
        ) {
            let error: String = error.into_iter().collect();
            let health = names.iter().map(|n| {
                (n.clone(), Health { ok: Some(false), detail: Some(detail.clone()), ready_check: Some(true), wait_ms: None })
            }).collect();
            let reply = Reply {
                ok: false,
                code: Some(ErrorCode::NotReady),
                targets: Some(names.clone()),
                default_target: names.first().cloned(),
                health: Some(health),
                ready: Some(Ready { ok: false, ms: 7, error: Some(excerpt.into_iter().collect()) }),
                error: Some(error.clone()),
                ..Reply::default()
            };
            let back = bounded(&reply);
            proptest::prop_assert_eq!(back.code, Some(ErrorCode::NotReady));
            proptest::prop_assert_eq!(back.ready.as_ref().map(|r| r.ms), Some(7));
            let sent = back.error.unwrap_or_default();
            let escaped = escape_remote(&error);
            let head = sent.split('…').next().unwrap_or("");
            proptest::prop_assert!(escaped.starts_with(head), "{:?} is not the start of {:?}", head, escaped);
            proptest::prop_assert!(!sent.chars().any(|c| c.is_control() && c != '\n'));
        }
    }
}
