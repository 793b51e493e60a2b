//! Which files matter, for `watch` and `send --path` alike (DESIGN.md, "Relevant file"): inside
//! the work tree, not under `.git/`, a watched extension, and tracked in the index or untracked
//! but not ignored. Decided with git2; [`path`] has the byte-path helpers both use.

use self::path::Rel;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub mod path;

pub use path::{has_extension, in_git_dir};

/// The relevance filter of one git work tree.
pub struct Filter {
    repo: git2::Repository,
    workdir: PathBuf,
    extensions: Vec<String>,
    tracked_only: bool,
    /// The index's paths (bytes, as git keeps them), and their directories with ancestors;
    /// rebuilt when the index is re-read.
    tracked: PathList,
    tracked_dirs: BTreeSet<Rel>,
}

/// What a path is on disk, as far as relevance goes: git tracks a symbolic link as a link, and
/// the watcher never follows one to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A symbolic link to a regular file.
    LinkToFile,
    /// A directory (never a link to one).
    Dir,
    /// Anything else: a dangling link (an Emacs lock `.#views.py`), a link to a directory or a
    /// device, a FIFO, a socket. Never a Python file.
    Other,
    /// Nothing there (deleted).
    Missing,
}

/// What `path` is, without following a link to a directory (one `lstat`, and a `stat` for a link).
pub fn kind_of(path: &Path) -> Kind {
    match std::fs::symlink_metadata(path) {
        Err(_) => Kind::Missing,
        Ok(meta) if meta.is_file() => Kind::File,
        Ok(meta) if meta.is_dir() => Kind::Dir,
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) if target.is_file() => Kind::LinkToFile,
            _ => Kind::Other,
        },
        Ok(_) => Kind::Other,
    }
}

/// A sorted list of paths in one buffer: compact (a large index costs one allocation, not one
/// per path), and searched by bisection.
#[derive(Debug, Default)]
struct PathList {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl PathList {
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    fn push(&mut self, path: &[u8]) {
        self.buf.extend_from_slice(path);
        self.ends.push(self.buf.len());
    }

    /// The first position whose path is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid) < key { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    fn contains(&self, key: &[u8]) -> bool {
        let i = self.lower_bound(key);
        i < self.ends.len() && self.get(i) == key
    }

    /// The paths that start with `prefix`, in order.
    fn with_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        (self.lower_bound(prefix)..self.ends.len()).map(|i| self.get(i)).take_while(move |p| p.starts_with(prefix))
    }
}

impl Filter {
    /// Opens the repository holding `dir` (a linked worktree, or a `.git` file, work too).
    pub fn open(dir: &Path, extensions: &[String], tracked_only: bool) -> Result<Filter> {
        let repo = git2::Repository::discover(dir).map_err(|err| match err.code() {
            git2::ErrorCode::NotFound => crate::error::UsageError(format!(
                "{} is not inside a git repository (there is none in it or above it)",
                dir.display()
            )),
            _ => crate::error::UsageError(format!(
                "{}: cannot open its git repository: {}",
                dir.display(),
                err.message()
            )),
        })?;
        let workdir = repo.workdir().with_context(|| {
            format!("{} is a bare repository: there is no work tree to watch", repo.path().display())
        })?;
        // Events arrive with canonical paths; compare like with like.
        let workdir = workdir.canonicalize().with_context(|| format!("cannot resolve {}", workdir.display()))?;
        let extensions =
            extensions.iter().map(|e| e.trim_start_matches('.').to_string()).filter(|e| !e.is_empty()).collect();
        let mut filter = Filter {
            repo,
            workdir,
            extensions,
            tracked_only,
            tracked: PathList::default(),
            tracked_dirs: BTreeSet::new(),
        };
        filter.read_index_paths();
        Ok(filter)
    }

    /// The work tree's root (canonical).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The git directory of this work tree (where `index` and `index.lock` live).
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// Re-reads the index from disk if it changed (after `git add`, a commit, a checkout).
    pub fn reload_index(&mut self) -> Result<()> {
        self.repo.index().and_then(|mut index| index.read(false)).context("cannot re-read the git index")?;
        self.read_index_paths();
        Ok(())
    }

    /// `path` relative to the work tree with `/` separators, if it lies inside it and is UTF-8
    /// (for `send --path`; the watcher keeps names as bytes, see [`Filter::relative_bytes`]).
    pub fn relative(&self, path: &Path) -> Option<String> {
        String::from_utf8(self.relative_bytes(path)?).ok()
    }

    /// `path` relative to the work tree, as bytes with `/` separators, if it lies inside it.
    pub fn relative_bytes(&self, path: &Path) -> Option<Rel> {
        path::relative(&self.workdir, path)
    }

    /// Whether a file (relative path, existing or deleted) is relevant by its name and git's
    /// index and rules; what it is on disk is [`Filter::is_relevant_on_disk`]'s business.
    pub fn is_relevant(&self, rel: impl AsRef<[u8]>) -> bool {
        self.why_irrelevant(rel).is_none()
    }

    /// Whether the file at `rel` is relevant and, if it exists, a file: a regular one or a link
    /// to one. A dangling link, a FIFO or a link to a directory named `x.py` is no Python file.
    pub fn is_relevant_on_disk(&self, rel: impl AsRef<[u8]>) -> bool {
        let rel = rel.as_ref();
        self.is_relevant(rel)
            && matches!(kind_of(&path::join(&self.workdir, rel)), Kind::File | Kind::LinkToFile | Kind::Missing)
    }

