//! A small DevTools-protocol driver for Debian's headless chromium, over tungstenite: start the
//! browser on a fresh profile, open pages, evaluate JavaScript in them. Nothing downloads a browser.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Generous deadline for anything the browser is waited on for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A headless chromium and the DevTools connection to it; killed (its process group, which it
/// was started in) when dropped.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// An open tab: its DevTools session.
#[derive(Debug, Clone)]
pub struct Page {
    pub session: String,
    pub target: String,
}

impl Chromium {
    /// Starts `chromium` headless, with `prefix` (e.g. `ip netns exec NS`) before it when given.
    pub fn start(prefix: &[&str]) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        args.push("chromium".into());
        args.extend(
            [
                "--headless",
                "--no-sandbox", // the tests run as root, where chromium's sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ]
            .map(String::from),
        );
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("about:blank".into());
        let mut command = Command::new(&args[0]);
        command.args(&args[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("cannot start chromium");
        let url = devtools_url(profile.path());
        let (socket, _) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("DevTools at {url}: {e}"));
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        }
        Chromium { child, _profile: profile, socket, next_id: 0 }
    }

    /// Calls `method` (on a page's session, or on the browser) and returns its result.
    pub fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            request["sessionId"] = page.session.clone().into();
        }
        self.socket.send(Message::text(request.to_string())).map_err(|e| format!("{method}: {e}"))?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("{method}: {e}")),
            };
            let message: Value = serde_json::from_str(text.as_str()).map_err(|e| format!("{method}: {e}"))?;
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(format!("{method}: {error}")),
                    None => Ok(message["result"].clone()),
                };
            }
        }
        Err(format!("{method}: no answer within {:?}", WAIT))
    }

    /// Opens a new tab on `url`.
    pub fn open(&mut self, url: &str) -> Page {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"})).unwrap();
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true})).unwrap();
        let page = Page { session: attached["sessionId"].as_str().unwrap().to_string(), target };
        self.call(Some(&page), "Page.enable", json!({})).unwrap();
        self.call(Some(&page), "Page.navigate", json!({"url": url})).unwrap();
        page
    }

    /// Evaluates `expression` in the page; its value (JSON), or why not (an exception, a page
    /// being navigated meanwhile).
    pub fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call(Some(page), "Runtime.evaluate", params)?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {details}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `expression` until it is `true` (bounded by [`WAIT`]); panics with `what`
    /// and the page's last value of `show` otherwise.
    #[track_caller]
    pub fn wait_for(&mut self, page: &Page, what: &str, expression: &str, show: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.eval(page, expression) == Ok(Value::Bool(true)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}: {show} is {:?}", self.eval(page, show));
    }

    /// A PNG screenshot of the page, for a person to look at.
    pub fn screenshot(&mut self, page: &Page, path: &Path) -> Result<(), String> {
        let shot = self.call(Some(page), "Page.captureScreenshot", json!({"format": "png"}))?;
        let data = shot["data"].as_str().ok_or("no data in the screenshot")?;
        let png = data_encoding::BASE64.decode(data.as_bytes()).map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        // SAFETY: kill(2) on the process group this test created for its own chromium (pgid = its pid).
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's DevTools URL, from the DevToolsActivePort file it writes in its profile.
fn devtools_url(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("chromium wrote no {} within {:?}", file.display(), WAIT);
}
