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

/// The machine word of a failed reply (DESIGN.md, "Wire protocol v1").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No valid MAC.
    Unauthorized,
    /// Too many connections or requests; try again.
    Busy,
    /// No such target.
    UnknownTarget,
    /// Not a valid request.
    BadRequest,
    /// A line over the cap.
    TooLong,
    /// The action ran and failed.
    ActionFailed,
    /// The ready check failed or timed out.
    NotReady,
    /// The receiver failed itself.
    Internal,
    /// A code this version does not know: treated like `action_failed`.
    #[serde(other)]
    Unknown,
}

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

/// The receiver's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The machine word of a failure.
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
    /// A failure reply carrying a message for a person.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply { ok: false, code: Some(code), error: Some(message.into()), ..Reply::default() }
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
    /// Whether the target has a ready check (so `wait` is worth asking for).
    #[serde(default)]
    pub ready_check: bool,
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
pub fn parse_line(line: &[u8]) -> Incoming {
    let Ok(text) = std::str::from_utf8(line) else {
        return Incoming::Invalid("request is not valid UTF-8".into());
    };
    let text = text.trim_end_matches('\r');
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => match serde_json::from_value::<Request>(value) {
            Ok(Request { op: None, .. }) => Incoming::Invalid("request has no \"op\"".into()),
            Ok(request) => Incoming::Request(request),
            Err(err) => Incoming::Invalid(format!("invalid request: {err}")),
        },
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
    let refuse = |error: &str, close: bool| Admission::Refuse { error: error.into(), close };
    let request = match (parse_line(line), token) {
        (Incoming::Invalid(error), _) => return Admission::Refuse { error, close: token.is_some() },
        (Incoming::Legacy, Some(_)) => {
            return refuse(
                "unauthorized: this receiver requires a token; plain lines are accepted only with auth off",
                true,
            );
        }
        (Incoming::Legacy, None) => {
            Request { op: Some(Op::Reload), reason: Some("plain line".into()), ..Request::default() }
        }
        (Incoming::Request(request), Some(token)) => match &request.mac {
            None => return refuse("unauthorized: this receiver requires a token (no mac sent)", true),
            Some(mac) if !token.verify(nonce, mac) => {
                return refuse("unauthorized: wrong token (mac does not match)", true);
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
        for line in [&b"."[..], b"", b"hello", b"[1,2]", b"42", b"\"op\"", b"{not json"] {
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
        let reply = to_line(&Reply::error(ErrorCode::Busy, "nope"));
        assert_eq!(reply, "{\"ok\":false,\"code\":\"busy\",\"error\":\"nope\"}\n");
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
        assert!(matches!(replayed, Admission::Refuse { close: true, ref error } if error.contains("wrong token")));
        let bare = admit(br#"{"op":"ping"}"#, "n1", Some(&token));
        assert!(matches!(bare, Admission::Refuse { close: true, ref error } if error.contains("no mac")));
        let plain = admit(b".", "n1", Some(&token));
        assert!(matches!(plain, Admission::Refuse { close: true, .. }));
        assert!(matches!(admit(b"\xff", "n1", Some(&token)), Admission::Refuse { close: true, .. }));
    }

    #[test]
    fn admit_without_a_token_takes_plain_lines_and_keeps_bad_ones_open() {
        let plain = admit(b".", "n", None);
        assert!(matches!(plain, Admission::Reload(Request { reason: Some(ref r), .. }) if r == "plain line"));
        assert_eq!(admit(br#"{"op":"ping"}"#, "n", None), Admission::Ping { probe: false });
        assert_eq!(admit(br#"{"op":"ping","probe":true}"#, "n", None), Admission::Ping { probe: true });
        assert!(matches!(admit(br#"{"op":"nope"}"#, "n", None), Admission::Refuse { close: false, .. }));
    }
}
