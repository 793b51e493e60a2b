//! The host side of wire protocol v1: connect, check the greeting, authenticate, request, read
//! the reply. Every failure is one sentence naming the remote. Used by `send`, `status` and the watcher.

use crate::auth::Token;
use crate::config::address::{Address, Use};
use crate::protocol::{self, ErrorCode, Greeting, MAX_LINE, Reply, Request, escape_remote};
use anyhow::{Result, anyhow, bail};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How a client proves it holds the token: the token and the file it came from (for messages).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The token, if one is configured.
    pub token: Option<Token>,
    /// The file it was read from, named in "wrong token" messages.
    pub file: Option<PathBuf>,
}

impl Credentials {
    /// The token `config` names, read from its file.
    pub fn of(config: &crate::config::Config) -> Result<Credentials, crate::error::UsageError> {
        Ok(Credentials { token: config.token()?, file: config.token_file.value.clone() })
    }
}

/// An open, greeted connection to one receiver; it may carry many requests.
pub struct Connection {
    remote: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: Greeting,
    mac: Option<String>,
    token_file: Option<PathBuf>,
}

/// The receiver answered but will not take requests from us (a wrong or missing token, another
/// protocol version, not a touchwire receiver at all): unlike an unreachable guest, trying again
/// cannot help.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The receiver answered a request with `ok:false`: what kind of failure, for the caller to
/// branch on, and the sentence for a person. The guest was reached and answered: whatever the
/// code, this is never a network problem.
#[derive(Debug)]
pub struct Remote {
    /// The reply's code ([`code_of`]): `Unknown` for a code this version does not know, which
    /// callers treat like `ActionFailed`.
    pub code: ErrorCode,
    /// The receiver's error, control characters escaped, after the remote's name.
    pub message: String,
    /// The whole reply, e.g. for the ready check's excerpt of a `not_ready`.
    pub reply: Reply,
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Remote {}

/// The [`Remote`] answer `err` is or wraps, if it is one.
pub fn remote_error(err: &anyhow::Error) -> Option<&Remote> {
    err.chain().find_map(|cause| cause.downcast_ref::<Remote>())
}

/// Whether `err` is (or wraps) a [`Refused`], or an `unauthorized` answer: trying again cannot help.
pub fn is_refusal(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Refused>())
        || remote_error(err).is_some_and(|r| r.code == ErrorCode::Unauthorized)
}

/// The code of a failed reply. A receiver older than the `code` field said it only in its
/// text: then the text's old prefixes (`unauthorized`, `busy:`) tell, and anything else is
/// `ActionFailed`. Never used to read the text of a reply that has a code.
pub fn code_of(reply: &Reply) -> ErrorCode {
    if let Some(code) = reply.code {
        return code;
    }
    let error = reply.error.as_deref().unwrap_or("");
    if error.starts_with("unauthorized") {
        ErrorCode::Unauthorized
    } else if error.starts_with("busy:") {
        ErrorCode::Busy
    } else {
        ErrorCode::ActionFailed
    }
}

/// Longest pause between attempts to reach a receiver that is at its connection cap.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);

/// What one connection attempt got.
enum Opened {
    /// A greeting: the connection is ready for requests.
    Greeted(Connection),
    /// The receiver's "busy" line: it is at its connection cap.
    Busy(String),
}

