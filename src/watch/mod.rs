//! The host watcher: a [`backend`] turns the OS's file events into classified changes keyed
//! by the path's bytes; [`decide`] (with [`debounce`]) makes triggers of them, given the
//! relevance filter ([`crate::relevance`], shared with `send --path`) and a snapshot taken once
//! per step. This module glues the two: it scans the tree, registers directories with the
//! backend, covers those the OS watch limit left without a watch by polling, and re-reads the
//! index and `.gitignore` rules as they change.
//! Delivery to the guests lives in [`delivery`]; the `watch` command in [`start`].

pub mod backend;
pub mod cycle;
pub mod debounce;
pub mod decide;
pub mod delivery;
pub mod scan;
pub mod start;

use crate::output::Log;
use crate::relevance::Filter;
use crate::relevance::path::{self, Rel};
use anyhow::{Context, Result, bail};
use backend::poll::Poller;
use backend::{Added, Backend, Choice, Fs, Tree};
use debounce::{Debouncer, Trigger};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// More directories than any real work tree has; a bound on every scan.
const MAX_DIRS: usize = 1_000_000;
/// How often the directories left without a watch (OS limit reached) are polled, and their
/// watches tried again.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

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

/// The directories the OS watch limit left without a watch, polled until they get one.
struct Fallback {
    poller: Poller,
    next: Instant,
    /// The limit was said for this episode (it is said again only after every directory got
    /// its watch and the limit is hit anew).
    said: bool,
}

/// A running watch of one work tree.
pub struct Watcher {
    filter: Filter,
    tree: Tree,
    backend: Box<dyn Backend>,
    /// Every directory that can hold a relevant file and is watched (or polled): a new
    /// directory is looked at only below one of them, and one of them going away takes its
    /// tracked files along.
    dirs: BTreeSet<Rel>,
    fallback: Fallback,
    debouncer: Debouncer,
    /// Directories whose `.gitignore` changed, re-evaluated once git is done (one scan of each
    /// subtree per step, however many rules changed in it).
    ignores: BTreeSet<Rel>,
    stale_lock_warned: bool,
    /// The work tree's root directory (device, inode): a root moved away or replaced ends the watch.
    root_id: (u64, u64),
    log: Log,
}

/// The message for the OS watch limit: which limit, its value, and how to raise it.
pub fn limit_message() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse::<u64>().ok());
    // In a user namespace the lower of the two limits holds.
    let value = match (read("/proc/sys/fs/inotify/max_user_watches"), read("/proc/sys/user/max_inotify_watches")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let now = value.map(|v| format!(" = {v}")).unwrap_or_default();
    format!(
        "the OS limit on inotify watches is reached (fs.inotify.max_user_watches{now}): raise it, e.g. \
         `sudo sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/ to keep it)"
    )
}

impl Watcher {
    /// Opens the repository, registers the watches and reports how many. The backend is the
    /// polling one with `--poll`, else the one `TOUCHWIRE_WATCH_BACKEND` names (`inotify`,
    /// `recursive`), else per-directory inotify on Linux and the recursive one elsewhere.
    pub fn start(options: &Options) -> Result<Watcher> {
        let opened = Instant::now();
        let filter = Filter::open(&options.dir, &options.extensions, options.tracked_only)?;
        options.log.debug(&format!("repository and index read in {} ms", opened.elapsed().as_millis()));
        let git_dir = filter.git_dir().canonicalize().context("cannot resolve the git directory")?;
        let root_id = dir_id(filter.workdir())
            .with_context(|| format!("cannot read the work tree {}", filter.workdir().display()))?;
        let tree = Tree { root: filter.workdir().to_path_buf(), git_dir, extensions: filter.extensions().to_vec() };
        let choice = match options.poll {
            Some(interval) => Choice::Poll(interval),
            None => Choice::from_env().map_err(crate::error::UsageError)?,
        };
        let backend: Box<dyn Backend> = match choice {
            Choice::Poll(interval) => Box::new(backend::poll::Poll::new(tree.clone(), interval)),
            Choice::Recursive => Box::new(backend::recursive::Recursive::new(tree.clone())?),
            #[cfg(target_os = "linux")]
            Choice::Default | Choice::Inotify => Box::new(backend::inotify::Inotify::new(tree.clone())?),
            #[cfg(not(target_os = "linux"))]
            Choice::Default => Box::new(backend::recursive::Recursive::new(tree.clone())?),
            #[cfg(not(target_os = "linux"))]
            Choice::Inotify => {
                return Err(crate::error::UsageError("the inotify backend is Linux's alone".into()).into());
            }
        };
        let mut watcher = Watcher {
            fallback: Fallback { poller: Poller::new(&tree.extensions), next: Instant::now(), said: false },
            filter,
            tree,
            backend,
            dirs: BTreeSet::new(),
            debouncer: Debouncer::new(options.debounce),
            ignores: BTreeSet::new(),
            stale_lock_warned: false,
            root_id,
            log: options.log,
        };
        let root = watcher.root().display().to_string();
        watcher.log.event("scanning", &format!("scanning {root} ..."), json!({"root": root}));
        let start = Instant::now();
        let relevant = watcher.scan_from(b"", true, |_| {})?.files;
        // The git directory is watched too (index, index.lock).
        let dirs = watcher.dirs.len() + 1;
        let watches = watcher.backend.watches();
        let backend = watcher.backend.name();
        let ms = start.elapsed().as_millis() as u64;
        // Always two directories or more: the work tree's root and the git directory.
        let files = crate::output::count(relevant, "file", "files");
        let line = format!("watching {dirs} directories ({files} relevant) in {root}, ready in {ms} ms");
        let fields =
            json!({"root": root, "dirs": dirs, "relevant": relevant, "ms": ms, "backend": backend, "watches": watches});
        watcher.log.event("ready", &line, fields);
        Ok(watcher)
    }

