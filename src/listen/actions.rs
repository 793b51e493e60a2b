//! The four actions a target can run: touch, fifo (with the poke), signal, exec.
//! Errors are sentences for the person who saved the file; they travel back in the reply.
//!
//! Nothing here starts a thread or blocks without bound: every guest-configured path is opened
//! non-blocking and must be a regular file (or, for `fifo`, a FIFO), reads are capped, and an
//! exec'd program is watched in one loop that its timeout or the caller's `cancel` ends. The
//! poke that follows a FIFO command is handed back as a [`Poke`], for the caller to run on a
//! thread it owns and joins.

use crate::config::{ActionSpec, Signal};
use crate::output::Log;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the poke writes a byte into uWSGI's master FIFO.
const POKE_INTERVAL: Duration = Duration::from_millis(2);
/// Attempts, [`POKE_INTERVAL`] apart, to open a FIFO that is not there (uWSGI re-creating it).
const FIFO_RETRIES: usize = 50;
/// The longest a poke lasts.
const POKE_LIMIT: Duration = Duration::from_secs(3);
/// A touch file's mtime further ahead of the clock than this is worth a warning.
const FUTURE_MTIME: Duration = Duration::from_secs(2);
/// The most a pidfile may hold: a pid and its newline need a dozen bytes, so this leaves room
/// for whitespace and still never reads a large file.
const PIDFILE_MAX: u64 = 64;

/// The mtime this process last gave each touch file.
static LAST_SET: Mutex<BTreeMap<PathBuf, SystemTime>> = Mutex::new(BTreeMap::new());
/// How much of an exec'd program's stderr is kept for the reply, in bytes as it costs on the
/// wire (JSON-escaped), so that the reply line stays well inside the protocol's line cap.
const STDERR_TAIL: usize = 2000;
/// The most of an exec'd program's stderr read in one round of the watch loop, so that a
/// program writing without pause cannot keep the loop from noticing its exit, timeout or cancel.
const STDERR_ROUND: usize = 64 << 10;
/// The longest pause between two looks at an exec'd program (the first pauses are shorter, so
/// a quick program is reported quickly).
const EXEC_PAUSE_MAX: Duration = Duration::from_millis(8);
/// How long a program killed with SIGKILL may take to be reaped before we stop waiting.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// What an action left for its caller to finish.
#[derive(Debug, Default)]
pub struct Ran {
    /// For a fifo action with the poke on: the open FIFO, to be poked by [`Poke::run`].
    pub poke: Option<Poke>,
}

/// uWSGI's master FIFO, open for writing after the command was written: [`Poke::run`] keeps
/// waking the master until its reload is under way (DESIGN.md, "fifo").
#[derive(Debug)]
pub struct Poke {
    file: File,
    path: PathBuf,
}

impl Poke {
    /// Writes `\n` (ignored by uWSGI) every 2 ms, each write waking the master loop, until the
    /// FIFO has no reader ("reader gone": uWSGI's master re-executed itself), `stop()` returns
    /// true ("stopped": the caller knows whether its ready check ended or the receiver is
    /// stopping, and may say so in its log), a write fails ("write failed"), or 3 s pass
    /// ("time limit"). Returns how long it poked and why it ended. The FIFO is closed before
    /// this returns, so no write can follow the caller's poke_end event (see [`log_poke_end`]).
    pub fn run(self, stop: &dyn Fn() -> bool) -> (Duration, &'static str) {
        let Poke { mut file, .. } = self;
        let start = Instant::now();
        let why = loop {
            if stop() {
                break "stopped";
            }
            if start.elapsed() >= POKE_LIMIT {
                break "time limit";
            }
            match file.write(b"\n") {
                Ok(_) => {}
                // The pipe is full: uWSGI is not reading right now, which is no reason to stop.
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == ErrorKind::BrokenPipe => break "reader gone",
                Err(_) => break "write failed",
            }
            std::thread::sleep(POKE_INTERVAL);
        };
        drop(file);
        (start.elapsed(), why)
    }
}

