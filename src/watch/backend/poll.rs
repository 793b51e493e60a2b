//! Polling: each registered directory is read every interval and compared with what it held.
//! Used for `watch --poll` (file systems without events), and for the directories the OS
//! watch limit left without a watch.
//!
//! It reads regular files only: an entry is looked at with `lstat`, never through a link, and
//! a file is opened non-blocking and without following links, checked to be a regular file once
//! open, and read in bounded chunks. So a FIFO named `x.py` or a link to `/dev/zero` costs
//! nothing. Contents are hashed because an mtime alone cannot tell a save from a `touch`.

use super::{Added, Backend, Fs, Tree, Waker};
use crate::relevance::path::{self, Rel};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::io::Read;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime};

/// Read size when hashing a file.
const CHUNK: usize = 64 * 1024;
/// Most bytes of one file hashed; beyond it the size and mtime stand for the rest.
const MAX_HASHED: u64 = 64 * 1024 * 1024;
/// Most entries looked at in one directory per round.
const MAX_ENTRIES: usize = 100_000;

/// What a polled entry was when last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A regular file: its metadata, and its content's hash.
    File { len: u64, mtime: Option<SystemTime>, ino: u64, hash: u64 },
    /// A symbolic link: where it points, and whether that is a regular file.
    Link { target: Vec<u8>, to_file: bool },
    /// A directory.
    Dir,
}

/// The state of the directories polled.
#[derive(Debug, Default)]
pub struct Poller {
    extensions: Vec<String>,
    /// Per directory (relative), its entries by name.
    dirs: BTreeMap<Rel, HashMap<Rel, Seen>>,
}

impl Poller {
    /// A poller for names with `extensions`.
    pub fn new(extensions: &[String]) -> Poller {
        Poller { extensions: extensions.to_vec(), dirs: BTreeMap::new() }
    }

    /// Whether no directory is polled.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// How many directories are polled.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether `rel` is polled.
    pub fn contains(&self, rel: &[u8]) -> bool {
        self.dirs.contains_key(rel)
    }

    /// The directories polled, in order.
    pub fn dirs(&self) -> impl Iterator<Item = &Rel> {
        self.dirs.keys()
    }

    /// Starts polling `rel`, remembering what it holds now.
    pub fn add(&mut self, root: &std::path::Path, rel: &[u8]) -> Added {
        if self.dirs.contains_key(rel) {
            return Added::Watched;
        }
        match self.read(root, rel, None) {
            Some(entries) => {
                self.dirs.insert(rel.to_vec(), entries);
                Added::Watched
            }
            None => Added::Gone,
        }
    }

    /// Stops polling `rel` and every directory below it.
    pub fn forget_under(&mut self, rel: &[u8]) {
        let under: Vec<Rel> = self
            .dirs
            .range(rel.to_vec()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| path::is_under(p, rel))
            .cloned()
            .collect();
        for dir in under {
            self.dirs.remove(&dir);
        }
    }

    /// Stops polling `rel` alone, after one last look (it has a watch now: what changed before
    /// the watch existed is reported here).
    pub fn finish(&mut self, root: &std::path::Path, rel: &[u8], out: &mut Vec<Fs>) {
        self.poll_dir(root, rel, out);
        self.dirs.remove(rel);
    }

    /// Reads every polled directory and reports what changed since the last round.
    pub fn poll(&mut self, root: &std::path::Path, out: &mut Vec<Fs>) {
        let dirs: Vec<Rel> = self.dirs.keys().cloned().collect();
        for dir in dirs {
            self.poll_dir(root, &dir, out);
        }
    }

    fn poll_dir(&mut self, root: &std::path::Path, dir: &[u8], out: &mut Vec<Fs>) {
        let Some(old) = self.dirs.get(dir) else { return };
        let Some(new) = self.read(root, dir, Some(old)) else {
            // The directory went away; its parent's round (or watch) reports it.
            self.dirs.remove(dir);
            return;
        };
        for (name, seen) in &new {
            let rel = path::child(dir, name);
            match (old.get(name), seen) {
                (Some(before), now) if before == now => {}
                // The content alone tells a save from a touch.
                (Some(Seen::File { hash: before, .. }), Seen::File { hash: now, .. }) if before == now => {}
                (None | Some(Seen::File { .. } | Seen::Link { .. }), Seen::Dir) => out.push(Fs::NewDir(rel)),
                (_, Seen::File { .. } | Seen::Link { to_file: true, .. }) => out.push(Fs::Written(rel)),
                (Some(Seen::File { .. } | Seen::Link { to_file: true, .. }), Seen::Link { to_file: false, .. }) => {
                    out.push(Fs::Removed(rel))
                }
                _ => {}
            }
        }
        for (name, before) in old {
            if !new.contains_key(name) {
                let rel = path::child(dir, name);
                match before {
                    Seen::Dir => out.push(Fs::GoneDir(rel)),
                    Seen::File { .. } | Seen::Link { to_file: true, .. } => out.push(Fs::Removed(rel)),
                    Seen::Link { .. } => {}
                }
            }
        }
        self.dirs.insert(dir.to_vec(), new);
    }

