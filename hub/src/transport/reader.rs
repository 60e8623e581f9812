//! [`WsReader`]: a connection's client frames, read from the socket only when the next frame
//! needs more bytes, into the worker's one scratch buffer.

use std::{
    io,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
};

use actix_web::rt::net::TcpStream;
use futures_util::Stream;

use super::SCRATCH;
use crate::{
    codec::{Decoder, Inbound},
    metrics::metrics,
};

/// The session's inbound stream: decoded messages, a violation (then nothing), or the end.
pub(crate) struct WsReader {
    io: Rc<TcpStream>,
    decoder: Decoder,
    done: bool,
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
    pub(crate) fn new(io: Rc<TcpStream>, early: &[u8], max: usize) -> Self {
        WsReader {
            io,
            decoder: Decoder::new(early, max),
            done: false,
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
            match this.decoder.decode() {
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
