//! Backends: each owns its registrations with the OS and turns what the OS reports into
//! [`Fs`] changes, keyed by the path's bytes. What to make of them (relevance, debounce) is
//! decided elsewhere ([`super::decide`]), from the changes alone.
//!
//! - [`inotify`] (Linux): one watch per directory that can hold a relevant file, registered by
//!   the watcher as it scans; closes tell a completed write from one under way.
//! - [`recursive`]: one watch on the root, as macOS FSEvents and Windows give for free; on Linux
//!   notify's inotify in recursive mode, so the tests run the code path those platforms use.
//! - [`poll`]: reads directories every interval (`--poll`), and covers directories that could
//!   not get a watch because the OS limit was reached.

#[cfg(target_os = "linux")]
pub mod inotify;
pub mod poll;
pub mod recursive;

use crate::relevance::path::{self, Rel};
use crate::relevance::{Kind, kind_of};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// A change as a backend classified it; paths relative to the work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fs {
    /// A file whose write is complete (closed after a write, renamed onto its path, a new link
    /// to a file), or a new file found in a directory that had no watch yet.
    Written(Rel),
    /// A file (or something that may have been a directory) deleted or renamed away.
    Removed(Rel),
    /// A directory appeared (created or renamed in); never a link to one.
    NewDir(Rel),
    /// A directory went away (deleted or renamed away).
    GoneDir(Rel),
    /// The git index was rewritten.
    Index,
    /// `index.lock` appeared or went: git is starting or ending work.
    GitLock,
    /// The OS dropped events: the directories must be scanned again.
    Rescan,
    /// The OS watch limit kept a directory from being watched (reported by a backend that
    /// registers new directories itself); it is to be polled.
    Unwatched(Rel),
}

/// What registering a directory gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Watched (or covered by a recursive watch).
    Watched,
    /// Not there any more (or not a directory, such as a link put in its place): nothing to watch.
    Gone,
    /// The OS limit on watches is reached.
    Limit,
    /// Another error, for people.
    Failed(String),
}

/// Wakes a backend waiting in [`Backend::wait`], from another thread.
pub type Waker = Box<dyn Fn() + Send + 'static>;

/// A source of classified file changes for one work tree.
pub trait Backend: Send {
    /// Its name, as `TOUCHWIRE_WATCH_BACKEND` spells it.
    fn name(&self) -> &'static str;
    /// Registers the directory `rel` (empty: the root). A recursive backend covers every
    /// directory with the root's watch and only notes the others.
    fn add_dir(&mut self, rel: &[u8]) -> Added;
    /// Drops the registrations of `rel` and everything below it (the directory went away).
    fn forget_under(&mut self, rel: &[u8]);
    /// Notes that `rel` exists and is no file (a dangling link, a FIFO): its removal is no change.
    fn not_a_file(&mut self, rel: &[u8]);
    /// Waits up to `timeout` for changes, then appends all that are ready to `out`.
    fn wait(&mut self, timeout: Duration, out: &mut Vec<Fs>) -> anyhow::Result<()>;
    /// A function that ends a [`Backend::wait`] early.
    fn waker(&self) -> Waker;
    /// How many OS watches (or polled directories) it holds.
    fn watches(&self) -> usize;
    /// Every directory it refused has a watch again (the watcher polls none): a backend that
    /// checked each new directory since a refusal may stop checking.
    fn caught_up(&mut self) {}
}

/// Which backend `touchwire watch` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Per-directory inotify on Linux, the recursive backend elsewhere.
    Default,
    /// Per-directory inotify (Linux only).
    Inotify,
    /// One recursive watch on the root.
    Recursive,
    /// Polling every interval.
    Poll(Duration),
}

impl Choice {
    /// The choice named by `TOUCHWIRE_WATCH_BACKEND` (`inotify`, `recursive`; unset or empty:
    /// the default). A hidden switch, for the test suite and for comparing backends.
    pub fn from_env() -> Result<Choice, String> {
        match std::env::var("TOUCHWIRE_WATCH_BACKEND").as_deref() {
            Err(_) | Ok("") => Ok(Choice::Default),
            Ok("inotify") => Ok(Choice::Inotify),
            Ok("recursive") => Ok(Choice::Recursive),
            Ok(other) => Err(format!("TOUCHWIRE_WATCH_BACKEND={other:?}: use inotify or recursive")),
        }
    }
}

/// What a backend needs to know of the tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The work tree's root (canonical).
    pub root: PathBuf,
    /// The git directory (canonical), where `index` and `index.lock` live.
    pub git_dir: PathBuf,
    /// Watched extensions: only such names are worth remembering state for.
    pub extensions: Vec<String>,
}

/// What the OS tells of one file, before it is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// A new directory entry (not a directory).
    Created,
    /// Written to (not yet complete where closes are reported).
    Modified,
    /// A file open for writing was closed: a change only if it was written.
    ClosedWrite,
    /// Renamed onto this path.
    MovedIn,
    /// Renamed away, or deleted.
    Gone,
}

/// Turns raw file events into changes: a write is complete at its close (where the OS reports
/// closes) and only if something was written since it was opened (`touch` opens for writing
/// and writes nothing); a new entry counts only if it is a file or a link to one.
#[derive(Debug)]
pub struct Classifier {
    extensions: Vec<String>,
    /// Whether the OS reports closes (Linux); elsewhere a modify is the completed write.
    closes: bool,
    /// Files written to and not yet closed. Only names with a watched extension, so it is
    /// bounded by the relevant files being written at once.
    dirty: HashSet<Rel>,
    /// Entries with a watched extension that are no file (dangling links, FIFOs): their
    /// removal is no change either.
    not_files: HashSet<Rel>,
}

