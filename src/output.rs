//! Output for people and tools: one human line per event on stderr, the same event as a JSON line on stdout with `--json`.

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where events go, and how much of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log {
    /// Also print events as JSON lines on stdout.
    pub json: bool,
    /// Print only warnings and errors on stderr.
    pub quiet: bool,
    /// Extra detail (`-v`).
    pub verbose: u8,
}

impl Log {
    /// An event: `human` on stderr (unless quiet), `fields` plus `event` and `time` on stdout with `--json`.
    pub fn event(&self, event: &str, human: &str, fields: Value) {
        if !self.quiet {
            line(Stream::Stderr, &format!("{} {human}", clock()));
        }
        self.json_line(event, fields);
    }

    /// Like [`Log::event`] but shown even with `--quiet`.
    pub fn warn(&self, event: &str, human: &str, fields: Value) {
        line(Stream::Stderr, &format!("{} {human}", clock()));
        self.json_line(event, fields);
    }

    /// A line for people only (unless quiet), for what the JSON output already has as an event.
    pub fn say(&self, human: &str) {
        if !self.quiet {
            line(Stream::Stderr, &format!("{} {human}", clock()));
        }
    }

    /// Detail shown only with `-v`.
    pub fn debug(&self, human: &str) {
        if self.verbose > 0 && !self.quiet {
            line(Stream::Stderr, &format!("{} {human}", clock()));
        }
    }

    /// The event as a JSON line only (with `--json`), for results already told to people some other way.
    pub fn record(&self, event: &str, fields: Value) {
        self.json_line(event, fields);
    }

    fn json_line(&self, event: &str, fields: Value) {
        if !self.json {
            return;
        }
        let mut map = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("event".into(), event.into());
        map.insert("time".into(), unix_seconds().into());
        line(Stream::Stdout, &Value::Object(map).to_string());
    }
}

/// Lines lost because stdout or stderr was closed or full, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines could not be written (a closed terminal, a pipe nobody reads).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// One of the two standard outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Events as JSON lines.
    Stdout,
    /// Lines for people.
    Stderr,
}

