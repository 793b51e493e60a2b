//! Real VS Code for the tests: a code-server of the test's own (its user data, extensions and
//! HOME in the test's scratch directory), and the keys a person presses in it, sent to the
//! page by headless chromium over the DevTools protocol (`cdp.rs`). Include it next to
//! `mod util;` and `cdp.rs` with `#[path = "util/code_server.rs"] mod code_server;`.

#![allow(dead_code)]

use crate::cdp;
use crate::util;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// code-server: `TOUCHWIRE_CODE_SERVER`, else `code-server` on PATH (see `util::require`).
pub fn program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOUCHWIRE_CODE_SERVER") {
        return Some(PathBuf::from(path));
    }
    util::require("code-server").then(|| PathBuf::from("code-server"))
}

/// Where one code-server keeps its state, all below `env`'s directory.
pub struct Dirs {
    /// `--user-data-dir`: User/settings.json is there.
    pub data: PathBuf,
    /// `--extensions-dir`.
    pub extensions: PathBuf,
}

impl Dirs {
    /// The directories of a fresh code-server in `env`, with `settings` as the user settings.
    pub fn new(env: &util::Env, settings: &Value) -> Dirs {
        let dirs = Dirs { data: env.join("vscode"), extensions: env.join("extensions") };
        std::fs::create_dir_all(dirs.data.join("User")).unwrap();
        std::fs::create_dir_all(&dirs.extensions).unwrap();
        std::fs::write(dirs.data.join("User/settings.json"), settings.to_string()).unwrap();
        std::fs::write(env.join("code-server.yaml"), "auth: none\n").unwrap();
        dirs
    }

    /// `PROGRAM ARGS` with these directories and `env`'s HOME and config, as each run needs.
    fn command(&self, program: &Path, env: &util::Env) -> Command {
        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(env.join("code-server.yaml"))
            .arg("--user-data-dir")
            .arg(&self.data)
            .arg("--extensions-dir")
            .arg(&self.extensions)
            .env("PATH", util::path_with_touchwire())
            .env("XDG_CONFIG_HOME", env.join("xdg"))
            .env("HOME", env.path())
            .stdin(Stdio::null());
        command
    }

    /// `code-server --install-extension VSIX`; panics with what it printed if it fails.
    pub fn install_extension(&self, program: &Path, env: &util::Env, vsix: &Path) {
        let mut command = self.command(program, env);
        let what = format!("code-server --install-extension {}", vsix.display());
        util::succeed(command.arg("--install-extension").arg(vsix), &what);
    }
}

impl Dirs {
    /// What a failing test needs to see: on drop during a panic, prints the logs code-server
    /// kept of the extension host (an extension that failed to activate says why there) and of
    /// the output channels whose name holds `channel` (which code-server writes out late: their
    /// last lines may be missing).
    pub fn logs_on_failure(&self, channel: &str) -> Logs {
        Logs { dir: self.data.join("logs"), channel: channel.to_string() }
    }
}

/// Prints code-server's logs if the test fails (see [`Dirs::logs_on_failure`]).
pub struct Logs {
    dir: PathBuf,
    channel: String,
}

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Bounded: logs/DATE/exthostN/output_logging_DATE/N-NAME.log, a few levels deep.
        let mut dirs = vec![(self.dir.clone(), 0)];
        while let Some((dir, depth)) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && depth < 6 {
                    dirs.push((path, depth + 1));
                } else if name.ends_with("exthost.log") || (name.ends_with(".log") && name.contains(&self.channel)) {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    eprintln!("\n===== {}:\n{text}=====", path.display());
                }
            }
        }
    }
}

/// A code-server child, killed by its PID's process group (it starts helpers: the extension
/// host and what it runs) on drop.
pub struct CodeServer {
    child: Child,
    /// The port it serves the workbench on (loopback).
    pub port: u16,
}

impl CodeServer {
    /// Starts code-server on a free loopback port and waits until it listens.
    pub fn start(program: &Path, env: &util::Env, dirs: &Dirs) -> CodeServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = dirs.command(program, env);
        command
            .args(["--bind-addr", &format!("127.0.0.1:{port}"), "--auth", "none", "--disable-telemetry"])
            .args(["--disable-update-check", "--disable-workspace-trust"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let server = CodeServer { child: command.spawn().expect("cannot start code-server"), port };
        util::eventually("code-server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        server
    }

    /// The workbench's address with `folder` open.
    pub fn url(&self, folder: &Path) -> String {
        format!("http://127.0.0.1:{}/?folder={}", self.port, folder.display())
    }
}

impl Drop for CodeServer {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this test created for its own code-server.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Ctrl, in a key event's `modifiers`.
pub const CTRL: u32 = 2;
/// Shift, in a key event's `modifiers`.
pub const SHIFT: u32 = 8;

/// Presses and releases one key.
pub fn key(browser: &mut cdp::Chromium, page: &cdp::Page, key: &str, code: &str, vk: u32, modifiers: u32) {
    for kind in ["keyDown", "keyUp"] {
        let event =
            json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": vk, "modifiers": modifiers});
        browser.call(Some(page), "Input.dispatchKeyEvent", event).unwrap();
    }
}

/// Types `text` where the focus is.
pub fn type_text(browser: &mut cdp::Chromium, page: &cdp::Page, text: &str) {
    browser.call(Some(page), "Input.insertText", json!({"text": text})).unwrap();
}

/// Replaces the active editor's text with `text` and saves, as a person would (Ctrl+A, type, Ctrl+S).
pub fn type_and_save(browser: &mut cdp::Chromium, page: &cdp::Page, text: &str) {
    key(browser, page, "a", "KeyA", 65, CTRL);
    type_text(browser, page, text);
    key(browser, page, "s", "KeyS", 83, CTRL);
}

/// The processes whose command line is `PROGRAM ARGS...` with a PROGRAM ending in "touchwire",
/// running in `dir` (their cwd): their PIDs.
pub fn touchwire_in(dir: &Path, args: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut words = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty());
            let runs = words.next().is_some_and(|program| program.ends_with(b"touchwire"))
                && words.eq(args.iter().map(|a| a.as_bytes()));
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            (runs && cwd == dir).then_some(pid)
        })
        .collect()
}

/// The command line of `pid`'s parent, its words joined by spaces (empty if it is gone).
pub fn parent_command(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim).unwrap_or("0").to_string();
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).replace('\0', " ")
}
