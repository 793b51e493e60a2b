//! Paths relative to the work tree, as bytes with `/` separators, the way git's index and
//! `git ls-files -z` hold them. A name that is not UTF-8 is a name like any other; it becomes
//! text (lossily) only where a person or the wire's log field reads it.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// A path relative to the work tree: bytes, `/`-separated, empty for the root.
pub type Rel = Vec<u8>;

/// The OS string of `bytes`. On Unix a name is bytes; elsewhere (Windows) git and the OS agree on
/// UTF-8 names, and bytes that are not UTF-8 cannot name a file there at all.
#[cfg(unix)]
pub fn os(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}

/// The OS string of `bytes` (see the Unix version); a name that is not UTF-8 becomes one that
/// names no file.
#[cfg(not(unix))]
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::new(std::str::from_utf8(bytes).unwrap_or("\u{fffd}"))
}

/// The bytes of an OS string (on Windows its WTF-8 encoding, which equals UTF-8 for real names).
pub fn bytes(name: &OsStr) -> &[u8] {
    name.as_encoded_bytes()
}

/// `rel` under `root`, as an OS path.
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(os(rel)) }
}

/// `name` inside the directory `dir` (both relative; `dir` empty for the root).
pub fn child(dir: &[u8], name: &[u8]) -> Rel {
    let mut rel = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        rel.extend_from_slice(dir);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

/// `path` relative to `root` with `/` separators, if it lies strictly inside it.
pub fn relative(root: &Path, path: &Path) -> Option<Rel> {
    let rest = path.strip_prefix(root).ok()?;
    let mut rel = Vec::new();
    for component in rest.components() {
        let Component::Normal(part) = component else { return None };
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(bytes(part));
    }
    (!rel.is_empty()).then_some(rel)
}

/// The last component of a relative path.
pub fn file_name(rel: &[u8]) -> &[u8] {
    rel.rsplit(|&b| b == b'/').next().unwrap_or(rel)
}

/// The directory holding a relative path (empty for a path in the root).
pub fn parent(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &[],
    }
}

/// Whether `rel` is `dir` or lies below it (`dir` empty: the whole tree).
pub fn is_under(rel: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (rel.starts_with(dir) && (rel.len() == dir.len() || rel[dir.len()] == b'/'))
}

/// A relative path for people and the wire's log field: lossy where it is not UTF-8.
pub fn lossy(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

/// Whether a path's last component ends in `.EXT` for one of `extensions` (without dots), as
/// `Path::extension` decides: a leading dot alone (`.py`) is no extension.
pub fn has_extension(rel: &[u8], extensions: &[String]) -> bool {
    let name = file_name(rel);
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => false,
        Some(dot) => extensions.iter().any(|e| e.as_bytes() == &name[dot + 1..]),
    }
}

/// Whether the watcher keeps track of a name: a watched extension, or a `.gitignore` (whose
/// change re-evaluates the directories below it).
pub fn is_watched_name(rel: &[u8], extensions: &[String]) -> bool {
    has_extension(rel, extensions) || file_name(rel) == b".gitignore"
}

/// Whether a relative path lies in the git directory.
pub fn in_git_dir(rel: &[u8]) -> bool {
    rel == b".git" || rel.starts_with(b".git/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_bytes() {
        let root = Path::new("/r");
        assert_eq!(relative(root, Path::new("/r/a/b.py")), Some(b"a/b.py".to_vec()));
        assert_eq!(relative(root, Path::new("/r")), None);
        assert_eq!(relative(root, Path::new("/elsewhere/x")), None);
        #[cfg(unix)]
        {
            let latin1 = join(root, b"d\xff/caf\xe9.py");
            assert_eq!(relative(root, &latin1), Some(b"d\xff/caf\xe9.py".to_vec()));
        }
        assert_eq!(child(b"", b"a"), b"a");
        assert_eq!(child(b"a", b"b"), b"a/b");
        assert_eq!((file_name(b"a/b.py"), parent(b"a/b.py")), (&b"b.py"[..], &b"a"[..]));
        assert_eq!((file_name(b"b.py"), parent(b"b.py")), (&b"b.py"[..], &b""[..]));
        assert!(is_under(b"a/b", b"a") && is_under(b"a", b"a") && is_under(b"x", b""));
        assert!(!is_under(b"ab/c", b"a"));
        assert_eq!(lossy(b"caf\xe9.py"), "caf\u{fffd}.py");
    }

    #[test]
    fn extension_matches_the_last_suffix_only() {
        let py = vec!["py".to_string()];
        assert!(has_extension(b"app/views.py", &py));
        assert!(has_extension(b"caf\xe9.py", &py));
        assert!(has_extension(b".#views.py", &py), "a name rule: the file type is checked apart");
        assert!(!has_extension(b"app/views.pyc", &py));
        assert!(!has_extension(b"app/views.py.swp", &py));
        assert!(!has_extension(b"app/views.py~", &py));
        assert!(!has_extension(b"py", &py));
        assert!(!has_extension(b"app/.py", &py));
        assert!(!has_extension(b"a.py/b", &py));
        assert!(has_extension(b"t.html", &["py".into(), "html".into()]));
    }

    #[test]
    fn the_git_dir_is_never_relevant() {
        assert!(in_git_dir(b".git/index"));
        assert!(in_git_dir(b".git"));
        assert!(!in_git_dir(b".github/workflow.py"));
        assert!(!in_git_dir(b"src/.git_helpers.py"));
    }
}
