//! One adapter per target server: how to connect, subscribe, publish, and recognise a delivery.
//!
//! An adapter is a synchronous state machine over WebSocket messages (so it is unit-tested
//! without a server): [`Adapter::on_frame`] turns each received message's payload into
//! [`Event`]s and queues whatever must be answered (pongs, the NATS `CONNECT`, the Socket.IO
//! namespace connect), which the async helpers here send. The helpers work on either kind of
//! connection ([`Conn`]): tungstenite's ([`Ws`]: publishers, `connect`) or the subscribers' own
//! frame reader ([`RawWs`]), which hands payloads over as slices of its read buffer.

pub(crate) mod nats;
pub(crate) mod socketio;
pub(crate) mod switchboard;
pub(crate) mod ws;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

use crate::{
    error::{Error, Result},
    net::{Endpoint, Ws},
    payload::Scanner,
    wire::{op, Kind, RawWs, Step},
    PublishScope,
};

pub(crate) use nats::Nats;
pub(crate) use socketio::SocketIo;
pub(crate) use switchboard::Switchboard;
pub(crate) use ws::PlainWs;

/// What a received message means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A request was acknowledged: a subscription (Switchboard ack, NATS `PONG` after `SUB`,
    /// Socket.IO `join` ack) or a publish (Switchboard).
    Ack,
    /// A delivery; the bytes hold the payload (possibly within more).
    Delivery(&'a [u8]),
}

/// Options adapters may need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdapterOpts {
    /// Switchboard publish scope.
    pub(crate) scope: PublishScope,
    /// Switchboard: publishes carry no `id` and get no ack (`--window 0`).
    pub(crate) fire_and_forget: bool,
}

/// A target server's protocol.
pub(crate) trait Adapter: Sized + Send + 'static {
    /// Whether a publisher opens one connection per room (the plain broadcast server, where the
    /// room is the URL path) instead of one connection for all rooms.
    const CONNECTION_PER_ROOM: bool = false;
    /// Whether the server acknowledges each publish (so publishers keep a window of unacked
    /// publishes instead of writing as fast as the socket takes them).
    const ACKS_PUBLISHES: bool = false;

    fn new(opts: &AdapterOpts) -> Self;

    /// The URL to open; `room` is the room of the connection for targets that have one per room.
    fn url(ep: &Endpoint, room: Option<usize>) -> String;

    /// A scanner for the payload stamps inside [`Event::Delivery`] bytes.
    fn scanner() -> Scanner;

    /// The connection is usable: the server's greeting has arrived and been answered.
    fn ready(&self) -> bool;

    /// The request that subscribes to `room`, answered by one [`Event::Ack`]; `None` when the
    /// connection is subscribed by construction.
    fn subscribe(&mut self, room: usize) -> Option<Message>;

    /// A publish of `payload` to `room`.
    fn publish(&mut self, room: usize, payload: &[u8]) -> Message;

    /// A request answered by one [`Event::Ack`] once the server has read everything sent before
    /// it, if the protocol has one that is not already a publish ack.
    fn barrier(&mut self) -> Option<Message> {
        None
    }

    /// Handles the payload of a text or binary message from the server (borrowed: the raw
    /// reader's buffer, or tungstenite's message). Deliveries must not allocate.
    fn on_frame(
        &mut self,
        kind: Kind,
        payload: &[u8],
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()>;

    /// The next queued message to send back (pong, protocol greeting reply).
    fn take_reply(&mut self) -> Option<Message>;
}

/// Handles any message from tungstenite: data messages go to the adapter, a close frame is an
/// error, WebSocket pings are answered by tungstenite itself.
#[inline]
pub(crate) fn dispatch<A: Adapter>(
    a: &mut A,
    msg: Message,
    events: &mut impl FnMut(Event<'_>),
) -> Result<()> {
    match &msg {
        Message::Text(t) => a.on_frame(Kind::Text, t.as_bytes(), events),
        Message::Binary(b) => a.on_frame(Kind::Binary, b, events),
        Message::Close(frame) => Err(Error::closed(frame.as_ref())),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
    }
}

/// The next message, or an error if the connection ended.
pub(crate) async fn next(ws: &mut Ws) -> Result<Message> {
    match ws.next().await {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e.into()),
        None => Err("connection closed by the server".into()),
    }
}

/// A message already received and buffered, without waiting; `Ok(None)` when there is none.
pub(crate) fn next_ready(ws: &mut Ws) -> Result<Option<Message>> {
    match ws.next().now_or_never() {
        None => Ok(None),
        Some(Some(Ok(m))) => Ok(Some(m)),
        Some(Some(Err(e))) => Err(e.into()),
        Some(None) => Err("connection closed by the server".into()),
    }
}

