//! The relevance filter agrees with git itself: for random trees, ignore rules and staged files,
//! `Filter::is_relevant` says what `git ls-files` and `git check-ignore` say.

mod util;

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::process::Command;
use touchwire::watch::filter::Filter;
use util::Repo;

const DIRS: [&str; 5] = ["", "app/", "app/sub/", "venv/lib/", "build/"];
const NAMES: [&str; 5] = ["a.py", "b.py", "c.txt", "local_settings.py", "d.pyc"];
const RULES: [&str; 6] = ["venv/", "build/", "*.pyc", "local_settings.py", "app/sub/", "!app/sub/b.py"];

fn git_lines(repo: &Repo, args: &[&str]) -> BTreeSet<String> {
    let output = Command::new("git").args(args).current_dir(&repo.root).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_filter_agrees_with_git(
        files in proptest::collection::btree_set((0..DIRS.len(), 0..NAMES.len()), 1..15),
        rules in proptest::collection::btree_set(0..RULES.len(), 0..4),
        staged in proptest::collection::vec(proptest::bool::ANY, 15),
        tracked_only in proptest::bool::ANY,
    ) {
        if !util::require("git") {
            return Ok(());
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(dir.path().join("repo"));
        let paths: Vec<String> = files.iter().map(|(d, n)| format!("{}{}", DIRS[*d], NAMES[*n])).collect();
        for path in &paths {
            repo.write(path, "x = 1\n");
        }
        // Some files are tracked whatever the rules say (added before the rules, or forced).
        for (path, stage) in paths.iter().zip(&staged) {
            if *stage {
                repo.git(&["add", "-f", path]);
            }
        }
        let gitignore: Vec<&str> = rules.iter().map(|r| RULES[*r]).collect();
        repo.write(".gitignore", &(gitignore.join("\n") + "\n"));

        let tracked = git_lines(&repo, &["ls-files"]);
        let mut check = vec!["check-ignore", "--no-index"];
        check.extend(paths.iter().map(String::as_str));
        let ignored = git_lines(&repo, &check);
        let filter = Filter::open(&repo.root, &["py".to_string()], tracked_only).unwrap();
        for path in &paths {
            let expected = path.ends_with(".py")
                && (tracked.contains(path) || (!tracked_only && !ignored.contains(path)));
            prop_assert_eq!(
                filter.is_relevant(path),
                expected,
                "{} (tracked {}, ignored {}, rules {:?}, tracked_only {})",
                path, tracked.contains(path), ignored.contains(path), gitignore, tracked_only
            );
        }
    }
}
