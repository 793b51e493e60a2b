//! What to send, decided from one step's classified changes and a snapshot of the world taken
//! once for the step (is git busy, what time is it). Pure like [`super::debounce`]: no file
//! system, so every rule is tested with made-up changes.

use super::backend::Fs;
use super::debounce::{Change, Debouncer, Trigger};
use crate::relevance::path::Rel;
use std::time::Instant;

/// What the decisions need to know of relevance (the [`crate::relevance::Filter`], or a stand-in).
pub trait Relevance {
    /// Whether the file `rel` (existing or deleted) is relevant.
    fn relevant(&self, rel: &[u8]) -> bool;
    /// The relevant tracked files below the directory `rel` (it went away, and took them along).
    fn tracked_under(&self, rel: &[u8]) -> Vec<Rel>;
}

impl Relevance for crate::relevance::Filter {
    fn relevant(&self, rel: &[u8]) -> bool {
        self.is_relevant(rel)
    }

    fn tracked_under(&self, rel: &[u8]) -> Vec<Rel> {
        self.tracked_relevant_under(rel)
    }
}

/// The world as it was when the step's changes were taken: sampled once per step, so that a
/// storm of events costs one look at `index.lock`, not one per path.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Now.
    pub now: Instant,
    /// `index.lock` exists: git is rewriting the tree.
    pub git_busy: bool,
}

/// Feeds one step's changes to the debouncer and returns the triggers due now.
pub fn decide(changes: &[Fs], at: Snapshot, relevance: &impl Relevance, debouncer: &mut Debouncer) -> Vec<Trigger> {
    let mut triggers = Vec::new();
    let Snapshot { now, git_busy } = at;
    for change in changes {
        match change {
            Fs::Written(rel) if relevance.relevant(rel) => {
                triggers.extend(debouncer.on_change(Change::Written, rel, now, git_busy))
            }
            Fs::Removed(rel) if relevance.relevant(rel) => {
                triggers.extend(debouncer.on_change(Change::Removed, rel, now, git_busy))
            }
            Fs::GoneDir(rel) => {
                for file in relevance.tracked_under(rel) {
                    triggers.extend(debouncer.on_change(Change::Removed, &file, now, git_busy));
                }
            }
            Fs::Index | Fs::GitLock => debouncer.on_activity(now),
            Fs::Rescan => debouncer.on_rescan(now),
            _ => {}
        }
    }
    triggers.extend(debouncer.poll(now, git_busy));
    triggers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `*.py` outside `venv/` is relevant; `app/` holds two tracked files.
    struct Fake;

    impl Relevance for Fake {
        fn relevant(&self, rel: &[u8]) -> bool {
            rel.ends_with(b".py") && !rel.starts_with(b"venv/")
        }
        fn tracked_under(&self, rel: &[u8]) -> Vec<Rel> {
            if rel == b"app" { vec![b"app/a.py".to_vec(), b"app/b.py".to_vec()] } else { vec![] }
        }
    }

    fn at(now: Instant, git_busy: bool) -> Snapshot {
        Snapshot { now, git_busy }
    }

    #[test]
    fn a_relevant_write_leads_and_the_rest_trails() {
        let (t0, mut d) = (Instant::now(), Debouncer::new(Duration::from_millis(30)));
        let changes =
            [Fs::Written(b"caf\xe9.py".to_vec()), Fs::Written(b"venv/x.py".to_vec()), Fs::NewDir(b"n".to_vec())];
        let sent = decide(&changes, at(t0, false), &Fake, &mut d);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].files, ["caf\u{fffd}.py"], "lossy on the wire, for the log");
        let sent = decide(&[Fs::GoneDir(b"app".to_vec())], at(t0, false), &Fake, &mut d);
        assert!(sent.is_empty());
        let sent = decide(&[], at(t0 + Duration::from_millis(31), false), &Fake, &mut d);
        assert_eq!(sent[0].files, ["app/a.py", "app/b.py"]);
    }

    #[test]
    fn while_git_is_busy_nothing_leads() {
        let (t0, mut d) = (Instant::now(), Debouncer::new(Duration::from_millis(30)));
        assert!(decide(&[Fs::Written(b"a.py".to_vec())], at(t0, true), &Fake, &mut d).is_empty());
        assert!(decide(&[Fs::GitLock], at(t0 + Duration::from_millis(100), false), &Fake, &mut d).is_empty());
        let sent = decide(&[], at(t0 + Duration::from_millis(130), false), &Fake, &mut d);
        assert_eq!(sent[0].files, ["a.py"]);
    }

    #[test]
    fn a_rescan_is_one_trigger_even_without_a_file() {
        let (t0, mut d) = (Instant::now(), Debouncer::new(Duration::from_millis(30)));
        assert!(decide(&[Fs::Rescan], at(t0, false), &Fake, &mut d).is_empty());
        let sent = decide(&[], at(t0 + Duration::from_millis(30), false), &Fake, &mut d);
        assert_eq!(sent[0].reason, "rescan");
    }
}
