//! VS Code's watch task problem matchers on what `touchwire watch` prints, paths with spaces
//! included; and, where code-server is installed, the tasks in real VS Code (code-server)
//! driven by headless chromium over the DevTools protocol.

mod util;

use serde_json::Value;
use util::Project;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn matchers() -> Vec<Value> {
    let tasks = touchwire::editor::parse_jsonc(touchwire::editor::VSCODE_TASKS).unwrap();
    let watch = tasks["tasks"].as_array().unwrap().iter().find(|t| t["label"] == "touchwire: watch").unwrap().clone();
    watch["problemMatcher"].as_array().unwrap().clone()
}

fn captures(matcher: &Value, line: &str) -> Option<Vec<String>> {
    // VS Code's regexes are JavaScript's; these use nothing Rust's regex reads differently.
    let re = regex::Regex::new(matcher["pattern"]["regexp"].as_str().unwrap()).unwrap();
    re.captures(line).map(|c| c.iter().skip(1).map(|m| m.map_or(String::new(), |m| m.as_str().to_string())).collect())
}

#[test]
fn problem_matchers_take_paths_with_spaces() {
    let m = matchers();
    let line = "12:00:00.000 not delivered: my app/views.py: 127.0.0.1:9: connection refused; will send it when the guest is back";
    assert_eq!(
        captures(&m[0], line).unwrap(),
        ["my app/views.py", "127.0.0.1:9: connection refused; will send it when the guest is back"]
    );
    let line = "12:00:00.000 not delivered: my app/a.py, b.py and 2 more: 127.0.0.1:9: refused";
    assert_eq!(captures(&m[0], line).unwrap()[0], "my app/a.py");
    let line = "12:00:00.000 app: reload failed at my app/views.py:3 after 380 ms: ModuleNotFoundError: No module named 'foo' (my app/views.py -> 10.0.0.2:9001)";
    let got = captures(&m[1], line).unwrap();
    assert_eq!(got[..2], ["my app/views.py", "3"]);
    assert!(got[2].starts_with("ModuleNotFoundError: No module named 'foo'"), "{got:?}");
}

#[test]
fn the_watcher_prints_what_the_matchers_read_for_a_path_with_spaces() {
    let s = Project::new(&[("my app/views.py", "VALUE = 1\n")], true);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut watcher = s.env.command(&s.repo.root, &["watch", "--to", &dead]);
    let mut child = watcher.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let m = matchers();
    let wait = |pattern: &str| {
        let re = regex::Regex::new(pattern).unwrap();
        let deadline = std::time::Instant::now() + util::WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if re.is_match(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line matching {pattern}")
    };
    wait(m[0]["background"]["endsPattern"].as_str().unwrap());
    s.repo.write("my app/views.py", "VALUE = 2\n");
    let line = wait(m[0]["pattern"]["regexp"].as_str().unwrap());
    assert_eq!(captures(&m[0], &line).unwrap()[0], "my app/views.py", "{line}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = ROOT;
}
