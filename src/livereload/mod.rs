//! `touchwire watch --livereload`: the browser page reloads when the app is back.
//!
//! The watcher's triggers are split here: stylesheets (and the other configured asset
//! extensions) never reach the guest; they are applied in the page (liveCSS), while code goes to
//! the guest as before. Each code trigger's outcome comes back from delivery; once every trigger
//! sent is answered (the guest's ready check is over, or without a check the action is
//! acknowledged), the pages reload, once for the whole burst, or show the failure as an overlay.
//! Only the LiveReload clients' queues are touched on the watcher's path, never a socket.

pub mod origin;
pub mod server;

use crate::output::{Log, count};
use crate::watch::debounce::Trigger;
use crate::watch::delivery::{Outcome, failure_place};
use anyhow::{Context, Result};
use serde_json::json;
use server::{Gate, Hub, Server};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The LiveReload port the browser extensions use.
pub const DEFAULT_PORT: u16 = 35729;
/// Stylesheets applied one by one; a checkout touching more re-links every stylesheet at once.
const MOST_STYLESHEETS: usize = 8;

/// How the LiveReload server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host to bind (127.0.0.1 unless told otherwise: the page's own browser is on this machine).
    pub bind: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Extensions (without dots) of files the browser loads as they are: no app reload for them.
    pub assets: Vec<String>,
    /// The watcher's debounce: a burst's trailing trigger can follow its leading one this late.
    pub debounce: Duration,
    /// Pages allowed to connect beyond this machine's, private networks' and extensions'.
    pub origins: origin::Origins,
}

/// Beyond the debounce, how long after the last trigger the pages wait for a trailing one (the
/// watcher needs a moment to see the burst settle and send it). Without a ready check this is what
/// a page reload waits past the acknowledgement; with one, the app's reload usually takes longer.
const TRAILING_MARGIN: Duration = Duration::from_millis(70);

/// The running LiveReload side of the watcher.
pub struct LiveReload {
    hub: Arc<Hub>,
    server: Option<Server>,
    assets: Vec<String>,
    batch: Arc<Mutex<Batch>>,
    notifier: Option<JoinHandle<()>>,
    grace: Duration,
    log: Log,
}

impl LiveReload {
    /// Binds the server and starts accepting browsers.
    pub fn start(options: &Options, log: Log) -> Result<LiveReload> {
        let hub = Arc::new(Hub::default());
        let addr = match options.bind.contains(':') {
            true => format!("[{}]:{}", options.bind, options.port),
            false => format!("{}:{}", options.bind, options.port),
        };
        let server = Server::start(&addr, Arc::clone(&hub), Gate::new(options.origins.clone(), log))?;
        let assets = options.assets.iter().map(|ext| ext.trim_start_matches('.').to_ascii_lowercase()).collect();
        let grace = options.debounce + TRAILING_MARGIN;
        let live = LiveReload { hub, server: Some(server), assets, batch: Arc::default(), notifier: None, grace, log };
        let addr = live.addr();
        let script = format!("<script src=\"http://{}/livereload.js\"></script>", shown(addr));
        log.event(
            "livereload",
            &format!("LiveReload on {addr}: add {script} to your base template, or use a LiveReload extension"),
            json!({"addr": addr.to_string(), "script": script}),
        );
        Ok(live)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), Server::addr)
    }

    /// The asset extensions, which the watcher must also report.
    pub fn assets(&self) -> &[String] {
        &self.assets
    }

    /// The pages connected now.
    pub fn clients(&self) -> usize {
        self.hub.len()
    }

    /// Starts following delivery's outcomes; give the returned sender to [`crate::watch::delivery::Delivery::start`].
    /// `root` is the host's work tree, to name a failing file by its path here.
    pub fn outcomes(&mut self, root: Option<PathBuf>) -> Result<Sender<Outcome>> {
        let (tx, rx) = channel();
        let (hub, batch, log, grace) = (Arc::clone(&self.hub), Arc::clone(&self.batch), self.log, self.grace);
        let notifier = std::thread::Builder::new()
            .name("livereload notify".into())
            .spawn(move || notify(&rx, &hub, &batch, root.as_deref(), grace, log))
            .context("cannot start the LiveReload notifier thread")?;
        self.notifier = Some(notifier);
        Ok(tx)
    }

    /// Takes a trigger of the watcher: applies its assets in the pages at once and returns the
    /// part for the guest (none if it held only assets). `remotes` outcomes will answer it.
    pub fn route(&self, mut trigger: Trigger, remotes: usize) -> Option<Trigger> {
        let (code, assets): (Vec<String>, Vec<String>) =
            trigger.files.drain(..).partition(|file| !has_extension(file, &self.assets));
        let mut batch = lock(&self.batch);
        if !code.is_empty() && remotes > 0 {
            // The page reload that follows the app's covers these assets too (a real one).
            batch.sent(code[0].as_str(), remotes);
            batch.assets |= !assets.is_empty();
            return Some(Trigger { files: code, reason: trigger.reason });
        }
        let (sheets, others): (Vec<&String>, Vec<&String>) = assets.iter().partition(|f| has_extension(f, &["css"]));
        let mut messages: Vec<String> = match sheets.len() {
            0 => Vec::new(),
            n if n <= MOST_STYLESHEETS => sheets.iter().map(|path| reload_command(path)).collect(),
            _ => vec![reload_command("*.css")],
        };
        if let Some(other) = others.first() {
            match batch.expected > 0 {
                // A reload is coming once the app is back: it will load this too (a real one).
                true => batch.assets = true,
                false => messages = vec![reload_command(other)],
            }
        }
        drop(batch);
        for message in &messages {
            let pages = self.hub.broadcast(message);
            self.log.event(
                "browser",
                &format!("browser: {} applied in {}", summary(&assets), count(pages, "page", "pages")),
                json!({"pages": pages, "files": assets}),
            );
        }
        (!code.is_empty()).then_some(Trigger { files: code, reason: trigger.reason })
    }

    /// Stops: waits for the outcomes still owed (delivery must have finished, which ends them),
    /// then closes every page's connection.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(notifier) = self.notifier.take() {
            let _ = notifier.join();
        }
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl Drop for LiveReload {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Routes `trigger` through `live` when there is one; without it the trigger goes on as it is.
pub fn route(live: Option<&LiveReload>, trigger: Trigger, remotes: usize) -> Option<Trigger> {
    match live {
        Some(live) => live.route(trigger, remotes),
        None => Some(trigger),
    }
}

/// How a host address is written in a URL a browser on this machine can use.
fn shown(addr: SocketAddr) -> String {
    match addr.ip().is_unspecified() {
        true => format!("localhost:{}", addr.port()),
        false => addr.to_string(),
    }
}

fn summary(files: &[String]) -> String {
    crate::output::summary(files)
}

fn lock(batch: &Mutex<Batch>) -> MutexGuard<'_, Batch> {
    batch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `file`'s extension is one of `extensions` (compared without case).
fn has_extension(file: &str, extensions: &[impl AsRef<str>]) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && extensions.iter().any(|wanted| wanted.as_ref().eq_ignore_ascii_case(ext))
    })
}

