//! One recursive watch on the root, as macOS FSEvents and Windows give it for free; on Linux
//! notify's inotify in recursive mode (not following links), so that the test suite runs the
//! code path those platforms use. The OS reports the whole tree, ignored trees included: what
//! is relevant is decided downstream, by path.

use super::{Added, Backend, Classifier, Fs, Raw, Tree, Waker};
use crate::relevance::path::{self, Rel};
use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, RecursiveMode, Watcher};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// Where the OS reports closes, a write is complete at its close (see [`Classifier`]).
const CLOSES: bool = cfg!(target_os = "linux");

/// Most events taken in one [`Backend::wait`].
const MAX_EVENTS: usize = 200_000;

/// What reaches the backend's channel.
enum Msg {
    Event(notify::Result<Event>),
    Wake,
}

/// The recursive backend.
pub struct Recursive {
    fs: notify::RecommendedWatcher,
    tree: Tree,
    rx: Receiver<Msg>,
    tx: Sender<Msg>,
    classifier: Classifier,
    /// Whether the root's recursive watch is registered.
    rooted: bool,
    /// The OS refused a watch for a new directory: until every refused one has a watch again
    /// ([`Backend::caught_up`]), a new directory may lack one (the OS watches each on Linux,
    /// and notify stops a batch at its first refusal), so each is watched for itself.
    limited: bool,
}

impl Recursive {
    /// A recursive watcher for `tree` (the root is registered by the first [`Backend::add_dir`]).
    pub fn new(tree: Tree) -> Result<Recursive> {
        let (tx, rx) = channel();
        let handler = tx.clone();
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut fs = notify::RecommendedWatcher::new(
            move |event| {
                let _ = handler.send(Msg::Event(event));
            },
            config,
        )
        .context("cannot start the file watcher")?;
        fs.watch(&tree.git_dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", tree.git_dir.display()))?;
        let classifier = Classifier::new(&tree.extensions, CLOSES);
        Ok(Recursive { fs, tree, rx, tx, classifier, rooted: false, limited: false })
    }

    fn rel(&self, path: &Path) -> Option<Rel> {
        path::relative(&self.tree.root, path)
    }

    fn event(&mut self, event: notify::Result<Event>, out: &mut Vec<Fs>) {
        let event = match event {
            Ok(event) => event,
            Err(notify::Error { kind: notify::ErrorKind::MaxFilesWatch, paths }) => {
                // notify stops registering that batch of new directories at the first refusal.
                self.limited = true;
                out.extend(paths.iter().filter_map(|p| self.rel(p)).map(Fs::Unwatched));
                return;
            }
            // Anything else notify reports: a change may be lost.
            Err(_) => {
                out.push(Fs::Rescan);
                return;
            }
        };
        if event.need_rescan() {
            out.push(Fs::Rescan);
            return;
        }
        for p in &event.paths {
            if p.parent() == Some(self.tree.git_dir.as_path()) {
                match p.file_name().map(path::bytes) {
                    Some(b"index")
                        if matches!(
                            event.kind,
                            EventKind::Access(AccessKind::Close(AccessMode::Write))
                                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
                        ) || (!CLOSES && matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_))) =>
                    {
                        out.push(Fs::Index)
                    }
                    Some(b"index.lock")
                        if matches!(
                            event.kind,
                            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                        ) =>
                    {
                        out.push(Fs::GitLock)
                    }
                    _ => {}
                }
                continue;
            }
            let Some(rel) = self.rel(p) else { continue };
            let raw = match event.kind {
                EventKind::Create(CreateKind::Folder) => {
                    out.push(Fs::NewDir(rel));
                    continue;
                }
                EventKind::Remove(RemoveKind::Folder) => {
                    out.push(Fs::GoneDir(rel));
                    continue;
                }
                EventKind::Create(_) => Raw::Created,
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Raw::ClosedWrite,
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Raw::MovedIn,
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Raw::Gone,
                // FSEvents and Windows may not say which end of a rename a path is: look.
                EventKind::Modify(ModifyKind::Name(RenameMode::Any)) => {
                    if p.symlink_metadata().is_ok() {
                        Raw::MovedIn
                    } else {
                        Raw::Gone
                    }
                }
                EventKind::Modify(ModifyKind::Name(_)) | EventKind::Modify(ModifyKind::Metadata(_)) => continue,
                EventKind::Modify(_) => Raw::Modified,
                EventKind::Remove(_) => Raw::Gone,
                _ => continue,
            };
            out.extend(self.classifier.classify(&self.tree.root, rel, raw));
        }
    }
}

impl Backend for Recursive {
    fn name(&self) -> &'static str {
        "recursive"
    }

    fn add_dir(&mut self, rel: &[u8]) -> Added {
        if !self.rooted || self.limited {
            let dir = path::join(&self.tree.root, rel);
            // The root once; then, after the OS refused a watch, a directory that may lack one.
            match self.fs.watch(&dir, RecursiveMode::Recursive) {
                // Not the end of the limit: other directories may still lack their watch.
                Ok(()) => self.rooted = true,
                Err(notify::Error { kind: notify::ErrorKind::MaxFilesWatch, .. }) => return Added::Limit,
                Err(notify::Error { kind: notify::ErrorKind::PathNotFound, .. }) => return Added::Gone,
                Err(err) => return Added::Failed(format!("cannot watch {}: {err}", dir.display())),
            }
        }
        Added::Watched
    }

    fn caught_up(&mut self) {
        self.limited = false;
    }

    fn forget_under(&mut self, _rel: &[u8]) {
        // The OS drops the watches of a directory that went away; the root's watch stays.
    }

    fn not_a_file(&mut self, rel: &[u8]) {
        self.classifier.not_a_file(rel);
    }

    fn wait(&mut self, timeout: Duration, out: &mut Vec<Fs>) -> Result<()> {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the file watcher stopped"),
        };
        let mut next = Some(first);
        for _ in 0..MAX_EVENTS {
            match next.take() {
                Some(Msg::Event(event)) => self.event(event, out),
                Some(Msg::Wake) => {}
                None => break,
            }
            next = self.rx.try_recv().ok();
        }
        Ok(())
    }

    fn waker(&self) -> Waker {
        let tx = self.tx.clone();
        Box::new(move || {
            let _ = tx.send(Msg::Wake);
        })
    }

    fn watches(&self) -> usize {
        // The root and the git directory (the OS may hold more below the root on Linux).
        usize::from(self.rooted) + 1
    }
}
