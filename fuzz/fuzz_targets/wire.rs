//! Everything the receiver takes from the wire: the line framing, the JSON request, the nc
//! compatibility line, the MAC check, and the error and log text made from what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::io::BufReader;
use touchwire::auth::Token;
use touchwire::output::{clean, summary};
use touchwire::protocol::{self, Admission, ErrorCode, Line, MAX_LINE, Reply};

const NONCE: &str = "00112233445566778899aabbccddeeff";
const OTHER_NONCE: &str = "ffeeddccbbaa99887766554433221100";

fuzz_target!(|data: &[u8]| {
    let token = Token::new("fuzzing-token-0123456789").expect("a valid token");
    let mut reader = BufReader::new(data);
    let mut line = Vec::new();
    // As the receiver reads a connection: line by line, each at most MAX_LINE bytes.
    for _ in 0..64 {
        match protocol::read_line(&mut reader, &mut line) {
            Ok(Line::Complete) => {
                assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
                check(&line, &token);
            }
            Ok(Line::TooLong) => {
                assert!(line.len() > MAX_LINE);
                break;
            }
            Ok(Line::Eof) => break,
            Err(err) => panic!("reading from memory cannot fail: {err}"),
        }
    }
});

fn check(line: &[u8], token: &Token) {
    let open = protocol::admit(line, NONCE, None);
    answer_is_one_line(&open);

    // Without the nonce's MAC nothing gets past a token, and the connection is closed.
    let guarded = protocol::admit(line, NONCE, Some(token));
    assert!(matches!(guarded, Admission::Refuse { close: true, .. }), "let in without a MAC: {guarded:?}");

    // With the right MAC added, the request means what it means without auth (a bad one also
    // closes the connection); the same MAC
    // under another connection's nonce (a replay) is refused.
    if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(line) {
        object.insert("mac".into(), Value::String(token.mac(NONCE)));
        let signed = serde_json::to_vec(&Value::Object(object)).expect("a JSON object serializes");
        match (protocol::admit(&signed, NONCE, Some(token)), protocol::admit(&signed, NONCE, None)) {
            (Admission::Refuse { code, error, close }, Admission::Refuse { code: open_code, error: open, .. }) => {
                assert!(close && error == open && code == open_code, "{error:?} (close: {close}) against {open:?}");
            }
            (signed, open) => assert_eq!(signed, open),
        }
        let replayed = protocol::admit(&signed, OTHER_NONCE, Some(token));
        assert!(matches!(replayed, Admission::Refuse { close: true, .. }), "replay let in: {replayed:?}");
    }
}

/// Whatever was sent, the answer is one protocol line and what reaches the log has no control
/// characters (a request cannot forge log lines).
fn answer_is_one_line(admission: &Admission) {
    let reply = match admission {
        Admission::Refuse { code, error, .. } => Reply::error(*code, error.clone()),
        Admission::Ping { .. } => return,
        Admission::Reload(request) => {
            let logged = format!("{}: {}", clean(request.reason.as_deref().unwrap_or("")), summary(&request.files));
            assert!(!logged.chars().any(char::is_control), "control character in {logged:?}");
            let fitted = protocol::fit(request.clone());
            let sent = protocol::to_line(&fitted);
            assert!(sent.len() <= MAX_LINE + 1, "fit left {} bytes", sent.len());
            assert_eq!(protocol::parse_line(sent.trim_end().as_bytes()), protocol::Incoming::Request(fitted));
            Reply::error(ErrorCode::UnknownTarget, clean(request.target.as_deref().unwrap_or("")))
        }
    };
    let text = protocol::reply_line(&reply);
    assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "not one line: {text:?}");
    assert!(text.len() <= MAX_LINE + 1, "reply_line left {} bytes", text.len());
    let back: Reply = serde_json::from_str(&text).expect("a reply parses back");
    assert_eq!((back.ok, back.code), (reply.ok, reply.code));
    // A reply that fits and has nothing to escape goes out as it is.
    let plain = reply.error.as_deref().is_none_or(|e| protocol::escape_remote(e) == e);
    if plain && protocol::to_line(&reply).len() <= MAX_LINE + 1 {
        assert_eq!(back, reply);
    }
}