/// The LiveReload `reload` command: a stylesheet is re-linked in place, anything else reloads the page.
pub fn reload_command(path: &str) -> String {
    json!({"command": "reload", "path": path, "liveCSS": true, "liveImg": true}).to_string()
}

/// The page reload once the app is back: [`reload_command`] and touchwire's own `swap`, true
/// when only code changed, so that a page that asked for it (`livereload.js?swap`) may swap its
/// body in; LiveReload clients ignore the field.
fn app_reload_command(path: &str, swap: bool) -> String {
    json!({"command": "reload", "path": path, "liveCSS": true, "liveImg": true, "swap": swap}).to_string()
}

/// The code triggers sent and not yet answered, and what their answers said.
#[derive(Debug, Default)]
struct Batch {
    /// Outcomes still to come (one per trigger and remote).
    expected: usize,
    /// The first file of the batch: the `path` of the page reload.
    path: Option<String>,
    /// The last verdict per remote.
    verdicts: BTreeMap<String, Verdict>,
    /// When the last code trigger went out.
    last_sent: Option<Instant>,
    /// An asset changed with the batch's code: its page reload must load it (no swap).
    assets: bool,
}

/// What one remote said about the app.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Back,
    Failed(Failure),
}

/// A reload that did not bring the app back, as the overlay shows it.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    remote: String,
    target: Option<String>,
    /// `file:line` on the host, when the traceback names one.
    place: Option<String>,
    /// The exception, or why the trigger was not delivered.
    message: String,
    /// The guest log's excerpt (the traceback).
    excerpt: String,
    ms: Option<u64>,
}

/// What the pages are told once a batch is answered.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Reload the page, for the change of the path; `true`: only code changed, so a page that
    /// asked for swaps may swap its body in instead.
    Reload(String, bool),
    Show(Failure),
}

impl Batch {
    /// A code trigger went to `remotes` remotes.
    fn sent(&mut self, path: &str, remotes: usize) {
        if self.expected == 0 {
            self.verdicts.clear();
        }
        self.expected += remotes;
        self.last_sent = Some(Instant::now());
        self.path.get_or_insert_with(|| path.to_string());
    }

