//! Benchmark of ready checks with a real uWSGI on loopback (DESIGN.md, "Knowing the app is back").
//!
//! Run it with `cargo bench --bench ready`. For each reload action (touch-reload, master FIFO with
//! its poke), N edits (`BENCH_EDITS`, default 20) of the app's module, each followed by
//! `touchwire send --wait --path FILE`, the editor's path. It measures, per edit: from the save to
//! "reloaded app ... in N ms" printed on the host (send's exit), and from the save to the first
//! HTTP answer carrying the new value (a poller every 2 ms); the difference is what the check adds
//! over the action alone. Needs uwsgi and uwsgi-plugin-python3. Only 127.0.0.1 is contacted;
//! children are killed by their PID at the end.

mod common;

use anyhow::{Context, Result, bail};
use common::{Guard, Kill, quantile};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_touchwire");
const WAIT: Duration = Duration::from_secs(20);

fn main() {
    if let Err(err) = run() {
        eprintln!("bench ready failed: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let edits: usize = std::env::var("BENCH_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(5);
    println!("# touchwire ready-check benchmark\n");
    println!("Command: `cargo bench --bench ready`, {edits} edits per action, uWSGI 1 worker on loopback.\n");
    println!("- CPU: {}", common::cpu_model());
    println!("- logical CPUs: {}", common::logical_cpus());
    println!("- uWSGI: {}\n", common::first_line("uwsgi", &["--version"], WAIT, Kill::Pid)?);
    println!(
        "| action | save → \"reloaded\" printed, median ms | p90 ms | save → new value served, median ms | p90 ms | check's overhead, median ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for action in ["touch", "fifo"] {
        let (reported, served) = measure(action, edits)?;
        let overhead: Vec<f64> = reported.iter().zip(&served).map(|(r, s)| r - s).collect();
        println!(
            "| {action} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            quantile(&reported, 0.5),
            quantile(&reported, 0.9),
            quantile(&served, 0.5),
            quantile(&served, 0.9),
            quantile(&overhead, 0.5)
        );
    }
    println!("\nThe check's overhead is send's exit minus the first new answer (polled every 2 ms). The log follower");
    println!("polls every 10 ms and send must start, connect and print; uWSGI logs \"ready\" a little before its");
    println!("worker answers, so the overhead can be negative. A check with \"url\" waits for the answer itself.");
    Ok(())
}

/// Runs `edits` edits against a fresh uWSGI reloaded by `action`; returns the two latencies per edit, in ms.
fn measure(action: &str, edits: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir(root.join("app"))?;
    std::fs::write(root.join("app/__init__.py"), "")?;
    std::fs::write(root.join("app/value.py"), "VALUE = 'v0'\n")?;
    std::fs::write(
        root.join("wsgi.py"),
        "from app.value import VALUE\n\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [VALUE.encode()]\n",
    )?;
    git(root, &["init", "-q"])?;
    git(root, &["add", "-A"])?;
    git(root, &["-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qm", "app"])?;
    let port = common::free_port()?;
    let (reload, fifo, log) = (root.join("app.reload"), root.join("master.fifo"), root.join("uwsgi.log"));
    std::fs::write(&reload, "")?;
    let mut uwsgi = Command::new("uwsgi");
    uwsgi.args(["--plugin", "python3", "--master", "--processes", "1", "--http-socket", &format!("127.0.0.1:{port}")]);
    uwsgi.arg("--chdir").arg(root).arg("--pythonpath").arg(root).args(["--wsgi-file", "wsgi.py"]);
    uwsgi.arg("--logto").arg(&log);
    let target = match action {
        "touch" => {
            uwsgi.arg("--touch-reload").arg(&reload);
            serde_json::json!({"touch": reload, "ready": {"preset": "uwsgi", "log": log}})
        }
        _ => {
            uwsgi.arg("--master-fifo").arg(&fifo);
            serde_json::json!({"fifo": fifo, "ready": {"preset": "uwsgi", "log": log}})
        }
    };
    let _uwsgi =
        Guard::spawn(uwsgi.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()), "uwsgi", Kill::Pid)?;
    wait_for(|| fetch(port).is_some_and(|v| v == "v0"), "uWSGI to serve the app")?;
    let guest = root.join("guest.json");
    std::fs::write(&guest, serde_json::json!({"targets": {"app": target}}).to_string())?;
    let listen_port = common::free_port()?;
    let addr = format!("127.0.0.1:{listen_port}");
    let _listen = Guard::spawn(
        Command::new(BIN)
            .args(["listen", "-q", "--addr", &addr, "--config"])
            .arg(&guest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "touchwire listen",
        Kill::Pid,
    )?;
    wait_for(|| TcpStream::connect(&addr).is_ok(), "the receiver")?;
    let (mut reported, mut served) = (Vec::new(), Vec::new());
    for i in 1..=edits {
        std::thread::sleep(Duration::from_millis(1500)); // let uWSGI settle between reloads
        let value = format!("v{i}");
        let saved = Instant::now();
        std::fs::write(root.join("app/value.py"), format!("VALUE = '{value}'\n"))?;
        let poller = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < WAIT {
                if fetch(port).is_some_and(|v| v == value) {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let status = Command::new(BIN)
            .args(["send", "-q", "--wait", "--to", &addr, "--path"])
            .arg(root.join("app/value.py"))
            .stdin(Stdio::null())
            .status()?;
        let report = saved.elapsed();
        let serve = poller.join().ok().flatten().context("the new value was never served")?;
        if !status.success() {
            bail!("send --wait failed on edit {i}");
        }
        reported.push(report.as_secs_f64() * 1000.0);
        served.push(serve.as_secs_f64() * 1000.0);
        eprintln!("bench ready: {action} {i}/{edits}");
    }
    Ok((reported, served))
}

fn fetch(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string()).filter(|_| head.contains(" 200 "))
}

/// Polls `check` every 20 ms for at most [`WAIT`].
fn wait_for(mut check: impl FnMut() -> bool, what: &str) -> Result<()> {
    common::wait_until(WAIT, Duration::from_millis(20), &format!("timed out waiting for {what}"), || Ok(check()))
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git").args(args).current_dir(dir).status()?;
    if !status.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}
