//! Which directories to watch: those that can hold a relevant file. Ignored trees (`venv/`,
//! `node_modules/`), `.git` and nested repositories cost no watch; directories that hold a
//! tracked file are always watched, whatever `.gitignore` says.

use super::filter::{Filter, has_extension};

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Directories read.
    pub dirs: usize,
    /// Relevant files in them.
    pub files: usize,
}

/// Scans `start` (relative, `""` for the root) and everything below it worth watching, calling
/// `watch` on each directory before reading it, so that nothing created meanwhile is missed.
/// Stops after `max_dirs` directories, a bound that no real tree reaches.
/// Each relevant file (relative to the work tree) goes to `file`.
pub fn scan(
    filter: &Filter,
    start: &str,
    max_dirs: usize,
    mut watch: impl FnMut(&str) -> anyhow::Result<()>,
    mut file: impl FnMut(String),
) -> anyhow::Result<Scan> {
    let mut found = Scan::default();
    let mut stack = vec![start.to_string()];
    while let Some(dir) = stack.pop() {
        if found.dirs >= max_dirs {
            break;
        }
        watch(&dir)?;
        let Ok(entries) = std::fs::read_dir(filter.workdir().join(&dir)) else { continue };
        let entries: Vec<(String, bool)> = entries
            .flatten()
            .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.file_type().ok()?.is_dir())))
            .collect();
        // A nested repository (a submodule, a vendored checkout) is git's business, not ours.
        if !dir.is_empty() && entries.iter().any(|(name, _)| name == ".git") {
            continue;
        }
        found.dirs += 1;
        for (name, is_dir) in entries {
            if !is_dir && !has_extension(&name, filter.extensions()) {
                continue;
            }
            let rel = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            if is_dir {
                if wanted_dir(filter, &rel, &name) {
                    stack.push(rel);
                }
            } else if filter.is_relevant(&rel) {
                found.files += 1;
                file(rel);
            }
        }
    }
    Ok(found)
}

/// Whether a directory can hold a relevant file: not `.git`, and not ignored unless it holds a tracked file.
pub fn wanted_dir(filter: &Filter, rel: &str, name: &str) -> bool {
    name != ".git" && (filter.tracked_dirs().contains(rel) || !filter.is_ignored(&format!("{rel}/")))
}
