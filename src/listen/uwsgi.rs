//! What uWSGI itself says about a reload, found without any setting of the user's: the master is
//! the process that reads its master FIFO, and where it logs to a file, that file says when a
//! chain reload (`c`) is over ("chain reloading complete"). A chain reload ignores another `c`
//! while it runs ("chain reload already running"), so a save made meanwhile must wait for that
//! line, or it is lost (DESIGN.md, "Coalescing": a trailing action the server honours).

use super::ready::LogFollower;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The line uWSGI logs when the last worker of a chain reload has been replaced.
pub const CHAIN_COMPLETE: &str = "chain reloading complete";
/// Most processes looked at when searching for the master (a guest has far fewer).
const MOST_PROCESSES: usize = 100_000;

/// The process that has `fifo` open for reading (uWSGI's master), if this user can see it.
pub fn master_of(fifo: &Path) -> Option<u32> {
    let target = std::fs::metadata(fifo).ok()?;
    let key = (target.dev(), target.ino());
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten().take(MOST_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten().take(65_536) {
            // stat follows /proc/PID/fd/N to the open file itself; the reader opened it read-only.
            let Ok(meta) = std::fs::metadata(fd.path()) else { continue };
            if (meta.dev(), meta.ino()) == key && opened_for_reading(pid, &fd.file_name()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether `/proc/PID/fdinfo/FD` says the descriptor was opened for reading.
fn opened_for_reading(pid: u32, fd: &std::ffi::OsStr) -> bool {
    let Ok(info) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("fdinfo").join(fd)) else {
        return false;
    };
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    // O_RDONLY is 0, O_RDWR 2: both read.
    flags.is_some_and(|flags| flags & 0o3 != 0o1)
}

/// The regular file process `pid` logs to (its stderr, where `logto`/`daemonize` point it), if
/// it is one: a terminal, a pipe or journald cannot be followed.
pub fn log_of(pid: u32) -> Option<PathBuf> {
    let fd = Path::new("/proc").join(pid.to_string()).join("fd").join("2");
    let meta = std::fs::metadata(&fd).ok()?;
    if !meta.is_file() {
        return None;
    }
    let path = std::fs::read_link(&fd).ok()?;
    // The path must still name that file (not "… (deleted)", not a file since replaced).
    let now = std::fs::metadata(&path).ok()?;
    ((now.dev(), now.ino()) == (meta.dev(), meta.ino())).then_some(path)
}

/// Waits until `follower` shows [`CHAIN_COMPLETE`], `cancel` is set, or `limit` passes; returns
/// how long it waited and whether the chain reload was seen to end.
pub fn wait_for_chain(follower: &mut LogFollower, cancel: &AtomicBool, limit: Duration) -> (Duration, bool) {
    let start = Instant::now();
    while start.elapsed() < limit && !cancel.load(Ordering::Relaxed) {
        if follower.poll().iter().any(|line| line.contains(CHAIN_COMPLETE)) {
            return (start.elapsed(), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (start.elapsed(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn the_reader_of_a_fifo_and_its_log_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("master.fifo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let log = dir.path().join("uwsgi.log");
        let log_file = std::fs::File::create(&log).unwrap();
        // A stand-in master: holds the FIFO open for reading (read-write, so it never blocks)
        // and logs to a file on its stderr.
        let script = format!("exec 3<>{}; sleep 30", fifo.display());
        let mut child =
            Command::new("sh").args(["-c", &script]).stderr(log_file).stdout(Stdio::null()).spawn().unwrap();
        let mut found = None;
        for _ in 0..200 {
            found = master_of(&fifo);
            if found.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = found.expect("the reader is found");
        assert_eq!(log_of(pid).as_deref(), Some(log.as_path()));
        let mut follower = LogFollower::start(&log);
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"chain reloading complete\n").unwrap();
        let (_, done) = wait_for_chain(&mut follower, &AtomicBool::new(false), Duration::from_secs(5));
        assert!(done);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(master_of(&dir.path().join("none")), None);
    }
}
