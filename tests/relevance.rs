//! The relevance filter agrees with git itself: for random trees, ignore rules and staged files,
//! `Filter::is_relevant` says what `git ls-files -z` and `git check-ignore -z` say, for names
//! that are not UTF-8 and for symbolic links too (git tracks a link as a link); and
//! `Filter::is_relevant_on_disk` adds that a dangling link or a link to a directory is no file.
#![cfg(unix)]

mod util;

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use touchwire::relevance::Filter;
use util::Repo;

const DIRS: [&[u8]; 6] = [b"", b"app/", b"app/sub/", b"venv/lib/", b"build/", b"d\xff/"];
const NAMES: [&[u8]; 7] = [b"a.py", b"b.py", b"c.txt", b"local_settings.py", b"d.pyc", b"caf\xe9.py", b"\xfe\xff.py"];
const RULES: [&[u8]; 8] =
    [b"venv/", b"build/", b"*.pyc", b"local_settings.py", b"app/sub/", b"!app/sub/b.py", b"d\xff/", b"caf\xe9.py"];

/// What sits at a path: a file, or a link to a file, to nothing (an Emacs lock), or to a directory.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    File,
    LinkToFile,
    Dangling,
    LinkToDir,
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![4 => Just(Entry::File), 1 => Just(Entry::LinkToFile), 1 => Just(Entry::Dangling), 1 => Just(Entry::LinkToDir)]
}

/// The NUL-separated paths git prints with `-z`.
fn git_z(repo: &Repo, args: &[&[u8]], stdin: Option<&[u8]>) -> BTreeSet<Vec<u8>> {
    let mut cmd = Command::new("git");
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a))).current_dir(&repo.root);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    output.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()).map(<[u8]>::to_vec).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_filter_agrees_with_git(
        files in proptest::collection::btree_map((0..DIRS.len(), 0..NAMES.len()), entry(), 1..15),
        rules in proptest::collection::btree_set(0..RULES.len(), 0..4),
        staged in proptest::collection::vec(proptest::bool::ANY, 15),
        tracked_only in proptest::bool::ANY,
    ) {
        if !util::require("git") {
            return Ok(());
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(dir.path().join("repo"));
        std::fs::write(dir.path().join("target.txt"), "t\n").unwrap();
        let mut paths: Vec<(Vec<u8>, Entry)> = Vec::new();
        for ((d, n), kind) in &files {
            let rel = [DIRS[*d], NAMES[*n]].concat();
            let path = repo.root.join(OsStr::from_bytes(&rel));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match kind {
                Entry::File => std::fs::write(&path, "x = 1\n").unwrap(),
                Entry::LinkToFile => std::os::unix::fs::symlink(dir.path().join("target.txt"), &path).unwrap(),
                Entry::Dangling => std::os::unix::fs::symlink("user@host.1:2", &path).unwrap(),
                Entry::LinkToDir => std::os::unix::fs::symlink(dir.path(), &path).unwrap(),
            }
            paths.push((rel, *kind));
        }
        // Some files are tracked whatever the rules say (added before the rules, or forced);
        // the names go through stdin, NUL-separated, since some are not UTF-8.
        let stage: Vec<u8> = paths.iter().zip(&staged)
            .filter(|(_, stage)| **stage)
            .flat_map(|((p, _), _)| p.iter().copied().chain([0]))
            .collect();
        if !stage.is_empty() {
            git_z(&repo, &[b"add", b"-f", b"--pathspec-from-file=-", b"--pathspec-file-nul"], Some(&stage));
        }
        let gitignore: Vec<&[u8]> = rules.iter().map(|r| RULES[*r]).collect();
        let mut ignore_file = gitignore.join(&b'\n');
        ignore_file.push(b'\n');
        std::fs::write(repo.root.join(".gitignore"), &ignore_file).unwrap();

        let tracked = git_z(&repo, &[b"ls-files", b"-z"], None);
        let all: Vec<u8> = paths.iter().flat_map(|(p, _)| p.iter().copied().chain([0])).collect();
        let ignored = git_z(&repo, &[b"check-ignore", b"-z", b"--no-index", b"--stdin"], Some(&all));
        let filter = Filter::open(&repo.root, &["py".to_string()], tracked_only).unwrap();
        for (path, kind) in &paths {
            let by_name = path.ends_with(b".py")
                && (tracked.contains(path) || (!tracked_only && !ignored.contains(path)));
            let shown = String::from_utf8_lossy(path);
            prop_assert_eq!(
                filter.is_relevant(path),
                by_name,
                "{} (tracked {}, ignored {}, rules {:?}, tracked_only {})",
                shown, tracked.contains(path), ignored.contains(path), String::from_utf8_lossy(&ignore_file), tracked_only
            );
            let on_disk = by_name && matches!(kind, Entry::File | Entry::LinkToFile);
            prop_assert_eq!(filter.is_relevant_on_disk(path), on_disk, "{} is {:?}", shown, kind);
        }
    }
}
