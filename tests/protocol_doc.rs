//! docs/protocol.md cannot silently fall behind the code: every error code, every request kind
//! and every field of every message the code serializes is named there. The lists come from the
//! types themselves: `ErrorCode::SENT`, an exhaustive match of the ops (a new variant does not
//! compile until it is listed here) and struct literals without `..Default` (a new field does
//! not compile either), whose field names are read back from their JSON.

use serde_json::Value;
use std::collections::BTreeMap;
use touchwire::protocol::{ErrorCode, Greeting, Health, Op, Ready, Reply, Request};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

fn ops() -> Vec<Op> {
    let all = [Op::Reload, Op::Ping];
    for op in all {
        match op {
            Op::Reload | Op::Ping => {}
        }
    }
    all.to_vec()
}

/// The JSON keys of `value`, nested objects' keys included (but not a map's entry names).
fn keys(value: &Value, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            out.push(key.clone());
            keys(inner, out);
        }
    }
}

fn fields_of(value: impl serde::Serialize) -> Vec<String> {
    let mut out = Vec::new();
    keys(&serde_json::to_value(value).unwrap(), &mut out);
    out
}

/// Every field of every message, each set so that serde writes it.
fn fields() -> Vec<String> {
    let greeting = Greeting { touchwire: 1, nonce: "n".into(), auth: true };
    let request = Request {
        op: Some(Op::Reload),
        target: Some("t".into()),
        reason: Some("r".into()),
        files: vec!["f".into()],
        wait: true,
        mac: Some("m".into()),
        probe: true,
    };
    let ready = Ready { ok: false, ms: 1, error: Some("e".into()) };
    let health = Health { ok: Some(true), detail: Some("d".into()), ready_check: Some(true), wait_ms: Some(1) };
    let reply = Reply {
        ok: false,
        code: Some(ErrorCode::Busy),
        op: Some("reload".into()),
        target: Some("t".into()),
        action: Some("touch".into()),
        merged: Some(true),
        version: Some("v".into()),
        targets: Some(vec!["t".into()]),
        default_target: Some("t".into()),
        // The map's key is a target name, not a field: its entry is checked on its own below.
        health: Some(BTreeMap::new()),
        ready: Some(ready),
        error: Some("e".into()),
    };
    let mut all = fields_of(greeting);
    all.extend(fields_of(request));
    all.extend(fields_of(reply));
    all.extend(fields_of(health));
    all.sort();
    all.dedup();
    all
}

#[test]
fn every_error_code_is_documented_with_when_it_is_sent() {
    let doc = doc();
    for code in ErrorCode::SENT {
        // A row of the error code table: "| `busy` | sent when ... |".
        let row = format!("| `{code}` |");
        assert!(doc.contains(&row), "docs/protocol.md has no row {row} in its error code table");
    }
}

#[test]
fn every_request_kind_is_documented() {
    let doc = doc();
    for op in ops() {
        let name = format!("**`{}`**", op.as_str());
        assert!(doc.contains(&name), "docs/protocol.md does not describe the request kind {name}");
    }
    assert!(doc.contains("**The plain line**"), "the nc compatibility line is a request kind too");
}

#[test]
fn every_message_field_is_documented() {
    let doc = doc();
    let all = fields();
    assert!(all.len() >= 20, "the field list is built from the types: {all:?}");
    for field in all {
        let cell = format!("| `{field}` |");
        assert!(doc.contains(&cell), "docs/protocol.md has no table row for the field `{field}`");
    }
}

#[test]
fn the_documented_limits_and_defaults_are_the_codes() {
    let doc = doc();
    let line = format!("at most **{} bytes**", touchwire::protocol::MAX_LINE);
    assert!(doc.contains(&line), "line limit: {line}");
    let port = format!("The default port is **{}**", touchwire::protocol::DEFAULT_PORT);
    assert!(doc.contains(&port), "{port}");
    let version = format!("`\"touchwire\":{}`", touchwire::protocol::VERSION);
    assert!(doc.contains(&version), "{version}");
    let token = format!("at least **{} bytes**", touchwire::auth::MIN_TOKEN_BYTES);
    assert!(doc.contains(&token), "{token}");
}

#[test]
fn the_documented_mac_test_vector_is_what_the_code_computes() {
    let doc = doc();
    let token = touchwire::auth::Token::new("Jefe").unwrap();
    let mac = token.mac("what do ya want for nothing?");
    assert!(doc.contains(&format!("`{mac}`")), "docs/protocol.md's test vector differs from {mac}");
}
