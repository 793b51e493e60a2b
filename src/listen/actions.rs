//! The four actions a target can run: touch, fifo (with the poke), signal, exec.
//! Errors are sentences for the person who saved the file; they travel back in the reply.

use crate::config::{ActionSpec, Signal};
use crate::output::Log;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wait_timeout::ChildExt;

/// How often the poke writes a byte into uWSGI's master FIFO.
const POKE_INTERVAL: Duration = Duration::from_millis(2);
/// Attempts, [`POKE_INTERVAL`] apart, to open a FIFO that is not there (uWSGI re-creating it).
const FIFO_RETRIES: usize = 50;
/// The longest a poke lasts.
const POKE_LIMIT: Duration = Duration::from_secs(3);
/// A touch file's mtime further ahead of the clock than this is worth a warning.
const FUTURE_MTIME: Duration = Duration::from_secs(2);

/// The mtime this process last gave each touch file.
static LAST_SET: Mutex<BTreeMap<PathBuf, SystemTime>> = Mutex::new(BTreeMap::new());
/// How much of an exec'd program's stderr is kept for the reply.
const STDERR_TAIL: usize = 2000;

/// Runs `spec` once. `target` names it in log lines.
pub fn run(spec: &ActionSpec, target: &str, log: Log) -> Result<()> {
    match spec {
        ActionSpec::Touch { path } => touch(path, target, log),
        ActionSpec::Fifo { path, command, poke } => fifo(path, command, *poke, target, log),
        ActionSpec::Signal { pidfile, signal } => send_signal(pidfile, *signal),
        ActionSpec::Exec { argv, timeout } => exec(argv, *timeout),
    }
}

/// Whether `spec` could run now, without running it, and what was checked: the touch file's
/// directory exists, a reader (uWSGI) holds the FIFO, the pidfile names a live process, the
/// program exists. (Opening the FIFO makes uWSGI re-create it: only `status` asks.)
pub fn probe(spec: &ActionSpec) -> (bool, String) {
    match spec {
        ActionSpec::Touch { path } => match path.parent() {
            Some(dir) if dir.is_dir() => (true, format!("directory {} exists", dir.display())),
            Some(dir) => (false, format!("directory {} does not exist", dir.display())),
            None => (false, format!("{} has no directory", path.display())),
        },
        ActionSpec::Fifo { path, .. } => {
            match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
                Ok(file) if file.metadata().is_ok_and(|m| m.file_type().is_fifo()) => {
                    (true, format!("uWSGI is attached to {}", path.display()))
                }
                Ok(_) => (false, format!("{} is not a FIFO", path.display())),
                Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
                    (false, format!("no reader on {}: is uWSGI running with master-fifo?", path.display()))
                }
                Err(err) => (false, format!("{}: {}", path.display(), io_message(&err))),
            }
        }
        ActionSpec::Signal { pidfile, .. } => match read_pid(pidfile) {
            // SAFETY: signal 0 only checks that the process exists and may be signalled.
            Ok(pid) if unsafe { libc::kill(pid, 0) } == 0 => (true, format!("process {pid} is running")),
            Ok(pid) => (false, format!("no process {pid} (from pidfile {})", pidfile.display())),
            Err(err) => (false, format!("{err:#}")),
        },
        ActionSpec::Exec { argv, .. } => {
            let program = argv.first().map(String::as_str).unwrap_or("");
            match find_program(program) {
                Some(found) => (true, format!("{} exists", found.display())),
                None => (false, format!("{program:?} is not found")),
            }
        }
    }
}