impl Poke {
    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// After `r` made uWSGI's master re-execute itself (its FIFO lost its reader), waits until the
/// new master reads the FIFO again: only then does the reload count as over, since a command
/// written before finds no reader, and a trailing action would fail where it should wait. Ends
/// early when `cancel` is set; gives up after `limit`. Returns how long it waited and whether
/// the reader is back. (Opening the FIFO to look makes uWSGI re-create it on close, which the
/// fifo action's retries for a missing FIFO allow for.)
pub fn wait_for_reader(path: &Path, cancel: &AtomicBool, limit: Duration) -> (Duration, bool) {
    let start = Instant::now();
    while start.elapsed() < limit && !cancel.load(Ordering::Relaxed) {
        let opened = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path);
        if opened.is_ok_and(|file| file.metadata().is_ok_and(|m| m.file_type().is_fifo())) {
            return (start.elapsed(), true);
        }
        std::thread::sleep(READER_POLL);
    }
    (start.elapsed(), false)
}

/// How often [`wait_for_reader`] looks for uWSGI's new master.
const READER_POLL: Duration = Duration::from_millis(5);

/// Logs the end of a poke as the `poke_end` event (`target`, `ms`, `why`), as the receiver has
/// always told it; `elapsed` and `why` are what [`Poke::run`] returned (or the caller's own
/// reason, such as "ready check ended", in place of "stopped").
pub fn log_poke_end(log: Log, target: &str, elapsed: Duration, why: &str) {
    log.event(
        "poke_end",
        &format!("{target} poke ended after {} ms: {why}", elapsed.as_millis()),
        json!({"target": target, "ms": elapsed.as_millis() as u64, "why": why}),
    );
}

/// Runs `spec` once, on the calling thread, and starts no thread. `target` names it in log
/// lines. When `cancel` becomes true (the receiver is stopping) an exec'd program is killed
/// with its process group and the action ends with an error; the other actions take
/// milliseconds and finish. A fifo action with the poke on returns the open FIFO in
/// [`Ran::poke`]: the caller runs it.
pub fn run(spec: &ActionSpec, target: &str, log: Log, cancel: &AtomicBool) -> Result<Ran> {
    match spec {
        ActionSpec::Touch { path } => touch(path, target, log).map(|()| Ran::default()),
        ActionSpec::Fifo { path, command, poke } => {
            let file = fifo(path, command, cancel)?;
            Ok(Ran { poke: poke.then_some(Poke { file, path: path.clone() }) })
        }
        ActionSpec::Signal { pidfile, signal } => send_signal(pidfile, *signal).map(|()| Ran::default()),
        ActionSpec::Exec { argv, timeout } => exec(argv, *timeout, cancel).map(|()| Ran::default()),
    }
}

