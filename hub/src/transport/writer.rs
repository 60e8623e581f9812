//! [`Writer`]: the task of one connection. It runs the session and writes its outbox.

use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
    time::Duration,
};

use actix_web::rt::net::TcpStream;
use bytes::Bytes;
use futures_util::Stream;
use switchboard_protocol::close;
use tokio::time::{sleep, Sleep};

use super::{WRITE_BUF, WRITE_CHUNK};
use crate::{
    metrics::{metrics, Drop as Dropped},
    outbox::SharedOutbox,
};

/// Frames handed to one vectored write at most.
const MAX_IOVECS: usize = 64;

/// Turns a writer puts off a write so that more frames go out in it (see `Writer::poll`); four
/// were measured slower than three.
const DEFER_TURNS: u8 = 3;

/// A front frame this long or longer is written from where it is, not copied.
const COPY_BELOW: usize = 4096;

/// Drives a session and writes what it produces.
///
/// It polls the session (`body`: for a session actor, its context, which runs the actor's
/// mailbox, its reader and its timers), then writes the outbox, many frames per write. The outbox
/// bounds decide when a client is too slow: once a frame found it full, the writer evicts the
/// session (close 4000); and if even the close frame cannot be written within `grace`, the
/// connection is dropped outright.
pub(crate) struct Writer<B> {
    io: Rc<TcpStream>,
    body: Option<Pin<Box<B>>>,
    out: SharedOutbox,
    grace: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Turns the writer has put off its write (see `poll`).
    deferred: u8,
    /// Queued frames from which the writer writes at once.
    write_now: usize,
}

impl<B> std::fmt::Debug for Writer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("running", &self.body.is_some())
            .field("grace", &self.grace)
            .finish()
    }
}

/// How a connection's writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The session ended and everything, close frame included, was written.
    Finished,
    /// The socket failed, or the close frame could not be written in time.
    Dropped,
}

impl<B> Writer<B> {
    /// `write_now`: from this many queued frames on, the writer writes without putting it off.
    pub(crate) fn new(
        io: Rc<TcpStream>,
        body: Pin<Box<B>>,
        out: SharedOutbox,
        grace: Duration,
        write_now: usize,
    ) -> Self {
        Writer {
            io,
            body: Some(body),
            out,
            grace,
            deadline: None,
            deferred: 0,
            write_now,
        }
    }

    /// Ends the session from the writer's side: keep the frame being written (a frame cut in half
    /// would corrupt the stream), drop the rest, queue the close frame and stop the session.
    fn end(&mut self, code: u16, reason: &str) {
        {
            let mut out = self.out.borrow_mut();
            let discarded = out.discard_unwritten();
            if discarded > 0 {
                metrics().dropped(Dropped::Evicted, discarded as u64);
            }
            out.close(code, reason);
        }
        // Dropping the context stops the actor, whose end closes it on its worker (it leaves
        // its rooms there); the grace period for the close frame starts when `poll` sees the
        // session gone.
        self.body = None;
    }

    /// Whether the outbox holds a full write's worth, which goes out without waiting for more.
    fn is_full_write(&self) -> bool {
        let out = self.out.borrow();
        out.len_frames() >= self.write_now || out.len_bytes() >= WRITE_CHUNK
    }

    /// Writes as much of the queue as the socket takes. `Ready(Err)` when the socket failed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out.borrow_mut();
        while out.len_frames() > 0 {
            ready!(self.io.poll_write_ready(cx))?;
            let result = if out.len_frames() > 1 && out.front_len() < COPY_BELOW {
                // Many frames: copied into one buffer and written with one plain write. The
                // kernel's copy of many small iovecs costs more than this copy (measured: 18% of
                // the server's time in `_copy_from_iter` with 64-iovec writes, 9% for both copies
                // with one), and the write is no longer capped at `MAX_IOVECS` frames.
                WRITE_BUF.with_borrow_mut(|buf| {
                    buf.clear();
                    out.gather(buf, WRITE_CHUNK);
                    self.io.try_write(buf)
                })
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = out.unwritten(&mut slices);
                self.io.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => {
                    metrics().bytes_out.inc_by(written as u64);
                    out.written(written);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // A burst's queue is kept for the next one up to `write_now` entries (a busy room's member
        // empties its queue at every write, and regrowing it cost 7% of the many-rooms load);
        // the worker's heartbeat releases the rest once the session is quiet.
        out.shrink_when_idle(self.write_now);
        Poll::Ready(Ok(()))
    }
}

impl<B> Future for Writer<B>
where
    B: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        this.out.borrow_mut().register(cx);
        // A turn the writer gave itself to let frames gather (below): nothing to do but give
        // the next one. The session is polled again on the last, so nothing it was woken for
        // waits more than those turns.
        if this.deferred > 0
            && this.deferred < DEFER_TURNS
            && this.body.is_some()
            && !this.is_full_write()
        {
            this.deferred += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let heard = this.out.borrow().last_heard;
        if this.body.is_some() && this.out.borrow().is_timed_out() {
            tracing::debug!("heartbeat timeout");
            this.end(close::HEARTBEAT_TIMEOUT, close::HEARTBEAT_TIMEOUT_REASON);
        }
        // Run the session until it waits or its outbox overflowed. The session is polled even
        // when the socket is full, so it keeps reading and answering, and the outbox bounds, not
        // a stalled actor, decide when a client is too slow.
        while let Some(body) = this.body.as_mut() {
            if this.out.borrow().is_evicted() {
                tracing::info!("slow consumer closed");
                this.end(close::SLOW_CONSUMER, close::SLOW_CONSUMER_REASON);
                break;
            }
            match body.as_mut().poll_next(cx) {
                // The session writes to its outbox; the context's own frame stream stays empty.
                Poll::Ready(Some(Ok(chunk))) => {
                    let _ = this.out.borrow_mut().push(chunk);
                }
                Poll::Ready(Some(Err(_)) | None) => this.body = None,
                Poll::Pending => {
                    // The session may have overflowed its outbox in this very turn.
                    if this.out.borrow().is_evicted() {
                        continue;
                    }
                    break;
                }
            }
        }
        // Frames that arrived since the last write go out a few of the writer's turns later, not
        // at once: the tasks already waiting to run (publishers, rooms) are likely to add to this
        // outbox, and one larger write costs far less than several small ones (the kernel's send
        // path is most of a delivery's cost). A turn comes back after the tasks already queued,
        // so this adds no timer, and the turns in between cost a wake-up each (the session is
        // not polled in them). Only a quiet session's stream of frames is held back: one that
        // just handled frames from its client (a publisher waiting for its acks) writes at once,
        // and so does an outbox with a single frame (a paced message) or `write_now` frames.
        // Measured on the many-rooms load: about 820 ns of server CPU per delivery writing at
        // once, 560 with two turns (each polling the session), 410-470 with three that do not.
        let (queued, active) = {
            let out = this.out.borrow();
            (out.len_frames(), out.last_heard != heard)
        };
        if this.body.is_some()
            && this.deferred == 0
            && !active
            && queued >= 2
            && !this.is_full_write()
        {
            this.deferred += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.deferred = 0;
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
