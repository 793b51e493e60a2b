//! What touchwire says when something is not right: each message names the cause and the fix,
//! and promises nothing that will not happen (issue 16).

mod util;

use util::{Env, Repo, eventually};

/// A repository with one committed Python file.
fn repo(env: &Env) -> Repo {
    let repo = Repo::init(env.join("repo"));
    repo.write("app.py", "X = 1\n");
    repo.commit_all("init");
    repo
}

#[test]
fn a_watcher_with_the_wrong_token_is_told_it_was_refused_and_how_to_fix_it() {
    let env = Env::new();
    let repo = repo(&env);
    let (good, bad) = (env.join("good-token"), env.join("bad-token"));
    std::fs::write(&good, "the-right-token-0123").unwrap();
    std::fs::write(&bad, "the-wrong-token-0123").unwrap();
    let receiver = env.listen(&["--touch", env.join("r").to_str().unwrap(), "--token-file", good.to_str().unwrap()]);
    let (watcher, _) = env.watch_in(&repo.root, &["--to", &receiver.addr, "--token-file", bad.to_str().unwrap()]);
    watcher.wait_event("disconnected");
    eventually("the watcher's refusal line", || watcher.stderr().contains("refused"));
    let said = watcher.stderr();
    let line = said.lines().find(|l| l.contains("refused")).unwrap();
    assert!(line.contains("wrong token"), "{said}");
    assert!(line.contains(bad.to_str().unwrap()) && line.contains("TOUCHWIRE_TOKEN_FILE"), "{said}");
    assert!(!said.contains("will retry") && !said.contains("cannot reach"), "{said}");
}