    /// Why a file is not relevant, for people; `None` when it is.
    pub fn why_irrelevant(&self, rel: impl AsRef<[u8]>) -> Option<String> {
        let rel = rel.as_ref();
        if in_git_dir(rel) {
            return Some("it is inside .git".into());
        }
        if !has_extension(rel, &self.extensions) {
            return Some(format!("its extension is not watched (watched: {})", self.extensions.join(", ")));
        }
        if self.is_tracked(rel) {
            return None;
        }
        if self.tracked_only {
            return Some("git does not track it (tracked files only)".into());
        }
        self.is_ignored(rel)
            .then(|| "git ignores it (a .gitignore rule, .git/info/exclude or core.excludesFile)".into())
    }

    /// Whether the index holds `rel`.
    pub fn is_tracked(&self, rel: impl AsRef<[u8]>) -> bool {
        self.tracked.contains(rel.as_ref())
    }

    /// Whether git ignores `rel` (a directory when it ends with `/`).
    pub fn is_ignored(&self, rel: impl AsRef<[u8]>) -> bool {
        self.repo.is_path_ignored(path::os(rel.as_ref())).unwrap_or(false)
    }

    /// Relevant files that differ between two revisions (a null revision, all zeros, is the empty tree).
    pub fn changed_between(&self, old: &str, new: &str) -> Result<Vec<String>> {
        let tree = |rev: &str| -> Result<Option<git2::Tree<'_>>> {
            if !rev.is_empty() && rev.chars().all(|c| c == '0') {
                return Ok(None);
            }
            // libgit2's own words ("class=Reference (4); code=NotFound (-3)") tell a person nothing.
            let object = self.repo.revparse_single(rev).map_err(|err| match err.code() {
                git2::ErrorCode::NotFound | git2::ErrorCode::InvalidSpec => {
                    anyhow::anyhow!("unknown revision {rev} (in {})", self.workdir.display())
                }
                git2::ErrorCode::Ambiguous => anyhow::anyhow!("revision {rev} is ambiguous: give more of it"),
                _ => anyhow::anyhow!("cannot read git revision {rev}: {}", err.message()),
            })?;
            Ok(Some(object.peel_to_tree().with_context(|| format!("git revision {rev:?} has no tree"))?))
        };
        let (old_tree, new_tree) = (tree(old)?, tree(new)?);
        let diff = self
            .repo
            .diff_tree_to_tree(old_tree.as_ref(), new_tree.as_ref(), None)
            .with_context(|| format!("cannot compare {old} and {new}"))?;
        let mut files = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                // For the wire's log field only: lossy where a name is not UTF-8.
                if let Some(path) = file.path_bytes().filter(|p| self.is_relevant(p)) {
                    files.insert(path::lossy(path));
                }
            }
        }
        Ok(files.into_iter().collect())
    }

    /// Directories (relative) holding at least one tracked file, with their ancestors.
    pub fn tracked_dirs(&self) -> &BTreeSet<Rel> {
        &self.tracked_dirs
    }

    /// Tracked files under the directory `rel`, relevant ones only (a directory moved away takes them along).
    pub fn tracked_relevant_under(&self, rel: &[u8]) -> Vec<Rel> {
        let prefix = path::child(rel, b"");
        self.tracked.with_prefix(&prefix).filter(|path| self.is_relevant(path)).map(<[u8]>::to_vec).collect()
    }

    /// Reads the index's paths, and the directories holding them with their ancestors.
    fn read_index_paths(&mut self) {
        self.tracked = PathList::default();
        self.tracked_dirs.clear();
        let Ok(index) = self.repo.index() else { return };
        let mut sorted = true;
        for entry in index.iter() {
            let path = entry.path.as_slice();
            sorted &= self.tracked.ends.is_empty() || self.tracked.get(self.tracked.ends.len() - 1) <= path;
            let mut dir = path;
            while let Some(i) = dir.iter().rposition(|&b| b == b'/') {
                let parent = &dir[..i];
                if self.tracked_dirs.contains(parent) || !self.tracked_dirs.insert(parent.to_vec()) {
                    break;
                }
                dir = parent;
            }
            self.tracked.push(path);
        }
        // git keeps the index sorted byte-wise, as slices compare; the bisection depends on it.
        if !sorted {
            let mut paths: Vec<Rel> = (0..self.tracked.ends.len()).map(|i| self.tracked.get(i).to_vec()).collect();
            paths.sort_unstable();
            self.tracked = PathList::default();
            for path in paths {
                self.tracked.push(&path);
            }
        }
    }

    /// The watched extensions.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_list_finds_paths_and_prefixes() {
        let mut list = PathList::default();
        for path in ["a.py", "app/models.py", "app/views.py", "apps/x.py", "b/c.py"] {
            list.push(path.as_bytes());
        }
        assert!(list.contains(b"app/views.py") && list.contains(b"a.py") && list.contains(b"b/c.py"));
        assert!(!list.contains(b"app") && !list.contains(b"app/") && !list.contains(b"zzz"));
        assert_eq!(list.with_prefix(b"app/").collect::<Vec<_>>(), [&b"app/models.py"[..], b"app/views.py"]);
        assert_eq!(PathList::default().with_prefix(b"x").count(), 0);
    }
}