    /// A function that wakes a waiting [`Watcher::step`] from another thread.
    pub fn waker(&self) -> backend::Waker {
        self.backend.waker()
    }

    /// Ends the open burst now: its pending changes as one trigger, if any (for a clean stop).
    pub fn flush(&mut self) -> Option<Trigger> {
        self.debouncer.flush()
    }

    /// The work tree's root.
    pub fn root(&self) -> &Path {
        self.filter.workdir()
    }

    /// The backend's name (`inotify`, `recursive`, `poll`).
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    /// Scans `rel` and every directory below it that can hold a relevant file, registering
    /// each (before it is read) that is not registered yet; each relevant file found goes to
    /// `file`. At start a directory refused for the watch limit is an error (suggesting
    /// `--poll`); later it is polled instead.
    fn scan_from(&mut self, rel: &[u8], at_start: bool, mut file: impl FnMut(Rel)) -> Result<scan::Scan> {
        let (filter, backend, dirs, fallback, log) =
            (&self.filter, &mut self.backend, &mut self.dirs, &mut self.fallback, self.log);
        let root = self.tree.root.as_path();
        let register = |dir: &[u8]| -> Result<()> {
            if dirs.contains(dir) {
                return Ok(());
            }
            match backend.add_dir(dir) {
                Added::Watched => {
                    dirs.insert(dir.to_vec());
                }
                Added::Gone => {}
                Added::Limit if at_start => {
                    bail!("{} ({} watched so far), or run `touchwire watch --poll`", limit_message(), dirs.len())
                }
                Added::Limit => {
                    if fallback.poller.add(root, dir) == Added::Watched {
                        dirs.insert(dir.to_vec());
                        say_limit(fallback, log);
                    }
                }
                Added::Failed(why) if at_start => bail!(why),
                Added::Failed(why) => log.warn("error", &why, json!({"error": why})),
            }
            Ok(())
        };
        let found = scan::scan(filter, rel, MAX_DIRS, register, &mut file)?;
        for rel in &found.not_files {
            self.backend.not_a_file(rel);
        }
        Ok(found)
    }

