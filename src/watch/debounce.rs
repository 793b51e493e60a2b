//! Host-side debounce, leading and trailing (DESIGN.md, "Debounce (host)"). Pure: fed changes,
//! the git-busy flag and instants by the caller, so it is tested without sleeping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest a burst stays open while changes keep coming.
pub const BURST_CAP: Duration = Duration::from_secs(1);
/// Longest a burst stays open while git holds `index.lock`.
pub const GIT_BUSY_CAP: Duration = Duration::from_secs(5);

/// A change to a relevant file, as the watcher saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A write completed: closed after writing, or renamed onto its path.
    Written,
    /// Deleted, or renamed away.
    Removed,
}

/// What to send: the files (relative paths, sorted) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Relevant files changed, relative to the work tree: for the receiver's log (and its
    /// refresh under `root`), so a name that is not UTF-8 goes out lossily; two such names may
    /// read alike there, while the burst itself keeps them apart by their bytes.
    pub files: Vec<String>,
    /// `save` for a leading trigger, `burst` for a trailing one.
    pub reason: &'static str,
}

#[derive(Debug)]
struct Burst {
    first: Instant,
    last: Instant,
    /// Whether this burst already sent its leading trigger.
    led: bool,
    /// Keyed by the path's bytes: a name that is not UTF-8 is a file like any other.
    pending: BTreeSet<Vec<u8>>,
    /// Events were lost: the trailing trigger goes out even without a file.
    rescan: bool,
}

/// The debounce state: at most one open burst.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    burst: Option<Burst>,
}

impl Debouncer {
    /// A debouncer that closes a burst after `quiet` without changes.
    pub fn new(quiet: Duration) -> Debouncer {
        Debouncer { quiet, burst: None }
    }

    /// A relevant change at `now`; returns a trigger to send at once, if any.
    pub fn on_change(&mut self, change: Change, path: &[u8], now: Instant, git_busy: bool) -> Option<Trigger> {
        let burst = self.open(now);
        burst.pending.insert(path.to_vec());
        // A completed write leads, unless this burst already led or git is rewriting the tree. A
        // removal never leads: in a backup-and-write save the old file goes first, and the
        // trigger belongs to the moment the new one is complete.
        if change == Change::Written && !burst.led && !git_busy {
            burst.led = true;
            let files = lossy(std::mem::take(&mut burst.pending));
            return Some(Trigger { files, reason: "save" });
        }
        None
    }

    /// The OS dropped events: a relevant change may be lost, so the burst ends with a trigger
    /// even if it names no file (it waits for git like any other change).
    pub fn on_rescan(&mut self, now: Instant) {
        self.open(now).rescan = true;
    }

    fn open(&mut self, now: Instant) -> &mut Burst {
        let burst = self.burst.get_or_insert_with(|| Burst {
            first: now,
            last: now,
            led: false,
            pending: BTreeSet::new(),
            rescan: false,
        });
        burst.last = now;
        burst
    }

    /// Activity that is not a relevant change but keeps a burst open (git taking or dropping its lock).
    pub fn on_activity(&mut self, now: Instant) {
        if let Some(burst) = &mut self.burst {
            burst.last = now;
        }
    }

    /// Closes the burst when it has been quiet long enough or reached its cap; returns the trailing trigger, if any.
    pub fn poll(&mut self, now: Instant, git_busy: bool) -> Option<Trigger> {
        let burst = self.burst.as_ref()?;
        let cap = if git_busy { GIT_BUSY_CAP } else { BURST_CAP };
        let quiet = !git_busy && now.saturating_duration_since(burst.last) >= self.quiet;
        if !quiet && now.saturating_duration_since(burst.first) < cap {
            return None;
        }
        let burst = self.burst.take()?;
        let reason = if burst.rescan { "rescan" } else { "burst" };
        (!burst.pending.is_empty() || burst.rescan).then(|| Trigger { files: lossy(burst.pending), reason })
    }

    /// Ends the open burst now (the watcher is stopping): its pending changes, if any, as a trigger.
    pub fn flush(&mut self) -> Option<Trigger> {
        let burst = self.burst.take()?;
        let reason = if burst.rescan { "rescan" } else { "burst" };
        (!burst.pending.is_empty() || burst.rescan).then(|| Trigger { files: lossy(burst.pending), reason })
    }

    /// When [`Debouncer::poll`] should next be called, if a burst is open.
    pub fn deadline(&self, git_busy: bool) -> Option<Instant> {
        let burst = self.burst.as_ref()?;
        let cap = burst.first + if git_busy { GIT_BUSY_CAP } else { BURST_CAP };
        Some(if git_busy { cap } else { (burst.last + self.quiet).min(cap) })
    }
}

