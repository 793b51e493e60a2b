//! Ready checks (DESIGN.md, "Knowing the app is back"): after an action, follow the app's log
//! from where it stood before the action until the ready pattern (then, if set, until the URL
//! answers below 500), the error pattern (then an excerpt of the log around it), or the timeout.
//!
//! Following never blocks and never reads without bound: the log is opened non-blocking and
//! must be a regular file (a FIFO or a device fails the check at once, naming the path), each
//! poll reads at most [`READ_PER_POLL`] bytes, and a line without its newline is kept only up
//! to [`LINE_CAP`] bytes.

use super::actions::{Unreadable, kind, open_regular};

use crate::protocol::Ready;
use anyhow::{Context, Result, anyhow, bail};
use regex::Regex;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A known server's log lines.
pub struct Preset {
    /// Its name in `"preset"`.
    pub name: &'static str,
    /// A line that says the app is back.
    pub ready: &'static str,
    /// A line that says it failed.
    pub error: &'static str,
    /// How long after the ready line an error may still come: gunicorn says "Booting worker"
    /// before the worker imports the app, so a failed import follows it.
    pub grace: Duration,
}

/// The servers whose log lines ship with touchwire (recorded in tests/fixtures/).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "uwsgi",
        ready: r"WSGI app \d+ \(mountpoint='[^']*'\) ready in",
        // A SyntaxError in the module uWSGI loads is logged without a "Traceback" line: its
        // location line (`File "…", line N` with no ", in …") starts the excerpt instead.
        error: r#"Traceback|^\s*File "[^"]+", line \d+\s*$|unable to load app|no python application found"#,
        grace: Duration::ZERO,
    },
    Preset {
        name: "gunicorn",
        ready: r"Booting worker with pid",
        error: r"Traceback|Worker failed to boot|Exception in worker process",
        grace: Duration::from_millis(1000),
    },
    Preset {
        name: "django",
        ready: r"Starting development server at",
        error: r"Traceback|Error: ",
        grace: Duration::ZERO,
    },
    Preset {
        name: "uvicorn",
        ready: r"Application startup complete",
        error: r"Traceback|Error loading ASGI app",
        grace: Duration::ZERO,
    },
];

/// How long the default check waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most lines kept for an error excerpt.
const EXCERPT_LINES: usize = 12;
/// Most bytes of a log line shown in an error excerpt: the reply is for a person, not an archive.
const EXCERPT_LINE_CAP: usize = 500;
/// Most bytes read from the log in one poll: a log that grows faster is read in pieces.
pub const READ_PER_POLL: u64 = 1 << 20;
/// Most bytes kept of one line: a longer line keeps its start, the rest until its newline is dropped.
pub const LINE_CAP: usize = 64 << 10;

/// A configured ready check.
#[derive(Debug, Clone)]
pub struct ReadyCheck {
    /// The app's log file.
    pub log: PathBuf,
    /// A line that says the app is back.
    pub pattern: Regex,
    /// A line that says it failed.
    pub error_pattern: Option<Regex>,
    /// Asked after the ready line; any answer below 500 is ready.
    pub url: Option<String>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Wait this long after the ready line for an error before calling it ready.
    pub grace: Duration,
}

impl PartialEq for ReadyCheck {
    fn eq(&self, other: &Self) -> bool {
        self.log == other.log
            && self.pattern.as_str() == other.pattern.as_str()
            && self.error_pattern.as_ref().map(Regex::as_str) == other.error_pattern.as_ref().map(Regex::as_str)
            && self.url == other.url
            && self.timeout == other.timeout
            && self.grace == other.grace
    }
}

