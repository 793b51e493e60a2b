//! The commands end to end: send's failures and exit codes, fan-out, config errors, init then status.
#![cfg(unix)]

mod util;

use serde_json::json;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use util::Env;

fn closed_port() -> String {
    // Bind then drop: the port is free, and nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn send_to_a_closed_port_fails_with_a_clear_message() {
    let env = Env::new();
    let addr = closed_port();
    env.run(&["send", "--to", &addr])
        .expect_code(1)
        .expect_stderr(&format!("touchwire: {addr}: connection refused (is `touchwire listen` running there?)"));
}

#[test]
fn send_gives_up_after_its_timeout() {
    let env = Env::new();
    // Accepts connections (the kernel does) but never greets.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap().to_string();
    env.run(&["send", "--to", &addr, "--timeout", "300"])
        .expect_code(1)
        .expect_stderr(&format!("{addr}: no answer within 300 ms"));
}

#[test]
fn send_fans_out_and_names_the_remote_that_failed() {
    let env = Env::new();
    let listener = env.listen(&["--touch", env.join("a.reload").to_str().unwrap()]);
    let dead = closed_port();
    let run = env.run(&["send", "--to", &listener.addr, "--to", &dead, "--reason", "fan-out test", "--json"]);
    run.expect_code(1)
        .expect_stderr(&format!("reloaded app on {}", listener.addr))
        .expect_stderr(&format!("{dead}: connection refused"))
        .expect_stderr("1 of 2 remotes failed");
    let lines: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines.iter().any(|l| l["remote"] == listener.addr.as_str() && l["ok"] == true));
    assert!(lines.iter().any(|l| l["remote"] == dead.as_str() && l["ok"] == false));
    assert_eq!(listener.wait_event("reload")["reason"], "fan-out test");
}

