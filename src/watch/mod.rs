//! The host watcher: notify events from a git work tree, filtered to relevant files, debounced
//! into triggers. Delivery to the guests lives in [`delivery`]; the `watch` command in [`start`].

pub mod debounce;
pub mod delivery;
pub mod filter;
pub mod scan;
pub mod start;

use crate::output::Log;
use anyhow::{Context, Result, anyhow, bail};
use debounce::{Change, Debouncer, Trigger};
use filter::Filter;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, MetadataKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, RecursiveMode};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// More directories than any real work tree has; a bound on every scan.
const MAX_DIRS: usize = 1_000_000;

/// What the watcher needs, resolved from config and flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// A directory inside the work tree.
    pub dir: PathBuf,
    /// Watched extensions, without dots.
    pub extensions: Vec<String>,
    /// Only tracked files are relevant.
    pub tracked_only: bool,
    /// Quiet time that closes a burst.
    pub debounce: Duration,
    /// Poll every this often instead of using the OS's events.
    pub poll: Option<Duration>,
    /// Where events go.
    pub log: Log,
}

/// How a file event counts, before relevance is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A completed write (or a new path, e.g. renamed into place).
    Written,
    /// A deletion, or renamed away.
    Removed,
    /// A newer mtime, all the polling watcher can tell: a change only if the content changed.
    Touched,
    /// A new directory to watch.
    NewDir,
    /// A directory went away.
    GoneDir,
    /// Not a change of content: opens, reads, metadata, and on Linux a write not yet closed.
    Ignore,
}

/// Classifies a notify event kind. With `close_events` (inotify) a write is complete at its
/// close, so a bare modify is not yet a change; without them (polling, other OSes) it is.
pub fn classify(kind: &EventKind, close_events: bool) -> Class {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Class::Written,
        EventKind::Create(CreateKind::Folder) => Class::NewDir,
        EventKind::Create(_) if !close_events => Class::Written,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Class::Written,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Class::Removed,
        // inotify reports a rename as From, To and Both: From and To already tell it all.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Class::Ignore,
        // The polling watcher reports a newer mtime this way, and cannot tell more.
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)) if !close_events => Class::Touched,
        EventKind::Modify(ModifyKind::Metadata(_)) => Class::Ignore,
        EventKind::Modify(_) if !close_events => Class::Written,
        EventKind::Remove(RemoveKind::Folder) => Class::GoneDir,
        EventKind::Remove(_) => Class::Removed,
        _ => Class::Ignore,
    }
}

/// The OS watches registered, by path.
struct Watches {
    fs: Box<dyn notify::Watcher + Send>,
    watched: HashSet<PathBuf>,
}

impl Watches {
    fn add(&mut self, path: &Path, mode: RecursiveMode) -> Result<()> {
        if self.watched.contains(path) {
            return Ok(());
        }
        match self.fs.watch(path, mode) {
            Ok(()) => {
                self.watched.insert(path.to_path_buf());
                Ok(())
            }
            // Gone between the scan and the watch: nothing to watch.
            Err(notify::Error { kind: notify::ErrorKind::PathNotFound, .. }) => Ok(()),
            Err(notify::Error { kind: notify::ErrorKind::MaxFilesWatch, .. }) => bail!(
                "the OS limit on inotify watches is reached ({} watched so far): raise fs.inotify.max_user_watches, \
                 e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/ to keep it), \
                 or run `touchwire watch --poll`",
                self.watched.len()
            ),
            Err(err) => Err(anyhow!("cannot watch {}: {err}", path.display())),
        }
    }

    /// Forgets `path` and everything below it (the directory went away).
    fn remove_under(&mut self, path: &Path) {
        if self.watched.remove(path) {
            let _ = self.fs.unwatch(path);
        }
        self.watched.retain(|p| !p.starts_with(path));
    }
}

/// A running watch of one work tree.
pub struct Watcher {
    filter: Filter,
    git_dir: PathBuf,
    watches: Watches,
    events: Receiver<notify::Result<Event>>,
    debouncer: Debouncer,
    close_events: bool,
    recursive: bool,
    /// Content hashes of files seen changing, where only mtimes are reported (polling): a
    /// touch alone must not count as a change.
    hashes: HashMap<String, u64>,
    stale_lock_warned: bool,
    /// The work tree's root directory (device, inode): a root moved away or replaced ends the watch.
    root_id: (u64, u64),
    /// Another sender into the event channel, so a stop request can wake [`Watcher::step`].
    waker: std::sync::mpsc::Sender<notify::Result<Event>>,
    log: Log,
}