/// Handles every complete message the raw connection has buffered (without waiting): data to
/// the adapter, pings and closes as [`RawWs::next_data`] does. Replies are queued, not sent.
#[inline]
pub(crate) fn dispatch_buffered<A: Adapter>(
    raw: &mut RawWs,
    a: &mut A,
    events: &mut impl FnMut(Event<'_>),
) -> Result<()> {
    loop {
        match raw.next_data()? {
            Step::Data(kind, payload) => a.on_frame(kind, payload, events)?,
            Step::Control => {}
            Step::Empty => return Ok(()),
        }
    }
}

/// A client connection as the helpers below use it.
pub(crate) trait Conn: Sized + Send {
    /// Opens connection `index` to `url` (TCP and the WebSocket handshake).
    async fn open_url(ep: &Endpoint, index: usize, url: &str) -> Result<Self>;

    /// Sends one message.
    async fn send_msg(&mut self, m: Message) -> Result<()>;

    /// Waits for the next message and handles it (data to the adapter; control frames as the
    /// connection does).
    async fn recv<A: Adapter>(
        &mut self,
        a: &mut A,
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()>;

    /// Sends the adapter's queued replies (and the connection's own, like pongs), if any.
    async fn send_replies<A: Adapter>(&mut self, a: &mut A) -> Result<()>;

    /// Closes politely, not waiting long for the server.
    async fn close(self);
}

impl Conn for Ws {
    async fn open_url(ep: &Endpoint, index: usize, url: &str) -> Result<Self> {
        ep.connect(index, url).await
    }

    async fn send_msg(&mut self, m: Message) -> Result<()> {
        Ok(self.send(m).await?)
    }

    async fn recv<A: Adapter>(
        &mut self,
        a: &mut A,
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()> {
        let msg = next(self).await?;
        dispatch(a, msg, events)
    }

    async fn send_replies<A: Adapter>(&mut self, a: &mut A) -> Result<()> {
        let mut any = false;
        while let Some(m) = a.take_reply() {
            self.feed(m).await?;
            any = true;
        }
        if any {
            self.flush().await?;
        }
        Ok(())
    }

    async fn close(mut self) {
        let closing = WebSocketStream::close(&mut self, None);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closing).await;
    }
}

impl Conn for RawWs {
    async fn open_url(ep: &Endpoint, index: usize, url: &str) -> Result<Self> {
        ep.connect_raw(index, url).await
    }

    async fn send_msg(&mut self, m: Message) -> Result<()> {
        queue(self, m)?;
        self.flush().await
    }

    async fn recv<A: Adapter>(
        &mut self,
        a: &mut A,
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()> {
        loop {
            match self.next_data()? {
                Step::Data(kind, payload) => return a.on_frame(kind, payload, events),
                Step::Control => return Ok(()),
                Step::Empty => self.fill().await?,
            }
        }
    }

    async fn send_replies<A: Adapter>(&mut self, a: &mut A) -> Result<()> {
        while let Some(m) = a.take_reply() {
            queue(self, m)?;
        }
        self.flush().await
    }

    async fn close(self) {
        RawWs::close(self).await;
    }
}

/// Queues `m` on the raw connection's writer.
fn queue(raw: &mut RawWs, m: Message) -> Result<()> {
    let (opcode, payload): (u8, &[u8]) = match &m {
        Message::Text(t) => (op::TEXT, t.as_bytes()),
        Message::Binary(b) => (op::BINARY, b),
        Message::Ping(p) => (op::PING, p),
        Message::Pong(p) => (op::PONG, p),
        Message::Close(_) | Message::Frame(_) => {
            return Err("the raw connection sends no close or raw frame messages".into())
        }
    };
    raw.writer.frame(opcode, payload);
    Ok(())
}

/// Sends the adapter's queued replies, if any.
pub(crate) async fn send_replies<C: Conn, A: Adapter>(c: &mut C, a: &mut A) -> Result<()> {
    c.send_replies(a).await
}

/// Reads until the adapter is ready (the server's greeting, answered).
pub(crate) async fn hello<C: Conn, A: Adapter>(c: &mut C, a: &mut A) -> Result<()> {
    while !a.ready() {
        c.recv(a, &mut |_| {}).await?;
        c.send_replies(a).await?;
    }
    Ok(())
}

/// Subscribes to `room` and waits for the confirmation.
pub(crate) async fn subscribe<C: Conn, A: Adapter>(
    c: &mut C,
    a: &mut A,
    room: usize,
) -> Result<()> {
    match a.subscribe(room) {
        Some(m) => {
            c.send_msg(m).await?;
            wait_ack(c, a).await
        }
        None => Ok(()),
    }
}

/// Reads until one [`Event::Ack`].
pub(crate) async fn wait_ack<C: Conn, A: Adapter>(c: &mut C, a: &mut A) -> Result<()> {
    loop {
        let mut acked = false;
        c.recv(a, &mut |e| acked |= e == Event::Ack).await?;
        c.send_replies(a).await?;
        if acked {
            return Ok(());
        }
    }
}

/// Connects connection `index` (bound to `room` where the target has a URL per room) and waits
/// for the server's greeting.
pub(crate) async fn open<C: Conn, A: Adapter>(
    ep: &Endpoint,
    opts: &AdapterOpts,
    index: usize,
    room: Option<usize>,
) -> Result<(C, A)> {
    let url = A::url(ep, room);
    let mut c = C::open_url(ep, index, &url).await?;
    let mut a = A::new(opts);
    hello(&mut c, &mut a)
        .await
        .map_err(|e| e.context(format!("connection {index} to {url}: greeting")))?;
    Ok((c, a))
}

/// Closes a connection politely, not waiting long for the server.
pub(crate) async fn close<C: Conn>(c: C) {
    c.close().await;
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Feeds `msg` to `a` and returns the events as owned values: `None` for an ack, the bytes
    /// for a delivery.
    pub(crate) fn events<A: Adapter>(a: &mut A, msg: Message) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::new();
        dispatch(a, msg, &mut |e| {
            out.push(match e {
                Event::Ack => None,
                Event::Delivery(b) => Some(b.to_vec()),
            })
        })?;
        Ok(out)
    }

    /// The replies queued by `a`, as text (binary replies decoded lossily).
    pub(crate) fn replies<A: Adapter>(a: &mut A) -> Vec<String> {
        std::iter::from_fn(|| a.take_reply())
            .map(|m| match m {
                Message::Text(t) => t,
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }
}
