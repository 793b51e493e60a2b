//! One connection to the receiver: the greeting, then request lines answered one by one. Every
//! line must arrive whole within the read timeout, so a client dripping bytes cannot hold a slot.

use super::State;
use crate::auth;
use crate::protocol::{self, Greeting, Line, MAX_LINE, Reply, read_line};
use anyhow::Result;
use serde_json::json;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a closing connection may take to drain what its peer still sends.
const DRAIN: Duration = Duration::from_millis(200);

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

/// Serves one connection until the peer closes it, times out, or breaks a rule.
pub fn serve(state: &Arc<State>, stream: TcpStream, peer: &str) -> Result<()> {
    stream.set_write_timeout(Some(state.read_timeout))?;
    stream.set_nodelay(true)?;
    let nonce = auth::nonce()?;
    let mut writer = stream.try_clone()?;
    let greeting = Greeting { touchwire: protocol::VERSION, nonce: nonce.clone(), auth: state.token.is_some() };
    writer.write_all(protocol::to_line(&greeting).as_bytes())?;
    let mut reader = BufReader::new(DeadlineReader { stream, deadline: Instant::now() });
    let mut buf = Vec::with_capacity(256);
    loop {
        reader.get_mut().deadline = Instant::now() + state.read_timeout;
        let (reply, close) = match read_line(&mut reader, &mut buf) {
            Ok(Line::Eof) => return Ok(()),
            Ok(Line::Complete) => state.handle(&buf, &nonce, peer),
            Ok(Line::TooLong) => {
                (Reply::error(protocol::ErrorCode::TooLong, format!("line longer than {MAX_LINE} bytes")), true)
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let ms = state.read_timeout.as_millis();
                (
                    Reply::error(
                        protocol::ErrorCode::BadRequest,
                        format!("no complete request within {ms} ms; closing"),
                    ),
                    true,
                )
            }
            Err(err) => return Err(err.into()),
        };
        if !reply.ok {
            let error = reply.error.as_deref().unwrap_or("");
            state.log.event("error", &format!("{peer}: {error}"), json!({"peer": peer, "error": error}));
        }
        writer.write_all(protocol::to_line(&reply).as_bytes())?;
        if close {
            close_gracefully(&writer);
            return Ok(());
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

/// Answers a connection over the cap with one error line, without ever blocking the accept loop.
pub fn reject(stream: TcpStream, message: &str) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut peer = &stream;
    let _ = peer.write_all(protocol::to_line(&Reply::error(protocol::ErrorCode::Busy, message)).as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    // Drain only what has already arrived: unread input would turn the close into a reset.
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match peer.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}
