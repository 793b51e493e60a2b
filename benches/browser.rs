//! Benchmark of `watch --livereload` in a real browser (DESIGN.md, "Seeing it in the browser").
//!
//! Run it with `cargo bench --bench browser`. A page served by a real uWSGI (master FIFO, ready
//! check on its log, `touchwire listen` on loopback) is open in Debian's headless chromium, with
//! touchwire's script tag. For N saves (`BENCH_EDITS`, default 20) of the module the page shows,
//! it measures from the save to the new text in the page (read over the DevTools protocol every
//! ~2 ms) and from the save to the first HTTP answer with the new text (a poller every 2 ms: the
//! app is back); the difference is what the browser side adds. It counts the times the page
//! showed anything but the app (an error page, a refused connection) during a reload. The Django
//! app is measured three ways: touchwire's page reload, touchwire's swap (`livereload.js?swap`),
//! and runserver with django-browser-reload. Only
//! 127.0.0.1 is contacted; children are killed by their PID (chromium by the process group it
//! was started in) at the end.

#[path = "../tests/util/cdp.rs"]
mod cdp;
mod common;
#[path = "browser_django/mod.rs"]
mod django;
#[path = "../tests/util/site.rs"]
mod site;
#[path = "../tests/util/mod.rs"]
mod util;

use common::quantile;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a single save may take to show.
const SAVE_BOUND: Duration = Duration::from_secs(20);

