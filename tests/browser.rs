//! `touchwire watch --livereload` in a real browser: Debian's headless chromium, driven over the
//! DevTools protocol, shows a page served by a real uWSGI that `touchwire listen` reloads with a
//! ready check. A save on the host shows the new text in every tab once the app is back; a broken
//! save shows the overlay with file:line, the fix clears it; a stylesheet applies in place. And,
//! without a browser, the LiveReload protocol itself and clients that misbehave.
//! The story runs twice: on loopback, and (as root) with uWSGI and the receiver in a guest network
//! namespace and the watcher and chromium in a host one, joined by a veth pair.
#![cfg(target_os = "linux")] // util/site.rs: network namespaces

#[path = "util/cdp.rs"]
mod cdp;
#[path = "util/site.rs"]
mod site;
mod util;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message;
use util::{Env, Project, WAIT};

type Client = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// A LiveReload client as the extensions are: connect, hello with protocol 7.
fn client(addr: &str) -> (Client, Value) {
    let (mut socket, _) = tungstenite::connect(format!("ws://{addr}/livereload")).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(WAIT)).unwrap();
    }
    let hello = json!({"command": "hello", "protocols": ["http://livereload.com/protocols/official-7"]});
    socket.send(Message::text(hello.to_string())).unwrap();
    let answer = next(&mut socket);
    (socket, answer)
}