impl Watcher {
    /// Opens the repository, registers the watches and reports how many.
    pub fn start(options: &Options) -> Result<Watcher> {
        let opened = Instant::now();
        let filter = Filter::open(&options.dir, &options.extensions, options.tracked_only)?;
        options.log.debug(&format!("repository and index read in {} ms", opened.elapsed().as_millis()));
        let git_dir = filter.git_dir().canonicalize().context("cannot resolve the git directory")?;
        let root_id = dir_id(filter.workdir())
            .with_context(|| format!("cannot read the work tree {}", filter.workdir().display()))?;
        let (tx, events) = channel();
        let waker = tx.clone();
        let (fs, close_events, recursive): (Box<dyn notify::Watcher + Send>, bool, bool) = match options.poll {
            Some(interval) => {
                // mtimes are compared in whole seconds: only the content tells two saves in one second apart.
                let config = notify::Config::default().with_poll_interval(interval).with_compare_contents(true);
                let fs = notify::PollWatcher::new(tx, config).context("cannot start the polling watcher")?;
                // Polled per relevant directory, like inotify: ignored trees are never read.
                (Box::new(fs), false, false)
            }
            None => {
                let fs = notify::recommended_watcher(tx).context("cannot start the file watcher")?;
                // inotify watches one directory at a time and reports closes; FSEvents and
                // Windows watch a whole tree for free but report no closes.
                let linux = cfg!(target_os = "linux");
                (Box::new(fs), linux, !linux)
            }
        };
        let mut watcher = Watcher {
            filter,
            git_dir,
            watches: Watches { fs, watched: HashSet::new() },
            events,
            debouncer: Debouncer::new(options.debounce),
            close_events,
            recursive,
            hashes: HashMap::new(),
            stale_lock_warned: false,
            root_id,
            waker,
            log: options.log,
        };
        let root = watcher.filter.workdir().display().to_string();
        watcher.log.event("scanning", &format!("scanning {root} ..."), json!({"root": root}));
        let start = Instant::now();
        // Without close events a touch looks like a write: know every file's content first.
        let mut seed = Vec::new();
        let keep = !watcher.close_events;
        let relevant = watcher
            .watch_whole_tree(|rel| {
                if keep {
                    seed.push(rel)
                }
            })?
            .files;
        for rel in seed {
            let path = watcher.filter.workdir().join(&rel);
            watcher.content_changed(&rel, &path);
        }
        let git_dir = watcher.git_dir.clone();
        watcher.watches.add(&git_dir, RecursiveMode::NonRecursive)?;
        let dirs = watcher.watches.watched.len();
        let ms = start.elapsed().as_millis() as u64;
        let line = format!("watching {dirs} directories ({relevant} files relevant) in {root}, ready in {ms} ms");
        watcher.log.event("ready", &line, json!({"root": root, "dirs": dirs, "relevant": relevant, "ms": ms}));
        Ok(watcher)
    }

