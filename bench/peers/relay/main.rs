//! The calibration relay for `scripts/bench` (target `relay`): the least a WebSocket pub/sub
//! server can do, as a floor to compare the hub's cost per delivery with.
//!
//! A client connecting to `/<room>` receives every text or binary message any other client sends
//! on the same path, forwarded verbatim (the same protocol as the Node `ws` peer). It parses
//! nothing but the WebSocket framing: one thread, each message framed once and shared by its
//! recipients, and each connection's writer batching whatever is queued into one write. No acks,
//! no limits beyond a bounded queue per connection (a full one drops the message: this is a
//! calibration, not a server). `relay-peer <addr>` prints `listening <port>` when ready.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

type Frame = Rc<[u8]>;
type Rooms = Rc<RefCell<HashMap<String, Vec<(u64, mpsc::Sender<Frame>)>>>>;

/// Frames a connection may have queued before the relay drops what comes next for it.
const QUEUE: usize = 4096;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3002".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening {}", listener.local_addr()?.port());
        let rooms = Rooms::default();
        let mut next = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            next += 1;
            tokio::task::spawn_local(serve(stream, next, rooms.clone()));
        }
    })
}

/// One connection: the handshake, then its frames forwarded to the room until it closes.
async fn serve(mut stream: TcpStream, id: u64, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let Some((path, key)) = read_handshake(&mut stream, &mut buf).await else {
        return;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    rooms
        .borrow_mut()
        .entry(path.clone())
        .or_default()
        .push((id, tx.clone()));
    // The writer: everything queued goes out in one write.
    tokio::task::spawn_local(async move {
        let mut out = Vec::new();
        while let Some(frame) = rx.recv().await {
            out.extend_from_slice(&frame);
            while let Ok(frame) = rx.try_recv() {
                out.extend_from_slice(&frame);
            }
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        while let Some((opcode, payload, used)) = parse(&buf) {
            buf.drain(..used);
            match opcode {
                0x1 | 0x2 => {
                    let frame = encode(opcode, &payload);
                    if let Some(members) = rooms.borrow().get(&path) {
                        for (other, member) in members {
                            if *other != id {
                                let _ = member.try_send(frame.clone());
                            }
                        }
                    }
                }
                0x9 => {
                    let _ = tx.try_send(encode(0xA, &payload));
                }
                0x8 => break 'read,
                _ => {}
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut rooms = rooms.borrow_mut();
    if let Some(members) = rooms.get_mut(&path) {
        members.retain(|(other, _)| *other != id);
        if members.is_empty() {
            rooms.remove(&path);
        }
    }
}

/// Reads the upgrade request; its path and `Sec-WebSocket-Key`. Bytes past the head stay in `buf`.
async fn read_handshake(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String)> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let path = head.split_whitespace().nth(1)?.to_owned();
    let key = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })?;
    Some((path, key))
}

/// One complete client frame at the front of `buf`: its opcode, unmasked payload and length.
fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        m
    } else {
        [0; 4]
    };
    let payload = buf.get(at..at + len)?;
    let payload = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((opcode, payload, at + len))
}

/// A server frame, encoded once for every recipient.
fn encode(opcode: u8, payload: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.into()
}
