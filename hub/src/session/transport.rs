//! The WebSocket transport: the only module that uses actix-web-actors, so that moving to another
//! WebSocket library stays local to this file.
//!
//! Besides the handshake, it holds the defences that actix-web-actors 4.3 does not give:
//! - [`FrameGuard`] reads frame headers as bytes arrive and refuses a frame, or a fragmented
//!   message, larger than the limit the moment its header announces it. The codec alone checks
//!   the length only once the whole frame is buffered, so a client announcing 1 GiB would
//!   otherwise make the server buffer whatever it sends.
//! - [`close_code_for`] maps every protocol error to its close code; the session must close on
//!   each one, because an ignored header-level error is returned again on every poll.

use std::{
    cell::Cell,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use actix_http::ws::{Codec, ProtocolError};
use actix_web::{error::PayloadError, web::Bytes, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use futures_util::Stream;
use switchboard_protocol::{close, PROTOCOL};

use super::WsSession;

pub(crate) use actix_http::ws::Item;
pub(crate) use actix_web_actors::ws::{CloseCode, CloseReason, Message};

/// The actor context of a session.
pub(crate) type WsContext = ws::WebsocketContext<WsSession>;

/// A close code decided by the transport before the codec saw the frame (today: 1009 for a frame
/// header that announces too much), read by the session when the resulting error reaches it.
pub(crate) type Verdict = Rc<Cell<Option<u16>>>;

/// Completes the WebSocket handshake and starts `session` on the current worker.
pub(crate) fn start(
    session: WsSession,
    req: &HttpRequest,
    payload: actix_web::web::Payload,
    max_message_bytes: usize,
    verdict: Verdict,
) -> Result<HttpResponse, actix_web::Error> {
    let mut response = ws::handshake_with_protocols(req, &[PROTOCOL])?;
    let guard = FrameGuard::new(payload, max_message_bytes, verdict);
    let codec = Codec::new().max_size(max_message_bytes);
    Ok(response.streaming(ws::WebsocketContext::with_codec(session, guard, codec)))
}

/// Builds a close reason from a code and a short text.
pub(crate) fn close_reason(code: u16, text: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_owned()),
    }
}

/// The close code for a protocol error, or `None` when the connection itself failed and there is
/// nobody to tell.
pub(crate) fn close_code_for(
    err: &ProtocolError,
    verdict: Option<u16>,
) -> Option<(u16, &'static str)> {
    if let Some(code) = verdict {
        return Some((code, "message too big"));
    }
    match err {
        ProtocolError::Overflow => Some((close::MESSAGE_TOO_BIG, "message too big")),
        ProtocolError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
            // The codec's report of non-zero reserved bits.
            Some((close::PROTOCOL_ERROR, "protocol error"))
        }
        // actix-web-actors reports a text frame that is not UTF-8 as an `Other` I/O error
        // carrying the `Utf8Error` text; any other `Other` error is the payload stream failing,
        // which means the peer is gone.
        ProtocolError::Io(e) if e.to_string().contains("utf-8") => {
            Some((close::INVALID_PAYLOAD, "invalid utf-8"))
        }
        ProtocolError::Io(_) => None,
        _ => Some((close::PROTOCOL_ERROR, "protocol error")),
    }
}

/// Watches the raw bytes from the client, frame header by frame header, and fails the stream
/// as soon as a header announces a frame or message over the limit.
///
/// It never buffers payload: bytes pass through untouched, only headers (at most 14 bytes) are
/// copied aside while incomplete.
struct FrameGuard<S> {
    inner: S,
    max: u64,
    verdict: Verdict,
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to pass through.
    remaining: u64,
    /// Bytes of the data message being assembled from fragments so far.
    message_len: u64,
    failed: bool,
}

impl<S> FrameGuard<S> {
    fn new(inner: S, max: usize, verdict: Verdict) -> Self {
        FrameGuard {
            inner,
            max: max as u64,
            verdict,
            header: [0; 14],
            header_len: 0,
            remaining: 0,
            message_len: 0,
            failed: false,
        }
    }

    /// Feeds the bytes of one chunk; `Err` once a header announces too much.
    fn inspect(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len() as u64);
                self.remaining -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.complete_header() {
                self.header_len = 0;
                self.check(len)?;
                self.remaining = len;
            }
        }
        Ok(())
    }

    /// The payload length once the header is complete. Malformed headers are left to the codec,
    /// which sees the same bytes and reports them.
    fn complete_header(&self) -> Option<u64> {
        if self.header_len < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let len7 = self.header[1] & 0x7f;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if self.header_len < need {
            return None;
        }
        Some(match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
        })
    }

    fn check(&mut self, len: u64) -> Result<(), ()> {
        let opcode = self.header[0] & 0x0f;
        match opcode {
            // Text or binary: a new message.
            0x1 | 0x2 => self.message_len = len,
            // Continuation: the message grows.
            0x0 => self.message_len = self.message_len.saturating_add(len),
            // Control frames are limited to 125 bytes by the codec.
            _ => return Ok(()),
        }
        if len > self.max || self.message_len > self.max {
            self.verdict.set(Some(close::MESSAGE_TOO_BIG));
            return Err(());
        }
        Ok(())
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if this.inspect(&chunk).is_err() {
                    this.failed = true;
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}
