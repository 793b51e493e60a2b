//! Addresses and configuration messages end to end (issue 16): every source of an address
//! (`--to`, `--addr`, `TOUCHWIRE_TO`, `remote` and `listen` in `.touchwire.json`) is checked by one
//! parser, a mistake exits 2 with the fix, a missing port is 9001 for `send` and `listen` alike and
//! messages name the port tried; a port in use gets a hint; `listen` says which configuration it
//! uses; config file errors name the real key and ask for milliseconds where milliseconds go.
#![cfg(unix)]

mod util;

use serde_json::json;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use util::{Daemon, Env, Run, eventually};

/// Runs `touchwire ARGS` in the env's directory with `vars` set (the env clears TOUCHWIRE_*).
fn run_with(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = env.command(env.path(), args);
    cmd.envs(vars.iter().copied());
    let output = cmd.stdin(std::process::Stdio::null()).output().expect("cannot run touchwire");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits (bounded) for a daemon that should end by itself; its exit code and stderr.
fn finish(mut daemon: Daemon) -> (Option<i32>, String) {
    eventually("touchwire to exit", || !daemon.is_alive());
    let code = daemon.terminate();
    (code, daemon.stderr())
}

#[test]
fn a_bad_address_on_the_command_line_exits_2_with_the_fix() {
    let env = Env::new();
    for (args, says) in [
        (&["send", "--to", "host:99999"][..], "port 99999 is out of range: a port is 1 to 65535, e.g. host:9001"),
        (&["send", "--to", "host:abc"], "port \"abc\" is not a number: write host:PORT"),
        (&["send", "--to", ""], "the address is empty: write HOST or HOST:PORT"),
        (&["send", "--to", "http://host:9001"], "write HOST:PORT without a scheme: host:9001"),
        (&["send", "--to", "::1:9101"], "an IPv6 address with a port needs brackets: write [::1]:9101"),
        (&["status", "--to", "guest:0"], "port 0 cannot be connected to"),
        (&["watch", "--to", "[::1"], "a ']' is missing"),
        (&["init", "--to", "https://guest"], "without a scheme: guest:9001"),
        (&["listen", "--addr", "127.0.0.1:99999"], "port 99999 is out of range"),
        (&["listen", "--addr", "http://0.0.0.0:9001", "--touch", "x"], "without a scheme: 0.0.0.0:9001"),
        (&["listen", "--addr", "::1:9101"], "write [::1]:9101"),
    ] {
        let run = env.run(args);
        run.expect_code(2).expect_stderr(says);
        assert!(!run.stderr.contains("resolve"), "a usage error, not a DNS failure: {run:?}");
    }
    assert!(!env.join(".touchwire.json").exists(), "init with a bad --to wrote nothing");
}

#[test]
fn addresses_in_the_config_and_the_environment_are_checked_alike_naming_where_they_came_from() {
    let env = Env::new();
    let config = env.join(".touchwire.json");
    for (file, says) in [
        (
            json!({"remote": "guest:99999"}),
            ".touchwire.json: key `remote`: \"guest:99999\": port 99999 is out of range",
        ),
        (
            json!({"remote": ["127.0.0.1:1", "::1:9101"]}),
            ".touchwire.json: key `remote[1]`: \"::1:9101\": an IPv6 address with a port needs brackets: write [::1]:9101",
        ),
        (
            json!({"remote": "http://guest:9001"}),
            "key `remote`: \"http://guest:9001\": http:// is not part of an address",
        ),
    ] {
        std::fs::write(&config, file.to_string()).unwrap();
        env.run(&["send"]).expect_code(2).expect_stderr(says);
        env.run(&["status"]).expect_code(2).expect_stderr(says);
    }
    std::fs::write(&config, json!({"listen": "0.0.0.0:abc"}).to_string()).unwrap();
    env.run(&["listen", "--touch", "x"])
        .expect_code(2)
        .expect_stderr("key `listen`: \"0.0.0.0:abc\": port \"abc\" is not a number: write 0.0.0.0:PORT");
    std::fs::remove_file(&config).unwrap();

    run_with(&env, &[("TOUCHWIRE_TO", "127.0.0.1:1,host:abc")], &["send"])
        .expect_code(2)
        .expect_stderr("environment TOUCHWIRE_TO: \"host:abc\": port \"abc\" is not a number");
}

#[test]
fn help_states_the_default_port() {
    let env = Env::new();
    for (command, flag) in [("send", "--to"), ("watch", "--to"), ("status", "--to"), ("listen", "--addr")] {
        let run = env.run(&[command, "--help"]);
        run.expect_code(0);
        let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = help.split(&format!("{flag} <ADDR>")).nth(1).unwrap_or_else(|| panic!("{command}: {help}"));
        assert!(text.split(" --").next().unwrap().contains("port 9001 when not given"), "{command} {flag}: {help}");
    }
}

#[test]
fn a_port_in_use_says_another_listener_may_hold_it() {
    let env = Env::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let attempt = env.spawn(env.path(), &["listen", "--addr", &format!("127.0.0.1:{port}"), "--touch", "x"]);
    let (code, stderr) = finish(attempt);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("touchwire: cannot listen on 127.0.0.1:{port}: ")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another touchwire listen, or another program, uses port {port}; stop it or choose --addr HOST:PORT"
        )),
        "{stderr}"
    );
}