    /// A function that wakes a waiting [`Watcher::step`] from another thread (with an event it ignores).
    pub fn waker(&self) -> impl Fn() + Send + 'static {
        let waker = self.waker.clone();
        move || {
            let _ = waker.send(Ok(Event::new(EventKind::Other)));
        }
    }

    /// Ends the open burst now: its pending changes as one trigger, if any (for a clean stop).
    pub fn flush(&mut self) -> Option<Trigger> {
        self.debouncer.flush()
    }

    /// The work tree's root.
    pub fn root(&self) -> &Path {
        self.filter.workdir()
    }

    /// Watches `rel` and every directory below it that can hold a relevant file, each before
    /// it is read; returns the relevant files found.
    fn watch_tree(&mut self, rel: &str) -> Result<Vec<String>> {
        let root = self.filter.workdir().to_path_buf();
        let mut files = Vec::new();
        if self.recursive {
            if rel.is_empty() {
                self.watches.add(&root, RecursiveMode::Recursive)?;
            }
            scan::scan(&self.filter, rel, MAX_DIRS, |_| Ok(()), |f| files.push(f))?;
            return Ok(files);
        }
        let watches = &mut self.watches;
        let add = |dir: &str| watches.add(&root.join(dir), RecursiveMode::NonRecursive);
        scan::scan(&self.filter, rel, MAX_DIRS, add, |f| files.push(f))?;
        Ok(files)
    }

    /// The first scan of the whole tree, with the watches registered on a second thread while
    /// this one reads directories: each registration is a round trip to notify's thread, and
    /// overlapping the two halves the time to ready on a large tree.
    fn watch_whole_tree(&mut self, mut file: impl FnMut(String)) -> Result<scan::Scan> {
        let root = self.filter.workdir().to_path_buf();
        if self.recursive {
            self.watches.add(&root, RecursiveMode::Recursive)?;
            return scan::scan(&self.filter, "", MAX_DIRS, |_| Ok(()), file);
        }
        let (filter, watches) = (&self.filter, &mut self.watches);
        std::thread::scope(|scope| {
            let (tx, rx) = channel::<PathBuf>();
            let registrar = scope.spawn(move || -> Result<()> {
                for path in rx {
                    watches.add(&path, RecursiveMode::NonRecursive)?;
                }
                Ok(())
            });
            let send = |dir: &str| {
                // A failed send means the registrar stopped on an error, which join() returns.
                let _ = tx.send(root.join(dir));
                Ok(())
            };
            let found = scan::scan(filter, "", MAX_DIRS, send, &mut file);
            drop(tx);
            registrar.join().map_err(|_| anyhow!("the watch registration thread failed"))??;
            found
        })
    }

    /// Waits up to `max_wait` for file events, handles all that are ready, and returns the triggers
    /// due. Fails when the work tree or its git directory is gone: there is nothing left to watch.
    pub fn step(&mut self, max_wait: Duration) -> Result<Vec<Trigger>> {
        let mut triggers = Vec::new();
        let now = Instant::now();
        let wait =
            self.debouncer.deadline(self.git_busy()).map(|d| d.saturating_duration_since(now)).unwrap_or(max_wait);
        match self.events.recv_timeout(wait.min(max_wait)) {
            Ok(event) => {
                self.handle(event, &mut triggers);
                // Take everything already queued before deciding: a checkout arrives as a flood.
                for _ in 0..100_000 {
                    match self.events.try_recv() {
                        Ok(event) => self.handle(event, &mut triggers),
                        Err(_) => break,
                    }
                }
                // The root's own watch reports its move or deletion, and a deleted tree its files
                // going; a quiet step checks too (a parent directory's move sends nothing).
                self.check_tree()?;
            }
            Err(RecvTimeoutError::Timeout) => self.check_tree()?,
            Err(RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
        }
        let busy = self.git_busy();
        if let Some(trigger) = self.debouncer.poll(Instant::now(), busy) {
            if busy && !self.stale_lock_warned {
                self.stale_lock_warned = true;
                let lock = self.git_dir.join("index.lock").display().to_string();
                let line = format!("{lock} has been there for 5 s: if no git command is running, remove it");
                self.log.warn("stale_lock", &line, json!({"path": lock}));
            }
            triggers.push(trigger);
        }
        Ok(triggers)
    }

    /// Fails when the root was moved, deleted or replaced, or the git directory deleted: the
    /// watches would see nothing more, or another tree.
    fn check_tree(&mut self) -> Result<()> {
        let gone = self.tree_gone();
        if gone.is_err() {
            // Nothing is left to reload for: the open burst (the tree's files "removed") is dropped.
            let _ = self.debouncer.flush();
        }
        gone
    }

    fn tree_gone(&self) -> Result<()> {
        let root = self.filter.workdir();
        let again = "start `touchwire watch` again where the work tree is now";
        // Only "not there" ends the watch: a permission or network file system error may pass.
        let gone = |err: &std::io::Error| matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory);
        match dir_id(root) {
            Ok(id) if id == self.root_id => {}
            Ok(_) => bail!("the work tree {} was replaced by another directory: {again}", root.display()),
            Err(err) if gone(&err) => bail!("the work tree {} was moved or deleted: {again}", root.display()),
            Err(_) => {}
        }
        match std::fs::metadata(&self.git_dir) {
            Err(err) if gone(&err) => {
                bail!("the git directory {} was moved or deleted: {again}", self.git_dir.display())
            }
            _ => Ok(()),
        }
    }

    fn git_busy(&self) -> bool {
        self.git_dir.join("index.lock").exists()
    }

    fn handle(&mut self, event: notify::Result<Event>, triggers: &mut Vec<Trigger>) {
        let event = match event {
            Ok(event) => event,
            Err(err) => return self.report(&anyhow!("file watcher: {err}")),
        };
        let now = Instant::now();
        if event.need_rescan() {
            self.rescan(now);
            return;
        }
        let class = classify(&event.kind, self.close_events);
        if class == Class::Ignore {
            return;
        }
        for path in &event.paths {
            if path.parent() == Some(self.git_dir.as_path()) {
                self.git_event(path, now);
                continue;
            }
            let Some(rel) = self.filter.relative(path) else { continue };
            if filter::in_git_dir(&rel) {
                continue;
            }
            if rel == ".gitignore" || rel.ends_with("/.gitignore") {
                // New rules may un-ignore a directory: watch what is now wanted.
                if let Err(err) = self.watch_whole_tree(|_| {}) {
                    self.report(&err);
                }
            }
            let class = match class {
                Class::Written | Class::Touched if !self.recursive && path.is_dir() => Class::NewDir,
                Class::Removed if self.watches.watched.contains(path) => Class::GoneDir,
                Class::Touched | Class::Written if !self.close_events && self.filter.is_relevant(&rel) => {
                    if self.content_changed(&rel, path) { Class::Written } else { Class::Ignore }
                }
                Class::Touched => Class::Written,
                other => other,
            };
            let busy = self.git_busy();
            match class {
                Class::NewDir => self.new_dir(&rel, path, now, triggers),
                Class::GoneDir => {
                    self.watches.remove_under(path);
                    // The files it held went with it.
                    for file in self.filter.tracked_relevant_under(&rel) {
                        triggers.extend(self.debouncer.on_change(Change::Removed, &file, now, busy));
                    }
                }
                Class::Written | Class::Removed if self.filter.is_relevant(&rel) => {
                    let change = if class == Class::Written { Change::Written } else { Change::Removed };
                    triggers.extend(self.debouncer.on_change(change, &rel, now, busy));
                }
                _ => {}
            }
        }
    }

    /// Whether a file's content differs from when it was last seen (a newer mtime alone is not a change).
    fn content_changed(&mut self, rel: &str, path: &Path) -> bool {
        let Ok(content) = std::fs::read(path) else { return true };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&content, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        self.hashes.insert(rel.to_string(), hash) != Some(hash)
    }

    /// A directory appeared (created or moved in): watch it, and count the files that were
    /// created in it before the watch existed as written.
    fn new_dir(&mut self, rel: &str, path: &Path, now: Instant, triggers: &mut Vec<Trigger>) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !scan::wanted_dir(&self.filter, rel, name) || path.join(".git").exists() {
            return;
        }
        match self.watch_tree(rel) {
            Ok(files) => {
                let busy = self.git_busy();
                for file in &files {
                    triggers.extend(self.debouncer.on_change(Change::Written, file, now, busy));
                }
            }
            Err(err) => self.report(&err),
        }
    }

    fn git_event(&mut self, path: &Path, now: Instant) {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("index") => {
                if let Err(err) = self.filter.reload_index() {
                    self.report(&err);
                }
                self.debouncer.on_activity(now);
            }
            Some("index.lock") => {
                self.stale_lock_warned = false;
                self.debouncer.on_activity(now);
            }
            _ => {}
        }
    }

    /// The OS dropped events: re-register watches, and end the burst with a trigger, since a
    /// change may be lost.
    fn rescan(&mut self, now: Instant) {
        self.log.warn("rescan", "file events were dropped by the OS: rescanning; one trigger will follow", json!({}));
        if let Err(err) = self.filter.reload_index().and_then(|()| self.watch_whole_tree(|_| {}).map(|_| ())) {
            self.report(&err);
        }
        self.debouncer.on_rescan(now);
    }

    fn report(&self, err: &anyhow::Error) {
        let message = format!("{err:#}");
        self.log.warn("error", &message, json!({"error": message}));
    }
}