/// The files of a trigger, as text (see [`Trigger::files`]).
fn lossy(paths: BTreeSet<Vec<u8>>) -> Vec<String> {
    paths.iter().map(|p| crate::relevance::path::lossy(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn files(t: &Option<Trigger>) -> Vec<&str> {
        t.as_ref().map(|t| t.files.iter().map(String::as_str).collect()).unwrap_or_default()
    }

    #[test]
    fn a_save_is_sent_at_once_and_nothing_follows() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        let lead = d.on_change(Change::Written, b"app.py", t0, false);
        assert_eq!(files(&lead), ["app.py"]);
        assert_eq!(lead.unwrap().reason, "save");
        assert_eq!(d.deadline(false), Some(t0 + ms(30)));
        assert_eq!(d.poll(t0 + ms(10), false), None);
        assert_eq!(d.poll(t0 + ms(30), false), None, "nothing pending: no trailing trigger");
        assert_eq!(d.deadline(false), None, "burst closed");
    }

    #[test]
    fn backup_and_write_leads_at_the_completed_write_not_at_the_rename() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        // Vim: app.py renamed to app.py~ (a removal of app.py), then app.py written anew.
        assert_eq!(d.on_change(Change::Removed, b"app.py", t0, false), None);
        let lead = d.on_change(Change::Written, b"app.py", t0 + ms(1), false);
        assert_eq!(files(&lead), ["app.py"]);
        assert_eq!(d.poll(t0 + ms(40), false), None);
    }

    #[test]
    fn a_lone_deletion_is_sent_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        assert_eq!(d.on_change(Change::Removed, b"old.py", t0, false), None);
        assert_eq!(d.poll(t0 + ms(29), false), None);
        let trailing = d.poll(t0 + ms(30), false);
        assert_eq!(files(&trailing), ["old.py"]);
        assert_eq!(trailing.unwrap().reason, "burst");
    }

    #[test]
    fn a_storm_costs_two_triggers() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        let mut sent = Vec::new();
        for i in 0..500u64 {
            let now = t0 + Duration::from_micros(i * 500);
            sent.extend(d.on_change(Change::Written, format!("m{i:03}.py").as_bytes(), now, false));
            sent.extend(d.poll(now, false));
        }
        sent.extend(d.poll(t0 + ms(400), false));
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].files, ["m000.py"]);
        assert_eq!(sent[1].files.len(), 499);
    }

    #[test]
    fn a_burst_is_capped_at_one_second() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        d.on_change(Change::Written, b"a.py", t0, false);
        let mut now = t0;
        let mut trailing = None;
        // Changes every 20 ms never leave 30 ms of quiet: the cap closes the burst.
        while trailing.is_none() && now < t0 + ms(2000) {
            now += ms(20);
            d.on_change(Change::Written, b"b.py", now, false);
            trailing = d.poll(now, false);
        }
        assert_eq!(files(&trailing), ["b.py"]);
        assert!(now >= t0 + BURST_CAP && now < t0 + BURST_CAP + ms(20));
    }

    #[test]
    fn while_git_is_busy_nothing_leads_and_the_burst_waits_for_git() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        assert_eq!(d.on_change(Change::Written, b"a.py", t0, true), None, "no leading trigger during a checkout");
        d.on_change(Change::Removed, b"b.py", t0 + ms(5), true);
        assert_eq!(d.poll(t0 + ms(500), true), None, "quiet does not close a burst while git works");
        assert_eq!(d.deadline(true), Some(t0 + GIT_BUSY_CAP));
        d.on_activity(t0 + ms(600)); // index.lock removed
        assert_eq!(d.poll(t0 + ms(620), false), None);
        assert_eq!(files(&d.poll(t0 + ms(630), false)), ["a.py", "b.py"]);
    }

    #[test]
    fn a_checkout_that_outlives_the_cap_is_still_bounded() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        d.on_change(Change::Written, b"a.py", t0, true);
        assert_eq!(d.poll(t0 + ms(4999), true), None);
        assert_eq!(files(&d.poll(t0 + GIT_BUSY_CAP, true)), ["a.py"]);
    }

    #[test]
    fn a_rescan_waits_for_git_and_goes_out_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        d.on_change(Change::Written, b"a.py", t0, true);
        d.on_rescan(t0 + ms(10));
        assert_eq!(d.poll(t0 + ms(100), true), None, "not during a checkout");
        let trailing = d.poll(t0 + ms(100), false).unwrap();
        assert_eq!((trailing.files, trailing.reason), (vec!["a.py".to_string()], "rescan"));
        d.on_rescan(t0 + ms(200));
        assert_eq!(d.poll(t0 + ms(230), false).unwrap().files, Vec::<String>::new(), "a lone rescan still triggers");
    }

    proptest::proptest! {
        /// Any storm of changes, each within the quiet time of the last and all within the cap,
        /// costs at most two triggers, and every changed file is named in one of them.
        #[test]
        fn a_storm_is_two_triggers_at_most_and_loses_no_file(
            changes in proptest::collection::vec((0u64..29, 0usize..50, proptest::bool::ANY), 1..300),
        ) {
            let t0 = Instant::now();
            let mut d = Debouncer::new(ms(30));
            let (mut now, mut sent) = (t0, Vec::new());
            let mut changed = BTreeSet::new();
            for (gap, file, written) in &changes {
                now += ms(*gap);
                if now.duration_since(t0) >= BURST_CAP {
                    break;
                }
                let path = format!("m{file}.py");
                changed.insert(path.clone());
                let change = if *written { Change::Written } else { Change::Removed };
                sent.extend(d.on_change(change, path.as_bytes(), now, false));
                sent.extend(d.poll(now, false));
            }
            sent.extend(d.poll(now + ms(30), false));
            proptest::prop_assert!(sent.len() <= 2, "{} triggers", sent.len());
            let named: BTreeSet<String> = sent.iter().flat_map(|t| t.files.clone()).collect();
            proptest::prop_assert_eq!(named, changed);
        }
    }

    #[test]
    fn a_flush_hands_over_what_is_pending() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        assert_eq!(d.flush(), None);
        d.on_change(Change::Removed, b"gone.py", t0, false);
        assert_eq!(files(&d.flush()), ["gone.py"]);
        assert_eq!(d.flush(), None, "nothing twice");
    }

    #[test]
    fn a_new_burst_leads_again_after_the_last_one_closed() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(30));
        assert!(d.on_change(Change::Written, b"a.py", t0, false).is_some());
        assert_eq!(d.poll(t0 + ms(30), false), None);
        assert!(d.on_change(Change::Written, b"a.py", t0 + ms(100), false).is_some());
    }
}
