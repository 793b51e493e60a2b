//! Which files matter (DESIGN.md, "Relevant file"): inside the work tree, not under `.git/`, a
//! watched extension, and tracked in the index or untracked but not ignored. Decided with git2.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The relevance filter of one git work tree.
pub struct Filter {
    repo: git2::Repository,
    workdir: PathBuf,
    extensions: Vec<String>,
    tracked_only: bool,
    /// The index's paths, and their directories with ancestors; rebuilt when the index is re-read.
    tracked: PathList,
    tracked_dirs: BTreeSet<String>,
}

/// A sorted list of paths in one buffer: compact (a large index costs one allocation, not one
/// per path), and searched by bisection.
#[derive(Debug, Default)]
struct PathList {
    buf: String,
    ends: Vec<usize>,
}

impl PathList {
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// The first position whose path is not below `key`.
    fn lower_bound(&self, key: &str) -> usize {
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid) < key { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    fn contains(&self, key: &str) -> bool {
        let i = self.lower_bound(key);
        i < self.ends.len() && self.get(i) == key
    }

    /// The paths that start with `prefix`, in order.
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        (self.lower_bound(prefix)..self.ends.len()).map(|i| self.get(i)).take_while(move |p| p.starts_with(prefix))
    }
}

impl Filter {
    /// Opens the repository holding `dir` (a linked worktree, or a `.git` file, work too).
    pub fn open(dir: &Path, extensions: &[String], tracked_only: bool) -> Result<Filter> {
        let repo = git2::Repository::discover(dir).map_err(|err| {
            crate::UsageError(format!("{} is not inside a git repository ({})", dir.display(), err.message()))
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

    /// `path` relative to the work tree with `/` separators, if it lies inside it.
    pub fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.workdir).ok()?;
        let parts: Option<Vec<&str>> = rel
            .components()
            .map(|c| match c {
                Component::Normal(part) => part.to_str(),
                _ => None,
            })
            .collect();
        let parts = parts?;
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    /// Whether a file (relative path, existing or deleted) is relevant.
    pub fn is_relevant(&self, rel: &str) -> bool {
        self.why_irrelevant(rel).is_none()
    }

    /// Why a file is not relevant, for people; `None` when it is.
    pub fn why_irrelevant(&self, rel: &str) -> Option<String> {
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
        self.is_ignored(rel).then(|| "git ignores it".into())
    }

    /// Whether the index holds `rel`.
    pub fn is_tracked(&self, rel: &str) -> bool {
        self.tracked.contains(rel)
    }

    /// Whether git ignores `rel` (a directory when it ends with `/`).
    pub fn is_ignored(&self, rel: &str) -> bool {
        self.repo.is_path_ignored(rel).unwrap_or(false)
    }

    /// Relevant files that differ between two revisions (a null revision, all zeros, is the empty tree).
    pub fn changed_between(&self, old: &str, new: &str) -> Result<Vec<String>> {
        let tree = |rev: &str| -> Result<Option<git2::Tree<'_>>> {
            if !rev.is_empty() && rev.chars().all(|c| c == '0') {
                return Ok(None);
            }
            let object = self.repo.revparse_single(rev).with_context(|| format!("unknown git revision {rev:?}"))?;
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
                if let Some(path) = file.path().and_then(Path::to_str).filter(|p| self.is_relevant(p)) {
                    files.insert(path.to_string());
                }
            }
        }
        Ok(files.into_iter().collect())
    }

    /// Directories (relative) holding at least one tracked file, with their ancestors.
    pub fn tracked_dirs(&self) -> &BTreeSet<String> {
        &self.tracked_dirs
    }

    /// Tracked files under the directory `rel`, relevant ones only (a directory moved away takes them along).
    pub fn tracked_relevant_under(&self, rel: &str) -> Vec<String> {
        let prefix = format!("{rel}/");
        self.tracked.with_prefix(&prefix).filter(|path| self.is_relevant(path)).map(String::from).collect()
    }

    /// Reads the index's paths, and the directories holding them with their ancestors.
    fn read_index_paths(&mut self) {
        self.tracked = PathList::default();
        self.tracked_dirs.clear();
        let Ok(index) = self.repo.index() else { return };
        let mut sorted = true;
        for entry in index.iter() {
            let path = String::from_utf8_lossy(&entry.path);
            sorted &= self.tracked.ends.is_empty() || self.tracked.get(self.tracked.ends.len() - 1) <= path.as_ref();
            let mut dir = path.as_ref();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if self.tracked_dirs.contains(parent) || !self.tracked_dirs.insert(parent.to_string()) {
                    break;
                }
                dir = parent;
            }
            self.tracked.buf.push_str(&path);
            self.tracked.ends.push(self.tracked.buf.len());
        }
        // git keeps the index sorted byte-wise, as str compares; the bisection depends on it.
        if !sorted {
            let mut paths: Vec<String> =
                (0..self.tracked.ends.len()).map(|i| self.tracked.get(i).to_string()).collect();
            paths.sort_unstable();
            self.tracked = PathList::default();
            for path in paths {
                self.tracked.buf.push_str(&path);
                self.tracked.ends.push(self.tracked.buf.len());
            }
        }
    }

    /// The watched extensions.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }
}

/// Whether a relative path lies in the git directory.
pub fn in_git_dir(rel: &str) -> bool {
    rel == ".git" || rel.starts_with(".git/")
}

/// Whether a relative path ends in one of `extensions` (without dots).
pub fn has_extension(rel: &str, extensions: &[String]) -> bool {
    Path::new(rel).extension().and_then(|e| e.to_str()).is_some_and(|ext| extensions.iter().any(|e| e == ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_list_finds_paths_and_prefixes() {
        let mut list = PathList::default();
        for path in ["a.py", "app/models.py", "app/views.py", "apps/x.py", "b/c.py"] {
            list.buf.push_str(path);
            list.ends.push(list.buf.len());
        }
        assert!(list.contains("app/views.py") && list.contains("a.py") && list.contains("b/c.py"));
        assert!(!list.contains("app") && !list.contains("app/") && !list.contains("zzz"));
        assert_eq!(list.with_prefix("app/").collect::<Vec<_>>(), ["app/models.py", "app/views.py"]);
        assert_eq!(PathList::default().with_prefix("x").count(), 0);
    }

    #[test]
    fn extension_matches_the_last_suffix_only() {
        let py = vec!["py".to_string()];
        assert!(has_extension("app/views.py", &py));
        assert!(!has_extension("app/views.pyc", &py));
        assert!(!has_extension("app/views.py.swp", &py));
        assert!(!has_extension("app/views.py~", &py));
        assert!(!has_extension("py", &py));
        assert!(has_extension("t.html", &["py".into(), "html".into()]));
    }

    #[test]
    fn the_git_dir_is_never_relevant() {
        assert!(in_git_dir(".git/index"));
        assert!(in_git_dir(".git"));
        assert!(!in_git_dir(".github/workflow.py"));
        assert!(!in_git_dir("src/.git_helpers.py"));
    }
}