    /// An outcome came back; once nothing more is expected, what the pages must do.
    fn answered(&mut self, outcome: &Outcome, root: Option<&Path>) -> Option<Decision> {
        self.expected = self.expected.saturating_sub(outcome.triggers);
        self.verdicts.insert(outcome.remote.clone(), verdict(outcome, root));
        if self.expected > 0 {
            return None;
        }
        let path = self.path.take().or_else(|| outcome.files.first().cloned()).unwrap_or_default();
        let verdicts = std::mem::take(&mut self.verdicts);
        let failed = verdicts.into_values().find_map(|v| match v {
            Verdict::Failed(failure) => Some(failure),
            Verdict::Back => None,
        });
        let swap = !std::mem::take(&mut self.assets);
        Some(failed.map_or(Decision::Reload(path, swap), Decision::Show))
    }
}

/// Whether the outcome says the app is back.
fn verdict(outcome: &Outcome, root: Option<&Path>) -> Verdict {
    match &outcome.result {
        Ok((reply, _)) => {
            // What reaches a page is escaped like what reaches a terminal.
            let reply = reply.escaped();
            match reply.not_ready() {
                None => Verdict::Back,
                Some(ready) => {
                    let excerpt = ready.error.unwrap_or_default();
                    let (place, message) = failure_place(&excerpt, root);
                    Verdict::Failed(Failure {
                        remote: outcome.remote.clone(),
                        target: reply.target.clone(),
                        place: place.strip_prefix(" at ").map(str::to_string),
                        message: message.to_string(),
                        excerpt: excerpt.clone(),
                        ms: Some(ready.ms),
                    })
                }
            }
        }
        Err(error) => Verdict::Failed(Failure {
            remote: outcome.remote.clone(),
            target: None,
            place: None,
            message: format!("not delivered: {}", crate::protocol::escape_remote(error)),
            excerpt: String::new(),
            ms: None,
        }),
    }
}

/// The overlay's command, which touchwire's client understands and the official ones ignore.
fn error_command(failure: &Failure) -> String {
    json!({
        "command": "touchwire-error",
        "remote": failure.remote,
        "target": failure.target,
        "place": failure.place,
        "message": failure.message,
        "excerpt": failure.excerpt,
        "ms": failure.ms,
    })
    .to_string()
}