/// Writes `text` and a newline to `stream` without ever blocking or panicking: where the
/// stream is closed, broken or full (a pipe nobody reads, a terminal gone with its ssh session)
/// the line is dropped and counted ([`dropped`]). A log line is worth less than a reload.
pub fn line(stream: Stream, text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    if !sink::write(stream, &bytes) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether stdout's reader is gone for good (a pipe whose reading end was closed, a terminal
/// hung up): a program that reads `--json` events and went away, such as an editor's extension
/// host that crashed, would otherwise leave its watcher running with nobody to read it.
pub fn stdout_gone() -> bool {
    sink::gone(Stream::Stdout)
}

#[cfg(unix)]
mod sink {
    //! Writes that cannot block: a pipe is reopened through /proc as a private, non-blocking
    //! open file description (setting O_NONBLOCK on fd 1 or 2 would change it for every process
    //! sharing the pipe); anything else is written only when poll(2) says it takes data now.

    use super::Stream;
    use std::fs::File;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::{Mutex, OnceLock};

    /// Per stream: the private non-blocking pipe, if there is one.
    static PRIVATE: [OnceLock<Option<File>>; 2] = [OnceLock::new(), OnceLock::new()];
    /// Lines are written whole, one at a time.
    static LOCK: Mutex<()> = Mutex::new(());

    fn private(stream: Stream) -> Option<&'static File> {
        let (index, fd) = match stream {
            Stream::Stdout => (0, 1),
            Stream::Stderr => (1, 2),
        };
        PRIVATE[index].get_or_init(|| reopen_pipe(fd)).as_ref()
    }

    #[cfg(target_os = "linux")]
    fn reopen_pipe(fd: RawFd) -> Option<File> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let path = format!("/proc/self/fd/{fd}");
        // Only a pipe: a regular file may be open with O_APPEND, which a reopen would lose.
        let is_pipe = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
        if !is_pipe {
            return None;
        }
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn reopen_pipe(_fd: RawFd) -> Option<File> {
        None
    }

    /// Whether `stream`'s other end is gone: poll(2) says error or hang-up (never for a file).
    pub fn gone(stream: Stream) -> bool {
        let fd = match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        };
        let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd, a zero timeout: poll(2) only reads and writes `poll`.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }

    /// Whether the whole line went out.
    pub fn write(stream: Stream, bytes: &[u8]) -> bool {
        let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fd = match (private(stream), stream) {
            (Some(file), _) => file.as_raw_fd(),
            (None, Stream::Stdout) => 1,
            (None, Stream::Stderr) => 2,
        };
        let mut rest = bytes;
        // Bounded: each round writes at least one byte or gives up.
        for _ in 0..64 {
            if rest.is_empty() {
                return true;
            }
            let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd, a zero timeout: poll(2) only reads and writes `poll`.
            let ready = unsafe { libc::poll(&mut poll, 1, 0) };
            if ready != 1 || poll.revents & libc::POLLOUT == 0 {
                return false;
            }
            // SAFETY: writes from a live slice of `rest.len()` bytes; the fd is ours or 1/2.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            match usize::try_from(n) {
                Ok(n) if n > 0 => rest = &rest[n.min(rest.len())..],
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

#[cfg(not(unix))]
mod sink {
    use super::Stream;
    use std::io::Write;

    /// Not told here: a Windows pipe's closed end shows as a failed write, which drops the line.
    pub fn gone(_stream: Stream) -> bool {
        false
    }

    /// Whether the whole line went out (a closed console is an error, never a panic).
    pub fn write(stream: Stream, bytes: &[u8]) -> bool {
        match stream {
            Stream::Stdout => {
                std::io::stdout().lock().write_all(bytes).and_then(|()| std::io::stdout().flush()).is_ok()
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes).is_ok(),
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Time of day (UTC) with milliseconds, for log lines.
pub fn clock() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let day_ms = ms % 86_400_000;
    let (h, m, s, milli) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

/// Text from the network made safe for one log line: control characters (newlines, escapes)
/// cannot forge lines or colour the terminal.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// The first few files and a count, for one log line.
pub fn summary(files: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = files.iter().take(SHOWN).map(|f| clean(f)).collect();
    match files.len() {
        0 => "(no file named)".into(),
        n if n <= SHOWN => shown.join(", "),
        n => format!("{} and {} more", shown.join(", "), n - SHOWN),
    }
}

/// `n` and the noun, singular or plural as `n` needs: `1 file`, `2 files`, `0 files`.
/// `plural` is the whole plural word, for nouns that do not just add an s (`1 directory`, `2 directories`).
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// A duration in milliseconds with one decimal, for people.
pub fn millis(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn summaries_show_a_few_files_and_a_count() {
        let files: Vec<String> = (1..=5).map(|i| format!("m{i}.py")).collect();
        assert_eq!(super::summary(&files[..1]), "m1.py");
        assert_eq!(super::summary(&files), "m1.py, m2.py, m3.py and 2 more");
        assert_eq!(super::summary(&[]), "(no file named)");
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(super::count(1, "file", "files"), "1 file");
        assert_eq!(super::count(2, "file", "files"), "2 files");
        assert_eq!(super::count(0, "file", "files"), "0 files");
        assert_eq!(super::count(1, "directory", "directories"), "1 directory");
        assert_eq!(super::count(3, "directory", "directories"), "3 directories");
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(super::clean("a\nb\u{1b}[31m"), "a\u{fffd}b\u{fffd}[31m");
    }

    #[test]
    fn clock_has_a_fixed_shape() {
        let c = super::clock();
        assert_eq!(c.len(), 12, "{c}");
        assert_eq!(&c[2..3], ":");
        assert_eq!(&c[8..9], ".");
    }
}
