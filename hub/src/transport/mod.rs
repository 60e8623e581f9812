//! The WebSocket transport: how bytes reach a session and leave it, and nothing of what a session
//! does with them.
//!
//! actix-http hands every upgrade request, with the raw socket, to the session layer
//! (`session/connection.rs`), which uses the pieces here. From there the hub owns the connection,
//! instead of leaving it inside actix-http's HTTP/1 dispatcher, for three measured reasons:
//! - memory: the dispatcher keeps an 8 KiB read and an 8 KiB write buffer for the connection's
//!   whole life (11.6 KiB RSS per idle session); here buffers exist only while bytes are in flight;
//! - writes: queued frames go out in one write (gathered into a per-worker buffer), and the
//!   session is polled even while the socket is full, so its queue bound is a byte budget the
//!   hub enforces;
//! - hostile input: frames are decoded from a buffer filled only when the next frame needs more
//!   bytes, and a header that announces more than the limit is refused before its payload is read.
//!
//! The pieces, each depending only on what is below it (`codec.rs`, `outbox.rs`, `node.rs`):
//! - `handshake.rs`: the upgrade request against the live policy; a typed refusal or an accepted
//!   session;
//! - `http.rs`: the refusal's HTTP response, and the orderly end of a connection;
//! - `reader.rs`: the socket's client frames, decoded;
//! - `writer.rs`: the connection's task, which runs the session and writes its outbox.

pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod reader;
pub(crate) mod writer;

use std::cell::RefCell;

/// Bytes read from a socket at most per read call; reads land in a per-worker scratch buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes copied into the write buffer at most per write call.
const WRITE_CHUNK: usize = 64 * 1024;

thread_local! {
    /// One write buffer per worker thread, shared by all its connections: a write of many
    /// queued frames gathers them here (see `Writer::poll_flush`); nothing stays in it between
    /// writes.
    static WRITE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(WRITE_CHUNK));
    /// One read buffer per worker thread, shared by all its connections: a connection keeps
    /// only the bytes of a frame that has not fully arrived.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}