/// Follows delivery's outcomes until delivery ends, telling the pages once per answered batch.
/// A decision is held until `grace` after the last trigger went out: a burst's trailing trigger
/// may still come (the leading one can be answered first), and then its answer decides.
fn notify(
    outcomes: &Receiver<Outcome>,
    hub: &Hub,
    batch: &Mutex<Batch>,
    root: Option<&Path>,
    grace: Duration,
    log: Log,
) {
    let mut held: Option<(Decision, Instant)> = None;
    loop {
        let received = match &held {
            Some((_, due)) => outcomes.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => outcomes.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(outcome) => {
                let mut batch = lock(batch);
                if let Some(decision) = batch.answered(&outcome, root) {
                    let due = batch.last_sent.map_or_else(Instant::now, |sent| sent + grace);
                    held = Some((decision, due));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some((decision, _)) = held.take() {
                    tell(hub, decision, log);
                }
                return;
            }
        }
        if held.as_ref().is_some_and(|(_, due)| Instant::now() >= *due) {
            // A trigger sent meanwhile opened a new batch: its answer decides instead.
            let superseded = lock(batch).expected > 0;
            if let Some((decision, _)) = held.take()
                && !superseded
            {
                tell(hub, decision, log);
            }
        }
    }
}

/// Tells every page what a batch's answer means.
fn tell(hub: &Hub, decision: Decision, log: Log) {
    match decision {
        Decision::Reload(path, swap) => {
            hub.stand(None);
            let pages = hub.broadcast(&app_reload_command(&path, swap));
            let line = format!("browser: reloaded {}", count(pages, "page", "pages"));
            log.event("browser", &line, json!({"pages": pages, "path": path}));
        }
        Decision::Show(failure) => {
            let command = error_command(&failure);
            hub.stand(Some(command.clone()));
            let pages = hub.broadcast(&command);
            let place = failure.place.as_deref().map(|p| format!(" at {p}")).unwrap_or_default();
            log.event(
                "browser",
                &format!("browser: showed the failure{place} in {}", count(pages, "page", "pages")),
                json!({"pages": pages, "place": failure.place, "message": failure.message}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ready, Reply};
    use std::time::Duration;

    fn outcome(remote: &str, ready: Option<Ready>, triggers: usize) -> Outcome {
        let reply = Reply { ok: true, target: Some("app".into()), ready, ..Reply::default() };
        Outcome {
            remote: remote.into(),
            files: vec!["app/views.py".into()],
            result: Ok((reply, Duration::ZERO)),
            triggers,
        }
    }

    fn back() -> Option<Ready> {
        Some(Ready { ok: true, ms: 80, error: None })
    }

    fn broken() -> Option<Ready> {
        let error = "Traceback (most recent call last):\n  File \"/srv/app/views.py\", line 3, in <module>\n    import foo\nModuleNotFoundError: No module named 'foo'\n";
        Some(Ready { ok: false, ms: 90, error: Some(error.into()) })
    }

    #[test]
    fn assets_are_told_apart_by_extension() {
        let assets = ["css".to_string()];
        assert!(has_extension("static/site.CSS", &assets));
        assert!(!has_extension("static/site.css.py", &assets));
        assert!(!has_extension("static/.css", &assets));
        assert!(!has_extension("css", &assets));
    }

    #[test]
    fn a_burst_is_one_reload_once_every_trigger_is_answered() {
        let mut batch = Batch::default();
        batch.sent("app/views.py", 1);
        batch.sent("app/models.py", 1);
        assert_eq!(batch.answered(&outcome("g", back(), 1), None), None, "the trailing trigger is still out");
        assert_eq!(batch.answered(&outcome("g", back(), 1), None), Some(Decision::Reload("app/views.py".into(), true)));
        // Triggers merged by delivery answer for several at once.
        batch.sent("a.py", 1);
        batch.sent("b.py", 1);
        assert_eq!(batch.answered(&outcome("g", back(), 2), None), Some(Decision::Reload("a.py".into(), true)));
        // A catch-up of owed files answers none, yet tells the pages.
        assert!(matches!(batch.answered(&outcome("g", back(), 0), None), Some(Decision::Reload(..))));
        // An asset that changed with the code: the reload must load it, so no swap; the next
        // batch of code alone may swap again.
        batch.sent("app/views.py", 1);
        batch.assets = true;
        assert_eq!(
            batch.answered(&outcome("g", back(), 1), None),
            Some(Decision::Reload("app/views.py".into(), false))
        );
        batch.sent("app/views.py", 1);
        assert_eq!(batch.answered(&outcome("g", back(), 1), None), Some(Decision::Reload("app/views.py".into(), true)));
    }

    #[test]
    fn a_failure_shows_where_and_the_next_good_reload_clears_it() {
        let mut batch = Batch::default();
        batch.sent("app/views.py", 1);
        let Some(Decision::Show(failure)) = batch.answered(&outcome("g", broken(), 1), None) else { panic!() };
        assert_eq!(failure.place.as_deref(), Some("/srv/app/views.py:3"));
        assert_eq!(failure.message, "ModuleNotFoundError: No module named 'foo'");
        assert!(failure.excerpt.contains("import foo"));
        batch.sent("app/views.py", 1);
        assert_eq!(batch.answered(&outcome("g", back(), 1), None), Some(Decision::Reload("app/views.py".into(), true)));
        // The last word of each remote counts: a burst whose trailing reload fixed it reloads.
        batch.sent("app/views.py", 1);
        batch.sent("app/views.py", 1);
        assert_eq!(batch.answered(&outcome("g", broken(), 1), None), None);
        assert!(matches!(batch.answered(&outcome("g", back(), 1), None), Some(Decision::Reload(..))));
        // With two guests, one that failed is shown.
        batch.sent("app/views.py", 2);
        assert_eq!(batch.answered(&outcome("a", back(), 1), None), None);
        assert!(matches!(batch.answered(&outcome("b", broken(), 1), None), Some(Decision::Show(f)) if f.remote == "b"));
    }

    #[test]
    fn an_undelivered_trigger_is_shown_too() {
        let mut batch = Batch::default();
        batch.sent("app.py", 1);
        let lost = Outcome { remote: "g".into(), files: vec![], result: Err("refused\u{1b}[31m".into()), triggers: 1 };
        let Some(Decision::Show(failure)) = batch.answered(&lost, None) else { panic!() };
        assert_eq!(failure.message, "not delivered: refused\\x1b[31m");
        assert!(error_command(&failure).contains("\"command\":\"touchwire-error\""));
    }

    #[test]
    fn stylesheets_never_reach_the_guest_and_code_does() {
        let options = Options {
            bind: "127.0.0.1".into(),
            port: 0,
            assets: vec!["css".into(), ".js".into()],
            debounce: Duration::from_millis(30),
            origins: origin::Origins::default(),
        };
        let live = LiveReload::start(&options, Log { quiet: true, ..Log::default() }).unwrap();
        assert_eq!(live.assets(), ["css", "js"]);
        let css = Trigger { files: vec!["static/site.css".into()], reason: "save" };
        assert!(live.route(css, 1).is_none());
        let mixed = Trigger { files: vec!["static/site.css".into(), "app.py".into()], reason: "burst" };
        assert_eq!(live.route(mixed, 1).map(|t| t.files), Some(vec!["app.py".to_string()]));
        assert_eq!(lock(&live.batch).expected, 1);
        assert_eq!(
            route(None, Trigger { files: vec!["x.css".into()], reason: "save" }, 1).map(|t| t.files.len()),
            Some(1)
        );
        live.stop();
    }
}
