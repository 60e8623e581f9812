//! [`WsReader`]: a connection's client frames, read from the socket only when the next frame
//! needs more bytes, into the worker's one scratch buffer.

use std::{
    io,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
    time::Instant,
};

use actix_web::rt::net::TcpStream;
use futures_util::Stream;

use super::SCRATCH;
use crate::{
    codec::{Batch, Decoder},
    metrics::metrics,
    outbox::SharedOutbox,
};

/// Messages a session handles per turn of its task at most, before it lets the others run.
///
/// The reader hands the session every message complete in what arrived as one batch, counted
/// against this budget, rather than one stream item per message: actix polls a stream for 16
/// items per turn, and at 16 messages per turn a publisher's backlog reached each recipient's
/// outbox in slices too small to write well (many-rooms load: 360 ns of server CPU per delivery
/// at 16 per turn, 185 at 128).
const TURN_BUDGET: usize = 128;

/// The session's inbound stream: batches of decoded messages, a violation (then nothing), or
/// the end.
pub(crate) struct WsReader {
    io: Rc<TcpStream>,
    decoder: Decoder,
    done: bool,
    /// Messages handed over in this turn (see `TURN_BUDGET`).
    turn: usize,
    /// Told when the client was last heard from: at every read that brought bytes, which is
    /// one clock read per read call rather than one per frame.
    out: SharedOutbox,
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader")
            .field("decoder", &self.decoder)
            .field("done", &self.done)
            .finish()
    }
}

impl WsReader {
    /// A reader of messages of at most `max` bytes, starting with the bytes that arrived with
    /// the handshake.
    /// With `deflate`, the session negotiated permessage-deflate.
    pub(crate) fn new(
        io: Rc<TcpStream>,
        early: &[u8],
        max: usize,
        deflate: bool,
        out: SharedOutbox,
    ) -> Self {
        let decoder = Decoder::new(early, max);
        WsReader {
            io,
            decoder: if deflate {
                decoder.with_deflate()
            } else {
                decoder
            },
            done: false,
            turn: 0,
            out,
        }
    }

    /// Reads what the socket has into the decoder; `Ok(false)` at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let n = self.io.try_read(&mut scratch)?;
                metrics().bytes_in.inc_by(n as u64);
                self.decoder.extend(&scratch[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => {
                    self.out.borrow_mut().last_heard = Instant::now();
                    return Poll::Ready(Ok(true));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Stream for WsReader {
    type Item = Batch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.turn >= TURN_BUDGET {
            // The budget is spent: the rest waits for the next turn, after the other tasks.
            this.turn = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut batch = Batch::new();
        loop {
            match this.decoder.decode() {
                Ok(Some(message)) => {
                    batch.push(Ok(message));
                    this.turn += 1;
                    if this.turn >= TURN_BUDGET {
                        break;
                    }
                    continue;
                }
                // What has arrived is handed over before the socket is read again.
                Ok(None) if !batch.is_empty() => break,
                Ok(None) => {}
                Err(violation) => {
                    this.done = true;
                    batch.push(Err(violation));
                    break;
                }
            }
            match this.fill(cx) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false) | Err(_)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    this.turn = 0;
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Some(batch))
    }
}
