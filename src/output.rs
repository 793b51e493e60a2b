//! Output for people and tools: one human line per event on stderr, the same event as a JSON line on stdout with `--json`.

use serde_json::{Map, Value};
use std::io::Write;
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
            eprintln!("{} {human}", clock());
        }
        self.json_line(event, fields);
    }

    /// Like [`Log::event`] but shown even with `--quiet`.
    pub fn warn(&self, event: &str, human: &str, fields: Value) {
        eprintln!("{} {human}", clock());
        self.json_line(event, fields);
    }

    /// Detail shown only with `-v`.
    pub fn debug(&self, human: &str) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{} {human}", clock());
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
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the receiver down: the event is simply lost.
        let _ = writeln!(out, "{}", Value::Object(map));
        let _ = out.flush();
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
