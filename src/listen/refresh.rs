//! Before a target acts, the files its triggers name are refreshed in the guest (DESIGN.md, "The
//! last save is served"): each one is opened, which makes an NFS or FUSE (sshfs) client revalidate
//! its cached attributes, and its stale bytecode is removed, so that Python compiles the bytes the
//! host saved rather than trusting a `.pyc` whose whole-second mtime and size happen to match.
//!
//! Only under the target's `root`, which the guest configures: a name must be relative, without
//! `..`, reached through no symbolic link, with a watched extension; anything else is skipped.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Most names refreshed for one action (a trigger's list is bounded by its line anyway).
const MOST_FILES: usize = 1000;

/// What refreshing came to, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Files opened.
    pub opened: usize,
    /// Stale bytecode files removed.
    pub removed: usize,
    /// Names refused (outside `root`, a link, another extension).
    pub skipped: usize,
}

/// The path under `root` that the relative name `name` may refresh, or `None` when it may not
/// (absolute, `..`, empty, another extension). Pure: links are checked by [`refresh`].
pub fn admissible(root: &Path, name: &str, extensions: &[String]) -> Option<PathBuf> {
    let rel = Path::new(name);
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let ext = rel.extension().and_then(OsStr::to_str)?;
    if parts.is_empty() || !extensions.iter().any(|e| e.trim_start_matches('.') == ext) {
        return None;
    }
    Some(parts.iter().fold(root.to_path_buf(), |path, part| path.join(part)))
}

/// Refreshes `names` (relative to `root`); never follows a link, never blocks on a FIFO.
pub fn refresh(root: &Path, names: &[String], extensions: &[String]) -> Refreshed {
    let mut done = Refreshed::default();
    for name in names.iter().take(MOST_FILES) {
        match admissible(root, name, extensions).filter(|path| no_link_between(root, path)) {
            Some(path) => {
                if open_regular(&path) {
                    done.opened += 1;
                }
                done.removed += remove_bytecode(&path);
            }
            None => done.skipped += 1,
        }
    }
    done
}

/// Whether no directory between `root` and `path` (nor `path` itself) is a symbolic link.
fn no_link_between(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else { return false };
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            Ok(_) => {}
            // A deleted file still has bytecode to remove; a missing directory has none.
            Err(_) => return at == path,
        }
    }
    true
}

/// Opens a regular file and reads its attributes, the way a revalidation is asked of a network
/// file system; a FIFO or device is never opened for reading in earnest.
fn open_regular(path: &Path) -> bool {
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path);
    opened.is_ok_and(|file| file.metadata().is_ok_and(|m| m.is_file()))
}

/// Removes `__pycache__/STEM.TAG[.opt-N].pyc` of a `.py` file: its own bytecode, no other's.
fn remove_bytecode(path: &Path) -> usize {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(OsStr::to_str)) else { return 0 };
    if path.extension() != Some(OsStr::new("py")) {
        return 0;
    }
    let cache = dir.join("__pycache__");
    if std::fs::symlink_metadata(&cache).map_or(true, |m| !m.is_dir()) {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(&cache) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| is_bytecode_of(name, stem)) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `name` in `__pycache__` is the bytecode of module `stem`: `STEM.TAG.pyc` or
/// `STEM.TAG.opt-N.pyc`, where TAG (`cpython-311`) has no dot.
fn is_bytecode_of(name: &str, stem: &str) -> bool {
    let Some(middle) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('.')).and_then(|r| r.strip_suffix(".pyc"))
    else {
        return false;
    };
    match middle.split_once('.') {
        None => !middle.is_empty(),
        Some((tag, opt)) => !tag.is_empty() && opt.starts_with("opt-") && !opt.contains('.'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py() -> Vec<String> {
        vec!["py".into(), "html".into()]
    }

    #[test]
    fn only_relative_names_with_a_watched_extension_under_root_are_admitted() {
        let root = Path::new("/srv/app");
        assert_eq!(admissible(root, "app/views.py", &py()), Some(PathBuf::from("/srv/app/app/views.py")));
        assert_eq!(admissible(root, "./app/t.html", &py()), Some(PathBuf::from("/srv/app/app/t.html")));
        for refused in ["../etc/passwd.py", "/etc/x.py", "app/../../x.py", "", "app/data.json", "app/", "py"] {
            assert_eq!(admissible(root, refused, &py()), None, "{refused}");
        }
    }

    #[test]
    fn bytecode_names_are_matched_exactly() {
        assert!(is_bytecode_of("views.cpython-311.pyc", "views"));
        assert!(is_bytecode_of("views.cpython-311.opt-1.pyc", "views"));
        assert!(!is_bytecode_of("views_extra.cpython-311.pyc", "views"));
        assert!(!is_bytecode_of("views.extra.cpython-311.pyc", "views"), "another module's");
        assert!(!is_bytecode_of("views.pyc", "views"));
        assert!(!is_bytecode_of("views.cpython-311.py", "views"));
    }

    #[test]
    fn refreshing_removes_only_the_named_files_bytecode_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let cache = root.join("app/__pycache__");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(root.join("app/views.py"), "x = 1\n").unwrap();
        for pyc in ["views.cpython-311.pyc", "views.cpython-311.opt-2.pyc", "models.cpython-311.pyc"] {
            std::fs::write(cache.join(pyc), "").unwrap();
        }
        // A link out of the tree, and a FIFO with a watched name.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("__pycache__")).unwrap();
        std::fs::write(outside.join("__pycache__/secret.cpython-311.pyc"), "").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let fifo = std::ffi::CString::new(root.join("app/pipe.py").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let names: Vec<String> =
            ["app/views.py", "link/secret.py", "../outside/secret.py", "app/pipe.py", "app/gone.py"]
                .map(String::from)
                .into();
        let done = refresh(&root, &names, &py());
        assert_eq!(done, Refreshed { opened: 1, removed: 2, skipped: 2 });
        assert!(cache.join("models.cpython-311.pyc").exists(), "another module's bytecode stays");
        assert!(outside.join("__pycache__/secret.cpython-311.pyc").exists(), "nothing through the link");
    }
}