fn next(socket: &mut Client) -> Value {
    match socket.read() {
        Ok(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn livereload_speaks_protocol_7_and_misbehaving_clients_cost_nothing() {
    let s = Project::new(&[("app.py", "VALUE = 1\n"), ("static/site.css", "h1 {}\n")], true);
    let watcher = s.env.spawn(&s.repo.root, &["watch", "--json", "--livereload=0"]);
    let addr = watcher.wait_event("livereload")["addr"].as_str().unwrap().to_string();
    watcher.wait_event("ready");

    let script = get(&addr, "/livereload.js");
    assert!(script.starts_with("HTTP/1.1 200 OK") && script.contains("official-7"), "{script}");
    assert!(get(&addr, "/other").starts_with("HTTP/1.1 404"));
    let mut preflight = TcpStream::connect(&addr).unwrap();
    write!(
        preflight,
        "OPTIONS /livereload.js HTTP/1.1\r\nHost: {addr}\r\nAccess-Control-Request-Private-Network: true\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    preflight.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 204") && answer.contains("Access-Control-Allow-Private-Network: true"),
        "{answer}"
    );

    // Clients that misbehave: one sends garbage, one connects and says nothing, one sends a
    // WebSocket handshake and then never reads.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(&[0xff; 4096]).unwrap();
    let _silent = TcpStream::connect(&addr).unwrap();
    let (mut deaf, _) = client(&addr);
    let _ = deaf.get_mut();

    let (mut first, hello) = client(&addr);
    assert_eq!(hello["command"], "hello");
    assert_eq!(hello["protocols"], json!(["http://livereload.com/protocols/official-7"]));
    let (mut second, _) = client(&addr);
    // Garbage after the handshake is ignored.
    first.send(Message::text("{not json")).unwrap();

    s.repo.write("app.py", "VALUE = 2\n");
    assert_eq!(s.receiver.wait_event("reload")["files"], json!(["app.py"]));
    for socket in [&mut first, &mut second] {
        let reload = next(socket);
        assert_eq!((reload["command"].as_str(), reload["path"].as_str()), (Some("reload"), Some("app.py")), "{reload}");
        assert_eq!(reload["liveCSS"], true);
    }

    // A stylesheet is applied in the page and never reaches the guest.
    s.repo.write("static/site.css", "h1 { color: red; }\n");
    let reload = next(&mut first);
    assert_eq!(reload["path"], "static/site.css", "{reload}");
    s.no_trigger("a stylesheet", Duration::from_millis(500));

    // A burst (a leading trigger answered before its trailing one goes out) is one page reload.
    s.repo.write("app.py", "VALUE = 'burst'\n");
    std::thread::sleep(Duration::from_millis(10));
    s.repo.write("other.py", "OTHER = 1\n");
    assert_eq!(next(&mut first)["command"], "reload");
    // (Usually a leading and a trailing trigger; the receiver's events are drained here.)
    s.receiver.named_within("reload", Duration::from_millis(500));
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = first.get_ref() {
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    }
    assert!(first.read().is_err(), "a second page reload for one burst");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = first.get_ref() {
        stream.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(next(&mut second)["command"], "reload");

    // A client that never reads is not waited for: many saves, each still reaches the others.
    for n in 0..20 {
        s.repo.write("app.py", &format!("VALUE = {}\n", n + 3));
        s.receiver.wait_event("reload");
        let reload = next(&mut first);
        assert_eq!(reload["path"], "app.py");
        let _ = next(&mut second);
    }
}

/// The WebSocket handshake's answer (its status line and headers) for a page of `origin`.
fn handshake(addr: &str, origin: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
    write!(
        stream,
        "GET /livereload HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn only_local_pages_and_extensions_may_follow_saves() {
    let s = Project::new(&[("app.py", "VALUE = 1\n")], true);
    let watcher =
        s.env.spawn(&s.repo.root, &["watch", "--json", "--livereload=0", "--livereload-origin", "dev.example.com"]);
    let addr = watcher.wait_event("livereload")["addr"].as_str().unwrap().to_string();
    for allowed in [
        None,
        Some("http://localhost:8000"),
        Some("http://192.168.56.10:8000"),
        Some("chrome-extension://jnihajbhpnppcggbcgedagnkighmdlei"),
        Some("https://dev.example.com"),
    ] {
        let answer = handshake(&addr, allowed);
        assert!(answer.starts_with("HTTP/1.1 101"), "{allowed:?}: {answer}");
    }
    // Another site's page would read every save's files and a failure's code: refused, and said once.
    for _ in 0..3 {
        let answer = handshake(&addr, Some("https://evil.example"));
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    let said = watcher.wait_stderr("refused a page from https://evil.example");
    assert!(said.contains("--livereload-origin HOST"), "{said}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(watcher.stderr().matches("refused a page from").count(), 1, "{}", watcher.stderr());
}

#[test]
fn a_taken_livereload_port_is_a_clear_error() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let repo = util::Repo::init(env.join("repo"));
    repo.write(".touchwire.json", &json!({"remote": "127.0.0.1:9"}).to_string());
    repo.commit_all("init");
    env.run_in(&repo.root, &["watch", &format!("--livereload={port}")])
        .expect_code(1)
        .expect_stderr(&format!("cannot serve LiveReload on 127.0.0.1:{port}"));
}

const OVERLAY: &str = "document.getElementById('touchwire-overlay')";
const TEXT: &str = "document.getElementById('msg') && document.getElementById('msg').textContent";

#[test]
fn the_page_shows_the_save_once_the_app_is_back_and_the_failure_until_it_is_fixed() {
    if !(util::require("chromium") && site::uwsgi_installed()) {
        return;
    }
    let site = site::Site::start(Some(&[]));
    let mut browser = cdp::Chromium::start(&[]);
    story(&site, &mut browser);
}

#[test]
fn across_network_namespaces_the_guest_serves_and_the_host_browser_follows() {
    if !(util::require_root("network namespaces")
        && util::require("ip")
        && util::require("chromium")
        && site::uwsgi_installed())
    {
        return;
    }
    let net = site::Net::new();
    // This thread moves to the host's namespace: the watcher and chromium start there, the
    // guest's uWSGI and receiver in the guest's, and the page comes from the guest's address.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                site::Net::enter(&net.host);
                let site = site::Site::start_across(&net, &[]);
                assert!(site.url.contains(site::GUEST_ADDR), "{}", site.url);
                let mut browser = cdp::Chromium::start(&[]);
                story(&site, &mut browser);
            })
            .join()
            .expect("the story across namespaces failed (its panic is above)")
    });
}

#[test]
fn with_swap_the_page_changes_without_a_navigation_where_a_reload_would_show_the_same() {
    if !(util::require("chromium") && site::uwsgi_installed()) {
        return;
    }
    let site = site::Site::start_swapping(&[]);
    let mut browser = cdp::Chromium::start(&[]);
    let tab = browser.open(&site.url);
    browser.wait_for(&tab, "the page to connect", "!!(window.__touchwire && window.__touchwire.connected)", TEXT);
    // State that a navigation would lose, and a scrolled page.
    // (The tall element is outside the body, which the swap replaces; <html>'s own attributes
    // must stay as the page has them, or a reload would differ.)
    let tall = "var tall = document.createElement('div'); tall.style.height = '5000px'; \
                document.documentElement.appendChild(tall)";
    browser.eval(&tab, &format!("window.kept = 7; {tall}; window.scrollTo(0, 300); true")).unwrap();
    let swaps = "window.__touchwire.swaps";

    site.save_views("MESSAGE = 'two'\n");
    browser.wait_for(&tab, "the new text", &format!("{TEXT} === 'two'"), TEXT);
    assert_eq!(browser.eval(&tab, "window.kept"), Ok(json!(7)), "a navigation: the page's state is gone");
    assert_eq!(browser.eval(&tab, swaps), Ok(json!(1)));
    assert_eq!(browser.eval(&tab, "window.scrollY"), Ok(json!(300)), "the scroll position is kept");

    // A failure shows the overlay; the fix swaps it away with the old body.
    site.save_views("MESSAGE = 'three'\nimport no_such_module\n");
    browser.wait_for(&tab, "the overlay", &format!("!!{OVERLAY}"), TEXT);
    site.save_views("MESSAGE = 'fixed'\n");
    browser.wait_for(&tab, "the fixed text", &format!("{TEXT} === 'fixed'"), TEXT);
    assert_eq!(browser.eval(&tab, &format!("!!{OVERLAY}")), Ok(json!(false)));
    assert_eq!(browser.eval(&tab, "window.kept"), Ok(json!(7)));
    assert_eq!(browser.eval(&tab, swaps), Ok(json!(2)));

    // A stylesheet re-linked in place is still the page's own: the next save swaps again.
    let color = "getComputedStyle(document.getElementById('msg')).color";
    site.repo.write("static/site.css", "h1 { color: rgb(255, 0, 0); }\n");
    browser.wait_for(&tab, "the new stylesheet", &format!("{color} === 'rgb(255, 0, 0)'"), color);
    site.save_views("MESSAGE = 'after css'\n");
    browser.wait_for(&tab, "the text after the stylesheet", &format!("{TEXT} === 'after css'"), TEXT);
    assert_eq!(browser.eval(&tab, "[window.kept, window.__touchwire.swaps]"), Ok(json!([7, 3])));

    // A new stylesheet in the head: a swap would not load it, so the page is reloaded.
    let wsgi = site::WSGI.replace(
        r#"<link rel="stylesheet" href="/static/site.css">"#,
        r#"<link rel="stylesheet" href="/static/site.css"><link rel="stylesheet" href="/static/more.css">"#,
    );
    // The stylesheet first, on its own (an asset with the code would make it a reload anyway):
    // the page's own check must tell that the new head differs.
    site.repo.write("static/more.css", "h1 { font-style: italic; }\n");
    std::thread::sleep(Duration::from_millis(300));
    site.repo.write("wsgi.py", &wsgi.replace("{message}", "{message}!"));
    browser.wait_for(&tab, "the reloaded page", &format!("{TEXT} === 'after css!'"), TEXT);
    browser.wait_for(&tab, "the page to connect again", "!!(window.__touchwire && window.__touchwire.connected)", TEXT);
    assert_eq!(browser.eval(&tab, "window.kept"), Ok(Value::Null), "reloaded, so the state is gone");
    let italic = "getComputedStyle(document.getElementById('msg')).fontStyle";
    assert_eq!(browser.eval(&tab, italic), Ok(json!("italic")));
}

/// Two tabs on the site's page: a save, a broken save, the fix, a stylesheet.
fn story(site: &site::Site, browser: &mut cdp::Chromium) {
    let tabs = [browser.open(&site.url), browser.open(&site.url)];
    for tab in &tabs {
        browser.wait_for(tab, "the page to connect", "!!(window.__touchwire && window.__touchwire.connected)", TEXT);
        assert_eq!(browser.eval(tab, TEXT), Ok(json!("one")));
    }

    // A save: every tab shows the new text, reloaded once.
    site.save_views("MESSAGE = 'two'\n");
    for tab in &tabs {
        browser.wait_for(tab, "the new text", &format!("{TEXT} === 'two'"), TEXT);
        browser.wait_for(
            tab,
            "the page to connect again",
            "!!(window.__touchwire && window.__touchwire.connected)",
            TEXT,
        );
    }

    // A broken save: the page stays, with the overlay naming the file and line.
    site.save_views("MESSAGE = 'three'\nimport no_such_module\n");
    let shown = format!("{OVERLAY} && {OVERLAY}.textContent");
    for tab in &tabs {
        browser.wait_for(tab, "the overlay", &format!("!!{OVERLAY}"), TEXT);
        let overlay = browser.eval(tab, &shown).unwrap();
        let overlay = overlay.as_str().unwrap();
        assert!(overlay.contains("app/views.py:2"), "{overlay}");
        assert!(overlay.contains("No module named 'no_such_module'"), "{overlay}");
        assert_eq!(browser.eval(tab, TEXT), Ok(json!("two")), "the page was not reloaded onto an error");
    }
    if let Ok(dir) = std::env::var("TOUCHWIRE_SCREENSHOTS") {
        // For a person to look at.
        browser.screenshot(&tabs[0], &std::path::Path::new(&dir).join("overlay.png")).unwrap();
    }

    // The fix: the new text, and the overlay is gone.
    site.save_views("MESSAGE = 'fixed'\n");
    for tab in &tabs {
        browser.wait_for(tab, "the fixed text", &format!("{TEXT} === 'fixed'"), TEXT);
        assert_eq!(browser.eval(tab, &format!("!!{OVERLAY}")), Ok(json!(false)));
        browser.wait_for(
            tab,
            "the page to connect again",
            "!!(window.__touchwire && window.__touchwire.connected)",
            TEXT,
        );
    }

    // A stylesheet applies in place: what was typed and the page's own state survive.
    let tab = &tabs[0];
    browser.eval(tab, "document.getElementById('name').value = 'typed'; window.kept = 42; true").unwrap();
    let color = "getComputedStyle(document.getElementById('msg')).color";
    assert_eq!(browser.eval(tab, color), Ok(json!("rgb(0, 0, 255)")));
    site.repo.write("static/site.css", "h1 { color: rgb(255, 0, 0); }\n");
    browser.wait_for(tab, "the new stylesheet", &format!("{color} === 'rgb(255, 0, 0)'"), color);
    assert_eq!(browser.eval(tab, "document.getElementById('name').value"), Ok(json!("typed")));
    assert_eq!(browser.eval(tab, "window.kept"), Ok(json!(42)), "the page was not reloaded");
    let reloads = site.receiver.named_within("reload", Duration::from_millis(300));
    assert!(reloads.iter().all(|r| r["files"] != json!(["static/site.css"])), "{reloads:?}");
}