/// The program `name` would run: itself if it has a slash, else the first match on PATH.
fn find_program(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| name.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Creates `path` if missing (never writing content) and advances its mtime so that a
/// comparison of whole-second mtimes with `>` (uWSGI's touch-reload) always sees a change.
pub fn touch(path: &Path, target: &str, log: Log) -> Result<()> {
    let describe = |err: std::io::Error| {
        let hint = match err.kind() {
            ErrorKind::NotFound => " (does its directory exist?)",
            _ => "",
        };
        anyhow!("cannot touch {}: {}{hint}", path.display(), io_message(&err))
    };
    // An existing file is opened read-only: closing a file opened for writing is an inotify
    // "write" event, which a watcher sharing the file would take for a save.
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(describe)?
        }
        Err(err) => return Err(describe(err)),
    };
    let current = file.metadata().and_then(|m| m.modified()).map_err(describe)?;
    let now = SystemTime::now();
    let next = next_mtime(current, now);
    // Several touches in one second move the mtime ahead of the clock by themselves: only an
    // mtime this process did not set is a sign of a wrong clock.
    let ours = {
        let mut set = LAST_SET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        set.insert(path.to_path_buf(), next) == Some(current)
    };
    if let Ok(ahead) = current.duration_since(now)
        && ahead > FUTURE_MTIME
        && !ours
    {
        // Going back to now would look like no change to a `>` comparison: keep going forward, but say why.
        let line = format!(
            "{target}: {} has an mtime {} s in the future; it is moved 1 s further each time, as touch-reload \
             needs (is this machine's clock behind? deleting the file starts over, and reloads once)",
            path.display(),
            ahead.as_secs()
        );
        log.warn("clock", &line, json!({"target": target, "path": path, "ahead_s": ahead.as_secs()}));
    }
    file.set_modified(next).map_err(describe)
}

/// The mtime a touch sets: now, or the file's whole second + 1 s when its mtime already lies in
/// the current whole second or later.
pub fn next_mtime(current: SystemTime, now: SystemTime) -> SystemTime {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if secs(current) >= secs(now) { UNIX_EPOCH + Duration::from_secs(secs(current) + 1) } else { now }
}

/// Writes `command` into uWSGI's master FIFO, then (with `poke`) keeps waking the master in the background.
fn fifo(path: &Path, command: &str, poke: bool, target: &str, log: Log) -> Result<()> {
    let open = || OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path);
    // uWSGI re-creates its FIFO whenever a writer closes it (status, `echo r >`, its own
    // reload): missing for a moment is not missing.
    let mut opened = open();
    for _ in 0..FIFO_RETRIES {
        match &opened {
            Err(err) if err.kind() == ErrorKind::NotFound => {
                std::thread::sleep(POKE_INTERVAL);
                opened = open();
            }
            _ => break,
        }
    }
    let mut file = opened.map_err(|err| match err.raw_os_error() {
        Some(libc::ENXIO) => anyhow!(
            "no process reads the FIFO {}: is uWSGI running with master-fifo = {}?",
            path.display(),
            path.display()
        ),
        Some(libc::ENOENT) => {
            anyhow!("FIFO {} does not exist: is uWSGI running with master-fifo = {}?", path.display(), path.display())
        }
        _ => anyhow!("cannot open FIFO {}: {}", path.display(), io_message(&err)),
    })?;
    let is_fifo = file.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false);
    if !is_fifo {
        bail!("{} is not a FIFO (uWSGI's master-fifo creates one)", path.display());
    }
    file.write_all(command.as_bytes())
        .with_context(|| format!("cannot write {command:?} to FIFO {}", path.display()))?;
    if poke {
        let target = target.to_string();
        std::thread::Builder::new()
            .name("poke".into())
            .spawn(move || {
                // The FIFO is closed before the event is told, so no write can follow it.
                let (elapsed, why) = poke_until_gone(file);
                log.event(
                    "poke_end",
                    &format!("{target} poke ended after {} ms: {why}", elapsed.as_millis()),
                    json!({"target": target, "ms": elapsed.as_millis() as u64, "why": why}),
                );
            })
            .context("cannot start the FIFO poke thread")?;
    }
    Ok(())
}