impl Connection {
    /// Connects to `remote` (`HOST[:PORT]`, the port 9001 when not given) and reads its
    /// greeting, all within `timeout`. A receiver at its connection cap answers "busy": then try
    /// again, with a short backoff, until `timeout`. Messages name the remote with the port
    /// tried (`[::1]:9001`); an address that cannot be one is a [`crate::error::UsageError`].
    pub fn open(remote: &str, credentials: &Credentials, timeout: Duration) -> Result<Connection> {
        let address = Address::parse(remote, Use::Connect)
            .map_err(|msg| crate::error::UsageError(format!("{remote:?}: {msg}")))?;
        let remote = &address.to_string();
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            match Connection::open_once(&address, credentials, deadline, timeout)? {
                Opened::Greeted(connection) => return Ok(connection),
                Opened::Busy(_) if Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(BUSY_BACKOFF);
                }
                Opened::Busy(error) => bail!("{remote}: {error} (still, after {} ms)", timeout.as_millis()),
            }
        }
    }

    fn open_once(address: &Address, credentials: &Credentials, deadline: Instant, timeout: Duration) -> Result<Opened> {
        let remote = &address.to_string();
        let addrs = resolve(address, deadline, timeout)?;
        let mut last_error = None;
        let mut stream = None;
        for a in &addrs {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            match TcpStream::connect_timeout(a, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some(stream) = stream else {
            let err = last_error.map(|e| connect_failure(&e, timeout)).unwrap_or_else(|| "no address".into());
            bail!("{remote}: {err}");
        };
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader, deadline, timeout).map_err(|err| match err {
            ReadFailure::TimedOut(msg) | ReadFailure::Other(msg) | ReadFailure::Garbled(msg) => {
                anyhow!("{remote}: {msg}")
            }
        })?;
        let greeting: Greeting = match serde_json::from_str(&line) {
            Ok(greeting) => greeting,
            Err(_) => match serde_json::from_str::<Reply>(&line) {
                Ok(reply) if !reply.ok => {
                    let error = escape_remote(reply.error.as_deref().unwrap_or("refused without saying why"));
                    if code_of(&reply) == ErrorCode::Busy {
                        return Ok(Opened::Busy(error));
                    }
                    return Err(Refused(format!("{remote}: {error}")).into());
                }
                _ => {
                    let said = truncate(&line, 80);
                    return Err(Refused(format!("{remote}: not a touchwire receiver (it said {said:?})")).into());
                }
            },
        };
        if greeting.touchwire != protocol::VERSION {
            let (theirs, ours) = (greeting.touchwire, protocol::VERSION);
            return Err(Refused(format!(
                "{remote}: speaks touchwire protocol v{theirs}, this touchwire speaks v{ours}"
            ))
            .into());
        }
        let mac = match (&credentials.token, greeting.auth) {
            (Some(token), _) => Some(token.mac(&greeting.nonce)),
            (None, true) => {
                return Err(Refused(format!(
                    "{remote}: requires a token and none is configured: copy the guest's token file and pass \
                     --token-file, or set token_file in .touchwire.json (`touchwire init --token` creates the file it names)"
                ))
                .into());
            }
            (None, false) => None,
        };
        Ok(Opened::Greeted(Connection {
            remote: remote.to_string(),
            reader,
            writer,
            greeting,
            mac,
            token_file: credentials.file.clone(),
        }))
    }

    /// How long a `wait` request to `target` (the default one when `None`) may take there, as
    /// the receiver's ping says; [`WAIT_REPLY`] from a receiver that does not say.
    pub fn wait_bound(&mut self, target: Option<&str>, timeout: Duration) -> Result<Duration> {
        let pong = self.request(Request { op: Some(protocol::Op::Ping), ..Request::default() }, timeout)?;
        let target = target.map(str::to_string).or(pong.default_target);
        let health = target.and_then(|t| pong.health.and_then(|mut h| h.remove(&t)));
        // Bounded here too: a guest's word must not make a client wait for days.
        Ok(health.and_then(|h| h.wait_ms).map_or(WAIT_REPLY, Duration::from_millis).min(MAX_WAIT_REPLY))
    }

    /// Whether the receiver asked for authentication.
    pub fn auth_required(&self) -> bool {
        self.greeting.auth
    }

    /// Sends `request` (signed when a token is configured) and waits up to `timeout` for the reply.
    /// A reply with `ok:false` is a [`Remote`] error (find it with [`remote_error`]) carrying
    /// the receiver's code and message; an `unauthorized` one is also a refusal ([`is_refusal`]).
    pub fn request(&mut self, request: Request, timeout: Duration) -> Result<Reply> {
        let reply = self.call(request, timeout)?;
        if reply.ok {
            return Ok(reply);
        }
        let code = code_of(&reply);
        let error = escape_remote(reply.error.as_deref().unwrap_or("failed without saying why"));
        let file = match (code, &self.token_file) {
            (ErrorCode::Unauthorized, Some(path)) => format!(" ({} differs from the guest's token)", path.display()),
            _ => String::new(),
        };
        Err(Remote { code, message: format!("{}: {error}{file}", self.remote), reply }.into())
    }

    /// Like [`Connection::request`], but a reply with `ok:false` is returned as it is: only
    /// transport failures are errors, and after one the connection is unusable. A reply that
    /// came but cannot be read is [`CallError::Garbled`]: the receiver had the request.
    pub fn call(&mut self, mut request: Request, timeout: Duration) -> Result<Reply, CallError> {
        let remote = self.remote.clone();
        let deadline = Instant::now() + timeout;
        request.mac = self.mac.clone();
        let request = protocol::fit(request);
        let sent = self
            .writer
            .set_write_timeout(Some(timeout))
            .and_then(|()| self.writer.write_all(protocol::to_line(&request).as_bytes()));
        if let Err(err) = sent {
            return Err(CallError::NotSent(anyhow!("{remote}: cannot send the request: {err}")));
        }
        // The request went out: whether a reload ran is unknown from here on.
        let unknown =
            if request.op == Some(protocol::Op::Reload) { " (the reload may or may not have run)" } else { "" };
        let line = read_line(&mut self.reader, deadline, timeout).map_err(|err| match err {
            ReadFailure::TimedOut(msg) => CallError::NoReply(anyhow!("{remote}: {msg}")),
            ReadFailure::Other(msg) => CallError::Lost(anyhow!("{remote}: {msg}{unknown}")),
            ReadFailure::Garbled(msg) => CallError::Garbled(anyhow!("{remote}: {msg}{unknown}")),
        })?;
        serde_json::from_str(&line).map_err(|_| {
            let said = truncate(&line, 80);
            CallError::Garbled(anyhow!("{remote}: unreadable reply {said:?}{unknown}"))
        })
    }

    /// Whether the receiver closed the connection or sent something unasked (e.g. its idle-timeout
    /// error line) since the last reply: then the next request must go on a new connection.
    pub fn is_stale(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let peeked = stream.peek(&mut byte);
        let restored = stream.set_nonblocking(false).is_ok();
        !restored || !matches!(peeked, Err(ref err) if err.kind() == ErrorKind::WouldBlock)
    }
}