/// The listener's stderr lines without their clock, once `needle` is among them.
fn lines_once(daemon: &Daemon, needle: &str) -> Vec<String> {
    let stderr = daemon.wait_stderr(needle);
    stderr.lines().map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string()).collect()
}

#[test]
fn listen_says_which_configuration_it_uses_and_warns_when_it_found_none() {
    let env = Env::new();
    let repo = env.join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let cwd = repo.join("app");
    std::fs::create_dir_all(&cwd).unwrap();

    let bare = env.spawn(&cwd, &["listen", "--addr", "127.0.0.1:0", "--json", "--touch", "app.reload"]);
    let listening = bare.wait_event("listening");
    assert_eq!(listening["config"], serde_json::Value::Null);
    let warning = bare.wait_event("warning");
    assert_eq!(warning["warning"], "no config file");
    assert_eq!(warning["searched_from"], cwd.to_str().unwrap());
    let lines = lines_once(&bare, "warning: no .touchwire.json");
    assert!(lines[0].starts_with("touchwire listening on 127.0.0.1:"), "{lines:?}");
    assert_eq!(
        lines[1],
        format!(
            "warning: no .touchwire.json found from {}: the command line and built-in defaults (auth off, \
             127.0.0.1:0); to use the repository's, start listen in the shared folder or pass --config FILE \
             (`touchwire init` on the host writes one)",
            cwd.display()
        )
    );

    let config = repo.join(".touchwire.json");
    std::fs::write(&config, json!({"targets": {"app": {"touch": "app.reload"}}}).to_string()).unwrap();
    let found = env.spawn(&cwd, &["listen", "--addr", "127.0.0.1:0", "--json"]);
    assert_eq!(found.wait_event("listening")["config"], config.to_str().unwrap());
    let lines = lines_once(&found, "config: ");
    assert!(lines[0].starts_with("touchwire listening on 127.0.0.1:"), "{lines:?}");
    assert_eq!(lines[1], format!("config: {}", config.display()));
    assert!(!found.stderr().contains("warning"), "{}", found.stderr());
}