/// Writes `\n` (ignored by uWSGI) every 2 ms, each write waking the master loop, until the FIFO
/// has no reader (uWSGI's master re-executed itself) or the limit passes.
fn poke_until_gone(mut file: File) -> (Duration, &'static str) {
    let start = Instant::now();
    while start.elapsed() < POKE_LIMIT {
        match file.write(b"\n") {
            Ok(_) => {}
            // The pipe is full: uWSGI is not reading right now, which is no reason to stop.
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == ErrorKind::BrokenPipe => return (start.elapsed(), "reader gone"),
            Err(_) => return (start.elapsed(), "write failed"),
        }
        std::thread::sleep(POKE_INTERVAL);
    }
    (start.elapsed(), "time limit")
}

/// Reads the pid from `pidfile` and sends it `signal`.
fn send_signal(pidfile: &Path, signal: Signal) -> Result<()> {
    let pid = read_pid(pidfile)?;
    // SAFETY: kill(2) takes plain integers; pid > 0 so it names one process, never a group.
    if unsafe { libc::kill(pid, signal.number) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ESRCH) => anyhow!("no process {pid} (from pidfile {}): is the app running?", pidfile.display()),
            Some(libc::EPERM) => anyhow!("not allowed to signal process {pid}: run touchwire listen as the app's user"),
            _ => anyhow!("cannot send SIG{} to process {pid}: {}", signal.name, io_message(&err)),
        });
    }
    Ok(())
}

/// The process id a pidfile holds.
fn read_pid(pidfile: &Path) -> Result<libc::pid_t> {
    let text = std::fs::read_to_string(pidfile)
        .map_err(|err| anyhow!("cannot read pidfile {}: {}", pidfile.display(), io_message(&err)))?;
    text.trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| anyhow!("pidfile {} holds {:?}, not a process id", pidfile.display(), text.trim()))
}

/// Runs `argv` without a shell; its stdout goes to our stderr, its stderr is kept for the error message.
fn exec(argv: &[String], timeout: Duration) -> Result<()> {
    let (program, args) = argv.split_first().context("exec has no program")?;
    let stdout = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    // Its own process group, so that a timeout kills whatever it started too.
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| anyhow!("cannot run {program:?}: {}", io_message(&err)))?;
    let (tail_tx, tail_rx) = std::sync::mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > STDERR_TAIL {
                    buf.drain(..buf.len() - STDERR_TAIL);
                }
            }
            let _ = tail_tx.send(buf);
        });
    }
    let status = match child.wait_timeout(timeout).with_context(|| format!("cannot wait for {program:?}"))? {
        Some(status) => status,
        None => {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) with a negative pid signals the process group the child leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program:?} did not finish within {} ms and was killed", timeout.as_millis());
        }
    };
    if status.success() {
        return Ok(());
    }
    // A grandchild may still hold stderr open: wait briefly, never forever.
    let tail = tail_rx.recv_timeout(Duration::from_millis(200)).unwrap_or_default();
    let tail = String::from_utf8_lossy(&tail);
    let tail = tail.trim();
    let what = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was killed by a signal ({status})"),
    };
    if tail.is_empty() { bail!("{program:?} {what}") } else { bail!("{program:?} {what}: {tail}") }
}

/// An OS error as people read it, without Rust's "(os error N)".
fn io_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn an_old_mtime_becomes_now() {
        assert_eq!(next_mtime(at(100, 0), at(200, 500)), at(200, 500));
    }

    #[test]
    fn an_mtime_in_the_current_second_moves_to_the_next_whole_second() {
        assert_eq!(next_mtime(at(200, 100), at(200, 900)), at(201, 0));
    }

    #[test]
    fn an_mtime_ahead_of_now_still_advances() {
        assert_eq!(next_mtime(at(201, 0), at(200, 950)), at(202, 0));
        assert_eq!(next_mtime(at(205, 0), at(200, 0)), at(206, 0));
    }

    #[test]
    fn io_messages_drop_the_errno() {
        let err = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_message(&err), "Permission denied");
    }
}