    /// What `dir` holds now: its directories, and its files and links with a watched extension
    /// (a file's hash is computed again only when its metadata changed since `old`).
    fn read(&self, root: &std::path::Path, dir: &[u8], old: Option<&HashMap<Rel, Seen>>) -> Option<HashMap<Rel, Seen>> {
        let abs = path::join(root, dir);
        let entries = std::fs::read_dir(&abs).ok()?;
        let mut seen = HashMap::new();
        for entry in entries.flatten().take(MAX_ENTRIES) {
            let name = path::bytes(&entry.file_name()).to_vec();
            // The entry's own type: never what a link points to.
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                seen.insert(name, Seen::Dir);
                continue;
            }
            if !path::is_watched_name(&name, &self.extensions) {
                continue;
            }
            let full = entry.path();
            let state = if kind.is_symlink() {
                let Ok(target) = std::fs::read_link(&full) else { continue };
                let to_file = std::fs::metadata(&full).is_ok_and(|m| m.is_file());
                Seen::Link { target: path::bytes(target.as_os_str()).to_vec(), to_file }
            } else if kind.is_file() {
                let Ok(meta) = std::fs::symlink_metadata(&full) else { continue };
                let (len, mtime, ino) = (meta.len(), meta.modified().ok(), inode(&meta));
                match old.and_then(|o| o.get(&name)) {
                    Some(prev @ Seen::File { len: l, mtime: m, ino: i, .. }) if (*l, *m, *i) == (len, mtime, ino) => {
                        prev.clone()
                    }
                    _ => {
                        let Some(hash) = hash_file(&full) else { continue };
                        Seen::File { len, mtime, ino, hash }
                    }
                }
            } else {
                // A FIFO, a socket, a device: never opened.
                continue;
            };
            seen.insert(name, state);
        }
        Some(seen)
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Opens a file for reading without blocking and without following a link (on Unix).
#[cfg(unix)]
fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path)
}

/// Opens a file for reading (Windows opens neither FIFOs nor devices by a file's name).
#[cfg(not(unix))]
fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// A hash of a regular file's content (its first [`MAX_HASHED`] bytes and its size), read in
/// chunks; `None` when it cannot be read or is no regular file once open.
fn hash_file(path: &std::path::Path) -> Option<u64> {
    let file = open_file(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write_u64(meta.len());
    let mut reader = file.take(MAX_HASHED);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => hasher.write(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            // Unreadable mid-way (a file system error): what was read stands for it.
            Err(_) => break,
        }
    }
    Some(hasher.finish())
}

/// The git directory's state, as the polling backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GitSeen {
    index: Option<(u64, Option<SystemTime>, u64)>,
    lock: bool,
}

fn git_seen(git_dir: &std::path::Path) -> GitSeen {
    let index = std::fs::metadata(git_dir.join("index")).ok().map(|m| (m.len(), m.modified().ok(), inode(&m)));
    GitSeen { index, lock: git_dir.join("index.lock").exists() }
}

/// The polling backend (`watch --poll`).
pub struct Poll {
    tree: Tree,
    poller: Poller,
    interval: Duration,
    next: Instant,
    git: GitSeen,
    rx: Receiver<()>,
    tx: Sender<()>,
}

impl Poll {
    /// A backend that polls every `interval`.
    pub fn new(tree: Tree, interval: Duration) -> Poll {
        let (tx, rx) = channel();
        let poller = Poller::new(&tree.extensions);
        let git = git_seen(&tree.git_dir);
        Poll { tree, poller, interval, next: Instant::now() + interval, git, rx, tx }
    }
}

impl Backend for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn add_dir(&mut self, rel: &[u8]) -> Added {
        self.poller.add(&self.tree.root, rel)
    }

    fn forget_under(&mut self, rel: &[u8]) {
        self.poller.forget_under(rel);
    }

    fn not_a_file(&mut self, _rel: &[u8]) {
        // The poller knows each entry's type itself.
    }

    fn wait(&mut self, timeout: Duration, out: &mut Vec<Fs>) -> anyhow::Result<()> {
        let until_round = self.next.saturating_duration_since(Instant::now());
        if until_round > Duration::ZERO {
            match self.rx.recv_timeout(until_round.min(timeout)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            if Instant::now() < self.next {
                return Ok(());
            }
        }
        self.next = Instant::now() + self.interval;
        let git = git_seen(&self.tree.git_dir);
        if git.lock != self.git.lock {
            out.push(Fs::GitLock);
        }
        if git.index != self.git.index {
            out.push(Fs::Index);
        }
        self.git = git;
        self.poller.poll(&self.tree.root, out);
        Ok(())
    }

    fn waker(&self) -> Waker {
        let tx = self.tx.clone();
        Box::new(move || {
            let _ = tx.send(());
        })
    }

    fn watches(&self) -> usize {
        self.poller.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn fifos_devices_and_links_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let fifo = std::ffi::CString::new(root.join("x.py").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.py")).unwrap();
        std::fs::write(root.join("a.py"), "A = 1\n").unwrap();
        let mut poller = Poller::new(&["py".into()]);
        // Returns at all: neither the FIFO (no writer) nor /dev/zero (endless) was read.
        assert_eq!(poller.add(root, b""), Added::Watched);
        let mut out = Vec::new();
        std::fs::write(root.join("a.py"), "A = 2\n").unwrap();
        poller.poll(root, &mut out);
        assert_eq!(out, [Fs::Written(b"a.py".to_vec())]);
        assert_eq!(hash_file(&root.join("x.py")), None, "a FIFO opened non-blocking is refused");
    }

    #[test]
    fn a_touch_is_no_change_but_a_same_length_edit_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.py"), "teh\n").unwrap();
        let mut poller = Poller::new(&["py".into()]);
        poller.add(root, b"");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(root.join("a.py")).unwrap().set_modified(later).unwrap();
        let mut out = Vec::new();
        poller.poll(root, &mut out);
        assert_eq!(out, []);
        std::fs::write(root.join("a.py"), "the\n").unwrap();
        poller.poll(root, &mut out);
        assert_eq!(out, [Fs::Written(b"a.py".to_vec())]);
        std::fs::remove_file(root.join("a.py")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        out.clear();
        poller.poll(root, &mut out);
        out.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(out, [Fs::NewDir(b"sub".to_vec()), Fs::Removed(b"a.py".to_vec())]);
    }
}