impl ReadyCheck {
    /// A check from its parts: `preset` gives the patterns that `pattern`/`error_pattern` do not.
    pub fn new(
        log: PathBuf,
        preset: Option<&str>,
        pattern: Option<&str>,
        error_pattern: Option<&str>,
        url: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<ReadyCheck, String> {
        let preset = match preset {
            Some(name) => Some(PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
                format!("unknown preset {name:?} (known: {})", names.join(", "))
            })?),
            None => None,
        };
        let regex =
            |text: &str, key: &str| Regex::new(text).map_err(|err| format!("`{key}` is not a valid regex: {err}"));
        let pattern = match (pattern, preset) {
            (Some(p), _) => regex(p, "pattern")?,
            (None, Some(preset)) => regex(preset.ready, "pattern")?,
            (None, None) => return Err("a ready check needs a `pattern` or a `preset`".into()),
        };
        let error_pattern = match (error_pattern, preset) {
            (Some(p), _) => Some(regex(p, "error_pattern")?),
            (None, Some(preset)) => Some(regex(preset.error, "error_pattern")?),
            (None, None) => None,
        };
        let grace = preset.map_or(Duration::ZERO, |p| p.grace);
        if let Some(url) = &url {
            parse_url(url).map_err(|err| format!("`url`: {err}"))?;
        }
        Ok(ReadyCheck { log, pattern, error_pattern, url, timeout: timeout.unwrap_or(DEFAULT_TIMEOUT), grace })
    }

    /// Starts following the log; call before the action, then [`ReadyCheck::wait`].
    pub fn follow(&self) -> LogFollower {
        LogFollower::start(&self.log)
    }

    /// Waits for the outcome; `follower` started before the action, `start` is when the action
    /// began. Ends early, not ok, when `cancel` becomes true (error "stopped": the receiver is
    /// stopping) or when the log's path is not a regular file (error naming the path).
    pub fn wait(&self, mut follower: LogFollower, start: Instant, cancel: &AtomicBool) -> Outcome {
        let deadline = start + self.timeout;
        let mut recent: VecDeque<String> = VecDeque::new();
        let mut ready_seen: Option<Instant> = None;
        for _ in 0..1_000_000 {
            if cancel.load(Ordering::Relaxed) {
                return failed(start, "stopped".into());
            }
            if Instant::now() >= deadline {
                break;
            }
            let mut batch = follower.poll().into_iter();
            if let Some(problem) = follower.problem() {
                return failed(start, problem.to_string());
            }
            while let Some(line) = batch.next() {
                if let Some(error) = &self.error_pattern
                    && error.is_match(&line)
                {
                    let after: Vec<String> = std::iter::once(line).chain(batch).map(excerpt_line).collect();
                    return failed(start, self.excerpt(&mut follower, recent, after, deadline, cancel));
                }
                if ready_seen.is_none() && self.pattern.is_match(&line) {
                    ready_seen = Some(Instant::now());
                }
                recent.push_back(excerpt_line(line));
                if recent.len() > 3 {
                    recent.pop_front();
                }
            }
            if let Some(seen) = ready_seen {
                match &self.url {
                    None if seen.elapsed() >= self.grace => return ready_now(start),
                    None => {}
                    Some(url) if url_ready(url, deadline) => return ready_now(start),
                    Some(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let what = if ready_seen.is_some() {
            format!("{} did not answer below 500", self.url.as_deref().unwrap_or(""))
        } else {
            format!("no line matching {:?} in {}", self.pattern.as_str(), self.log.display())
        };
        failed(start, format!("not ready after {} ms: {what}", self.timeout.as_millis()))
    }

    /// The error line with a little context before it and what follows it (a traceback's last
    /// line names the exception), waiting briefly for the rest to be written (not when `cancel` is set).
    fn excerpt(
        &self,
        follower: &mut LogFollower,
        before: VecDeque<String>,
        after: Vec<String>,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> String {
        let start = before.len();
        let mut lines: Vec<String> = before.into_iter().chain(after).collect();
        let settle = (Instant::now() + Duration::from_millis(300)).min(deadline);
        // A traceback ends with the exception: read until it has come, or the settle time passes.
        while Instant::now() < settle
            && traceback_end(&lines[start..]).is_none()
            && lines.len() < 1000
            && !cancel.load(Ordering::Relaxed)
        {
            lines.extend(follower.poll().into_iter().map(excerpt_line));
            std::thread::sleep(Duration::from_millis(20));
        }
        let end = traceback_end(&lines[start..]).map_or(lines.len(), |i| start + i + 1);
        lines.truncate(end);
        // Keep the context before the error and the traceback's end, where the exception is.
        let keep = EXCERPT_LINES + 3;
        if lines.len() > keep {
            // The error line and the one after it ("Traceback ..." where gunicorn logs its own line first).
            let head_end = start + 2;
            let tail_start = lines.len() - (keep - head_end - 1);
            lines.drain(head_end..tail_start);
            lines.insert(head_end, "  ...".into());
        }
        lines.join("\n")
    }
}

/// Where a Python traceback that starts at `lines[0]` ends: the first line that is not indented
/// after at least one frame (the exception).
fn traceback_end(lines: &[String]) -> Option<usize> {
    // A SyntaxError's excerpt starts at its location line, a frame of its own.
    let mut frames = lines.first().is_some_and(|line| line.trim_start().starts_with("File \""));
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.trim_start().starts_with("File \"") {
            frames = true;
        } else if frames && !line.starts_with(' ') && !line.trim().is_empty() {
            return Some(i);
        }
    }
    None
}

/// `line` cut to [`EXCERPT_LINE_CAP`] bytes (at a character boundary) for an excerpt.
fn excerpt_line(mut line: String) -> String {
    if line.len() > EXCERPT_LINE_CAP {
        let mut cut = EXCERPT_LINE_CAP;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// How a ready check ended (the wire's `ready` object).
pub type Outcome = Ready;

fn ready_now(start: Instant) -> Outcome {
    Ready { ok: true, ms: start.elapsed().as_millis() as u64, error: None }
}

fn failed(start: Instant, error: String) -> Outcome {
    Ready { ok: false, ms: start.elapsed().as_millis() as u64, error: Some(error) }
}

/// Reads the lines added to a log file since it started, across rotation (the file renamed and
/// recreated), truncation, and a file that does not exist yet. Never blocks, and reads at most
/// [`READ_PER_POLL`] bytes per poll; a path that is not a regular file is reported by
/// [`LogFollower::problem`] instead of being opened.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    file: Option<File>,
    inode: Option<(u64, u64)>,
    offset: u64,
    /// The start of a line whose newline has not come yet, at most [`LINE_CAP`] bytes.
    partial: Vec<u8>,
    /// Why the path cannot be followed, as of the last look at it.
    problem: Option<String>,
}

impl LogFollower {
    /// Starts at the file's current end (or at its beginning, once it appears).
    pub fn start(path: &Path) -> LogFollower {
        let mut follower = LogFollower {
            path: path.to_path_buf(),
            file: None,
            inode: None,
            offset: 0,
            partial: Vec::new(),
            problem: None,
        };
        match open_regular(path) {
            Ok((file, meta)) => {
                follower.inode = Some((meta.dev(), meta.ino()));
                follower.offset = meta.len();
                follower.file = Some(file);
            }
            Err(Unreadable::NotRegular(kind)) => follower.problem = Some(follower.not_regular(kind)),
            // Missing (or not readable yet): it may appear, as a log does after a rotation.
            Err(Unreadable::Io(_)) => {}
        }
        follower
    }

    /// Why the log cannot be followed: its path is a FIFO, a device or a directory, not a
    /// regular file (a sentence naming the path). A ready check fails at once on it.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    fn not_regular(&self, kind: &str) -> String {
        format!("log {} is {kind}, not a regular file", self.path.display())
    }

    /// The complete lines written since the last call (none when the path is not a regular
    /// file: see [`LogFollower::problem`]).
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let current = std::fs::metadata(&self.path).ok();
        if let Some(meta) = &current
            && !meta.is_file()
        {
            self.problem = Some(self.not_regular(kind(meta.file_type())));
            return lines;
        }
        self.problem = None;
        match current.map(|m| ((m.dev(), m.ino()), m.len())) {
            Some((inode, _)) if Some(inode) != self.inode => {
                // Rotated (or created): finish the old file, then read the new one from its start.
                self.read_new(&mut lines);
                self.partial.clear();
                self.file = match open_regular(&self.path) {
                    Ok((file, _)) => Some(file),
                    Err(Unreadable::NotRegular(kind)) => {
                        // Replaced by a FIFO or a device between the look and the open.
                        self.problem = Some(self.not_regular(kind));
                        None
                    }
                    Err(Unreadable::Io(_)) => None,
                };
                self.inode = Some(inode);
                self.offset = 0;
            }
            Some((_, len)) if len < self.offset => {
                // Truncated in place: start over.
                self.offset = 0;
                self.partial.clear();
            }
            _ => {}
        }
        self.read_new(&mut lines);
        lines
    }

    fn read_new(&mut self, lines: &mut Vec<String>) {
        let Some(file) = &mut self.file else { return };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = Vec::new();
        // Bounded: a log that grows by more than READ_PER_POLL between two polls is read in pieces.
        if let Ok(n) = Read::by_ref(file).take(READ_PER_POLL).read_to_end(&mut chunk) {
            self.offset += n as u64;
        }
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (body, complete) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            // A line longer than the cap keeps its start; the rest, up to its newline, is dropped.
            let room = LINE_CAP.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&body[..body.len().min(room)]);
            if complete {
                lines.push(String::from_utf8_lossy(&self.partial).trim_end_matches('\r').to_string());
                self.partial.clear();
            }
        }
    }
}