#[test]
fn config_mistakes_exit_2_naming_the_file_and_the_key() {
    let env = Env::new();
    let config = env.join(".touchwire.json");
    std::fs::write(&config, json!({"settle_ms": "fast"}).to_string()).unwrap();
    env.run(&["send"]).expect_code(2).expect_stderr(".touchwire.json: key `settle_ms`: invalid type");
    std::fs::write(&config, json!({"remotes": "x"}).to_string()).unwrap();
    env.run(&["status"]).expect_code(2).expect_stderr("unknown field `remotes`");
    env.run(&["send", "--config", env.join("nope.json").to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("nope.json (from command line) does not exist");
    std::fs::remove_file(&config).unwrap();
    env.run(&["send", "--token-file", env.join("missing-token").to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("cannot read token file");
    env.run(&["send", "--bogus-flag"]).expect_code(2);
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let env = Env::new();
    let listener = env.listen(&["--touch", env.join("a.reload").to_str().unwrap()]);
    let dead = closed_port();
    std::fs::write(env.join(".touchwire.json"), json!({"remote": dead}).to_string()).unwrap();
    env.run(&["send"]).expect_code(1).expect_stderr(&dead);
    let mut cmd = env.command(env.path(), &["send"]);
    let output = cmd.env("TOUCHWIRE_TO", &listener.addr).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut cmd = env.command(env.path(), &["send", "--to", &dead]);
    let output = cmd.env("TOUCHWIRE_TO", &listener.addr).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&dead), "the flag's remote was the one tried");
}

#[test]
fn init_then_listen_then_status_and_send_work_end_to_end() {
    let env = Env::new();
    let repo = env.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git").args(args).current_dir(&repo).output().expect("git is needed for this test");
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
        String::from_utf8_lossy(&status.stdout).into_owned()
    };
    git(&["init", "-q"]);
    let reload = env.join("app.reload");
    env.run_in(&repo, &["init", "--touch", reload.to_str().unwrap()]).expect_code(0).expect_stdout(".touchwire.json");
    env.run_in(&repo, &["init"]).expect_code(2).expect_stderr("exists already; pass --force");

    let token = repo.join(".git/touchwire/token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    assert_eq!(std::fs::read_to_string(&token).unwrap().trim().len(), 64);
    // Only the config shows up for git: the token is never tracked.
    assert_eq!(git(&["status", "--porcelain", "--untracked-files=all"]).trim(), "?? .touchwire.json");

    // The config says listen on 0.0.0.0; the test keeps to loopback with --addr.
    let listener = env.listen_in(&repo, &[]);
    let status = env.run_in(&repo, &["status", "--to", &listener.addr]);
    status
        .expect_code(0)
        .expect_stdout(&format!("{}: ok in", listener.addr))
        .expect_stdout("auth on, token accepted")
        .expect_stdout("targets app (default app)")
        .expect_stdout("[command line]")
        .expect_stdout(".touchwire.json]");
    env.run_in(&repo, &["send", "--to", &listener.addr]).expect_code(0);
    assert!(reload.exists());

    let wrong = env.join("wrong-token");
    std::fs::write(&wrong, "not-the-guests-token").unwrap();
    let mut cmd = env.command(&repo, &["status", "--to", &listener.addr]);
    let output = cmd.env("TOUCHWIRE_TOKEN_FILE", &wrong).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("unauthorized: wrong token") && stdout.contains("[environment TOUCHWIRE_TOKEN_FILE]"),
        "{stdout}"
    );
}

#[test]
fn status_shows_every_setting_with_its_layer_flags_over_files_over_defaults() {
    let env = Env::new();
    let config = env.join("t.json");
    std::fs::write(&config, r#"{"tracked_only": true, "timeout_ms": 300, "max_connections": 4}"#).unwrap();
    let config = config.to_str().unwrap();
    let dead = closed_port();
    let run = env.run(&["status", "--config", config, "--to", &dead, "--timeout", "250"]);
    run.expect_code(1);
    let row = |key: &str| {
        let line = run.stdout.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| {
            panic!("status shows no {key}:\n{}", run.stdout);
        });
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(row("timeout_ms"), "timeout_ms 250 [command line]", "the flag over the file");
    assert_eq!(row("tracked_only"), format!("tracked_only true [{config}]"));
    assert_eq!(row("max_connections"), format!("max_connections 4 [{config}]"));
    assert_eq!(row("read_timeout_ms"), "read_timeout_ms 10000 [built-in default]");
    assert_eq!(row("poll_ms"), "poll_ms off (the OS's file events) [built-in default]");
    std::fs::write(env.join("zero.json"), r#"{"poll_ms": 0}"#).unwrap();
    env.run(&["status", "--config", env.join("zero.json").to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("key `poll_ms`: 0 would not work: give at least 1");
}

#[test]
fn status_fails_when_a_remote_is_down() {
    let env = Env::new();
    let dead = closed_port();
    env.run(&["status", "--to", &dead])
        .expect_code(1)
        .expect_stdout(&format!("{dead}: FAILED: {dead}: connection refused"))
        .expect_stderr("1 of 1 remote failed");
}

#[test]
fn a_short_token_is_refused_at_start_on_both_sides() {
    let env = Env::new();
    let token = env.join("token");
    std::fs::write(&token, "guessable").unwrap();
    let file = env.join("a.reload");
    env.run(&[
        "listen",
        "--addr",
        "127.0.0.1:0",
        "--touch",
        file.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ])
    .expect_code(2)
    .expect_stderr("is 9 bytes: use at least 16");
    env.run(&["send", "--to", "127.0.0.1:9", "--token-file", token.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("is 9 bytes: use at least 16");
}

#[test]
fn a_long_reason_still_fits_one_line() {
    let env = Env::new();
    let listener = env.listen(&["--touch", env.join("a.reload").to_str().unwrap()]);
    let reason = "why ".repeat(2000);
    env.run(&["send", "--to", &listener.addr, "--reason", &reason]).expect_code(0);
}

#[test]
fn init_prints_a_systemd_unit_for_the_guest() {
    let env = Env::new();
    let run = env.run(&["init", "--systemd-unit", "--user", "vagrant"]);
    run.expect_code(0)
        .expect_stdout(&format!("ExecStart={} listen\n", env!("CARGO_BIN_EXE_touchwire")))
        .expect_stdout(&format!("WorkingDirectory={}\n", env.path().display()))
        .expect_stdout("User=vagrant\n")
        .expect_stdout("Restart=on-failure\n")
        .expect_stdout("WantedBy=multi-user.target\n");
}

#[test]
fn completions_and_help_are_printed() {
    let env = Env::new();
    env.run(&["completions", "bash"]).expect_code(0).expect_stdout("touchwire");
    env.run(&["listen", "--help"]).expect_code(0).expect_stdout("--fifo-command");
    env.run(&["--version"]).expect_code(0).expect_stdout(env!("CARGO_PKG_VERSION"));
}

#[test]
fn the_token_is_never_printed_by_any_command() {
    let project = util::Project::new(&[("app/views.py", "V = 1\n")], false);
    let (env, repo) = (&project.env, &project.repo);
    let token = "secret-token-that-must-stay-secret-0123456789";
    let token_file = env.join("token");
    std::fs::write(&token_file, token).unwrap();
    let token_arg = token_file.to_str().unwrap();
    let reload = env.join("guarded.reload");
    let mut receiver = env.listen(&["-vv", "--touch", reload.to_str().unwrap(), "--token-file", token_arg]);
    let to = receiver.addr.clone();

    let mut printed = Vec::new();
    for (args, code) in [
        (vec!["send", "-vv", "--to", &to, "--token-file", token_arg, "--json"], 0),
        (vec!["status", "-vv", "--to", &to, "--token-file", token_arg], 0),
        (vec!["send", "-vv", "--to", &to, "--token-file", "/no/such/token"], 2),
    ] {
        let run = env.run_in(&repo.root, &args);
        run.expect_code(code);
        printed.push(format!("{args:?}\n{}{}", run.stdout, run.stderr));
    }
    // A client with the wrong token, and one that sends the token itself instead of a MAC.
    let mut raw = util::Raw::connect(&to);
    printed.push(format!("{:?}", raw.request(&format!(r#"{{"op":"reload","mac":"{token}"}}"#))));
    let wrong = env.join("wrong");
    std::fs::write(&wrong, "the-wrong-token-but-long-enough").unwrap();
    let refused = env.run(&["send", "-vv", "--to", &to, "--token-file", wrong.to_str().unwrap()]);
    refused.expect_code(1).expect_stderr("wrong token");
    printed.push(format!("{}{}", refused.stdout, refused.stderr));

    let (mut watcher, _) = env.watch_in(&repo.root, &["-vv", "--to", &to, "--token-file", token_arg]);
    repo.write("app/views.py", "V = 2\n");
    watcher.wait_event("trigger");
    watcher.terminate();
    receiver.terminate();
    let mut watched = watcher.stderr();
    watched.extend(watcher.events_within(Duration::from_millis(100)).iter().map(|e| e.to_string()));
    printed.push(watched);
    let mut received = receiver.stderr();
    received.extend(receiver.events_within(Duration::from_millis(100)).iter().map(|e| e.to_string()));
    printed.push(received);

    for output in printed {
        assert!(!output.contains(token), "the token was printed:\n{output}");
    }
}

#[test]
fn durations_longer_than_an_hour_are_refused_as_flags_and_in_files() {
    let env = Env::new();
    env.run(&["listen", "--settle", "3600001", "--touch", "/tmp/x"]).expect_code(2).expect_stderr("3600001");
    env.run(&["send", "--to", "127.0.0.1:9", "--timeout", "99999999999999"]).expect_code(2);
    std::fs::write(env.join(".touchwire.json"), r#"{"targets": {"app": {"exec": ["true"], "timeout_ms": 3600001}}}"#)
        .unwrap();
    env.run(&["status"])
        .expect_code(2)
        .expect_stderr("key `targets.app.timeout_ms`: 3600001 ms is longer than an hour");
}