#[test]
fn config_file_errors_name_the_real_key_and_ask_for_milliseconds() {
    let env = Env::new();
    let config = env.join(".touchwire.json");
    for (text, says) in [
        (r#"{"settle_ms": 30,}"#, ".touchwire.json: JSON syntax error at the top level: trailing comma at line 1"),
        (r#"{"targets": {"app": {"touch": "/x",}}}"#, "JSON syntax error inside `targets.app`: trailing comma"),
        (
            r#"{"settle_ms": "fast"}"#,
            "key `settle_ms`: invalid type: string \"fast\", expected a number of milliseconds",
        ),
        (
            r#"{"targets": {"app": {"exec": ["true"], "timeout_ms": "10s"}}}"#,
            "key `targets.app.timeout_ms`: invalid type: string \"10s\", expected a number of milliseconds",
        ),
        (r#"{"debounce_ms": -5}"#, "key `debounce_ms`: invalid value: integer `-5`, expected a number of milliseconds"),
    ] {
        std::fs::write(&config, text).unwrap();
        let run = env.run(&["send"]);
        run.expect_code(2).expect_stderr(says);
        assert!(!run.stderr.contains("`?`") && !run.stderr.contains("u64"), "{text}: {}", run.stderr);
    }
}

/// A wrapper that runs touchwire in a network namespace of its own (loopback up): port 9001 there
/// is certainly free, whatever runs on this machine.
const NETNS: &[&str] = &["unshare", "-U", "-r", "-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""];

/// Whether this machine lets an unprivileged user create a network namespace.
fn network_namespaces() -> bool {
    let works = Command::new(NETNS[0]).args(&NETNS[1..]).arg("true").status().is_ok_and(|s| s.success());
    if !works {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must allow network namespaces (unshare -U -r -n)");
        eprintln!("skipping: `unshare -U -r -n` does not work here");
    }
    works
}

/// `touchwire ARGS` in `cwd`, in the namespaces of process `pid`.
fn inside(env: &Env, pid: u32, cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let pid = pid.to_string();
    finish(env.spawn_via(&["nsenter", "-t", &pid, "-U", "-n", "--preserve-credentials"], cwd, args))
}

#[test]
fn a_missing_port_is_9001_for_listen_and_send_alike_and_messages_name_it() {
    if !network_namespaces() || !util::require("nsenter") {
        return;
    }
    let env = Env::new();
    let reload = env.join("app.reload");
    let listener = env.spawn_via(
        NETNS,
        env.path(),
        &["listen", "--addr", "127.0.0.1", "--json", "--touch", reload.to_str().unwrap()],
    );
    assert_eq!(listener.wait_event("listening")["addr"], "127.0.0.1:9001");
    let pid = listener.pid();

    let (code, stderr) = inside(&env, pid, env.path(), &["send", "--to", "127.0.0.1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9001"), "{stderr}");
    assert!(reload.exists());
    // Nothing listens on IPv6 there: the message says the port it tried.
    let (code, stderr) = inside(&env, pid, env.path(), &["send", "--to", "::1", "--timeout", "2000"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("touchwire: [::1]:9001: connection refused"), "{stderr}");
    // A remote in the config file and in TOUCHWIRE_TO takes the same default port.
    let host = env.join("host");
    std::fs::create_dir_all(host.join(".git")).unwrap();
    std::fs::write(host.join(".touchwire.json"), json!({"remote": "127.0.0.1"}).to_string()).unwrap();
    let (code, stderr) = inside(&env, pid, &host, &["send"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9001"), "{stderr}");
    let (code, stderr) = inside(&env, pid, &host, &["status"]);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = inside(&env, pid, env.path(), &["listen", "--addr", "127.0.0.1", "--touch", "x"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on 127.0.0.1:9001: "), "{stderr}");
    assert!(stderr.contains("another touchwire listen, or another program, uses port 9001"), "{stderr}");
}

#[test]
fn listen_with_no_config_and_no_flags_says_it_runs_on_built_in_defaults() {
    if !network_namespaces() {
        return;
    }
    let env = Env::new();
    let listener = env.spawn_via(NETNS, env.path(), &["listen", "--json"]);
    assert_eq!(listener.wait_event("listening")["addr"], "127.0.0.1:9001");
    let lines = lines_once(&listener, "warning: no .touchwire.json");
    assert!(
        lines[1].starts_with(&format!(
            "warning: no .touchwire.json found from {}: built-in defaults (auth off, 127.0.0.1:9001); ",
            env.path().display()
        )),
        "{lines:?}"
    );
}
