//! Per-directory inotify (Linux). The watcher registers each directory that can hold a
//! relevant file as it scans; this backend never follows a symbolic link (`IN_DONT_FOLLOW` with
//! `IN_ONLYDIR`: a link put where a directory was is refused, not resolved), says which
//! directory the watch limit refused (`ENOSPC`), and reports modifies apart from closes, so a
//! `touch` (an open for writing, closed without a write) is no change.
//!
//! It runs on the watcher's own thread: `wait` polls the inotify descriptor and a socket that
//! the waker writes to, so no thread of its own is needed.

use super::{Added, Backend, Classifier, Fs, Raw, Tree, Waker};
use crate::relevance::path::{self, Rel};
use anyhow::{Context, Result};
use inotify::{EventMask, Inotify as Fd, WatchDescriptor, WatchMask};
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// Most events taken in one [`Backend::wait`]: a checkout arrives as a flood, and a bound keeps
/// one step short.
const MAX_EVENTS: usize = 200_000;

/// The per-directory inotify backend.
pub struct Inotify {
    fd: Fd,
    tree: Tree,
    git_wd: Option<WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, Rel>,
    /// Ordered, so that a directory's subtree is one range.
    by_path: BTreeMap<Rel, WatchDescriptor>,
    classifier: Classifier,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    buffer: Vec<u8>,
}

/// What a directory watch asks for: every way a file's content or name changes, and never
/// through a link; and the directory's own move or deletion, which wakes the watcher to find its
/// work tree gone (the events carry no name, and nothing else is done with them).
fn dir_mask() -> WatchMask {
    WatchMask::MOVE_SELF
        | WatchMask::DELETE_SELF
        | WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

impl Inotify {
    /// An inotify instance for `tree`, with its git directory watched.
    pub fn new(tree: Tree) -> Result<Inotify> {
        let fd = Fd::init().context("cannot start inotify")?;
        let (wake_rx, wake_tx) = UnixStream::pair().context("cannot make the watcher's wake-up socket")?;
        wake_rx.set_nonblocking(true).context("cannot make the watcher's wake-up socket")?;
        wake_tx.set_nonblocking(true).context("cannot make the watcher's wake-up socket")?;
        let classifier = Classifier::new(&tree.extensions, true);
        let mut backend = Inotify {
            fd,
            tree,
            git_wd: None,
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
            classifier,
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            buffer: vec![0; 64 * 1024],
        };
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::ONLYDIR;
        let wd = backend.fd.watches().add(&backend.tree.git_dir, mask).map_err(|err| {
            if err.raw_os_error() == Some(libc::ENOSPC) {
                anyhow::anyhow!("{}", super::super::limit_message())
            } else {
                anyhow::anyhow!("cannot watch {}: {err}", backend.tree.git_dir.display())
            }
        })?;
        backend.git_wd = Some(wd);
        Ok(backend)
    }

    fn event(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&std::ffi::OsStr>, out: &mut Vec<Fs>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            out.push(Fs::Rescan);
            return;
        }
        if Some(wd) == self.git_wd.as_ref() {
            match name.map(path::bytes) {
                Some(b"index") if mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) => out.push(Fs::Index),
                Some(b"index.lock") => out.push(Fs::GitLock),
                _ => {}
            }
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            // The watch is gone (its directory deleted, or unwatched): forget it.
            if let Some(rel) = self.by_wd.remove(wd)
                && self.by_path.get(&rel) == Some(wd)
            {
                self.by_path.remove(&rel);
            }
            return;
        }
        let (Some(dir), Some(name)) = (self.by_wd.get(wd), name) else { return };
        let rel = path::child(dir, path::bytes(name));
        // ISDIR is the entry's own type: a link to a directory is a file here, never followed.
        if mask.contains(EventMask::ISDIR) {
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                out.push(Fs::NewDir(rel));
            } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                out.push(Fs::GoneDir(rel));
            }
            return;
        }
        let raw = if mask.contains(EventMask::MOVED_TO) {
            Raw::MovedIn
        } else if mask.contains(EventMask::CREATE) {
            Raw::Created
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            Raw::Gone
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            Raw::ClosedWrite
        } else if mask.contains(EventMask::MODIFY) {
            Raw::Modified
        } else {
            return;
        };
        out.extend(self.classifier.classify(&self.tree.root, rel, raw));
    }
}

impl Backend for Inotify {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn add_dir(&mut self, rel: &[u8]) -> Added {
        if self.by_path.contains_key(rel) {
            return Added::Watched;
        }
        let dir = path::join(&self.tree.root, rel);
        match self.fd.watches().add(&dir, dir_mask()) {
            Ok(wd) => {
                // The same directory under another name (renamed, and its old name not yet
                // reported gone): the new name wins, the directory is watched once.
                if let Some(old) = self.by_wd.insert(wd.clone(), rel.to_vec())
                    && old != rel
                {
                    self.by_path.remove(&old);
                }
                self.by_path.insert(rel.to_vec(), wd);
                Added::Watched
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => Added::Limit,
            // Gone, or a link (or a file) put in its place: nothing to watch.
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Added::Gone,
            Err(err) => Added::Failed(format!("cannot watch {}: {err}", dir.display())),
        }
    }

    fn forget_under(&mut self, rel: &[u8]) {
        let under: Vec<Rel> = self
            .by_path
            .range(rel.to_vec()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| path::is_under(p, rel))
            .cloned()
            .collect();
        for dir in under {
            if let Some(wd) = self.by_path.remove(&dir) {
                self.by_wd.remove(&wd);
                // Fails when the kernel dropped the watch already (the directory deleted).
                let _ = self.fd.watches().remove(wd);
            }
        }
    }

    fn not_a_file(&mut self, rel: &[u8]) {
        self.classifier.not_a_file(rel);
    }

    fn wait(&mut self, timeout: Duration, out: &mut Vec<Fs>) -> Result<()> {
        let mut fds = [
            libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.wake_rx.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll(2) on two descriptors this backend owns, with the array's true length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err).context("cannot wait for inotify events");
        }
        if fds[1].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        let mut taken = 0;
        let mut buffer = std::mem::take(&mut self.buffer);
        while taken < MAX_EVENTS {
            let events = match self.fd.read_events(&mut buffer) {
                Ok(events) => events,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.buffer = buffer;
                    return Err(err).context("cannot read inotify events");
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                taken += 1;
                self.event(&event.wd, event.mask, event.name, out);
            }
            if !any {
                break;
            }
        }
        self.buffer = buffer;
        Ok(())
    }

    fn waker(&self) -> Waker {
        let tx = Arc::clone(&self.wake_tx);
        // A full socket already holds a wake-up: a failed write loses nothing.
        Box::new(move || {
            let _ = (&*tx).write(&[1]);
        })
    }

    fn watches(&self) -> usize {
        self.by_path.len() + usize::from(self.git_wd.is_some())
    }
}
