//! The ways a user installs touchwire without Rust, tried on what `scripts/dist` left in `dist/`
//! (scripts/test runs it first): the static musl binaries for x86_64 (natively) and aarch64 (under
//! qemu-user-static), each also in an empty chroot; and the wheels, installed with pip into a fresh
//! virtualenv, with `uv tool install` and with pipx. Each install must print the version and carry
//! one `listen` + `send` round trip on loopback.
//!
//! Where something is missing (no dist/, no qemu, not root for chroot), a test says why and passes
//! on a laptop; with CI=true it fails instead. `dist/` is found at $TOUCHWIRE_DIST (default
//! `dist/` in the repository), the tools virtualenv (uv, pipx) at $TOUCHWIRE_TOOLS_VENV (default
//! `target/tools-venv`, as scripts/dist makes it).
//!
//! Not run by default: `send_latency_musl_vs_glibc` (BENCHMARKS.md, "Install and binaries").
#![cfg(unix)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Deadline for a receiver to say where it listens, and for its reload event.
const WAIT: Duration = Duration::from_secs(10);
/// Deadline for an install step (pip, uv, pipx).
const INSTALL: Duration = Duration::from_secs(180);

/// Skips the test on a laptop, saying why; fails it in CI, where everything must be there.
fn skip(why: String) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI cannot skip this: {why}");
    }
    eprintln!("skipped: {why}");
}

/// Returns from the test through [`skip`] unless `$cond` holds.
macro_rules! require {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return skip(format!($($why)*));
        }
    };
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dist() -> PathBuf {
    std::env::var_os("TOUCHWIRE_DIST").map(PathBuf::from).unwrap_or_else(|| repo().join("dist"))
}

fn tools_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("TOUCHWIRE_TOOLS_VENV") {
        return PathBuf::from(venv);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    target.join("tools-venv")
}

/// `dist/touchwire-TARGET`, when scripts/dist built it.
fn binary(target: &str) -> Option<PathBuf> {
    Some(dist().join(format!("touchwire-{target}"))).filter(|p| p.is_file())
}

/// The wheel for one Linux architecture (`x86_64`, `aarch64`).
fn wheel(arch: &str) -> Option<PathBuf> {
    let suffix = format!("_{arch}.whl");
    std::fs::read_dir(dist()).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("touchwire-") && n.ends_with(&suffix))
    })
}

