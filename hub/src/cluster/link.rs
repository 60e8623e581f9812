//! [`SubscriptionLink`]: one Redis connection in subscribe mode, spoken in plain RESP2.
//!
//! The bridge reads it itself instead of through the `redis` crate's pub/sub stream, which reads
//! the socket as fast as Redis writes and queues the pushes in an unbounded channel. Here the
//! socket is read only when the bridge has delivered what it read before, so a node whose rooms
//! are backed up pushes back on Redis through TCP, and Redis's own limit for a subscriber's
//! output buffer (`client-output-buffer-limit pubsub`) cuts the link instead of this process
//! buffering without bound; the bridge then reconnects and tells the rooms' members `gap`.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

/// What Redis pushes on a subscription link.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// A message published to `channel`.
    Message { channel: Bytes, payload: Bytes },
    /// A subscription to `channel` is in place.
    Subscribed { channel: Bytes },
    /// Anything else (unsubscribe confirmations, pongs).
    Other,
}

/// A connection in subscribe mode.
#[derive(Debug)]
pub(crate) struct SubscriptionLink {
    stream: TcpStream,
    buf: BytesMut,
    /// The longest bulk string accepted: a message over it is a broken link, not an allocation.
    max_bulk: usize,
}

impl SubscriptionLink {
    /// Connects to the instance `info` names (TCP only) and authenticates if it says so.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
        name: &str,
        max_bulk: usize,
        timeout: Duration,
    ) -> Result<SubscriptionLink, String> {
        let (host, port) = match &info.addr {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => return Err(format!("{other:?}: only redis:// (TCP) is supported")),
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut link = SubscriptionLink {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_bulk,
        };
        if let Some(password) = &info.redis.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &info.redis.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            link.send(&auth).await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, link.reply()).await {
                Ok(Ok(Reply::Ok)) => {}
                Ok(Ok(Reply::Error(e))) => return Err(format!("AUTH: {e}")),
                Ok(Ok(_)) => return Err("AUTH: unexpected reply".to_owned()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("AUTH timed out".to_owned()),
            }
        }
        // Named, so that an operator can tell the nodes' links apart in `CLIENT LIST`.
        link.send(&[b"CLIENT", b"SETNAME", name.as_bytes()])
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, link.reply()).await {
            Ok(Ok(Reply::Ok)) => {}
            Ok(Ok(Reply::Error(e))) => return Err(format!("CLIENT SETNAME: {e}")),
            Ok(Ok(_)) => return Err("CLIENT SETNAME: unexpected reply".to_owned()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("CLIENT SETNAME timed out".to_owned()),
        }
        Ok(link)
    }

    /// Sends one command.
    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).await
    }

    /// The next push. Cancel-safe: what a cancelled call read stays buffered for the next.
    pub(crate) async fn next(&mut self) -> Result<Push, String> {
        loop {
            if let Some(reply) = parse(&mut self.buf, self.max_bulk)? {
                return Ok(push_of(reply));
            }
            self.fill().await?;
        }
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        loop {
            if let Some(reply) = parse(&mut self.buf, self.max_bulk)? {
                return Ok(reply);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("Redis closed the connection".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One RESP2 value, as far as a subscription link needs them.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Ok,
    Error(String),
    Integer,
    Bulk(Option<Bytes>),
    Array(Vec<Reply>),
}

fn push_of(reply: Reply) -> Push {
    let Reply::Array(items) = reply else {
        return Push::Other;
    };
    match items.as_slice() {
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel)), Reply::Bulk(Some(payload))]
            if kind.as_ref() == b"message" =>
        {
            Push::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            }
        }
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel)), Reply::Integer]
            if kind.as_ref() == b"subscribe" =>
        {
            Push::Subscribed {
                channel: channel.clone(),
            }
        }
        _ => Push::Other,
    }
}

/// Takes one whole value off the front of `buf`; `None` while it has not fully arrived.
fn parse(buf: &mut BytesMut, max_bulk: usize) -> Result<Option<Reply>, String> {
    let mut at = 0;
    match value(buf, &mut at, max_bulk, 0)? {
        Some(reply) => {
            buf.advance(at);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// The value at `*at` in `buf`, advancing `*at` past it; `None` if incomplete.
fn value(
    buf: &BytesMut,
    at: &mut usize,
    max_bulk: usize,
    depth: u8,
) -> Result<Option<Reply>, String> {
    if depth > 4 {
        return Err("RESP: nested too deep".to_owned());
    }
    let Some(line) = line(buf, *at) else {
        return Ok(None);
    };
    let (kind, text) = (buf[*at], &buf[*at + 1..line]);
    let after = line + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| "RESP: bad number".to_owned())
    };
    match kind {
        b'+' => {
            *at = after;
            Ok(Some(Reply::Ok))
        }
        b'-' => {
            *at = after;
            Ok(Some(Reply::Error(
                String::from_utf8_lossy(text).into_owned(),
            )))
        }
        b':' => {
            number()?;
            *at = after;
            Ok(Some(Reply::Integer))
        }
        b'$' => {
            let len = number()?;
            if len < 0 {
                *at = after;
                return Ok(Some(Reply::Bulk(None)));
            }
            let len = len as usize;
            if len > max_bulk {
                return Err(format!("RESP: a {len}-byte message is over the limit"));
            }
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            let bytes = Bytes::copy_from_slice(&buf[after..after + len]);
            *at = after + len + 2;
            Ok(Some(Reply::Bulk(Some(bytes))))
        }
        b'*' => {
            let count = number()?;
            if !(0..=16).contains(&count) {
                return Err(format!("RESP: an array of {count} items"));
            }
            let mut pos = after;
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                match value(buf, &mut pos, max_bulk, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *at = pos;
            Ok(Some(Reply::Array(items)))
        }
        other => Err(format!("RESP: unexpected type byte {other:#x}")),
    }
}

/// The index of the `\r` ending the line that starts at `from`, if the line has arrived.
fn line(buf: &BytesMut, from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn all(input: &[u8]) -> Vec<Push> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(reply) = parse(&mut buf, 1024).unwrap() {
            out.push(push_of(reply));
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn pushes_are_read_whole_and_in_order() {
        let input = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nsb:a\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$4\r\nsb:a\r\n$5\r\nhe\r\no\r\n*3\r\n$11\r\nunsubscribe\r\n$4\r\nsb:a\r\n:0\r\n";
        assert_eq!(
            all(input),
            [
                Push::Subscribed {
                    channel: Bytes::from_static(b"sb:a")
                },
                Push::Message {
                    channel: Bytes::from_static(b"sb:a"),
                    payload: Bytes::from_static(b"he\r\no")
                },
                Push::Other,
            ]
        );
    }

    #[test]
    fn a_push_cut_anywhere_waits_for_the_rest() {
        let input = b"*3\r\n$7\r\nmessage\r\n$4\r\nsb:a\r\n$5\r\nhello\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(parse(&mut buf, 1024).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
            buf.extend_from_slice(&input[cut..]);
            assert!(matches!(
                parse(&mut buf, 1024).unwrap().map(push_of),
                Some(Push::Message { .. })
            ));
        }
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic_or_an_allocation() {
        for bad in [
            &b"?what\r\n"[..],
            b"$99999999\r\n",
            b"*999\r\n",
            b"$x\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(parse(&mut buf, 1024).is_err(), "{bad:?}");
        }
    }
}
