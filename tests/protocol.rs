//! Wire protocol v1 against a real receiver: authentication, the `nc` line, limits and hostile input.
#![cfg(unix)]

mod util;

use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use util::{Env, Raw, mac};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn with_token(env: &Env) -> String {
    let path = env.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

fn touch_args(env: &Env) -> Vec<String> {
    vec!["--touch".into(), env.join("app.reload").to_str().unwrap().into()]
}

fn args<'a>(list: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    list.iter().map(String::as_str).chain(more.iter().copied()).collect()
}

#[test]
fn greeting_has_a_fresh_nonce_per_connection() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &[]));
    let (a, b) = (Raw::connect(&listener.addr), Raw::connect(&listener.addr));
    for raw in [&a, &b] {
        assert_eq!(raw.greeting["touchwire"], 1);
        assert_eq!(raw.greeting["auth"], false);
        let nonce = raw.nonce();
        assert!(nonce.len() == 32 && nonce.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{nonce}");
    }
    assert_ne!(a.nonce(), b.nonce());
}

#[test]
fn right_token_wrong_token_and_no_mac() {
    let env = Env::new();
    let token = with_token(&env);
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--token-file", &token]));

    let mut raw = Raw::connect(&listener.addr);
    assert_eq!(raw.greeting["auth"], true);
    let good = json!({"op": "reload", "reason": "test", "mac": mac(TOKEN, &raw.nonce())}).to_string();
    let reply = raw.request(&good).unwrap();
    assert_eq!(reply, json!({"ok": true, "op": "reload", "target": "app", "action": "touch", "merged": false}));
    // Several requests on one connection, same nonce.
    let ping = json!({"op": "ping", "mac": mac(TOKEN, &raw.nonce())}).to_string();
    let reply = raw.request(&ping).unwrap();
    assert_eq!(reply["targets"], json!(["app"]));
    assert_eq!(reply["default_target"], "app");
    assert_eq!(reply["version"], env!("CARGO_PKG_VERSION"));

    let mut raw = Raw::connect(&listener.addr);
    let wrong = json!({"op": "reload", "mac": mac("not the token", &raw.nonce())}).to_string();
    let reply = raw.request(&wrong).unwrap();
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(reply["error"].as_str().unwrap().starts_with("unauthorized: wrong token"), "{reply}");
    assert_eq!(raw.rest_until_closed(), "", "closed after a failed auth");

    let mut raw = Raw::connect(&listener.addr);
    // A MAC for another connection's nonce is no good either.
    let replayed = json!({"op": "reload", "mac": mac(TOKEN, "00000000000000000000000000000000")}).to_string();
    assert_eq!(raw.request(&replayed).unwrap()["ok"], false);

    let mut raw = Raw::connect(&listener.addr);
    let reply = raw.request(r#"{"op":"reload"}"#).unwrap();
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("requires a token"), "{reply}");

    // The same through `send`.
    env.run(&["send", "--to", &listener.addr, "--token-file", &token]).expect_code(0);
    let bad = env.join("bad-token");
    std::fs::write(&bad, "a-wrong-token-of-some-length").unwrap();
    env.run(&["send", "--to", &listener.addr, "--token-file", bad.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr(&format!("{}: unauthorized: wrong token", listener.addr));
    env.run(&["send", "--to", &listener.addr])
        .expect_code(1)
        .expect_stderr(&format!("{}: requires a token and none is configured", listener.addr));
}

#[test]
fn the_nc_line_reloads_only_with_auth_off() {
    let env = Env::new();
    let touch = touch_args(&env);
    let open = env.listen(&args(&touch, &[]));
    let mut raw = Raw::connect(&open.addr);
    let reply = raw.request(".").unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(open.wait_event("reload")["reason"], "plain line");
    assert!(env.join("app.reload").exists());

    let token = with_token(&env);
    let guarded = env.listen(&args(&touch, &["--token-file", &token]));
    let mut raw = Raw::connect(&guarded.addr);
    let reply = raw.request(".").unwrap();
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(reply["error"].as_str().unwrap().starts_with("unauthorized"), "{reply}");
}

#[test]
fn unknown_target_lists_the_known_ones() {
    let env = Env::new();
    let dir = env.path();
    std::fs::write(
        dir.join(".touchwire.json"),
        json!({"targets": {"app": {"touch": "app.reload"}, "api": {"touch": "api.reload"}}, "default_target": "app"})
            .to_string(),
    )
    .unwrap();
    let listener = env.listen(&[]);
    env.run(&["send", "--to", &listener.addr, "--target", "api"]).expect_code(0);
    assert!(dir.join("api.reload").exists() && !dir.join("app.reload").exists());
    env.run(&["send", "--to", &listener.addr, "--target", "web"])
        .expect_code(1)
        .expect_stderr(&format!("{}: unknown target \"web\" (known: api, app)", listener.addr));
    let mut raw = Raw::connect(&listener.addr);
    let reply = raw.request(r#"{"op":"reload","target":"web"}"#).unwrap();
    assert_eq!((&reply["ok"], &reply["code"]), (&json!(false), &json!("unknown_target")), "{reply}");
}

#[test]
fn an_oversized_line_is_refused_and_the_receiver_carries_on() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &[]));
    let mut raw = Raw::connect(&listener.addr);
    let long = format!(r#"{{"op":"reload","reason":"{}"}}"#, "x".repeat(5 * 1024));
    let reply = raw.request(&long).unwrap();
    assert_eq!(reply["code"], "too_long", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("longer than 4096 bytes"), "{reply}");
    raw.rest_until_closed();
    env.run(&["send", "--to", &listener.addr]).expect_code(0);
}

#[test]
fn a_silent_client_is_closed_after_the_read_timeout() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--read-timeout", "300"]));
    let mut raw = Raw::connect(&listener.addr);
    let reply = raw.read_reply().expect("an error line before closing");
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("no complete request within 300 ms"), "{reply}");
    raw.rest_until_closed();
    env.run(&["send", "--to", &listener.addr]).expect_code(0);
}

