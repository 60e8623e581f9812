//! A connection's life after the upgrade request: the handshake's verdict, then the session
//! actor running in its context until the connection ends.
//!
//! The only user of actix-web-actors: the session actor lives in its `WebsocketContext`, whose
//! inbound stream is the transport's reader and whose mailbox, timers and actor the transport's
//! writer drives. Moving to another WebSocket library stays local to this file.

use std::{rc::Rc, sync::Arc, time::Duration};

use actix::AsyncContext;
use actix_codec::{Framed, FramedParts};
use actix_http::{h1, Request};
use actix_web::rt::net::TcpStream;
use actix_web_actors::ws::WebsocketContext;
use bytes::{Bytes, BytesMut};

use super::WsSession;
use crate::{
    metrics::{metrics, Disconnect, Handshake},
    node::Node,
    outbox::Outbox,
    transport::{
        handshake::{handshake, Accepted},
        http::{linger, respond},
        reader::WsReader,
        writer::{Outcome, Writer},
    },
    worker::WorkerRooms,
};

/// The actor context of a session.
pub(crate) type WsContext = WebsocketContext<WsSession>;

/// The messages of `WebsocketContext`'s own payload stream, which stays empty (see
/// `WsSession`'s `StreamHandler` for it).
pub(crate) use actix_http::ws::{Message as ContextMessage, ProtocolError};

/// Messages an admin `direct` send may leave queued in a session's mailbox before the next one
/// is refused with 503.
///
/// The mailbox carries only what reaches a session from other threads: admin direct frames
/// (`try_send`, counted against this bound), and a kick or the drain's going-away (sent at most
/// once each, past the bound). A running session empties its mailbox every time its connection's
/// task runs, even while its socket is full, so the mailbox fills only while the session's worker
/// is busy or the session waits for a full room queue. The frames then go through the outbox
/// bounds like any delivery. 64 lets an operator's burst through a momentarily busy worker and
/// keeps at most 64 × `max_message_bytes` waiting per session.
pub(crate) const MAILBOX_CAPACITY: usize = 64;

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
    let peer = io.peer_addr().ok().map(|a| a.ip());
    let verdict = handshake(&req, &node, peer);
    drop(req);
    metrics().handshake(match &verdict {
        Ok(_) => Handshake::Accepted,
        Err(refusal) => refusal.kind.metric(),
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

/// The context of a new session, ready to be driven: the actor is created inside it, with its
/// mailbox bound and its inbound stream.
pub(crate) fn start<S>(
    session: WsSession,
    inbound: S,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: futures_util::Stream<Item = crate::codec::Batch> + 'static,
{
    WebsocketContext::with_factory(futures_util::stream::pending(), move |ctx| {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.add_stream(inbound);
        session
    })
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
    let grace = node.config.heartbeat.max(Duration::from_secs(1));
    let outbox = Outbox::new(node.config.outbox_capacity, node.config.outbox_max_bytes);
    let _ = outbox.borrow_mut().push(Bytes::from(head));
    let deflate = admission.deflate;
    if let Some(deflate) = deflate {
        outbox.borrow_mut().compress_from = deflate.compress_from;
    }
    let connections = metrics().connections(&admission.endpoint);
    connections.inc();
    let session = WsSession::new(node.clone(), rooms, slot, outbox.clone(), admission);
    let reader = WsReader::new(io.clone(), &early, max, deflate.is_some(), outbox.clone());
    // The HTTP codec's read buffer (kilobytes of capacity) must not live on in this future for
    // the session's whole life: the reader copied what it needs.
    drop(early);
    let body = start(session, reader);
    // The writer writes at once from the point where a room stops direct delivery (`room::Mode`).
    let write_now = (node.config.outbox_capacity / 4).max(1);
    let writer = Writer::new(io.clone(), Box::pin(body), outbox.clone(), grace, write_now);
    let outcome = writer.await;
    connections.dec();
    let ended = outbox.borrow().ended;
    metrics().disconnect(ended.unwrap_or(Disconnect::ConnectionLost));
    if let Outcome::Finished = outcome {
        // Boxed for the same reason as the error response: it only exists at the very end.
        Box::pin(linger(&io)).await;
    }
}