/// Most entries remembered as no file; beyond it (no real tree has that many Emacs locks) the
/// oldest knowledge is dropped, and a removal may cost one trigger.
const MAX_NOT_FILES: usize = 100_000;

impl Classifier {
    /// A classifier for names with `extensions`; `closes` when the OS reports closes.
    pub fn new(extensions: &[String], closes: bool) -> Classifier {
        Classifier { extensions: extensions.to_vec(), closes, dirty: HashSet::new(), not_files: HashSet::new() }
    }

    /// Notes an entry that is no file (see [`Backend::not_a_file`]).
    pub fn not_a_file(&mut self, rel: &[u8]) {
        if self.not_files.len() >= MAX_NOT_FILES {
            self.not_files.clear();
        }
        self.not_files.insert(rel.to_vec());
    }

    /// The change `raw` on the file `rel` makes, if any; `root` is where `rel` is, to look at
    /// a new entry (one `lstat`, for names with a watched extension only).
    pub fn classify(&mut self, root: &std::path::Path, rel: Rel, raw: Raw) -> Option<Fs> {
        if !path::is_watched_name(&rel, &self.extensions) {
            // Not a name the watcher cares for, but it may be a directory renamed away or in
            // (where the OS does not say that it was a directory).
            return match raw {
                Raw::Gone => Some(Fs::Removed(rel)),
                Raw::MovedIn | Raw::Created if kind_of(&path::join(root, &rel)) == Kind::Dir => Some(Fs::NewDir(rel)),
                _ => None,
            };
        }
        match raw {
            Raw::Created | Raw::MovedIn => {
                self.dirty.remove(&rel);
                let kind = kind_of(&path::join(root, &rel));
                match kind {
                    Kind::File if self.closes && raw == Raw::Created => {
                        // Its write is complete at the close; a hard link (`ln`) gets none.
                        self.not_files.remove(&rel);
                        if is_hard_link(&path::join(root, &rel)) {
                            return Some(Fs::Written(rel));
                        }
                        self.dirty.insert(rel);
                        None
                    }
                    Kind::File | Kind::LinkToFile => {
                        self.not_files.remove(&rel);
                        Some(Fs::Written(rel))
                    }
                    Kind::Dir => Some(Fs::NewDir(rel)),
                    Kind::Other => {
                        self.not_a_file(&rel);
                        None
                    }
                    // Gone before it could be looked at (an Emacs lock made and removed at
                    // once): whatever it was, its removal nets to no change.
                    Kind::Missing => {
                        self.not_a_file(&rel);
                        None
                    }
                }
            }
            Raw::Modified if self.closes => {
                self.dirty.insert(rel);
                None
            }
            Raw::Modified => (!self.not_files.contains(&rel)).then_some(Fs::Written(rel)),
            Raw::ClosedWrite => self.dirty.remove(&rel).then_some(Fs::Written(rel)),
            Raw::Gone => {
                self.dirty.remove(&rel);
                (!self.not_files.remove(&rel)).then_some(Fs::Removed(rel))
            }
        }
    }
}

/// Whether a regular file has more than one name (a new name made by `ln`, which no close follows).
#[cfg(unix)]
fn is_hard_link(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.nlink() > 1)
}

/// Whether a regular file has more than one name (never asked where closes are not reported).
#[cfg(not(unix))]
fn is_hard_link(_path: &std::path::Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_counts_only_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "x").unwrap();
        let mut c = Classifier::new(&["py".into()], true);
        assert_eq!(c.classify(dir.path(), b"a.py".to_vec(), Raw::ClosedWrite), None, "touch: open, close");
        assert_eq!(c.classify(dir.path(), b"a.py".to_vec(), Raw::Modified), None, "not complete yet");
        assert_eq!(c.classify(dir.path(), b"a.py".to_vec(), Raw::ClosedWrite), Some(Fs::Written(b"a.py".to_vec())));
        assert_eq!(c.classify(dir.path(), b"a.py".to_vec(), Raw::ClosedWrite), None, "once");
        // A new file is a change even when nothing is written into it.
        std::fs::write(dir.path().join("b.py"), "").unwrap();
        assert_eq!(c.classify(dir.path(), b"b.py".to_vec(), Raw::Created), None);
        assert_eq!(c.classify(dir.path(), b"b.py".to_vec(), Raw::ClosedWrite), Some(Fs::Written(b"b.py".to_vec())));
    }

    #[cfg(unix)]
    #[test]
    fn a_dangling_link_is_no_file_coming_or_going() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("user@host.1234:1700000000", dir.path().join(".#v.py")).unwrap();
        let mut c = Classifier::new(&["py".into()], true);
        assert_eq!(c.classify(dir.path(), b".#v.py".to_vec(), Raw::Created), None);
        assert_eq!(c.classify(dir.path(), b".#v.py".to_vec(), Raw::Gone), None);
        std::os::unix::fs::symlink("/", dir.path().join("d.py")).unwrap();
        assert_eq!(c.classify(dir.path(), b"d.py".to_vec(), Raw::MovedIn), None, "a link to a directory");
        std::fs::write(dir.path().join("t.py"), "x").unwrap();
        std::os::unix::fs::symlink("t.py", dir.path().join("l.py")).unwrap();
        assert_eq!(c.classify(dir.path(), b"l.py".to_vec(), Raw::Created), Some(Fs::Written(b"l.py".to_vec())));
        assert_eq!(c.classify(dir.path(), b"l.py".to_vec(), Raw::Gone), Some(Fs::Removed(b"l.py".to_vec())));
    }
}