/// The socket addresses `address` names, within `deadline`: name resolution has no timeout of
/// its own, and a hook or an editor must not hang on a resolver that does not answer.
fn resolve(address: &Address, deadline: Instant, timeout: Duration) -> Result<Vec<SocketAddr>> {
    let remote = address.to_string();
    // An IP address needs no resolver: no thread for the common case.
    if address.is_ip() {
        return Ok(address.to_socket_addrs()?.collect());
    }
    let addr = address.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            // If the caller gave up, nobody receives: the thread ends when the resolver returns.
            let _ = tx.send(addr.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
        })
        .map_err(|err| anyhow!("{remote}: cannot start name resolution: {err}"))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(err)) => bail!("{remote}: cannot resolve address: {err}"),
        Err(_) => bail!("{remote}: the name did not resolve within {} ms", timeout.as_millis()),
    }
}

fn connect_failure(err: &std::io::Error, timeout: Duration) -> String {
    match err.kind() {
        ErrorKind::ConnectionRefused => "connection refused (is `touchwire listen` running there?)".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("no answer within {} ms (is the guest up and the port open?)", timeout.as_millis())
        }
        _ => format!("cannot connect: {err}"),
    }
}

/// Why a call got no reply.
#[derive(Debug)]
pub enum CallError {
    /// The request could not be written: the receiver did not act on it.
    NotSent(anyhow::Error),
    /// The connection failed after the request went out, before a reply: on a connection that
    /// had gone stale (the receiver closed it before reading), a retry on a new one is safe.
    Lost(anyhow::Error),
    /// The request went out and no reply came in time: the action may still be running, so it
    /// must not be sent again.
    NoReply(anyhow::Error),
    /// The request went out and the receiver answered something that cannot be read (longer
    /// than [`MAX_LINE`], not UTF-8, not a reply, cut off): it had the request, so it must not
    /// be sent again.
    Garbled(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(err) | CallError::Lost(err) | CallError::NoReply(err) | CallError::Garbled(err) => {
                write!(f, "{err:#}")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Why a line could not be read.
enum ReadFailure {
    TimedOut(String),
    /// Nothing of a line came: the connection closed or failed.
    Other(String),
    /// Something came that is not a line we can take: the peer did answer.
    Garbled(String),
}

/// Reads one line before `deadline`.
fn read_line(reader: &mut BufReader<TcpStream>, deadline: Instant, timeout: Duration) -> Result<String, ReadFailure> {
    let timed_out = || ReadFailure::TimedOut(format!("no answer within {} ms", timeout.as_millis()));
    let other = |msg: String| ReadFailure::Other(msg);
    let garbled = |msg: String| ReadFailure::Garbled(msg);
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        reader.get_ref().set_read_timeout(Some(left)).map_err(|err| other(err.to_string()))?;
        let limit = (MAX_LINE + 1).saturating_sub(buf.len()) as u64;
        match reader.by_ref().take(limit).read_until(b'\n', &mut buf) {
            Ok(0) if buf.is_empty() => return Err(other("the receiver closed the connection".into())),
            Ok(_) if buf.last() == Some(&b'\n') => {
                buf.pop();
                return String::from_utf8(buf)
                    .map_err(|_| garbled("the receiver sent bytes that are not UTF-8".into()));
            }
            Ok(0) => return Err(garbled("the receiver closed the connection mid-line".into())),
            Ok(_) if buf.len() > MAX_LINE => {
                return Err(garbled(format!("the receiver sent a line longer than {MAX_LINE} bytes")));
            }
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(timed_out()),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(other(format!("connection failed: {err}"))),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Longest wait for the reply to a `wait` request when the guest does not say how long it may
/// take: the default ready check (30 s) and some.
pub const WAIT_REPLY: Duration = Duration::from_secs(35);
/// The longest a client waits for a `wait` reply, whatever the guest says.
const MAX_WAIT_REPLY: Duration = Duration::from_secs(600);

/// One request to one remote on a fresh connection, within `timeout` overall. Returns the reply and the round trip.
pub fn exchange(
    remote: &str,
    credentials: &Credentials,
    request: &Request,
    timeout: Duration,
) -> Result<(Reply, Duration)> {
    let start = Instant::now();
    let mut connection = Connection::open(remote, credentials, timeout)?;
    let left = || timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    // Reaching the guest is bounded by `timeout`; a reply that waits for the app to come back
    // takes as long as the guest's ready check: the guest says how long that can be.
    let left = match request.wait {
        true => connection.wait_bound(request.target.as_deref(), left())? + timeout,
        false => left(),
    };
    let reply = connection.request(request.clone(), left)?;
    Ok((reply, start.elapsed()))
}

/// [`exchange`] with every remote in parallel; results in the order of `remotes`.
pub fn fan_out(
    remotes: &[String],
    credentials: &Credentials,
    request: &Request,
    timeout: Duration,
) -> Vec<Result<(Reply, Duration)>> {
    if let [only] = remotes {
        return vec![exchange(only, credentials, request, timeout)];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            remotes.iter().map(|remote| scope.spawn(move || exchange(remote, credentials, request, timeout))).collect();
        handles
            .into_iter()
            .zip(remotes)
            .map(|(handle, remote)| handle.join().unwrap_or_else(|_| Err(anyhow!("{remote}: internal error"))))
            .collect()
    })
}

/// A stand-in receiver for unit tests of the client side.
#[cfg(test)]
pub(crate) mod fake {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A receiver on 127.0.0.1 that writes `greeting` on every connection, then answers each
    /// line with `answer(line)`. Returns its address and how many reload requests it got, over
    /// all connections.
    pub fn receiver(greeting: &'static str, answer: fn(&str) -> String) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let reloads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reloads);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone");
                    if writer.write_all(format!("{greeting}\n").as_bytes()).is_err() {
                        return;
                    }
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        if line.contains(r#""op":"reload""#) {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        if writer.write_all(answer(&line).as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, reloads)
    }

    /// A greeting without auth.
    pub const OPEN: &str = r#"{"touchwire":1,"nonce":"00000000000000000000000000000000","auth":false}"#;

    /// A pong naming one target, `app`, without a ready check.
    pub const PONG: &str =
        r#"{"ok":true,"op":"ping","targets":["app"],"default_target":"app","health":{"app":{"ready_check":false}}}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_is_named_with_the_port_tried_and_a_bad_one_is_a_usage_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = Connection::open(&format!(" 127.0.0.1:{port} "), &NO_TOKEN, SHORT).err().unwrap();
        assert!(err.to_string().starts_with(&format!("127.0.0.1:{port}: connection refused")), "{err}");
        let err = Connection::open("guest:99999", &NO_TOKEN, SHORT).err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2, "{err}");
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 5), "ab");
    }

    const NO_TOKEN: Credentials = Credentials { token: None, file: None };
    const SHORT: Duration = Duration::from_millis(2000);

    fn reload() -> Request {
        Request { op: Some(protocol::Op::Reload), ..Request::default() }
    }

    #[test]
    fn an_over_long_or_unreadable_reply_is_garbled_not_lost() {
        let (addr, reloads) =
            fake::receiver(fake::OPEN, |_| format!("{{\"ok\":true,\"error\":\"{}\"}}\n", "x".repeat(5000)));
        let mut connection = Connection::open(&addr, &NO_TOKEN, SHORT).unwrap();
        let err = connection.call(reload(), SHORT).unwrap_err();
        assert!(matches!(err, CallError::Garbled(_)), "{err}");
        assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
        assert_eq!(reloads.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (addr, _) = fake::receiver(fake::OPEN, |_| "not json\n".into());
        let mut connection = Connection::open(&addr, &NO_TOKEN, SHORT).unwrap();
        let err = connection.call(reload(), SHORT).unwrap_err();
        assert!(matches!(err, CallError::Garbled(_)) && err.to_string().contains("unreadable reply"), "{err}");

        let (addr, _) = fake::receiver(fake::OPEN, |_| "\u{1b}[2J\n".into());
        let mut connection = Connection::open(&addr, &NO_TOKEN, SHORT).unwrap();
        let err = connection.call(reload(), SHORT).unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'), "{err:?}");
    }

    /// The error `request` returns for a receiver that answers every line with `answer`.
    fn request_error(answer: fn(&str) -> String) -> anyhow::Error {
        let (addr, _) = fake::receiver(fake::OPEN, answer);
        let mut connection = Connection::open(&addr, &NO_TOKEN, SHORT).unwrap();
        connection.request(reload(), SHORT).unwrap_err()
    }

    #[test]
    fn failures_are_told_apart_by_their_code_not_their_text() {
        let err = request_error(|_| r#"{"ok":false,"code":"unauthorized","error":"no"}"#.to_string() + "\n");
        assert!(is_refusal(&err), "{err}");
        assert_eq!(remote_error(&err).map(|r| r.code), Some(ErrorCode::Unauthorized));

        let err = request_error(|_| {
            r#"{"ok":false,"code":"action_failed","error":"unauthorized: a log line"}"#.to_string() + "\n"
        });
        assert!(!is_refusal(&err), "the code says it, not the text");
        assert_eq!(remote_error(&err).map(|r| r.code), Some(ErrorCode::ActionFailed));

        let err =
            request_error(|_| r#"{"ok":false,"code":"not_ready","error":"app did not come back"}"#.to_string() + "\n");
        let remote = remote_error(&err).unwrap();
        assert_eq!(remote.code, ErrorCode::NotReady);
        assert!(remote.reply.not_ready().is_some() && !is_refusal(&err));

        let err = request_error(|_| r#"{"ok":false,"code":"on_fire","error":"\u001b[31mhot"}"#.to_string() + "\n");
        assert_eq!(remote_error(&err).map(|r| r.code), Some(ErrorCode::Unknown));
        assert!(err.to_string().ends_with(": \\x1b[31mhot"), "escaped: {err}");
    }

    #[test]
    fn a_receiver_without_codes_is_understood_by_its_old_prefixes() {
        let err = request_error(|_| {
            r#"{"ok":false,"error":"unauthorized: wrong token (mac does not match)"}"#.to_string() + "\n"
        });
        assert!(is_refusal(&err), "{err}");
        assert!(err.to_string().contains(": unauthorized: wrong token"), "{err}");
        let err = request_error(|_| r#"{"ok":false,"error":"unknown target \"x\""}"#.to_string() + "\n");
        assert_eq!(remote_error(&err).map(|r| r.code), Some(ErrorCode::ActionFailed));
        assert!(!is_refusal(&err));
    }

    #[test]
    fn busy_at_the_greeting_is_retried_by_code_or_by_the_old_prefix() {
        let timeout = Duration::from_millis(300);
        for line in
            [r#"{"ok":false,"code":"busy","error":"full up"}"#, r#"{"ok":false,"error":"busy: 16 connections"}"#]
        {
            let (addr, _) = fake::receiver(line, |_| String::new());
            let err = Connection::open(&addr, &NO_TOKEN, timeout).err().unwrap();
            assert!(err.to_string().contains("still, after 300 ms") && !is_refusal(&err), "{line}: {err}");
        }
        let (addr, _) =
            fake::receiver(r#"{"ok":false,"code":"internal","error":"busy: not really"}"#, |_| String::new());
        let err = Connection::open(&addr, &NO_TOKEN, timeout).err().unwrap();
        assert!(is_refusal(&err) && !err.to_string().contains("still, after"), "{err}");
    }
}