#[test]
fn connections_over_the_cap_get_an_error_line_not_a_hang() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--max-connections", "2"]));
    // Connections that have sent a valid request hold their slots (idle ones would be evicted).
    let mut first = Raw::connect(&listener.addr);
    assert_eq!(first.request(r#"{"op":"ping"}"#).unwrap()["ok"], true);
    let mut second = Raw::connect(&listener.addr);
    assert_eq!(second.request(r#"{"op":"ping"}"#).unwrap()["ok"], true);
    let mut third = TcpStream::connect(&listener.addr).unwrap();
    third.set_read_timeout(Some(util::WAIT)).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut third, &mut answer).unwrap();
    assert!(answer.starts_with(r#"{"ok":false,"code":"busy","error":"busy: "#), "{answer:?}");
    // `send` retries a busy receiver until its timeout, then reports it as the failure it is.
    env.run(&["send", "--to", &listener.addr])
        .expect_code(1)
        .expect_stderr("busy")
        .expect_stderr("still, after 1000 ms");
    // With time to spare, it gets the slot that frees up.
    let patient = env.command(env.path(), &["send", "--to", &listener.addr, "--timeout", "20000"]);
    let patient = std::thread::spawn(move || {
        let mut patient = patient;
        patient.output()
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let output = patient.join().unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn invalid_utf8_and_bad_requests_get_errors_and_the_connection_goes_on() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &[]));
    let mut raw = Raw::connect(&listener.addr);
    raw.send_bytes(b"\xff\xfe\xfd{\n");
    let reply = raw.read_reply().unwrap();
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("not valid UTF-8"), "{reply}");
    let reply = raw.request(r#"{"op":"explode"}"#).unwrap();
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("invalid request"), "{reply}");
    let reply = raw.request(r#"{"op":"ping"}"#).unwrap();
    assert_eq!(reply["ok"], true);
}

#[test]
fn random_bytes_never_take_the_receiver_down() {
    let env = Env::new();
    let token = with_token(&env);
    let touch = touch_args(&env);
    let mut listener = env.listen(&args(&touch, &["--token-file", &token]));
    // A fixed xorshift stream: the same "random" bytes on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20 {
        let len = 1 + (round * 613) % 6000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut stream = TcpStream::connect(&listener.addr).unwrap();
        stream.set_read_timeout(Some(util::WAIT)).unwrap();
        // The receiver may close on us mid-write (oversized line): that is an answer too.
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
        assert!(answer.starts_with(br#"{"touchwire":1"#), "round {round}: no greeting");
    }
    assert!(listener.is_alive(), "receiver died; stderr:\n{}", listener.stderr());
    env.run(&["send", "--to", &listener.addr, "--token-file", &token]).expect_code(0);
}

#[test]
fn a_non_loopback_bind_without_a_token_is_refused() {
    let env = Env::new();
    let file = env.join("app.reload");
    env.run(&["listen", "--addr", "0.0.0.0:0", "--touch", file.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("refusing to listen on 0.0.0.0:0 without a token");
}

#[test]
fn allow_unauthenticated_binds_with_a_warning() {
    let env = Env::new();
    let file = env.join("app.reload");
    let mut child = env
        .command(
            env.path(),
            &["listen", "--addr", "0.0.0.0:0", "--allow-unauthenticated", "--touch", file.to_str().unwrap()],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.contains("touchwire listening on 0.0.0.0:"), "{first}");
    assert!(second.contains("warning: no token"), "{second}");
}

/// Writes one byte every 100 ms (at most 100) until told to stop; returns whether it ran out.
fn drip(mut stream: TcpStream, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        for _ in 0..100 {
            if stop.load(std::sync::atomic::Ordering::SeqCst) || stream.write_all(b"x").is_err() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        true
    })
}

#[test]
fn a_client_dripping_bytes_is_closed_after_the_read_timeout() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--read-timeout", "500"]));
    let mut raw = Raw::connect(&listener.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripper = drip(raw.stream.try_clone().unwrap(), stop.clone());
    let reply = raw.read_reply().expect("an error line");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("no complete request within 500 ms"), "{reply}");
    assert!(!dripper.join().unwrap(), "the deadline is per line: it must strike while the client still drips");
}

#[test]
fn with_auth_on_an_invalid_line_closes_the_connection() {
    let env = Env::new();
    let token = with_token(&env);
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--token-file", &token]));
    let mut raw = Raw::connect(&listener.addr);
    let reply = raw.request(r#"{"op":"nope"}"#).unwrap();
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert_eq!(raw.rest_until_closed(), "");
}

/// Lines meant as a JSON object that serde cannot take: never the `nc` reload.
const BROKEN_OBJECTS: [&str; 4] =
    [r#"{not json"#, r#"{"op":"reload","x":1e999}"#, r#"{"op":"reload","target":"\ud800"}"#, r#"{"op":"reload""#];

#[test]
fn a_broken_json_object_is_a_bad_request_not_the_nc_reload() {
    let env = Env::new();
    let touch = touch_args(&env);
    let open = env.listen(&args(&touch, &[]));
    let mut raw = Raw::connect(&open.addr);
    for line in BROKEN_OBJECTS {
        let reply = raw.request(line).unwrap();
        assert_eq!((&reply["ok"], &reply["code"]), (&json!(false), &json!("bad_request")), "{line}: {reply}");
    }
    assert_eq!(raw.request(r#"{"op":"ping"}"#).unwrap()["ok"], true, "the connection goes on");
    assert!(!env.join("app.reload").exists(), "nothing was reloaded");

    let token = with_token(&env);
    let guarded = env.listen(&args(&touch, &["--token-file", &token]));
    for line in BROKEN_OBJECTS {
        let mut raw = Raw::connect(&guarded.addr);
        let reply = raw.request(line).unwrap();
        assert_eq!(reply["code"], "bad_request", "{line}: {reply}");
        assert_eq!(raw.rest_until_closed(), "", "{line}: closed");
    }
}

#[test]
fn a_rejected_client_that_drips_does_not_stall_the_others() {
    let env = Env::new();
    let touch = touch_args(&env);
    let listener = env.listen(&args(&touch, &["--max-connections", "1"]));
    let mut holder = Raw::connect(&listener.addr);
    assert_eq!(holder.request(r#"{"op":"ping"}"#).unwrap()["ok"], true);
    let mut rejected = TcpStream::connect(&listener.addr).unwrap();
    rejected.set_read_timeout(Some(util::WAIT)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripper = drip(rejected.try_clone().unwrap(), stop.clone());
    let mut line = String::new();
    let _ = std::io::Read::read_to_string(&mut rejected, &mut line);
    assert!(line.contains("busy"), "{line:?}");
    drop(holder);
    util::eventually("a new client is served", || env.run(&["send", "--to", &listener.addr]).code == 0);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!dripper.join().unwrap(), "served while the rejected client was still dripping");
}