/// `http://HOST[:PORT][/PATH]` split into the address and the path.
fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs are checked")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("no host in {url:?}");
    }
    let addr = if host.contains(':') && !host.ends_with(']') { host.to_string() } else { format!("{host}:80") };
    Ok((addr, path.to_string()))
}

/// Whether `url` answers with a status below 500 before `deadline` (one quick attempt).
fn url_ready(url: &str, deadline: Instant) -> bool {
    let attempt = || -> Result<u16> {
        let (addr, path) = parse_url(url)?;
        let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(2));
        let target = addr.to_socket_addrs()?.next().ok_or_else(|| anyhow!("no address for {addr}"))?;
        let mut stream = TcpStream::connect_timeout(&target, left.max(Duration::from_millis(1)))?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        let status = String::from_utf8_lossy(&head[..n]);
        let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok());
        code.ok_or_else(|| anyhow!("not an HTTP answer"))
    };
    attempt().is_ok_and(|code| code < 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn the_follower_reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old line\n");
        let mut f = LogFollower::start(&log);
        assert!(f.poll().is_empty());
        append(&log, "one\ntw");
        assert_eq!(f.poll(), ["one"]);
        append(&log, "o\n");
        assert_eq!(f.poll(), ["two"]);
    }

    #[test]
    fn the_follower_survives_rotation_truncation_and_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let mut f = LogFollower::start(&log);
        assert!(f.poll().is_empty(), "no file yet");
        append(&log, "first\n");
        assert_eq!(f.poll(), ["first"]);
        append(&log, "last of old\n");
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append(&log, "first of new\n");
        assert_eq!(f.poll(), ["last of old", "first of new"]);
        // Truncation shows as a file shorter than what was read (polled every 10 ms in a check).
        std::fs::write(&log, "").unwrap();
        assert!(f.poll().is_empty());
        append(&log, "after truncation\n");
        assert_eq!(f.poll(), ["after truncation"]);
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

    fn uwsgi_check(log: &Path, timeout_ms: u64) -> ReadyCheck {
        ReadyCheck::new(log.into(), Some("uwsgi"), None, None, None, Some(Duration::from_millis(timeout_ms))).unwrap()
    }

    #[test]
    fn a_log_that_is_a_fifo_or_a_device_fails_the_check_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("app.log");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        for log in [fifo, PathBuf::from("/dev/zero")] {
            let check = uwsgi_check(&log, 10_000);
            let outcome = within(Duration::from_secs(5), move || {
                let follower = check.follow();
                check.wait(follower, Instant::now(), &AtomicBool::new(false))
            });
            assert!(!outcome.ok);
            let error = outcome.error.unwrap();
            assert!(error.starts_with(&format!("log {} is a ", log.display())), "{error}");
            assert!(error.ends_with(", not a regular file"), "{error}");
            assert!(outcome.ms < 1000, "{}", outcome.ms);
        }
    }

    #[test]
    fn a_log_replaced_by_a_fifo_fails_the_check_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old\n");
        let mut follower = LogFollower::start(&log);
        assert!(follower.problem().is_none());
        std::fs::remove_file(&log).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&log).status().unwrap().success());
        let (lines, problem) = within(Duration::from_secs(5), move || {
            let lines = follower.poll();
            (lines, follower.problem().map(str::to_string))
        });
        assert!(lines.is_empty());
        assert_eq!(problem.unwrap(), format!("log {} is a FIFO, not a regular file", log.display()));
    }

    #[test]
    fn the_follower_reads_a_bounded_amount_per_poll_and_caps_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let mut f = LogFollower::start(&log);
        // One line of 3 MiB without a newline yet: no poll keeps more than LINE_CAP of it.
        let huge = "x".repeat(3 << 20);
        append(&log, &huge);
        for _ in 0..3 {
            assert!(f.poll().is_empty());
            assert!(f.partial.len() <= LINE_CAP);
        }
        assert_eq!(f.offset, 3 << 20, "read in pieces of READ_PER_POLL");
        append(&log, "\nnext\n");
        let lines = f.poll();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "x".repeat(LINE_CAP), "the start of the long line is kept");
        assert_eq!(lines[1], "next");
        // Many short lines at once: at most READ_PER_POLL bytes of them per poll.
        append(&log, &"y\n".repeat(READ_PER_POLL as usize));
        assert_eq!(f.poll().len(), READ_PER_POLL as usize / 2);
        assert_eq!(f.poll().len(), READ_PER_POLL as usize / 2);
        assert!(f.poll().is_empty());
    }

    #[test]
    fn a_check_ends_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let check = uwsgi_check(&log, 30_000);
        let cancel = AtomicBool::new(false);
        let outcome = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                cancel.store(true, Ordering::Relaxed);
            });
            check.wait(check.follow(), Instant::now(), &cancel)
        });
        assert!(!outcome.ok);
        assert_eq!(outcome.error.as_deref(), Some("stopped"));
        assert!(outcome.ms < 2000, "{}", outcome.ms);
    }

    #[test]
    fn excerpt_lines_are_cut() {
        let excerpt = {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("app.log");
            let check = uwsgi_check(&log, 2000);
            let follower = check.follow();
            append(&log, &format!("Traceback {}\nValueError: no\n", "é".repeat(1000)));
            check.wait(follower, Instant::now(), &AtomicBool::new(false)).error.unwrap()
        };
        let first = excerpt.lines().next().unwrap();
        assert!(first.len() <= EXCERPT_LINE_CAP + 3 && first.ends_with("..."), "{}", first.len());
    }

    #[test]
    fn presets_compile_and_custom_patterns_win() {
        for preset in PRESETS {
            ReadyCheck::new("x.log".into(), Some(preset.name), None, None, None, None).unwrap();
        }
        let check = ReadyCheck::new("x.log".into(), Some("uwsgi"), Some("up"), None, None, None).unwrap();
        assert_eq!(check.pattern.as_str(), "up");
        assert!(check.error_pattern.unwrap().is_match("Traceback (most recent call last):"));
        assert!(
            ReadyCheck::new("x.log".into(), Some("nope"), None, None, None, None).unwrap_err().contains("known: uwsgi")
        );
        assert!(ReadyCheck::new("x.log".into(), None, None, None, None, None).is_err());
        assert!(ReadyCheck::new("x.log".into(), None, Some("("), None, None, None).unwrap_err().contains("regex"));
        assert!(ReadyCheck::new("x.log".into(), None, Some("up"), None, Some("https://x".into()), None).is_err());
    }

    /// Plays a recorded log of a real server into a fresh log file and runs its preset's check on it.
    fn replay(server: &str, kind: &str) -> Outcome {
        let fixture = format!("{}/tests/fixtures/{server}-{kind}.log", env!("CARGO_MANIFEST_DIR"));
        let recorded = std::fs::read_to_string(&fixture).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let check = ReadyCheck::new(log.clone(), Some(server), None, None, None, Some(Duration::from_secs(5))).unwrap();
        let follower = check.follow();
        append(&log, &recorded);
        check.wait(follower, Instant::now(), &AtomicBool::new(false))
    }

    #[test]
    fn presets_recognise_the_recorded_logs_of_real_servers() {
        for server in ["uwsgi", "gunicorn", "django", "uvicorn"] {
            let ready = replay(server, "ready");
            assert!(ready.ok, "{server}: {ready:?}");
            let failed = replay(server, "error");
            assert!(!failed.ok, "{server}: a failed start passed for ready");
            let error = failed.error.unwrap();
            assert!(error.contains("Traceback"), "{server}: {error}");
            // The excerpt keeps the exception at the traceback's end, whatever the depth.
            assert!(error.contains("No module named 'no_such_module'"), "{server}: {error}");
        }
    }

    #[test]
    fn a_syntax_error_uwsgi_logs_without_a_traceback_is_reported_with_its_place() {
        let failed = replay("uwsgi", "syntax-error");
        assert!(!failed.ok, "{failed:?}");
        let error = failed.error.unwrap();
        assert!(error.contains("  File \"/tmp/synt/app.py\", line 1\n"), "{error}");
        assert!(error.contains("SyntaxError: invalid syntax"), "{error}");
        let (place, last) = crate::watch::delivery::failure_place(&error, None);
        assert_eq!((place.as_str(), last), (" at /tmp/synt/app.py:1", "SyntaxError: invalid syntax"));
    }

    #[test]
    fn urls_are_split_into_address_and_path() {
        assert_eq!(parse_url("http://127.0.0.1:8000/health").unwrap(), ("127.0.0.1:8000".into(), "/health".into()));
        assert_eq!(parse_url("http://app").unwrap(), ("app:80".into(), "/".into()));
    }

    #[test]
    fn a_check_ends_on_ready_on_error_with_an_excerpt_or_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let check = |timeout| {
            ReadyCheck::new(log.clone(), Some("uwsgi"), None, None, None, Some(Duration::from_millis(timeout))).unwrap()
        };
        let never = AtomicBool::new(false);
        let follower = check(2000).follow();
        append(&log, "spawned uWSGI worker 1\nWSGI app 0 (mountpoint='') ready in 0 seconds on interpreter 0x1\n");
        let outcome = check(2000).wait(follower, Instant::now(), &never);
        assert!(outcome.ok, "{outcome:?}");

        let follower = check(2000).follow();
        append(
            &log,
            "*** Operational MODE: single process ***\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 3, in <module>\nImportError: No module named 'foo'\n",
        );
        let outcome = check(2000).wait(follower, Instant::now(), &never);
        assert!(!outcome.ok);
        let error = outcome.error.unwrap();
        assert!(error.contains("Traceback") && error.contains("ImportError: No module named 'foo'"), "{error}");

        let outcome = check(100).wait(check(100).follow(), Instant::now(), &never);
        assert!(outcome.error.unwrap().starts_with("not ready after 100 ms: no line matching"));
    }
}
