//! Which directories to watch: those that can hold a relevant file. Ignored trees (`venv/`,
//! `node_modules/`), `.git` and nested repositories cost no watch; directories that hold a
//! tracked file are always watched, whatever `.gitignore` says.

use super::filter::{Filter, has_extension};
use std::collections::BTreeSet;

/// What a scan found, as paths relative to the work tree (`""` is the root).
#[derive(Debug, Default)]
pub struct Scan {
    /// Directories to watch.
    pub dirs: Vec<String>,
    /// Relevant files in them.
    pub files: Vec<String>,
}

/// Scans `start` (relative, `""` for the root) and everything below it worth watching.
/// `tracked_dirs` comes from [`Filter::tracked_dirs`]. Stops after `max_dirs` directories, a
/// bound that no real tree reaches.
pub fn scan(filter: &Filter, start: &str, tracked_dirs: &BTreeSet<String>, max_dirs: usize) -> Scan {
    let mut found = Scan::default();
    let mut stack = vec![start.to_string()];
    while let Some(dir) = stack.pop() {
        if found.dirs.len() >= max_dirs {
            break;
        }
        let Ok(entries) = std::fs::read_dir(filter.workdir().join(&dir)) else { continue };
        found.dirs.push(dir.clone());
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            let rel = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if wanted_dir(filter, &rel, &name, tracked_dirs) {
                    stack.push(rel);
                }
            } else if has_extension(&rel, filter.extensions()) && filter.is_relevant(&rel) {
                found.files.push(rel);
            }
        }
    }
    found
}

/// Whether a directory can hold a relevant file.
pub fn wanted_dir(filter: &Filter, rel: &str, name: &str, tracked_dirs: &BTreeSet<String>) -> bool {
    if name == ".git" || filter.workdir().join(rel).join(".git").exists() {
        return false;
    }
    tracked_dirs.contains(rel) || !filter.is_ignored(&format!("{rel}/"))
}