    /// Waits up to `max_wait` for file events, handles all that are ready, and returns the triggers
    /// due. Fails when the work tree or its git directory is gone: there is nothing left to watch.
    pub fn step(&mut self, max_wait: Duration) -> Result<Vec<Trigger>> {
        let now = Instant::now();
        let mut wait =
            self.debouncer.deadline(self.git_busy()).map(|d| d.saturating_duration_since(now)).unwrap_or(max_wait);
        if !self.fallback.poller.is_empty() {
            wait = wait.min(self.fallback.next.saturating_duration_since(now));
        }
        let mut changes = Vec::new();
        self.backend.wait(wait.min(max_wait), &mut changes)?;
        self.poll_fallback(&mut changes);
        let changes = self.apply(changes);
        let at = decide::Snapshot { now: Instant::now(), git_busy: self.git_busy() };
        if !at.git_busy && !self.ignores.is_empty() {
            self.reevaluate_ignores();
        }
        let triggers = decide::decide(&changes, at, &self.filter, &mut self.debouncer);
        // Nothing leads while git is busy: a trigger then is a burst that reached its cap.
        if at.git_busy && !triggers.is_empty() && !self.stale_lock_warned {
            self.stale_lock_warned = true;
            let lock = self.tree.git_dir.join("index.lock").display().to_string();
            let line = format!("{lock} has been there for 5 s: if no git command is running, remove it");
            self.log.warn("stale_lock", &line, json!({"path": lock}));
        }
        // The root's own watch reports its move or deletion, and a deleted tree its files
        // going; a quiet step checks too (a parent directory's move sends nothing).
        self.check_tree()?;
        Ok(triggers)
    }

    /// The side effects of one step's changes, before anything is decided: new directories
    /// scanned and registered (their files reported as written), gone ones forgotten, the index
    /// re-read once, `.gitignore` changes noted. Returns the changes for [`decide::decide`].
    fn apply(&mut self, changes: Vec<Fs>) -> Vec<Fs> {
        let mut out = Vec::with_capacity(changes.len());
        let mut index = false;
        for change in changes {
            match change {
                Fs::NewDir(rel) => self.new_dir(&rel, &mut out),
                Fs::GoneDir(rel) => {
                    self.gone_dir(&rel);
                    out.push(Fs::GoneDir(rel));
                }
                // A directory renamed away, where the OS does not say it was one.
                Fs::Removed(rel) if self.dirs.contains(&rel) => {
                    self.gone_dir(&rel);
                    out.push(Fs::GoneDir(rel));
                }
                Fs::Written(rel) | Fs::Removed(rel) if path::file_name(&rel) == b".gitignore" => {
                    self.ignores.insert(path::parent(&rel).to_vec());
                }
                Fs::Index => {
                    index = true;
                    self.stale_lock_warned = false;
                    out.push(Fs::Index);
                }
                Fs::GitLock => {
                    self.stale_lock_warned = false;
                    out.push(Fs::GitLock);
                }
                Fs::Rescan => {
                    self.rescan();
                    out.push(Fs::Rescan);
                }
                Fs::Unwatched(rel) => {
                    if !self.fallback.poller.contains(&rel)
                        && self.fallback.poller.add(&self.tree.root, &rel) == Added::Watched
                    {
                        self.dirs.insert(rel);
                        say_limit(&mut self.fallback, self.log);
                    }
                }
                other => out.push(other),
            }
        }
        if index && let Err(err) = self.filter.reload_index() {
            self.report(&err);
        }
        out
    }

    /// A directory appeared (created or moved in): below a watched one and wanted, it is
    /// scanned and registered, and the files created in it before its watch existed count as
    /// written.
    fn new_dir(&mut self, rel: &[u8], out: &mut Vec<Fs>) {
        if self.dirs.contains(rel) || !self.dirs.contains(path::parent(rel)) || !scan::wanted_dir(&self.filter, rel) {
            return;
        }
        // A nested repository is git's business; `symlink_metadata`: a `.git` link counts too.
        if path::join(&self.tree.root, rel).join(".git").symlink_metadata().is_ok() {
            return;
        }
        if let Err(err) = self.scan_from(rel, false, |file| out.push(Fs::Written(file))) {
            self.report(&err);
        }
    }

    /// A directory went away: its registrations (and those below it) go too.
    fn gone_dir(&mut self, rel: &[u8]) {
        self.backend.forget_under(rel);
        self.fallback.poller.forget_under(rel);
        let under: Vec<Rel> = self
            .dirs
            .range(rel.to_vec()..)
            .take_while(|d| d.starts_with(rel))
            .filter(|d| path::is_under(d, rel))
            .cloned()
            .collect();
        for dir in under {
            self.dirs.remove(&dir);
        }
        if self.fallback.poller.is_empty() {
            self.fallback.said = false;
            self.backend.caught_up();
        }
    }

