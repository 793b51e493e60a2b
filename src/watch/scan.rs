//! Which directories to watch: those that can hold a relevant file. Ignored trees (`venv/`,
//! `node_modules/`), `.git` and nested repositories cost no watch; directories that hold a
//! tracked file are always watched, whatever `.gitignore` says. A symbolic link to a directory
//! is never followed (git tracks the link, not what it points to), so nothing outside the work
//! tree is read and no directory is seen under two names.

use crate::relevance::path::{self, Rel};
use crate::relevance::{Filter, Kind, has_extension, kind_of};

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Directories read.
    pub dirs: usize,
    /// Relevant files in them.
    pub files: usize,
    /// Entries with a watched extension that are no file (dangling links such as Emacs locks,
    /// FIFOs, links to directories): their removal later is no change.
    pub not_files: Vec<Rel>,
}

/// Scans `start` (relative, empty for the root) and everything below it worth watching, calling
/// `watch` on each directory before reading it, so that nothing created meanwhile is missed.
/// Stops after `max_dirs` directories, a bound that no real tree reaches.
/// Each relevant file (relative to the work tree) goes to `file`.
pub fn scan(
    filter: &Filter,
    start: &[u8],
    max_dirs: usize,
    mut watch: impl FnMut(&[u8]) -> anyhow::Result<()>,
    mut file: impl FnMut(Rel),
) -> anyhow::Result<Scan> {
    let mut found = Scan::default();
    let mut stack = vec![start.to_vec()];
    while let Some(dir) = stack.pop() {
        if found.dirs >= max_dirs {
            break;
        }
        watch(&dir)?;
        let Ok(entries) = std::fs::read_dir(path::join(filter.workdir(), &dir)) else { continue };
        // The entry's own type: a symbolic link is a link here, never what it points to.
        let entries: Vec<(Rel, std::fs::FileType)> = entries
            .flatten()
            .filter_map(|entry| Some((path::bytes(&entry.file_name()).to_vec(), entry.file_type().ok()?)))
            .collect();
        // A nested repository (a submodule, a vendored checkout) is git's business, not ours.
        if !dir.is_empty() && entries.iter().any(|(name, _)| name == b".git") {
            continue;
        }
        found.dirs += 1;
        for (name, kind) in entries {
            let rel = path::child(&dir, &name);
            if kind.is_dir() {
                if wanted_dir(filter, &rel) {
                    stack.push(rel);
                }
            } else if has_extension(&name, filter.extensions()) {
                if !is_file(filter, &rel, kind) {
                    found.not_files.push(rel);
                } else if filter.is_relevant(&rel) {
                    found.files += 1;
                    file(rel);
                }
            }
        }
    }
    Ok(found)
}

/// Whether an entry of this type is a file worth a look: a regular file, or a link to one (a
/// dangling link such as an Emacs lock, a FIFO or a device never is).
fn is_file(filter: &Filter, rel: &[u8], kind: std::fs::FileType) -> bool {
    kind.is_file() || (kind.is_symlink() && kind_of(&path::join(filter.workdir(), rel)) == Kind::LinkToFile)
}

/// Whether a directory can hold a relevant file: not `.git`, and not ignored unless it holds a tracked file.
pub fn wanted_dir(filter: &Filter, rel: &[u8]) -> bool {
    path::file_name(rel) != b".git"
        && !path::in_git_dir(rel)
        && (filter.tracked_dirs().contains(rel) || !filter.is_ignored(path::child(rel, b"")))
}