/// A program on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion within `limit`, its output in files (no pipe to fill up).
/// Returns (exit code, stdout, stderr); kills it (by its PID) and panics past the limit.
fn run(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let status = match child.wait_timeout(limit).unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.code().unwrap_or(-1), read(&out), read(&err))
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
fn check(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let (code, out, err) = run(cmd, limit);
    assert_eq!(code, 0, "{what} exited {code}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// How to start one installed touchwire: natively, under qemu, inside a chroot.
struct Runner {
    /// The program and the arguments before touchwire's own.
    program: PathBuf,
    prefix: Vec<PathBuf>,
    /// chroot(2) into this directory first (the paths below are then inside it).
    root: Option<PathBuf>,
    /// The scratch directory as the binary sees it, and as this test sees it.
    inner: PathBuf,
    outer: PathBuf,
}

impl Runner {
    fn native(program: &Path, scratch: &Path) -> Runner {
        Runner { program: program.into(), prefix: vec![], root: None, inner: scratch.into(), outer: scratch.into() }
    }

    fn qemu(qemu: &Path, program: &Path, scratch: &Path) -> Runner {
        Runner {
            program: qemu.into(),
            prefix: vec![program.into()],
            root: None,
            inner: scratch.into(),
            outer: scratch.into(),
        }
    }

    /// In `root`, which holds the binary (and the emulator, for another architecture) and nothing
    /// else: no libc, no /dev, no /proc, no /etc.
    fn chroot(root: &Path, program: &str, prefix: Option<&str>) -> Runner {
        let (program, prefix) = match prefix {
            Some(emulator) => (PathBuf::from(emulator), vec![PathBuf::from(program)]),
            None => (PathBuf::from(program), vec![]),
        };
        Runner { program, prefix, root: Some(root.into()), inner: "/".into(), outer: root.into() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix).args(args).env_clear().env("HOME", &self.inner).env("XDG_CONFIG_HOME", &self.inner);
        if let Some(root) = &self.root {
            let root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: chroot(2) and chdir(2) are async-signal-safe system calls.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            cmd.current_dir(&self.outer);
        }
        cmd
    }
}

/// A running `touchwire listen`, killed by its PID when dropped.
struct Listening {
    child: Child,
    addr: String,
    lines: Receiver<String>,
    /// Its stderr, outside a chroot it may run in.
    log: tempfile::NamedTempFile,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen(runner: &Runner, token: &str, reload: &str) -> Listening {
    let args = ["listen", "--addr", "127.0.0.1:0", "--json", "--token-file", token, "--touch", reload];
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = runner
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", runner.program));
    let (tx, lines) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut listening = Listening { child, addr: String::new(), lines, log };
    let first = listening.event("listening");
    listening.addr = first["addr"].as_str().unwrap().to_string();
    listening
}

impl Listening {
    /// The next JSON event named `name`, within [`WAIT`].
    #[track_caller]
    fn event(&self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            let event: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            if event["event"] == name {
                return event;
            }
        }
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        panic!("no {name:?} event from the receiver within {WAIT:?}; it said:\n{log}");
    }
}

/// `--version`, then a `listen` + `send` round trip on loopback, both sides run by `runner`.
fn round_trip(runner: &Runner) {
    let version = check(&mut runner.command(&["--version"]), WAIT);
    assert_eq!(version.trim(), format!("touchwire {VERSION}"), "{:?} --version", runner.program);

    let token = runner.outer.join("token");
    std::fs::write(&token, "6f0c1d3e9a8b7c6d5e4f30211203405060708090a0b0c0d0e0f1021324354657\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (token, reload) = (runner.inner.join("token"), runner.inner.join("app.reload"));
    let (token, reload) = (token.to_str().unwrap(), reload.to_str().unwrap());

    let receiver = listen(runner, token, reload);
    let (code, out, err) = run(&mut runner.command(&["send", "--to", &receiver.addr, "--token-file", token]), WAIT);
    assert!(code == 0 && err.contains("reloaded app"), "send exited {code}\nstdout:\n{out}\nstderr:\n{err}");
    let event = receiver.event("reload");
    assert_eq!(event["target"], "app");
    assert!(runner.outer.join("app.reload").exists(), "the touch target was not created");
}

/// No ELF interpreter (PT_INTERP): the kernel runs it without any dynamic loader or libc.
fn assert_static(path: &Path, machine: u16) {
    let mut elf = Vec::new();
    File::open(path).unwrap().read_to_end(&mut elf).unwrap();
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{path:?}: not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    assert_eq!(u16_at(0x12), machine, "{path:?}: wrong architecture");
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    for i in 0..count {
        let kind = u32::from_le_bytes(elf[phoff + i * size..phoff + i * size + 4].try_into().unwrap());
        assert_ne!(kind, 3, "{path:?} has an ELF interpreter (PT_INTERP): it is dynamically linked");
    }
    if let Some(file) = which("file") {
        let said = check(Command::new(file).arg(path), WAIT);
        assert!(said.contains("statically linked") || said.contains("static-pie linked"), "file says: {said}");
    }
    if let Some(ldd) = which("ldd") {
        let (_, out, err) = run(Command::new(ldd).arg(path), WAIT);
        let said = out + &err;
        assert!(said.contains("statically linked") || said.contains("not a dynamic executable"), "ldd says: {said}");
    }
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

#[test]
fn x86_64_musl_binary_is_static_and_round_trips() {
    let Some(bin) = binary("x86_64-unknown-linux-musl") else {
        return skip(format!("no static x86_64 binary in {:?}: run scripts/dist", dist()));
    };
    assert_static(&bin, EM_X86_64);
    let scratch = tempfile::tempdir().unwrap();
    round_trip(&Runner::native(&bin, scratch.path()));
}

#[test]
fn aarch64_musl_binary_is_static_and_round_trips_under_qemu() {
    let Some(bin) = binary("aarch64-unknown-linux-musl") else {
        return skip(format!("no static aarch64 binary in {:?}: run scripts/dist", dist()));
    };
    assert_static(&bin, EM_AARCH64);
    let qemu = which("qemu-aarch64-static");
    require!(qemu.is_some(), "qemu-aarch64-static not on PATH (Debian qemu-user-static)");
    let scratch = tempfile::tempdir().unwrap();
    round_trip(&Runner::qemu(&qemu.unwrap(), &bin, scratch.path()));
}

/// A directory holding only `files` (copied, executable), for chroot(2).
fn empty_root(files: &[(&Path, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (from, name) in files {
        std::fs::copy(from, root.path().join(name)).unwrap();
        std::fs::set_permissions(root.path().join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

#[test]
fn x86_64_musl_binary_round_trips_in_an_empty_chroot() {
    let bin = binary("x86_64-unknown-linux-musl");
    require!(bin.is_some(), "no static x86_64 binary in {:?}: run scripts/dist", dist());
    require!(is_root(), "chroot(2) needs root (the test command runs as root in CI)");
    let root = empty_root(&[(&bin.unwrap(), "touchwire")]);
    round_trip(&Runner::chroot(root.path(), "/touchwire", None));
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "the chroot should hold the binary, the token and the touched file: {left:?}");
}

#[test]
fn aarch64_musl_binary_round_trips_in_an_empty_chroot_under_qemu() {
    let bin = binary("aarch64-unknown-linux-musl");
    require!(bin.is_some(), "no static aarch64 binary in {:?}: run scripts/dist", dist());
    let qemu = which("qemu-aarch64-static");
    require!(qemu.is_some(), "qemu-aarch64-static not on PATH (Debian qemu-user-static)");
    require!(is_root(), "chroot(2) needs root (the test command runs as root in CI)");
    // qemu-aarch64-static is itself static: the root holds the emulator and the binary only.
    let root = empty_root(&[(&bin.unwrap(), "touchwire"), (&qemu.unwrap(), "qemu-aarch64-static")]);
    round_trip(&Runner::chroot(root.path(), "/touchwire", Some("/qemu-aarch64-static")));
}

fn python() -> PathBuf {
    std::env::var_os("PYTHON").map(PathBuf::from).or_else(|| which("python3")).unwrap_or_else(|| "python3".into())
}

#[test]
fn wheels_are_tagged_for_manylinux2014_and_musllinux_1_2() {
    for arch in ["x86_64", "aarch64"] {
        let Some(wheel) = wheel(arch) else {
            return skip(format!("no {arch} wheel in {:?}: run scripts/dist", dist()));
        };
        let name = wheel.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("touchwire-{VERSION}-py3-none-")), "{name}");
        assert!(name.contains(&format!("manylinux2014_{arch}")), "{name}: no manylinux2014 tag");
        assert!(name.contains(&format!("musllinux_1_2_{arch}")), "{name}: no musllinux_1_2 tag");
        // pip as it runs on a glibc (manylinux) and on a musl (Alpine) guest of that architecture
        // accepts it, and the binary it installs is the static one from dist/.
        for platform in [format!("manylinux2014_{arch}"), format!("musllinux_1_2_{arch}")] {
            let into = tempfile::tempdir().unwrap();
            let mut pip = Command::new(python());
            pip.args(["-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q"])
                .args(["--only-binary=:all:", "--platform", &platform, "--target"])
                .arg(into.path())
                .arg(&wheel);
            check(&mut pip, INSTALL);
            let installed = std::fs::read(into.path().join("bin/touchwire")).unwrap();
            let built = std::fs::read(binary(&format!("{arch}-unknown-linux-musl")).unwrap()).unwrap();
            assert!(installed == built, "{platform}: the wheel's binary is not dist's static binary");
        }
    }
}

#[test]
fn wheel_installs_with_pip_into_a_fresh_virtualenv() {
    let wheel = wheel("x86_64");
    require!(wheel.is_some(), "no x86_64 wheel in {:?}: run scripts/dist", dist());
    let scratch = tempfile::tempdir().unwrap();
    let venv = scratch.path().join("venv");
    check(Command::new(python()).args(["-m", "venv"]).arg(&venv), INSTALL);
    let start = Instant::now();
    check(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--no-index", "--disable-pip-version-check", "-q"])
            .arg(wheel.unwrap()),
        INSTALL,
    );
    eprintln!("pip install of the wheel into a fresh virtualenv: {:.2} s", start.elapsed().as_secs_f64());
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    round_trip(&Runner::native(&venv.join("bin/touchwire"), &work));
}

#[test]
fn wheel_installs_with_uv_tool_install() {
    let wheel = wheel("x86_64");
    require!(wheel.is_some(), "no x86_64 wheel in {:?}: run scripts/dist", dist());
    let uv = tools_venv().join("bin/uv");
    require!(uv.is_file(), "no {uv:?}: scripts/dist installs it");
    let scratch = tempfile::tempdir().unwrap();
    let mut install = Command::new(uv);
    install
        .args(["tool", "install", "--offline", "--no-config", "--python"])
        .arg(python())
        .arg(wheel.unwrap())
        .env("UV_TOOL_DIR", scratch.path().join("tools"))
        .env("UV_TOOL_BIN_DIR", scratch.path().join("bin"))
        .env("UV_CACHE_DIR", scratch.path().join("cache"))
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("HOME", scratch.path());
    check(&mut install, INSTALL);
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    round_trip(&Runner::native(&scratch.path().join("bin/touchwire"), &work));
}

#[test]
fn wheel_installs_with_pipx() {
    let wheel = wheel("x86_64");
    require!(wheel.is_some(), "no x86_64 wheel in {:?}: run scripts/dist", dist());
    let venv_python = tools_venv().join("bin/python");
    require!(
        venv_python.is_file() && tools_venv().join("bin/pipx").is_file(),
        "no pipx in {:?}: scripts/dist installs it",
        tools_venv()
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut install = Command::new(venv_python);
    install
        .args(["-m", "pipx", "install", "--python"])
        .arg(python())
        .arg(wheel.unwrap())
        .env("PIPX_HOME", scratch.path().join("pipx"))
        .env("PIPX_BIN_DIR", scratch.path().join("bin"))
        .env("PIPX_MAN_DIR", scratch.path().join("man"))
        .env("PIP_NO_INDEX", "1")
        .env("HOME", scratch.path());
    check(&mut install, INSTALL);
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    round_trip(&Runner::native(&scratch.path().join("bin/touchwire"), &work));
}

/// The figure in BENCHMARKS.md: N `send` runs of the static musl binary and of the glibc one
/// (`cargo build --release`; or $TOUCHWIRE_GLIBC_BIN), interleaved one by one, each against a
/// receiver of its own binary. Run by hand:
/// `scripts/dist && cargo build --release && cargo test --test install -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: run by hand (see its doc comment)"]
fn send_latency_musl_vs_glibc() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    let glibc =
        std::env::var_os("TOUCHWIRE_GLIBC_BIN").map(PathBuf::from).unwrap_or_else(|| target.join("release/touchwire"));
    let musl = binary("x86_64-unknown-linux-musl").expect("run scripts/dist first");
    assert!(glibc.is_file(), "no {glibc:?}: cargo build --release");
    let sides: Vec<_> = [("glibc", &glibc), ("musl", &musl)]
        .into_iter()
        .map(|(name, bin)| {
            let scratch = tempfile::tempdir().unwrap();
            let runner = Runner::native(bin, scratch.path());
            round_trip(&runner);
            let token = scratch.path().join("token").to_str().unwrap().to_string();
            let receiver = listen(&runner, &token, scratch.path().join("r").to_str().unwrap());
            (name, bin, runner, token, receiver, scratch, Vec::with_capacity(runs))
        })
        .collect();
    let mut sides = sides;
    for _ in 0..runs {
        for (_, _, runner, token, receiver, _, times) in sides.iter_mut() {
            let start = Instant::now();
            let status = runner
                .command(&["send", "-q", "--to", &receiver.addr, "--token-file", token])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for (name, bin, _, _, _, _, times) in sides.iter_mut() {
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:5} {runs} sends: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, min {:.2} ms ({:?}, {} bytes)",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            times[0],
            bin,
            std::fs::metadata(&**bin).unwrap().len()
        );
    }
}