fn main() {
    if !(util::require("chromium") && site::uwsgi_installed()) {
        eprintln!("bench browser: needs chromium, uwsgi and uwsgi-plugin-python3 (scripts/test installs them)");
        return;
    }
    let edits: usize = std::env::var("BENCH_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(20).max(5);
    println!("# touchwire browser benchmark\n");
    println!("Command: `cargo bench --bench browser`, {edits} saves, uWSGI 1 worker on loopback, headless chromium.\n");
    println!("- CPU: {}", common::cpu_model());
    println!("- logical CPUs: {}", common::logical_cpus());
    println!("- chromium: {}", version("chromium"));
    println!("- uWSGI: {}\n", version("uwsgi"));
    let (run, floor) = touchwire(edits);
    println!(
        "| reloader | save → app back (HTTP), median ms | p90 | save → reload sent, median ms | p90 | save → new text in the page, median ms | p90 | page after app back, median ms | p90 | error pages |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    run.row("plain WSGI app: touchwire watch --livereload, fifo + ready check");
    match django::venv() {
        Ok(venv) => {
            django::touchwire(&venv, edits, "")
                .row("Django app: touchwire watch --livereload, uWSGI fifo + ready check");
            django::touchwire(&venv, edits, "?swap")
                .row("Django app: the same, livereload.js?swap (the body swapped in, no navigation)");
            django::peer(&venv, edits).row("Django app: runserver + django-browser-reload");
        }
        Err(why) => println!("| Django app | not measured: {why} |"),
    }
    println!(
        "\nThe browser's own floor: a reload of the unchanged page (DevTools Page.reload) to its text, median {:.1} ms, p90 {:.1} ms.",
        quantile(&floor, 0.5),
        quantile(&floor, 0.9)
    );
    println!(
        "\nPeer: django-browser-reload {} with Django {} (runserver's own reloader, on local disk).",
        django::VERSION_PEER,
        django::VERSION_DJANGO
    );
}

fn version(program: &str) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

#[derive(Default)]
struct Run {
    back: Vec<f64>,
    /// Save to the page reload sent (the watcher's `browser` event).
    told: Vec<f64>,
    visible: Vec<f64>,
    errors: usize,
}

impl Run {
    /// One save (`save` writes `text`): waits for the page to show it, and records the times.
    fn save(&mut self, browser: &mut cdp::Chromium, tab: &cdp::Page, url: &str, text: &str, save: impl FnOnce()) {
        let poller = Poller::start(url, &format!(">{text}<"));
        let start = Instant::now();
        save();
        let mut error_seen = false;
        let visible = loop {
            assert!(start.elapsed() < SAVE_BOUND, "the page never showed {text}");
            match browser.eval(tab, SHOWN) {
                Ok(serde_json::Value::String(shown)) if shown == text => break start.elapsed(),
                Ok(serde_json::Value::String(_)) => {}
                // Mid-navigation the page has no context to evaluate in: not an error page.
                Err(_) => {}
                Ok(_) => error_seen = true,
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let back = poller.finish().unwrap_or(visible);
        self.errors += usize::from(error_seen);
        self.back.push(back.as_secs_f64() * 1000.0);
        self.visible.push(visible.as_secs_f64() * 1000.0);
    }

    fn row(&self, name: &str) {
        let after: Vec<f64> = self.visible.iter().zip(&self.back).map(|(v, b)| v - b).collect();
        // No reload-sent moment for a reloader that does not say when it reloads.
        let ms = |values: &[f64], p: f64| match values.is_empty() {
            true => "–".to_string(),
            false => format!("{:.0}", quantile(values, p)),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} |",
            ms(&self.back, 0.5),
            ms(&self.back, 0.9),
            ms(&self.told, 0.5),
            ms(&self.told, 0.9),
            ms(&self.visible, 0.5),
            ms(&self.visible, 0.9),
            quantile(&after, 0.5),
            quantile(&after, 0.9),
            self.errors
        );
    }
}

/// What the page shows: the app's text, or `None` for anything else (an error page, no page).
/// Anything else counts only once loaded: a page mid-navigation is not an error page.
const SHOWN: &str = "document.title === 'shop' && document.getElementById('msg') ? document.getElementById('msg').textContent : (document.readyState === 'complete' ? null : '')";

fn touchwire(edits: usize) -> (Run, Vec<f64>) {
    let site = site::Site::start(Some(&[]));
    let mut browser = cdp::Chromium::start(&[]);
    let tab = browser.open(&site.url);
    let connected = "!!(window.__touchwire && window.__touchwire.connected)";
    browser.wait_for(&tab, "the page to connect", connected, SHOWN);
    let mut run = Run::default();
    for edit in 0..edits {
        // Different lengths and a pause: each save is its own burst, as a person saves.
        let text = format!("v{edit}{}", "x".repeat(edit % 3));
        std::thread::sleep(Duration::from_millis(300));
        let saved = unix_seconds();
        run.save(&mut browser, &tab, &site.url, &text, || site.save_views(&format!("MESSAGE = '{text}'\n")));
        let told = site.watcher().wait_event("browser")["time"].as_f64().unwrap_or(f64::NAN);
        run.told.push((told - saved) * 1000.0);
        browser.wait_for(&tab, "the page to connect again", connected, SHOWN);
    }
    // What a page reload costs this browser by itself, the app idle.
    let mut floor = Vec::new();
    for _ in 0..edits {
        browser.eval(&tab, "window.__old = 1").unwrap();
        let start = Instant::now();
        browser.call(Some(&tab), "Page.reload", serde_json::json!({})).unwrap();
        let fresh = format!("window.__old === undefined && ({SHOWN}) !== null && ({SHOWN}) !== ''");
        while browser.eval(&tab, &fresh) != Ok(serde_json::Value::Bool(true)) {
            assert!(start.elapsed() < SAVE_BOUND, "the page never came back from Page.reload");
            std::thread::sleep(Duration::from_millis(2));
        }
        floor.push(start.elapsed().as_secs_f64() * 1000.0);
        browser.wait_for(&tab, "the page to connect again", connected, SHOWN);
    }
    (run, floor)
}

/// GETs the page every 2 ms until it carries `needle`; the time of the first such answer.
struct Poller {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Option<Duration>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Poller {
    fn start(url: &str, needle: &str) -> Poller {
        let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        let (stop, found) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
        let (flag, slot, needle) = (Arc::clone(&stop), Arc::clone(&found), needle.to_string());
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) && start.elapsed() < SAVE_BOUND {
                if get(&addr).is_some_and(|body| body.contains(&needle)) {
                    *slot.lock().unwrap() = Some(start.elapsed());
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Poller { stop, found, thread }
    }

    fn finish(self) -> Option<Duration> {
        // The page showed the text, so the app served it: the poller has it or gets it at once.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.found.lock().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        *self.found.lock().unwrap()
    }
}

fn get(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