    /// Re-evaluates the directories under each changed `.gitignore`: new rules may un-ignore
    /// one, which then needs a watch. Each subtree once, and none inside another.
    fn reevaluate_ignores(&mut self) {
        let changed = std::mem::take(&mut self.ignores);
        let mut roots: Vec<Rel> = Vec::new();
        for dir in changed {
            // Sorted, so a directory comes right after the ones it lies below.
            if roots.last().is_some_and(|last| path::is_under(&dir, last)) {
                continue;
            }
            roots.push(dir);
        }
        for root in roots {
            if self.dirs.contains(&root)
                && let Err(err) = self.scan_from(&root, false, |_| {})
            {
                self.report(&err);
            }
        }
    }

    /// Polls the directories left without a watch, when due; first tries to watch them again
    /// (the limit may have room now), and gives each that gets one a last look.
    fn poll_fallback(&mut self, out: &mut Vec<Fs>) {
        if self.fallback.poller.is_empty() || Instant::now() < self.fallback.next {
            return;
        }
        let root = self.tree.root.clone();
        let polled: Vec<Rel> = self.fallback.poller.dirs().cloned().collect();
        for dir in polled {
            match self.backend.add_dir(&dir) {
                Added::Watched => self.fallback.poller.finish(&root, &dir, out),
                Added::Gone => self.fallback.poller.forget_under(&dir),
                // Still no room: no use trying the others this round.
                Added::Limit => break,
                Added::Failed(_) => {}
            }
        }
        self.fallback.poller.poll(&root, out);
        if self.fallback.poller.is_empty() {
            self.fallback.said = false;
            self.backend.caught_up();
            let line = "every directory has its watch again: polling stopped";
            self.log.event("watch_limit_over", line, json!({}));
        }
        self.fallback.next = Instant::now() + FALLBACK_POLL;
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
        match std::fs::metadata(&self.tree.git_dir) {
            Err(err) if gone(&err) => {
                bail!("the git directory {} was moved or deleted: {again}", self.tree.git_dir.display())
            }
            _ => Ok(()),
        }
    }

    fn git_busy(&self) -> bool {
        self.tree.git_dir.join("index.lock").exists()
    }

    /// The OS dropped events: re-read the index and scan the whole tree again, registering
    /// what lacks a watch; the burst then ends with a trigger, since a change may be lost.
    fn rescan(&mut self) {
        self.log.warn("rescan", "file events were dropped by the OS: rescanning; one trigger will follow", json!({}));
        if let Err(err) = self.filter.reload_index().and_then(|()| self.scan_from(b"", false, |_| {}).map(|_| ())) {
            self.report(&err);
        }
    }

    fn report(&self, err: &anyhow::Error) {
        let message = format!("{err:#}");
        self.log.warn("error", &message, json!({"error": message}));
    }
}

/// Says, once per episode, that the watch limit is reached and directories are polled.
fn say_limit(fallback: &mut Fallback, log: Log) {
    if fallback.said {
        return;
    }
    fallback.said = true;
    // A new episode: the first try to watch again waits a poll interval. Tried at once, it could
    // win a watch that a directory given up a moment before had freed, end the episode and
    // start another one within the same burst: the limit said twice in a millisecond.
    fallback.next = Instant::now() + FALLBACK_POLL;
    let ms = FALLBACK_POLL.as_millis();
    let line = format!(
        "{}; meanwhile the directories without a watch are polled every {ms} ms, and watched again once there is room",
        limit_message()
    );
    log.warn("watch_limit", &line, json!({"limit": "fs.inotify.max_user_watches", "poll_ms": ms}));
}

/// A directory's identity: device and inode.
#[cfg(unix)]
fn dir_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// A directory's identity: its volume's serial number and its file index (what Windows has in
/// place of device and inode; a creation time would not tell a tree replaced by a copy).
#[cfg(windows)]
fn dir_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{
        BY_HANDLE_FILE_INFORMATION, FILE_FLAG_BACKUP_SEMANTICS, GetFileInformationByHandle,
    };
    // Only with backup semantics does Windows open a directory as a file.
    let dir = std::fs::OpenOptions::new().read(true).custom_flags(FILE_FLAG_BACKUP_SEMANTICS).open(path)?;
    // SAFETY: an all-zero BY_HANDLE_FILE_INFORMATION is a valid value of this plain C struct.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the call's duration; `info` is ours to write.
    if unsafe { GetFileInformationByHandle(dir.as_raw_handle(), &mut info) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((u64::from(info.dwVolumeSerialNumber), u64::from(info.nFileIndexHigh) << 32 | u64::from(info.nFileIndexLow)))
}