/// Whether `spec` could run now, without running it, and what was checked: the touch file's
/// directory exists (and the file, if there, is a regular file), a reader (uWSGI) holds the
/// FIFO, the pidfile names a live process, the program exists. Never blocks, never reads more
/// than a pidfile's cap. (Opening the FIFO makes uWSGI re-create it: only `status` asks.)
pub fn probe(spec: &ActionSpec) -> (bool, String) {
    match spec {
        ActionSpec::Touch { path } => match (path.parent(), std::fs::metadata(path)) {
            (_, Ok(meta)) if !meta.is_file() => {
                (false, format!("{} is {}, not a regular file", path.display(), kind(meta.file_type())))
            }
            (_, Ok(_)) => (true, format!("{} exists", path.display())),
            (Some(dir), Err(_)) if dir.is_dir() => (true, format!("directory {} exists", dir.display())),
            (Some(dir), Err(_)) => (false, format!("directory {} does not exist", dir.display())),
            (None, Err(_)) => (false, format!("{} has no directory", path.display())),
        },
        ActionSpec::Fifo { path, .. } => {
            match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
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

/// Why a guest-configured path could not be opened as a regular file.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// The OS refused (missing, no permission...).
    Io(std::io::Error),
    /// It is something else: the article and kind ("a FIFO", "a character device"...).
    NotRegular(&'static str),
}

/// What a file is, with its article, for "PATH is a FIFO, not a regular file".
pub(crate) fn kind(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens an existing regular file for reading, never blocking: a path that is not a regular
/// file is refused before it is opened (opening a device can act on it, opening a FIFO
/// without O_NONBLOCK waits for a writer), and the open file is checked again, since the path
/// may have been replaced in between.
pub(crate) fn open_regular(path: &Path) -> Result<(File, Metadata), Unreadable> {
    let before = std::fs::metadata(path).map_err(Unreadable::Io)?;
    if !before.is_file() {
        return Err(Unreadable::NotRegular(kind(before.file_type())));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Unreadable::Io)?;
    let meta = file.metadata().map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::NotRegular(kind(meta.file_type())));
    }
    Ok((file, meta))
}

/// Creates `path` if missing (never writing content) and advances its mtime so that a
/// comparison of whole-second mtimes with `>` (uWSGI's touch-reload) always sees a change.
/// Anything but a regular file (a FIFO, a device, a directory) is refused, without blocking.
pub fn touch(path: &Path, target: &str, log: Log) -> Result<()> {
    let describe = |err: std::io::Error| {
        let hint = match err.kind() {
            ErrorKind::NotFound => " (does its directory exist?)",
            _ => "",
        };
        anyhow!("cannot touch {}: {}{hint}", path.display(), io_message(&err))
    };
    let not_regular = |kind| anyhow!("cannot touch {}: it is {kind}, not a regular file", path.display());
    // An existing file is opened read-only: closing a file opened for writing is an inotify
    // "write" event, which a watcher sharing the file would take for a save.
    let file = match open_regular(path) {
        Ok((file, _)) => file,
        Err(Unreadable::Io(err)) if err.kind() == ErrorKind::NotFound => {
            // O_NONBLOCK in case a FIFO appeared meanwhile: opening it to write would wait for a reader.
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(describe)?;
            let meta = file.metadata().map_err(describe)?;
            if !meta.is_file() {
                return Err(not_regular(kind(meta.file_type())));
            }
            file
        }
        Err(Unreadable::Io(err)) => return Err(describe(err)),
        Err(Unreadable::NotRegular(kind)) => return Err(not_regular(kind)),
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

/// Writes `command` into uWSGI's master FIFO and returns the FIFO, still open, for the poke.
fn fifo(path: &Path, command: &str, cancel: &AtomicBool) -> Result<File> {
    let open = || OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path);
    // uWSGI re-creates its FIFO whenever a writer closes it (status, `echo r >`, its own
    // reload): missing for a moment is not missing.
    let mut opened = open();
    for _ in 0..FIFO_RETRIES {
        match &opened {
            Err(err) if err.kind() == ErrorKind::NotFound && !cancel.load(Ordering::Relaxed) => {
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
    Ok(file)
}

/// Reads the pid from `pidfile` and sends it `signal`.
fn send_signal(pidfile: &Path, signal: Signal) -> Result<()> {
    let pid = read_pid(pidfile)?;
    // SAFETY: kill(2) takes plain integers; pid > 1 so it names one process, never a group.
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

/// The process id a pidfile holds. The pidfile must be a regular file of at most
/// [`PIDFILE_MAX`] bytes (it is never read further, and never waited on), and the pid may not
/// be init, the receiver itself or the receiver's process group leader: a stale or wrong
/// pidfile must not make the receiver stop itself, or whatever started it.
fn read_pid(pidfile: &Path) -> Result<libc::pid_t> {
    let shown = pidfile.display();
    let (file, meta) = open_regular(pidfile).map_err(|err| match err {
        Unreadable::Io(err) => anyhow!("cannot read pidfile {shown}: {}", io_message(&err)),
        Unreadable::NotRegular(kind) => anyhow!("pidfile {shown} is {kind}, not a regular file"),
    })?;
    if meta.len() > PIDFILE_MAX {
        bail!("pidfile {shown} is {} bytes, not a pid", meta.len());
    }
    let mut bytes = Vec::new();
    file.take(PIDFILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| anyhow!("cannot read pidfile {shown}: {}", io_message(&err)))?;
    if bytes.len() as u64 > PIDFILE_MAX {
        // It grew since it was measured.
        bail!("pidfile {shown} is more than {PIDFILE_MAX} bytes, not a pid");
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let pid: libc::pid_t = text
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| anyhow!("pidfile {shown} holds {text:?}, not a process id"))?;
    // SAFETY: getpid(2) and getpgrp(2) take nothing and cannot fail.
    let (own, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    if pid == 1 {
        bail!("pidfile {shown} names process 1 (init): refusing to signal it");
    }
    if pid == own {
        bail!("pidfile {shown} names the receiver itself (process {pid}): refusing to signal it");
    }
    if pid == group {
        bail!("pidfile {shown} names the receiver's process group leader (process {pid}): refusing to signal it");
    }
    Ok(pid)
}

/// Runs `argv` without a shell, in its own process group; its stdout goes to our stderr, its
/// stderr is kept (the last of it) for the error message. One loop on this thread reads the
/// stderr pipe, which is non-blocking, and looks for the program's exit until it exits, the
/// timeout passes, or `cancel` is set: then the whole group is killed.
fn exec(argv: &[String], timeout: Duration, cancel: &AtomicBool) -> Result<()> {
    let (program, args) = argv.split_first().context("exec has no program")?;
    if cancel.load(Ordering::Relaxed) {
        bail!("{program:?} not started: the receiver is shutting down");
    }
    // If our stderr is a pipe nobody reads, the program may block writing to it: its timeout bounds that.
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
    let mut stderr = child.stderr.take();
    if let Some(pipe) = &stderr
        && let Err(err) = set_nonblocking(pipe)
    {
        kill_group(&mut child);
        bail!("cannot watch {program:?}: {}", io_message(&err));
    }
    let deadline = Instant::now() + timeout;
    let mut tail = Vec::new();
    let mut pause = Duration::from_millis(1);
    let status: ExitStatus = loop {
        if let Some(pipe) = &mut stderr
            && !drain(pipe, &mut tail)
        {
            // At its end (the program closed it): nothing more to read, and poll would not wait.
            stderr = None;
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(err) => {
                kill_group(&mut child);
                bail!("cannot wait for {program:?}: {}", io_message(&err));
            }
        }
        if cancel.load(Ordering::Relaxed) {
            kill_group(&mut child);
            bail!("{program:?} stopped: the receiver is shutting down");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_group(&mut child);
            bail!("{program:?} did not finish within {} ms and was killed", timeout.as_millis());
        }
        let nap = pause.min(left);
        match &stderr {
            Some(pipe) => wait_readable(pipe, nap),
            None => std::thread::sleep(nap),
        }
        pause = (pause * 2).min(EXEC_PAUSE_MAX);
    };
    if status.success() {
        return Ok(());
    }
    // What it wrote last; a grandchild may still hold the pipe open, so only what is there now.
    if let Some(pipe) = &mut stderr {
        drain(pipe, &mut tail);
    }
    let tail = tail_text(&tail);
    let what = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was killed by a signal ({status})"),
    };
    if tail.is_empty() { bail!("{program:?} {what}") } else { bail!("{program:?} {what}: {tail}") }
}

/// Makes reads of `pipe` return at once when it is empty.
fn set_nonblocking(pipe: &ChildStderr) -> std::io::Result<()> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor we own (the pipe stays open while `pipe` is borrowed);
    // F_GETFL and F_SETFL take and return plain integers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what the non-blocking `pipe` holds now, at most [`STDERR_ROUND`] bytes, keeping the
/// last [`STDERR_TAIL`] bytes of everything read in `tail`. False once the pipe is at its end
/// (or broken), true while it may still bring more.
fn drain(pipe: &mut ChildStderr, tail: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    let mut read = 0;
    while read < STDERR_ROUND {
        match pipe.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                read += n;
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Waits until `pipe` has something to read (or its writers are gone), at most `limit`.
fn wait_readable(pipe: &ChildStderr, limit: Duration) {
    let mut fds = libc::pollfd { fd: pipe.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
    // SAFETY: one valid pollfd, for a descriptor that stays open while `pipe` is borrowed; an
    // error or EINTR only shortens the wait, which the caller's loop tolerates.
    unsafe { libc::poll(&mut fds, 1, ms) };
}

/// Kills the process group `child` leads (whatever it started, too), then reaps `child`,
/// waiting at most [`REAP_LIMIT`] (a process stuck in the kernel may take longer to die).
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads; the
        // child is not reaped yet, so its pid (and so its group id) cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let deadline = Instant::now() + REAP_LIMIT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The end of a program's stderr as one piece of text for the reply: decoded lossily, trimmed,
/// control characters other than newlines and tabs shown as U+FFFD (they could forge log lines
/// or drive a terminal), and cut at the front so that it costs at most [`STDERR_TAIL`] bytes
/// once JSON-escaped.
fn tail_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cleaned: Vec<char> = text
        .trim()
        .chars()
        .filter(|c| *c != '\r')
        .map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c })
        .collect();
    let cost = |c: &char| match c {
        '"' | '\\' | '\n' | '\t' => 2,
        c => c.len_utf8(),
    };
    if cleaned.iter().map(cost).sum::<usize>() <= STDERR_TAIL {
        return cleaned.into_iter().collect();
    }
    // Cut: keep the end, where the error usually is, and room for the "..." that says so.
    let mut budget = STDERR_TAIL - 3;
    let kept = cleaned.iter().rev().take_while(|c| budget.checked_sub(cost(c)).map(|b| budget = b).is_some()).count();
    let tail: String = cleaned[cleaned.len() - kept..].iter().collect();
    format!("...{}", tail.trim_start())
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
    use std::sync::atomic::AtomicBool;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    /// Runs `f` on a thread of its own and fails the test if it takes longer than `limit`:
    /// the behaviour under test is "never blocks", and a test must not hang when it does.
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).unwrap_or_else(|_| panic!("blocked for more than {limit:?}"))
    }

    fn mkfifo(path: &Path) {
        assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    fn pid_error(pidfile: &Path) -> String {
        let pidfile = pidfile.to_path_buf();
        within(Duration::from_secs(5), move || format!("{:#}", read_pid(&pidfile).unwrap_err()))
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

    #[test]
    fn touch_refuses_a_fifo_or_a_directory_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("app.reload");
        mkfifo(&fifo);
        let path = fifo.clone();
        let err = within(Duration::from_secs(5), move || touch(&path, "app", Log::default()).unwrap_err().to_string());
        assert_eq!(err, format!("cannot touch {}: it is a FIFO, not a regular file", fifo.display()));
        let err = touch(dir.path(), "app", Log::default()).unwrap_err().to_string();
        assert!(err.ends_with("is a directory, not a regular file"), "{err}");
        let (ok, detail) = within(Duration::from_secs(5), move || probe(&ActionSpec::Touch { path: fifo }));
        assert!(!ok && detail.ends_with("is a FIFO, not a regular file"), "{detail}");
    }

    #[test]
    fn a_pidfile_that_is_a_fifo_or_a_device_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("app.pid");
        mkfifo(&fifo);
        assert_eq!(pid_error(&fifo), format!("pidfile {} is a FIFO, not a regular file", fifo.display()));
        let err = pid_error(Path::new("/dev/zero"));
        assert_eq!(err, "pidfile /dev/zero is a character device, not a regular file");
        assert!(pid_error(dir.path()).ends_with("is a directory, not a regular file"));
        let (ok, detail) = within(Duration::from_secs(5), move || {
            probe(&ActionSpec::Signal { pidfile: fifo, signal: Signal { number: libc::SIGHUP, name: "HUP" } })
        });
        assert!(!ok && detail.contains("is a FIFO"), "{detail}");
    }

    #[test]
    fn a_large_pidfile_is_refused_by_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pid");
        // Sparse: costs no disk, but reading it would mean a gigabyte of zeros.
        File::create(&big).unwrap().set_len(1 << 30).unwrap();
        assert_eq!(pid_error(&big), format!("pidfile {} is 1073741824 bytes, not a pid", big.display()));
        let padded = dir.path().join("padded.pid");
        std::fs::write(&padded, format!("{}\n", " ".repeat(100))).unwrap();
        assert!(pid_error(&padded).ends_with("is 101 bytes, not a pid"));
    }

    #[test]
    fn a_pidfile_naming_the_receiver_its_group_or_init_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("app.pid");
        // SAFETY: getpid(2) and getpgrp(2) take nothing and cannot fail.
        let (own, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
        std::fs::write(&pidfile, format!("{own}\n")).unwrap();
        assert!(pid_error(&pidfile).contains("names the receiver itself"), "{}", pid_error(&pidfile));
        if group != own {
            std::fs::write(&pidfile, format!("{group}\n")).unwrap();
            assert!(pid_error(&pidfile).contains("process group"), "{}", pid_error(&pidfile));
        }
        std::fs::write(&pidfile, "1\n").unwrap();
        assert!(pid_error(&pidfile).contains("process 1 (init)"), "{}", pid_error(&pidfile));
        std::fs::write(&pidfile, "-5\n").unwrap();
        assert!(pid_error(&pidfile).contains("holds \"-5\", not a process id"), "{}", pid_error(&pidfile));
        let mut app = Command::new("sleep").arg("5").spawn().unwrap();
        std::fs::write(&pidfile, format!("  {}\n", app.id())).unwrap();
        assert_eq!(read_pid(&pidfile).unwrap(), app.id() as libc::pid_t);
        app.kill().unwrap();
        app.wait().unwrap();
    }

    fn exec_error(script: &str, timeout: Duration, cancel: &AtomicBool) -> String {
        let argv = ["sh".to_string(), "-c".into(), script.into()];
        format!("{:#}", exec(&argv, timeout, cancel).unwrap_err())
    }

    #[test]
    fn exec_keeps_a_bounded_clean_tail_of_stderr() {
        let never = AtomicBool::new(false);
        // 2,000 control bytes: shown, cut to fit, never raw.
        let err = exec_error("head -c 2000 /dev/zero | tr '\\0' '\\033' >&2; exit 3", WAIT_LONG, &never);
        assert!(err.starts_with("\"sh\" exited with status 3: ..."), "{err:?}");
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert!(serde_json::to_string(&err).unwrap().len() < STDERR_TAIL + 100);
        // A megabyte of stderr neither blocks the program nor the reader; the end is what is kept.
        let err = exec_error(
            "head -c 1000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo the end >&2; exit 1",
            WAIT_LONG,
            &never,
        );
        assert!(err.ends_with("xxx\nthe end"), "{}", &err[err.len() - 20..]);
        assert!(err.len() < STDERR_TAIL + 100);
    }

    const WAIT_LONG: Duration = Duration::from_secs(10);

    #[test]
    fn exec_does_not_wait_for_a_grandchild_that_holds_stderr() {
        let never = AtomicBool::new(false);
        let start = Instant::now();
        let err = exec_error("echo failing >&2; sleep 3 & exit 4", WAIT_LONG, &never);
        assert_eq!(err, "\"sh\" exited with status 4: failing");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn exec_is_killed_with_its_group_on_timeout_or_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        let script = format!("(sleep 1; touch {}) & sleep 5", marker.display());
        let never = AtomicBool::new(false);
        let start = Instant::now();
        let err = exec_error(&script, Duration::from_millis(200), &never);
        assert_eq!(err, "\"sh\" did not finish within 200 ms and was killed");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

        let cancel = AtomicBool::new(false);
        let start = Instant::now();
        let err = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                cancel.store(true, Ordering::Relaxed);
            });
            exec_error(&script, WAIT_LONG, &cancel)
        });
        assert_eq!(err, "\"sh\" stopped: the receiver is shutting down");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the group's background job must die with it");
    }

    #[test]
    fn a_quick_exec_succeeds_and_spawns_no_thread() {
        let never = AtomicBool::new(false);
        let spec = ActionSpec::Exec { argv: vec!["true".into()], timeout: WAIT_LONG };
        let ran = run(&spec, "app", Log::default(), &never).unwrap();
        assert!(ran.poke.is_none());
    }

    #[test]
    fn the_poke_is_handed_back_and_ends_when_stopped_or_when_the_reader_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.fifo");
        mkfifo(&path);
        let reader = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
        let spec = ActionSpec::Fifo { path: path.clone(), command: "r".into(), poke: true };
        let never = AtomicBool::new(false);
        let poke = run(&spec, "app", Log::default(), &never).unwrap().poke.expect("a poke");
        assert_eq!(poke.run(&|| true).1, "stopped");

        let poke = run(&spec, "app", Log::default(), &never).unwrap().poke.expect("a poke");
        drop(reader);
        let (elapsed, why) = within(Duration::from_secs(5), move || poke.run(&|| false));
        assert_eq!(why, "reader gone");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

        // The new master: a reader that comes back after a while ends the wait.
        let back = path.clone();
        let returning = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&back).unwrap()
        });
        let (waited, back) = wait_for_reader(&path, &never, Duration::from_secs(5));
        assert!(back && waited >= Duration::from_millis(90), "{waited:?}");
        let _reader = returning.join().unwrap();
        assert!(!wait_for_reader(&dir.path().join("none"), &never, Duration::from_millis(50)).1);
        let spec = ActionSpec::Fifo { path, command: "r".into(), poke: false };
        assert!(run(&spec, "app", Log::default(), &never).unwrap().poke.is_none());
    }

    #[test]
    fn tails_are_cut_by_their_cost_on_the_wire() {
        assert_eq!(tail_text(b"  broken app\r\n"), "broken app");
        assert_eq!(tail_text(b"a\x07b\tc\nd"), "a\u{fffd}b\tc\nd");
        let cut = tail_text(&[b'"'; 3000]);
        assert!(
            cut.starts_with("...") && serde_json::to_string(&cut).unwrap().len() <= STDERR_TAIL + 2,
            "{}",
            cut.len()
        );
        let exact = "x".repeat(STDERR_TAIL);
        assert_eq!(tail_text(exact.as_bytes()), exact);
    }
}
