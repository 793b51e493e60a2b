//! Which directories to watch: those that can hold a relevant file. Ignored trees (`venv/`,
//! `node_modules/`), `.git` and nested repositories cost no watch; directories that hold a
//! tracked file are always watched, whatever `.gitignore` says.

use super::filter::{Filter, has_extension};

/// What a scan found, as paths relative to the work tree (`""` is the root).
#[derive(Debug, Default)]
pub struct Scan {
    /// Directories to watch.
    pub dirs: Vec<String>,
    /// Relevant files in them.
    pub files: Vec<String>,
}

/// Scans `start` (relative, `""` for the root) and everything below it worth watching, calling
/// `watch` on each directory before reading it, so that nothing created meanwhile is missed.
/// Stops after `max_dirs` directories, a bound that no real tree reaches.
pub fn scan(
    filter: &Filter,
    start: &str,
    max_dirs: usize,
    mut watch: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Scan> {
    let mut found = Scan::default();
    let mut stack = vec![start.to_string()];
    while let Some(dir) = stack.pop() {
        if found.dirs.len() >= max_dirs {
            break;
        }
        watch(&dir)?;
        let Ok(entries) = std::fs::read_dir(filter.workdir().join(&dir)) else { continue };
        let entries: Vec<_> = entries.flatten().collect();
        // A nested repository (a submodule, a vendored checkout) is git's business, not ours.
        if !dir.is_empty() && entries.iter().any(|e| e.file_name() == ".git") {
            continue;
        }
        found.dirs.push(dir.clone());
        for entry in entries {
            let Ok(name) = entry.file_name().into_string() else { continue };
            let rel = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if wanted_dir(filter, &rel, &name) {
                    stack.push(rel);
                }
            } else if has_extension(&rel, filter.extensions()) && filter.is_relevant(&rel) {
                found.files.push(rel);
            }
        }
    }
    Ok(found)
}

/// Whether a directory can hold a relevant file: not `.git`, and not ignored unless it holds a tracked file.
pub fn wanted_dir(filter: &Filter, rel: &str, name: &str) -> bool {
    name != ".git" && (filter.tracked_dirs().contains(rel) || !filter.is_ignored(&format!("{rel}/")))
}
