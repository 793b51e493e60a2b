//! One connection to the receiver: the greeting, then request lines answered one by one. The
//! first line must arrive within a short time (the connection holds a pre-auth slot until then);
//! every later line whole within the read timeout, so a client dripping bytes cannot hold a slot.

use super::executor::{Answer, Failure, Trigger};
use super::{State, Waiting, lock};
use crate::auth;
use crate::output::{clean, summary};
use crate::protocol::{self, Admission, ErrorCode, Greeting, Health, Line, MAX_LINE, Op, Reply, Request, read_line};
use anyhow::Result;
use serde_json::json;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a closing connection may take to drain what its peer still sends.
const DRAIN: Duration = Duration::from_millis(200);
/// Beyond an action's own bound, how long a request waits for its executor's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// Reads from a stream against a deadline for the whole line, not for each read.
struct DeadlineReader {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Serves one connection (slot `id`) until the peer closes it, times out, or breaks a rule.
pub fn serve(state: &State, stream: TcpStream, peer: &str, id: u64) -> Result<()> {
    stream.set_write_timeout(Some(state.read_timeout))?;
    stream.set_nodelay(true)?;
    let nonce = auth::nonce()?;
    let mut writer = stream.try_clone()?;
    let greeting = Greeting { touchwire: protocol::VERSION, nonce: nonce.clone(), auth: state.token.is_some() };
    writer.write_all(protocol::to_line(&greeting).as_bytes())?;
    let mut reader = BufReader::new(DeadlineReader { stream, deadline: Instant::now() });
    let mut buf = Vec::with_capacity(256);
    let mut admitted = false;
    loop {
        let limit = if admitted { state.read_timeout } else { state.first_line };
        reader.get_mut().deadline = Instant::now() + limit;
        let (reply, close) = match read_line(&mut reader, &mut buf) {
            Ok(Line::Eof) => return Ok(()),
            Ok(Line::Complete) => {
                let admission = protocol::admit(&buf, &nonce, state.token.as_ref());
                if !admitted && !matches!(admission, Admission::Refuse { .. }) {
                    // A valid first line (with auth on: the token proved): the slot is held for
                    // good, decided before anything runs. One evicted meanwhile was told "busy"
                    // and must not act: its client will try again.
                    let mut slots = lock(&state.slots);
                    if !slots.holds(id) {
                        return Ok(());
                    }
                    slots.authenticated(id);
                    admitted = true;
                }
                state.handle(admission, peer)
            }
            Ok(Line::TooLong) => (Reply::error(ErrorCode::TooLong, format!("line longer than {MAX_LINE} bytes")), true),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let ms = limit.as_millis();
                (Reply::error(ErrorCode::BadRequest, format!("no complete request within {ms} ms; closing")), true)
            }
            Err(err) => return Err(err.into()),
        };
        if !reply.ok {
            let error = reply.error.as_deref().unwrap_or("");
            state.log.event("error", &format!("{peer}: {}", clean(error)), json!({"peer": peer, "error": error}));
        }
        writer.write_all(protocol::reply_line(&reply).as_bytes())?;
        if close {
            close_gracefully(&writer);
            return Ok(());
        }
    }
}

impl State {
    /// Answers one admitted line; the flag says whether to close the connection afterwards.
    fn handle(&self, admission: Admission, peer: &str) -> (Reply, bool) {
        match admission {
            Admission::Ping { probe } => (self.ping(probe), false),
            Admission::Reload(request) => (self.reload(&request, peer), false),
            Admission::Refuse { code, error, close } => (Reply::error(code, error), close),
        }
    }

    fn ping(&self, probe: bool) -> Reply {
        let health = self
            .targets
            .iter()
            .map(|(name, t)| {
                let (ok, detail) = probe.then(|| super::actions::probe(&t.spec.action)).unzip();
                let wait_ms = t.executor.wait_bound().map(|bound| bound.as_millis() as u64);
                (name.clone(), Health { ok, detail, ready_check: Some(t.spec.ready.is_some()), wait_ms })
            })
            .collect();
        Reply {
            ok: true,
            op: Some(Op::Ping.as_str().into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            targets: Some(self.targets.keys().cloned().collect()),
            default_target: self.default_target.clone(),
            health: Some(health),
            ..Reply::default()
        }
    }

    fn reload(&self, request: &Request, peer: &str) -> Reply {
        let known = || self.targets.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(name) = request.target.as_ref().or(self.default_target.as_ref()) else {
            let message = format!("no target named and no default target (known: {})", known());
            return Reply::error(ErrorCode::UnknownTarget, message);
        };
        let Some(target) = self.targets.get(name) else {
            return Reply::error(
                ErrorCode::UnknownTarget,
                format!("unknown target {:?} (known: {})", clean(name), known()),
            );
        };
        let checked = request.wait && target.spec.ready.is_some();
        let _waiting = match checked {
            true if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                let message = format!("{} requests already wait for a ready check; try again", self.max_waiting);
                return Reply::error(ErrorCode::Busy, message);
            }
            true => Some(Waiting(&self.waiting)),
            false => None,
        };
        let reason = request.reason.as_deref().unwrap_or("");
        let fields = json!({"peer": peer, "target": name, "reason": reason, "files": request.files});
        let describe = match request.files.as_slice() {
            [] => format!("{} from {peer}", clean(reason)),
            files => format!("{}: {} from {peer}", clean(reason), summary(files)),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let trigger = Trigger { wait: request.wait, fields, describe, files: request.files.clone(), reply };
        if !target.executor.submit(trigger) {
            return Reply::error(ErrorCode::Busy, "the receiver is stopping; try again when it is back");
        }
        let bound = target.executor.wait_bound().filter(|_| checked).unwrap_or(target.executor.action_bound());
        let answer = match answer.recv_timeout(bound + ANSWER_MARGIN) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let message = format!("no answer from target {name} within {} ms", (bound + ANSWER_MARGIN).as_millis());
                return Reply::error(ErrorCode::Internal, message);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Reply::error(ErrorCode::Internal, format!("target {name} stopped before answering"));
            }
        };
        let Answer { merged, result } = answer;
        match result {
            Ok(ready) => Reply {
                ok: true,
                op: Some(Op::Reload.as_str().into()),
                target: Some(name.clone()),
                action: Some(target.spec.action.kind().into()),
                merged: Some(merged),
                ready: if request.wait { ready } else { None },
                ..Reply::default()
            },
            Err(Failure { code, message }) => Reply::error(code, message),
        }
    }
}

/// Ends our side, then drains a little of what the peer still sends, for at most [`DRAIN`]:
/// closing a socket with unread input sends a reset, which can destroy the last line before the
/// peer reads it.
pub fn close_gracefully(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN;
    let mut peer = stream;
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match peer.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Tells a connection being served that it lost its slot, and closes both directions, so that
/// its thread, blocked in a read, wakes at once and ends (it would otherwise hold its thread and
/// descriptors until its read deadline).
pub fn evict(stream: TcpStream, reply: Reply) {
    // Non-blocking (the socket is shared with the evicted thread, whose reads end here anyway):
    // never block the accept loop on a peer that reads nothing.
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(protocol::reply_line(&reply).as_bytes());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Answers a connection with one error line and closes it, without ever blocking the accept loop.
pub fn reject(stream: TcpStream, reply: Reply) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut peer = &stream;
    let _ = peer.write_all(protocol::reply_line(&reply).as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    // Drain only what has already arrived: unread input would turn the close into a reset.
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match peer.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
    // Whatever the peer does next, the connection is over (an evicted one's thread sees it too).
    let _ = stream.shutdown(Shutdown::Both);
}
