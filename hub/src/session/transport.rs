//! The WebSocket transport: the only module that knows how bytes reach a session, and the only
//! user of actix-web-actors, so that moving to another WebSocket library stays local to this file.
//!
//! actix-http hands every upgrade request to [`serve_upgrade`] together with the raw socket. From
//! there this module owns the connection, instead of leaving it inside actix-http's HTTP/1
//! dispatcher, for three measured reasons:
//! - memory: the dispatcher keeps an 8 KiB read and an 8 KiB write buffer for the connection's
//!   whole life (11.6 KiB RSS per idle session); here buffers exist only while bytes are in flight;
//! - writes: queued frames go out in one vectored write, and the session is polled even while the
//!   socket is full, so its queue bound is a byte budget this module enforces;
//! - hostile input: frames are decoded from a buffer this module fills only when the next frame
//!   needs more bytes, and a header that announces more than the limit is refused before its
//!   payload is read.
//!
//! The session actor keeps actix-web-actors' `WebsocketContext`; its inbound stream is
//! [`WsReader`] and its outbound byte stream is drained by [`Writer`].

use std::{
    cell::RefCell,
    collections::VecDeque,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use actix_codec::{Decoder, Framed, FramedParts};
use actix_http::{
    h1,
    ws::{hash_key, verify_handshake, Codec, Frame, ProtocolError},
    HttpMessage, Request,
};
use actix_web::rt::net::TcpStream;
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use switchboard_admin::{policy::NegotiationError, Mode, Negotiation};
use switchboard_protocol::{close, validate_room};
use tokio::time::{sleep, Sleep};

use super::{
    outbox::{Outbox, SharedOutbox},
    relay_room_key, unix_now, Admission, RelayRoom, WsSession,
};
use crate::{
    metrics::{metrics, Disconnect, Drop as Dropped, Handshake},
    node::{ConnectionSlot, Node},
    worker::WorkerRooms,
};

pub(crate) use actix_http::ws::Item;
pub(crate) use actix_web_actors::ws::Message;

/// The actor context of a session.
pub(crate) type WsContext = ws::WebsocketContext<WsSession>;

/// What the reader hands the session: a message, or the close code for a broken protocol.
pub(crate) type Inbound = Result<Message, Violation>;

/// A protocol violation: the session must close with `code` and stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

const TOO_BIG: Violation = Violation {
    code: close::MESSAGE_TOO_BIG,
    reason: "message too big",
};
const PROTOCOL_ERROR: Violation = Violation {
    code: close::PROTOCOL_ERROR,
    reason: "protocol error",
};
const INVALID_UTF8: Violation = Violation {
    code: close::INVALID_PAYLOAD,
    reason: "invalid utf-8",
};

/// Bytes read from a socket at most per read call; reads land in a per-worker scratch buffer.
const READ_CHUNK: usize = 16 * 1024;
/// Frames handed to one vectored write at most.
const MAX_IOVECS: usize = 64;

thread_local! {
    /// One read buffer per worker thread, shared by all its connections: a connection keeps
    /// only the bytes of a frame that has not fully arrived.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Encodes a text frame: what a publish's `message` becomes, once, for all its recipients.
pub(crate) fn text_frame(payload: &[u8]) -> Bytes {
    frame(0x1, payload)
}

pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.extend_from_slice(&[0x80 | opcode]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if len <= usize::from(u16::MAX) {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out.freeze()
}

pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    // A close frame holds at most 125 bytes: 2 for the code, the rest for the reason.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(0x8, &payload)
}

/// Answers an upgrade request: refuses it with an HTTP error, or completes the WebSocket
/// handshake and runs the session until the connection ends.
pub(crate) async fn serve_upgrade(
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
    node: Arc<Node>,
    rooms: Rc<WorkerRooms>,
) -> Result<(), actix_http::Error> {
    // Only the socket and any bytes read past the request head are kept; the request and the
    // HTTP codec are dropped here, before the first await, so they do not live in this future
    // (which stays in the connection's task for the session's whole life).
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    let verdict = handshake(&req, &node);
    drop(req);
    metrics().handshake(match &verdict {
        Ok(_) => Handshake::Accepted,
        Err(refusal) => refusal.result(),
    });
    match verdict {
        Ok(accepted) => run(io, read_buf, accepted, node, rooms).await,
        // Boxed: an error response is rare, and its future must not size every connection's.
        Err(refusal) => {
            let _ = Box::pin(respond(io, *refusal)).await;
        }
    }
    Ok(())
}

/// A handshake refused with an HTTP error: status, error code, message and, for a subprotocol
/// refusal, the names the endpoint accepts.
#[derive(Debug)]
struct Refusal {
    status: u16,
    code: &'static str,
    message: String,
    accepted: Vec<String>,
}

impl Refusal {
    /// The refusal as a `switchboard_handshakes_total` result.
    fn result(&self) -> Handshake {
        match self.code {
            "not_found" => Handshake::NotFound,
            "origin_not_allowed" => Handshake::Origin,
            "subprotocol_not_accepted" => Handshake::Subprotocol,
            "unauthorized" => Handshake::Auth,
            "invalid_room" => Handshake::InvalidRoom,
            "forbidden" => Handshake::Forbidden,
            "draining" => Handshake::Draining,
            "limit_exceeded" => Handshake::Limit,
            _ => Handshake::Malformed,
        }
    }
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Box<Refusal> {
    Box::new(Refusal {
        status,
        code,
        message: message.into(),
        accepted: Vec::new(),
    })
}

/// A handshake that passed every check: the 101 response head, the connection slot and what
/// the session may do.
struct Accepted {
    head: Vec<u8>,
    slot: ConnectionSlot,
    admission: Admission,
}

/// Most subprotocol names a client may offer; a real client offers a handful.
const MAX_OFFERED_PROTOCOLS: usize = 32;

/// Checks an upgrade request against the live policy, in the order a client can act on: which
/// endpoint (404), a valid WebSocket handshake (400), the Origin (403), the subprotocol (400),
/// the token (401), the relay room (400/403), and finally whether the node takes sessions (503).
fn handshake(req: &Request, node: &Arc<Node>) -> Result<Accepted, Box<Refusal>> {
    let policy = node.policy.load();
    let Some((endpoint, rest)) = policy.route(req.path()) else {
        return Err(refuse(404, "not_found", "no such endpoint"));
    };
    if verify_handshake(req.head()).is_err() {
        return Err(refuse(
            400,
            "bad_handshake",
            "not a valid WebSocket handshake",
        ));
    }
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Err(refuse(400, "bad_handshake", "missing Sec-WebSocket-Key"));
    };

    let mut origins = req.headers().get_all("origin");
    let origin = match (origins.next(), origins.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| refuse(403, "origin_not_allowed", "the Origin header is not text"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(refuse(
                403,
                "origin_not_allowed",
                "more than one Origin header",
            ))
        }
    };
    if !endpoint.origin_allowed(origin) {
        let message = match origin {
            None => format!(
                "endpoint {:?} accepts only listed origins and the request has no Origin header",
                endpoint.name
            ),
            Some(origin) => format!(
                "origin {:?} is not allowed on endpoint {:?}",
                truncate(origin, 200),
                endpoint.name
            ),
        };
        return Err(refuse(403, "origin_not_allowed", message));
    }

    let mut offered = Vec::new();
    for value in req.headers().get_all("sec-websocket-protocol") {
        let value = value
            .to_str()
            .map_err(|_| refuse(400, "bad_handshake", "Sec-WebSocket-Protocol is not text"))?;
        offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        if offered.len() > MAX_OFFERED_PROTOCOLS {
            return Err(refuse(
                400,
                "bad_handshake",
                format!("more than {MAX_OFFERED_PROTOCOLS} subprotocols offered"),
            ));
        }
    }
    let negotiation = endpoint.negotiate(offered.iter().copied()).map_err(|e| {
        let message = match e {
            NegotiationError::Required => {
                format!("endpoint {:?} requires a subprotocol", endpoint.name)
            }
            NegotiationError::NoneAccepted => format!(
                "endpoint {:?} accepts none of the offered subprotocols",
                endpoint.name
            ),
        };
        Box::new(Refusal {
            status: 400,
            code: "subprotocol_not_accepted",
            message,
            accepted: endpoint
                .accepted_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    })?;
    let mode = endpoint.mode_for(&negotiation);

    let claims = match policy.token() {
        None => None,
        Some(token_key) => {
            let token = bearer_token(req)?
                .or_else(|| query_token(req))
                .ok_or_else(|| refuse(401, "unauthorized", "missing token"))?;
            let claims = token_key
                .verify(&token, unix_now())
                .map_err(|e| refuse(401, "unauthorized", e.to_string()))?;
            Some(Box::new(claims))
        }
    };

    let relay = match mode {
        Mode::Relay => {
            let room = percent_encoding::percent_decode_str(rest)
                .decode_utf8()
                .map_err(|_| refuse(400, "invalid_room", "the room in the path is not UTF-8"))?;
            if room.is_empty() {
                return Err(refuse(
                    400,
                    "invalid_room",
                    format!(
                        "a relay path names a room: {}/<room>",
                        endpoint.path.trim_end_matches('/')
                    ),
                ));
            }
            validate_room(&room).map_err(|(_, message)| refuse(400, "invalid_room", message))?;
            if claims.as_ref().is_some_and(|c| !c.may_subscribe(&room)) {
                return Err(refuse(
                    403,
                    "forbidden",
                    "the token does not grant this room",
                ));
            }
            Some(RelayRoom {
                key: relay_room_key(&endpoint.name, &room),
                may_send: match &claims {
                    Some(c) => c.may_publish(&room),
                    None => true,
                },
            })
        }
        Mode::Json | Mode::Echo => None,
    };

    if node.is_draining() {
        return Err(refuse(503, "draining", "the node is shutting down"));
    }
    let Some(slot) = node.try_acquire_slot() else {
        return Err(refuse(
            503,
            "limit_exceeded",
            "the node is at its connection limit",
        ));
    };
    let accept = hash_key(key.as_bytes());
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    head.extend_from_slice(&accept);
    if let Negotiation::Protocol(protocol) = negotiation {
        head.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        head.extend_from_slice(protocol.name.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    Ok(Accepted {
        head,
        slot,
        admission: Admission {
            endpoint: Arc::from(endpoint.name.as_str()),
            mode,
            relay,
            claims,
        },
    })
}

/// The token of an `Authorization: Bearer` header, if the request has one.
fn bearer_token(req: &Request) -> Result<Option<String>, Box<Refusal>> {
    let Some(value) = req.headers().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| refuse(401, "unauthorized", "the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(refuse(
            401,
            "unauthorized",
            "Authorization is not a Bearer token",
        )),
    }
}

/// The `token` query parameter: browsers cannot set headers on a WebSocket handshake.
fn query_token(req: &Request) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|t| t.into_owned())
    })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Runs an accepted session until its connection ends.
async fn run(
    io: TcpStream,
    early: BytesMut,
    Accepted {
        head,
        slot,
        admission,
    }: Accepted,
    node: Arc<Node>,
    rooms: Rc<WorkerRooms>,
) {
    // Frames are written whole and coalesced by the writer; Nagle's delay would only add latency.
    if io.set_nodelay(true).is_err() {
        return;
    }
    let io = Rc::new(io);
    let max = node.config.max_message_bytes;
    let budget = node.config.outbox_max_bytes;
    let grace = node.config.heartbeat.max(Duration::from_secs(1));
    let outbox = Outbox::new(node.config.outbox_capacity, budget);
    outbox.borrow_mut().push(Bytes::from(head));
    let connections = metrics().connections(&admission.endpoint);
    connections.inc();
    let session = WsSession::new(node.clone(), rooms, slot, outbox.clone(), admission);
    let reader = WsReader::new(io.clone(), early, max);
    let body = ws::WebsocketContext::with_factory(futures_util::stream::pending(), move |ctx| {
        use actix::AsyncContext;
        ctx.add_stream(reader);
        session
    });
    let writer = Writer::new(io.clone(), Box::pin(body), outbox.clone(), budget, grace);
    let outcome = writer.await;
    connections.dec();
    let ended = outbox.borrow().ended;
    metrics().disconnect(ended.unwrap_or(Disconnect::ConnectionLost));
    if let Outcome::Finished = outcome {
        // Boxed for the same reason as the error response: it only exists at the very end.
        Box::pin(linger(&io)).await;
    }
}

/// Writes a short JSON error response and closes the connection.
async fn respond(io: TcpStream, refusal: Refusal) -> Result<(), io::Error> {
    let Refusal {
        status,
        code,
        message,
        accepted,
    } = refusal;
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let mut error = serde_json::json!({ "code": code, "message": message });
    if code == "subprotocol_not_accepted" {
        error["accepted"] = serde_json::json!(accepted);
    }
    let body = serde_json::json!({ "error": error }).to_string();
    let challenge = if status == 401 {
        "www-authenticate: Bearer\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{challenge}connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut bytes = response.as_bytes();
    while !bytes.is_empty() {
        io.writable().await?;
        match io.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    linger(&io).await;
    Ok(())
}

/// Decodes client frames from the socket, reading only when the next frame needs more bytes.
pub(crate) struct WsReader {
    io: Rc<TcpStream>,
    /// Bytes of frames not yet complete; empty (and unallocated) between frames.
    buf: BytesMut,
    codec: Codec,
    max: u64,
    /// Bytes of the fragmented message being received so far.
    message_len: u64,
    done: bool,
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl WsReader {
    fn new(io: Rc<TcpStream>, early: BytesMut, max: usize) -> Self {
        let buf = if early.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&early[..])
        };
        WsReader {
            io,
            buf,
            codec: Codec::new().max_size(max),
            max: max as u64,
            message_len: 0,
            done: false,
        }
    }

    /// Checks the header at the front of the buffer, if complete, before any payload is read:
    /// a frame or fragmented message over the limit is refused on its header alone.
    fn check_header(&self) -> Result<(), Violation> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(());
        }
        let len = match b[1] & 0x7f {
            126 if b.len() >= 4 => u64::from(u16::from_be_bytes([b[2], b[3]])),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                u64::from_be_bytes(n)
            }
            126 | 127 => return Ok(()),
            n => u64::from(n),
        };
        let total = match b[0] & 0x0f {
            0x0 => self.message_len.saturating_add(len),
            0x1 | 0x2 => len,
            // Control frames: the codec refuses more than 125 bytes.
            _ => return Ok(()),
        };
        if len > self.max || total > self.max {
            return Err(TOO_BIG);
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<Option<Message>, Violation> {
        self.check_header()?;
        let frame = match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(ProtocolError::Overflow) => return Err(TOO_BIG),
            Err(_) => return Err(PROTOCOL_ERROR),
        };
        if self.buf.is_empty() {
            // Release the allocation: an idle connection holds no buffer.
            self.buf = BytesMut::new();
        }
        Ok(Some(match frame {
            Frame::Text(data) => {
                Message::Text(ByteString::try_from(data).map_err(|_| INVALID_UTF8)?)
            }
            Frame::Binary(data) => Message::Binary(data),
            Frame::Ping(data) => Message::Ping(data),
            Frame::Pong(data) => Message::Pong(data),
            Frame::Close(reason) => Message::Close(reason),
            Frame::Continuation(item) => {
                match &item {
                    Item::FirstText(b) | Item::FirstBinary(b) => self.message_len = b.len() as u64,
                    Item::Continue(b) | Item::Last(b) => self.message_len += b.len() as u64,
                }
                Message::Continuation(item)
            }
        }))
    }

    /// Reads what the socket has into the buffer; `Ok(false)` at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let n = self.io.try_read(&mut scratch)?;
                metrics().bytes_in.inc_by(n as u64);
                self.buf.extend_from_slice(&scratch[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => return Poll::Ready(Ok(true)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Stream for WsReader {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(violation) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(violation)));
                }
            }
            match ready!(this.fill(cx)) {
                Ok(true) => continue,
                Ok(false) | Err(_) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Drives a session and writes what it produces.
///
/// It polls the session's `WebsocketContext` (which runs the actor: its mailbox, its reader,
/// its timers) for encoded frames and queues them, then writes the queue with vectored writes.
/// The queue is bounded by `budget` bytes: a session whose client does not take its frames fast
/// enough is evicted (close 4000), and if even the close frame cannot be written within `grace`,
/// the connection is dropped outright.
struct Writer<B> {
    io: Rc<TcpStream>,
    body: Option<Pin<Box<B>>>,
    out: SharedOutbox,
    budget: usize,
    grace: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> Writer<B> {
    fn new(
        io: Rc<TcpStream>,
        body: Pin<Box<B>>,
        out: SharedOutbox,
        budget: usize,
        grace: Duration,
    ) -> Self {
        Writer {
            io,
            body: Some(body),
            out,
            budget,
            grace,
            deadline: None,
        }
    }

    /// Ends the session from the writer's side: keep the frame being written (a frame cut in half
    /// would corrupt the stream), drop the rest, queue the close frame and stop the session.
    fn end(&mut self, code: u16, reason: &str) {
        {
            let mut out = self.out.borrow_mut();
            out.evicted = true;
            let discarded = out.frames.len().saturating_sub(1);
            if discarded > 0 {
                metrics().dropped(Dropped::Evicted, discarded as u64);
            }
            out.frames.truncate(1);
            out.bytes = out.frames.front().map_or(0, |f| f.len()) - out.front_written;
            out.close(code, reason);
        }
        // Dropping the context stops the actor, which leaves its rooms; the grace period for
        // the close frame starts when `poll` sees the session gone.
        self.body = None;
    }

    /// The client is not reading fast enough: close it as a slow consumer.
    fn evict(&mut self) {
        tracing::info!("slow consumer closed");
        self.end(close::SLOW_CONSUMER, close::SLOW_CONSUMER_REASON);
    }

    /// Writes as much of the queue as the socket takes. `Ready(Err)` when the socket failed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out.borrow_mut();
        let out = &mut *out;
        while !out.frames.is_empty() {
            ready!(self.io.poll_write_ready(cx))?;
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = out.frames.len().min(MAX_IOVECS);
            for (i, (slot, frame)) in slices.iter_mut().zip(out.frames.iter()).enumerate() {
                let skip = if i == 0 { out.front_written } else { 0 };
                *slot = IoSlice::new(&frame[skip..]);
            }
            match self.io.try_write_vectored(&slices[..n]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(mut written) => {
                    metrics().bytes_out.inc_by(written as u64);
                    out.bytes -= written;
                    while written > 0 {
                        let Some(front) = out.frames.front() else {
                            break;
                        };
                        let left = front.len() - out.front_written;
                        if written >= left {
                            written -= left;
                            out.frames.pop_front();
                            out.front_written = 0;
                        } else {
                            out.front_written += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if out.frames.capacity() > MAX_IOVECS {
            // A burst grew the queue; an idle session should not keep its size.
            out.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// How a connection's writer ended.
enum Outcome {
    /// The session ended and everything, close frame included, was written.
    Finished,
    /// The socket failed, or the close frame could not be written in time.
    Dropped,
}

impl<B> Future for Writer<B>
where
    B: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        this.out.borrow_mut().register(cx);
        if this.body.is_some() && this.out.borrow().evicted {
            this.evict();
        }
        if this.body.is_some() && this.out.borrow().timed_out {
            tracing::debug!("heartbeat timeout");
            this.end(close::HEARTBEAT_TIMEOUT, close::HEARTBEAT_TIMEOUT_REASON);
        }
        // Run the session while its outbox is within budget. The session is polled even when the
        // socket is full, so it keeps reading and answering, and the outbox bounds, not a
        // stalled actor, decide when a client is too slow.
        while let Some(body) = this.body.as_mut() {
            if this.out.borrow().len_bytes() > this.budget || this.out.borrow().evicted {
                this.evict();
                break;
            }
            match body.as_mut().poll_next(cx) {
                // The session writes to its outbox; the context's own frame stream stays empty.
                Poll::Ready(Some(Ok(chunk))) => this.out.borrow_mut().push(chunk),
                Poll::Ready(Some(Err(_)) | None) => this.body = None,
                Poll::Pending => break,
            }
        }
        if this.body.is_none() && this.deadline.is_none() {
            // The session has ended (closed by either side, or timed out): its last frames get
            // the grace period to leave, then the connection goes, read or not.
            this.deadline = Some(Box::pin(sleep(this.grace)));
        }
        match this.poll_flush(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(Outcome::Dropped),
            // All written. The session, if still running, was polled to `Pending` above and
            // will wake this task when it has more.
            Poll::Ready(Ok(())) if this.body.is_none() => Poll::Ready(Outcome::Finished),
            Poll::Ready(Ok(())) => Poll::Pending,
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Outcome::Dropped)
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

/// After the last frame: send FIN, then read and discard what the client still sends (briefly)
/// so that closing does not turn into a reset that could destroy the close frame in flight.
async fn linger(io: &TcpStream) {
    const LINGER: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1 << 20;
    if socket2::SockRef::from(io)
        .shutdown(std::net::Shutdown::Write)
        .is_err()
    {
        return;
    }
    let drain = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            if io.readable().await.is_err() {
                return;
            }
            let read = SCRATCH.with(|scratch| io.try_read(&mut scratch.borrow_mut()));
            match read {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