/// A directory's identity: device and inode.
fn dir_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::DataChange;

    #[test]
    fn with_close_events_a_write_counts_at_its_close() {
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(classify(&close, true), Class::Written);
        assert_eq!(classify(&modify, true), Class::Ignore);
        assert_eq!(classify(&EventKind::Create(CreateKind::File), true), Class::Ignore);
        assert_eq!(classify(&modify, false), Class::Written);
        assert_eq!(classify(&EventKind::Create(CreateKind::File), false), Class::Written);
    }

    #[test]
    fn renames_deletions_and_metadata() {
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::To)), true), Class::Written);
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::From)), true), Class::Removed);
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true), Class::Ignore);
        assert_eq!(classify(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)), false), Class::Ignore);
        let newer = EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime));
        assert_eq!(classify(&newer, true), Class::Ignore, "inotify: a touch is not a change");
        assert_eq!(classify(&newer, false), Class::Touched, "polling: a newer mtime, to be checked");
        assert_eq!(classify(&EventKind::Remove(RemoveKind::File), true), Class::Removed);
        assert_eq!(classify(&EventKind::Remove(RemoveKind::Folder), true), Class::GoneDir);
        assert_eq!(classify(&EventKind::Create(CreateKind::Folder), true), Class::NewDir);
        assert_eq!(classify(&EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)), true), Class::Ignore);
    }
}
