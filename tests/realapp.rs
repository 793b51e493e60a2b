//! A real Django project in a real guest over a real shared folder (issue 14): the guest is a
//! network namespace that sees the host's work tree through sshfs from the host's own sshd
//! (tests/util/guest.rs), as Lima and Colima give it, so it hears no file event of a host edit and
//! caches attributes; the app is `wagtail start mysite` (Django, ~1,600 modules) run by Debian's
//! uWSGI in the guest, with the virtualenv on the guest's side and the code on the mount.
//!
//! The virtualenv and the project come from scripts/realapp-setup, cached in
//! ~/.cache/touchwire-realapp (or $TOUCHWIRE_REALAPP_CACHE): its first run pip-installs Wagtail
//! (a minute or two); later runs take a moment. Needs root, iproute2, util-linux, openssh-server,
//! openssh-client, sshfs, fuse3, inotify-tools, uwsgi, uwsgi-plugin-python3, python3-venv and
//! git (scripts/test installs them). Locally a missing tool skips a test, saying so; in CI it fails.

#[path = "util/guest.rs"]
mod guest;
mod util;

use guest::{Guest, MountOptions};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use util::Env;

/// Whether `tool` is installed: locally a missing one skips the test (saying so), in CI it fails.
fn need(tool: &str) -> bool {
    let found = guest::have(tool);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have {tool} installed (scripts/test installs it)"
        );
        eprintln!("skipping: {tool} is not installed (scripts/test installs it when run as root)");
    }
    found
}

/// Root, the guest's tools and `extra`.
fn guest_ready(extra: &[&str]) -> bool {
    if !util::require_root("network namespaces, sshd and a FUSE mount") {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have /dev/fuse");
        eprintln!("skipping: no /dev/fuse");
        return false;
    }
    guest::TOOLS.iter().map(|(tool, _)| *tool).chain(extra.iter().copied()).all(need)
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
fn within<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines inotifywait printed after it said it was watching.
fn events(log: &str) -> Vec<String> {
    let after = log.split_once("Watches established.").map_or("", |(_, rest)| rest);
    after.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn inotify_in_the_guest_hears_nothing_of_a_host_edit_while_its_bytes_arrive() {
    if !guest_ready(&["inotifywait"]) {
        return;
    }
    let env = Env::new();
    let shared = env.join("shared");
    fs::create_dir_all(shared.join("app")).unwrap();
    fs::write(shared.join("app/value.py"), "VALUE = 'one'\n").unwrap();
    let mut guest = Guest::start("i", &shared, MountOptions::default()).expect("cannot start the guest");
    let seen = guest.mount.join("app/value.py");
    assert_eq!(fs::read_to_string(&seen).unwrap(), "VALUE = 'one'\n", "the guest reads the shared file");

    let mut inotify = guest.guest("inotifywait");
    inotify.args(["-m", "-r", "-e", "modify,close_write,moved_to,create,delete,attrib", "--format", "%e %w%f"]);
    inotify.arg(&guest.mount);
    guest.spawn("inotifywait", inotify).unwrap();
    within(Duration::from_secs(10), || guest.said("inotifywait").contains("Watches established.").then_some(()))
        .unwrap_or_else(|| panic!("inotifywait never watched the mount: {}", guest.said("inotifywait")));

    // The host edits the file, as an editor on the host does: the guest's inotify must stay silent.
    let edited = Instant::now();
    fs::write(shared.join("app/value.py"), "VALUE = 'two, a longer line'\n").unwrap();
    fs::write(shared.join("app/new.py"), "NEW = 1\n").unwrap();
    let arrived = within(Duration::from_secs(60), || {
        (fs::read_to_string(&seen).ok()? == "VALUE = 'two, a longer line'\n").then(|| edited.elapsed())
    });
    let arrived = arrived.unwrap_or_else(|| {
        panic!("the host's edit never reached the guest in 60 s: it reads {:?}", fs::read_to_string(&seen))
    });
    assert!(guest.mount.join("app/new.py").exists(), "a new host file is seen by the guest");
    std::thread::sleep(Duration::from_millis(500));
    let heard = events(&guest.said("inotifywait"));
    assert!(heard.is_empty(), "inotify in the guest heard a host-side edit over sshfs: {heard:?}");
    eprintln!("the host's edit reached the guest after {} ms; its inotify heard nothing", arrived.as_millis());

    // Control: a write made through the mount in the guest is heard, so the silence above is sshfs's.
    fs::write(guest.mount.join("app/guest.py"), "X = 1\n").unwrap();
    within(Duration::from_secs(10), || {
        events(&guest.said("inotifywait")).iter().any(|e| e.ends_with("guest.py")).then_some(())
    })
    .unwrap_or_else(|| panic!("inotifywait missed a write in the guest itself: {}", guest.said("inotifywait")));
    assert_eq!(
        fs::read_to_string(shared.join("app/guest.py")).unwrap(),
        "X = 1\n",
        "the guest's write reached the host"
    );
}
