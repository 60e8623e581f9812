//! The subscribers' WebSocket read path: a small RFC 6455 client over the TCP stream that
//! tokio-tungstenite did the HTTP handshake on ([`crate::net::Endpoint::connect_raw`]).
//!
//! At hundreds of subscribers the bench's one core, not the server, was the limit: every
//! delivery cost a tungstenite frame decode and an allocation. Here each subscriber reads into
//! one reusable buffer (growing from [`INITIAL_BUF`] to [`READ_BUF`] when reads fill it) and
//! [`Reader::next`] hands out each complete text or binary payload as a slice of it: nothing is
//! copied or allocated per message. Only a fragmented message (FIN 0, rare) is assembled into a
//! `Vec`. Pings are answered with a masked pong and a close with a close; text payloads are not
//! checked for UTF-8 (the adapters work on bytes, and the payload scan needs ASCII anyway).
//!
//! Frames the client sends (subscribe requests, protocol replies, pongs) are masked with a key
//! from a per-connection xorshift generator seeded from the standard library's random hasher
//! keys.

use std::{collections::hash_map::RandomState, hash::BuildHasher as _, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::error::{Error, Result};

/// The read buffer a connection starts with.
pub(crate) const INITIAL_BUF: usize = 8 << 10;
/// The size the read buffer grows to while reads keep filling it.
pub(crate) const READ_BUF: usize = 64 << 10;
/// The largest frame or message accepted (tungstenite's default message limit).
const MAX_MESSAGE: usize = 64 << 20;
/// A read is attempted with at least this much free space after the buffered bytes.
const MIN_READ: usize = 2 << 10;

/// Opcodes (RFC 6455 § 5.2).
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// What kind of data message a payload came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
}

/// One thing the server sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A complete text or binary message.
    Data(Kind, &'a [u8]),
    /// A ping, with its payload (to be echoed in the pong).
    Ping(&'a [u8]),
    Pong,
    /// A close frame, with its payload (status code and reason, if any).
    Close(&'a [u8]),
}

/// A frame header: what [`parse_header`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    compressed: bool,
    opcode: u8,
    /// Header bytes (2, 4 or 10: server frames are not masked).
    len: usize,
    /// Payload bytes.
    payload: usize,
}

/// The header at the start of `b`; `Ok(None)` when `b` does not hold all of it yet.
fn parse_header(b: &[u8]) -> Result<Option<Header>> {
    let (&b0, &b1) = match (b.first(), b.get(1)) {
        (Some(b0), Some(b1)) => (b0, b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    // RSV1 is permessage-deflate's "compressed" bit; it is inflated if it comes (the
    // subscribers offer the extension only with `--deflate`).
    if b0 & 0x30 != 0 {
        return Err(Error(format!(
            "WebSocket: reserved bits set in a frame header ({b0:#04x}) without an extension"
        )));
    }
    let compressed = b0 & 0x40 != 0;
    if b1 & 0x80 != 0 {
        return Err("WebSocket: the server sent a masked frame".into());
    }
    let (len, payload) = match b1 & 0x7F {
        126 => match b.get(2..4) {
            Some(n) => (4, usize::from(u16::from_be_bytes([n[0], n[1]]))),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(n) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(n);
                let n = u64::from_be_bytes(be);
                if n >> 63 != 0 {
                    return Err("WebSocket: frame length with the high bit set".into());
                }
                (10, usize::try_from(n).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    match opcode {
        op::CONTINUATION | op::TEXT | op::BINARY => {}
        op::CLOSE | op::PING | op::PONG => {
            if !fin || payload > 125 {
                return Err(Error(format!(
                    "WebSocket: invalid control frame (opcode {opcode}, FIN {fin}, {payload} bytes)"
                )));
            }
        }
        _ => return Err(Error(format!("WebSocket: reserved opcode {opcode}"))),
    }
    if payload > MAX_MESSAGE {
        return Err(Error(format!(
            "WebSocket: a {payload}-byte frame is over the {MAX_MESSAGE}-byte limit"
        )));
    }
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        len,
        payload,
    }))
}

/// Server frames from a reusable buffer: read into [`Reader::spare`], report with
/// [`Reader::filled`], take items with [`Reader::next`] until it says `None`.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Zero-initialised once; `start..end` holds received bytes not yet taken.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` takes in all, once its header is known; 0 otherwise.
    need: usize,
    /// The last read filled all the free space: the next [`Reader::spare`] grows the buffer
    /// (up to [`READ_BUF`]).
    full: bool,
    /// The kind of the fragmented message being assembled, if any.
    frag: Option<Kind>,
    /// Its payload so far.
    frag_buf: Vec<u8>,
    /// `frag_buf` was handed out as a complete message: emptied on the next call.
    frag_done: bool,
    /// The inflater of compressed messages, made at the first one.
    inflater: Option<Box<flate2::Decompress>>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::with_capacity(INITIAL_BUF)
    }
}

impl Reader {
    /// A reader whose buffer starts at `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(MIN_READ)],
            start: 0,
            end: 0,
            need: 0,
            full: false,
            frag: None,
            frag_buf: Vec::new(),
            frag_done: false,
            inflater: None,
        }
    }

    /// Bytes received and not yet taken as items.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Free space to read into (at least [`MIN_READ`] bytes, and room for all of a frame whose
    /// header has arrived): moves the buffered bytes to the front, or grows the buffer, first if
    /// needed.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        let pending = self.end - self.start;
        if pending == 0 {
            self.start = 0;
            self.end = 0;
        }
        let want = self.need.max(pending + MIN_READ);
        if self.buf.len() - self.end < MIN_READ || self.start + want > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        let mut size = self.buf.len();
        if self.full && size < READ_BUF {
            size = (size * 2).min(READ_BUF);
        }
        if want > size {
            size = want.next_power_of_two();
        }
        if size > self.buf.len() {
            self.buf.resize(size, 0);
        }
        self.full = false;
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into the start of [`Reader::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        let end = (self.end + n).min(self.buf.len());
        self.full = end == self.buf.len();
        self.end = end;
    }

    /// Appends `bytes` (copying them in, for tests and for bytes read before the switch).
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// The next complete item; `Ok(None)` when more bytes are needed. Control frames between the
    /// fragments of a message come out in order, the message once its last fragment is in.
    pub(crate) fn next(&mut self) -> Result<Option<Item<'_>>> {
        if self.frag_done {
            self.frag_buf.clear();
            self.frag_done = false;
        }
        loop {
            let avail = &self.buf[self.start..self.end];
            let Some(h) = parse_header(avail)? else {
                return Ok(None);
            };
            let total = h.len + h.payload;
            if avail.len() < total {
                self.need = total;
                return Ok(None);
            }
            let payload = self.start + h.len..self.start + total;
            self.start += total;
            self.need = 0;
            let kind = match h.opcode {
                op::TEXT => Kind::Text,
                op::BINARY => Kind::Binary,
                op::CONTINUATION => {
                    let Some(kind) = self.frag else {
                        return Err("WebSocket: a continuation frame outside a message".into());
                    };
                    if self.frag_buf.len() + h.payload > MAX_MESSAGE {
                        return Err(Error(format!(
                            "WebSocket: a fragmented message is over the {MAX_MESSAGE}-byte limit"
                        )));
                    }
                    self.frag_buf.extend_from_slice(&self.buf[payload]);
                    if !h.fin {
                        continue;
                    }
                    self.frag = None;
                    self.frag_done = true;
                    return Ok(Some(Item::Data(kind, &self.frag_buf)));
                }
                op::PING => return Ok(Some(Item::Ping(&self.buf[payload]))),
                op::PONG => return Ok(Some(Item::Pong)),
                op::CLOSE => return Ok(Some(Item::Close(&self.buf[payload]))),
                // `parse_header` lets no other opcode through.
                other => return Err(Error(format!("WebSocket: reserved opcode {other}"))),
            };
            if self.frag.is_some() {
                return Err("WebSocket: a new message began inside a fragmented one".into());
            }
            if h.fin && h.compressed {
                // Inflated into the fragment buffer, which the next call clears.
                let inflater = self
                    .inflater
                    .get_or_insert_with(|| Box::new(flate2::Decompress::new(false)));
                inflate(inflater, &self.buf[payload], &mut self.frag_buf)?;
                self.frag_done = true;
                return Ok(Some(Item::Data(kind, &self.frag_buf)));
            }
            if h.compressed {
                return Err(
                    "WebSocket: a fragmented compressed message (not supported here)".into(),
                );
            }
            if h.fin {
                return Ok(Some(Item::Data(kind, &self.buf[payload])));
            }
            self.frag = Some(kind);
            self.frag_buf.extend_from_slice(&self.buf[payload]);
        }
    }
}

/// A compressed message's payload (each message deflated on its own, as the hub's are: it
/// answers with `server_no_context_takeover`), inflated into `out`.
fn inflate(inflater: &mut flate2::Decompress, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    inflater.reset(false);
    out.clear();
    for input in [payload, &[0, 0, 0xff, 0xff][..]] {
        let mut at = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(4096));
            }
            let (before_in, before_out) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[at..], out, flate2::FlushDecompress::Sync)
                .map_err(|e| Error(format!("WebSocket: bad compressed message: {e}")))?;
            let consumed = (inflater.total_in() - before_in) as usize;
            at += consumed;
            if status == flate2::Status::StreamEnd {
                return Ok(());
            }
            if out.len() > MAX_MESSAGE {
                return Err("WebSocket: a compressed message inflates past the limit".into());
            }
            // Until a call with room to spare gives nothing more (output may be held back even
            // once all of the input is in).
            if consumed == 0 && out.len() == before_out {
                break;
            }
        }
    }
    Ok(())
}

/// The status code and reason of a close frame's payload.
pub(crate) fn close_reason(payload: &[u8]) -> (Option<u16>, String) {
    match payload {
        [a, b, reason @ ..] => (
            Some(u16::from_be_bytes([*a, *b])),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (None, String::new()),
    }
}

/// Client frames, masked, queued in a buffer until [`RawWs::flush`].
#[derive(Debug)]
pub(crate) struct Writer {
    out: Vec<u8>,
    /// xorshift64 state for the masking keys; never 0.
    rng: u64,
    /// A close frame has been queued: nothing more is.
    closing: bool,
}

impl Writer {
    /// A writer whose masking keys are seeded from `seed` and the process's random hasher keys.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            out: Vec::new(),
            rng: RandomState::new().hash_one(seed) | 1,
            closing: false,
        }
    }

    fn key(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    /// Queues one final frame with `opcode` and `payload`.
    pub(crate) fn frame(&mut self, opcode: u8, payload: &[u8]) {
        if self.closing {
            return;
        }
        self.closing = opcode == op::CLOSE;
        let key = self.key();
        let n = payload.len();
        self.out.reserve(n + 14);
        self.out.push(0x80 | opcode);
        if n < 126 {
            self.out.push(0x80 | n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        self.out.extend_from_slice(&key);
        self.out
            .extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    }

    /// Queues a close frame with `code` (once).
    pub(crate) fn close(&mut self, code: u16) {
        self.frame(op::CLOSE, &code.to_be_bytes());
    }

    /// Bytes queued and not yet written.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out
    }
}

/// What [`RawWs::next_data`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    /// A complete text or binary message.
    Data(Kind, &'a [u8]),
    /// A control frame, handled.
    Control,
    /// Nothing complete is buffered: [`RawWs::fill`] first.
    Empty,
}

/// A subscriber's connection after the handshake: the TCP stream, the frame reader, the queue of
/// frames to send.
#[derive(Debug)]
pub(crate) struct RawWs {
    stream: TcpStream,
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
}

impl RawWs {
    /// Takes over `stream` after the handshake; `early` are bytes the handshake read past the
    /// HTTP response (the first frames), `seed` varies the masking keys.
    pub(crate) fn new(stream: TcpStream, early: &[u8], seed: u64) -> Self {
        let mut reader = Reader::default();
        reader.push(early);
        Self {
            stream,
            reader,
            writer: Writer::new(seed),
        }
    }

    /// Waits for bytes and reads what the buffer takes; an error when the server has closed the
    /// connection. Cancel-safe: nothing read is lost if the future is dropped.
    pub(crate) async fn fill(&mut self) -> Result<()> {
        let n = self.stream.read(self.reader.spare()).await?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        self.reader.filled(n);
        Ok(())
    }

    /// Takes the next buffered item and handles what the connection itself must: a ping is
    /// answered (queued), a close is answered (queued) and becomes an error.
    pub(crate) fn next_data(&mut self) -> Result<Step<'_>> {
        match self.reader.next()? {
            None => Ok(Step::Empty),
            Some(Item::Data(kind, p)) => Ok(Step::Data(kind, p)),
            Some(Item::Ping(p)) => {
                self.writer.frame(op::PONG, p);
                Ok(Step::Control)
            }
            Some(Item::Pong) => Ok(Step::Control),
            Some(Item::Close(p)) => {
                let (code, reason) = close_reason(p);
                // Echo the status code (RFC 6455 § 5.5.1); the caller flushes.
                match code {
                    Some(c) => self.writer.close(c),
                    None => self.writer.frame(op::CLOSE, &[]),
                }
                Err(Error::closed_by(code, &reason))
            }
        }
    }

    /// Writes the queued frames.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.writer.out.is_empty() {
            self.stream.write_all(&self.writer.out).await?;
            self.writer.out.clear();
        }
        Ok(())
    }

    /// Closes politely (a close frame, unless one was already queued as the answer to the
    /// server's), not waiting long for the server.
    pub(crate) async fn close(mut self) {
        self.writer.close(1000);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.flush().await?;
            self.stream.shutdown().await?;
            Ok::<_, Error>(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) with a minimal length field.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Owned items, to compare.
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Data(Kind, Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Vec<u8>),
    }

    fn drain(r: &mut Reader, out: &mut Vec<Got>) {
        while let Some(item) = r.next().expect("valid frames") {
            out.push(match item {
                Item::Data(k, p) => Got::Data(k, p.to_vec()),
                Item::Ping(p) => Got::Ping(p.to_vec()),
                Item::Pong => Got::Pong,
                Item::Close(p) => Got::Close(p.to_vec()),
            });
        }
    }

    /// Feeds `parts` one after the other, taking items after each.
    fn read_parts(r: &mut Reader, parts: &[&[u8]]) -> Vec<Got> {
        let mut out = Vec::new();
        for p in parts {
            r.push(p);
            drain(r, &mut out);
        }
        out
    }

    /// A stream with every frame shape, and what it should yield.
    fn sample() -> (Vec<u8>, Vec<Got>) {
        let long: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut s = Vec::new();
        s.extend(frame(true, op::TEXT, b"{\"op\":\"message\"}"));
        s.extend(frame(true, op::BINARY, b""));
        s.extend(frame(true, op::TEXT, &long));
        s.extend(frame(true, op::PING, b"hb"));
        // A fragmented message with a ping between its fragments.
        s.extend(frame(false, op::TEXT, b"frag"));
        s.extend(frame(true, op::PING, b""));
        s.extend(frame(false, op::CONTINUATION, b"men"));
        s.extend(frame(true, op::CONTINUATION, b"ted"));
        s.extend(frame(true, op::PONG, b"x"));
        s.extend(frame(true, op::BINARY, b"\x00\x01"));
        s.extend(frame(true, op::CLOSE, b"\x03\xe8bye"));
        let want = vec![
            Got::Data(Kind::Text, b"{\"op\":\"message\"}".to_vec()),
            Got::Data(Kind::Binary, Vec::new()),
            Got::Data(Kind::Text, long),
            Got::Ping(b"hb".to_vec()),
            Got::Ping(Vec::new()),
            Got::Data(Kind::Text, b"fragmented".to_vec()),
            Got::Pong,
            Got::Data(Kind::Binary, b"\x00\x01".to_vec()),
            Got::Close(b"\x03\xe8bye".to_vec()),
        ];
        (s, want)
    }

    #[test]
    fn whole_stream_at_once() {
        let (s, want) = sample();
        let mut r = Reader::default();
        assert_eq!(read_parts(&mut r, &[&s]), want);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let (s, want) = sample();
        for cut in 0..=s.len() {
            // A small buffer, so that compaction and growth happen too.
            let mut r = Reader::with_capacity(MIN_READ);
            assert_eq!(
                read_parts(&mut r, &[&s[..cut], &s[cut..]]),
                want,
                "cut {cut}"
            );
            assert_eq!(r.buffered(), 0, "cut {cut}");
        }
        for cut in 0..=s.len() {
            for cut2 in (cut..=s.len()).step_by(7) {
                let mut r = Reader::default();
                let got = read_parts(&mut r, &[&s[..cut], &s[cut..cut2], &s[cut2..]]);
                assert_eq!(got, want, "cuts {cut}, {cut2}");
            }
        }
        let mut r = Reader::default();
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(read_parts(&mut r, &bytes), want);
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        for n in [125, 126, 127, 65_535, 65_536, 70_000, 300_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let f = frame(true, op::BINARY, &payload);
            let header = match n {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(f.len(), n + header);
            assert_eq!(parse_header(&f).expect("ok").map(|h| h.len), Some(header));
            // Header cut anywhere: not enough yet.
            for cut in 0..header {
                assert_eq!(parse_header(&f[..cut]).expect("ok"), None);
            }
            let want = vec![Got::Data(Kind::Binary, payload.clone())];
            let mut r = Reader::default();
            assert_eq!(read_parts(&mut r, &[&f]), want, "{n}");
            // In pieces, as reads of the buffer's free space would arrive.
            let mut r = Reader::default();
            let pieces: Vec<&[u8]> = f.chunks(1000).collect();
            assert_eq!(read_parts(&mut r, &pieces), want, "{n} in pieces");
            // Twice in a row, the second one after the first had grown the buffer.
            let mut twice = f.clone();
            twice.extend_from_slice(&f);
            let mut r = Reader::default();
            let pieces: Vec<&[u8]> = twice.chunks(4096).collect();
            assert_eq!(read_parts(&mut r, &pieces).len(), 2, "{n} twice");
        }
        // A 64-bit length is accepted for a short payload too (not minimal, still valid here).
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&3u64.to_be_bytes());
        f.extend_from_slice(b"abc");
        let mut r = Reader::default();
        assert_eq!(
            read_parts(&mut r, &[&f]),
            vec![Got::Data(Kind::Text, b"abc".to_vec())]
        );
    }

    #[test]
    fn the_buffer_grows_while_reads_fill_it() {
        let mut r = Reader::default();
        assert_eq!(r.spare().len(), INITIAL_BUF);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let n = r.spare().len();
            r.filled(n);
            sizes.push(r.buf.len());
            r.start = r.end; // as if all of it had been taken
        }
        assert_eq!(sizes.last(), Some(&READ_BUF));
        // A partial read does not grow it.
        let n = r.spare().len();
        r.filled(n / 2);
        r.start = r.end;
        assert_eq!(r.spare().len(), READ_BUF);
    }

    #[test]
    fn fragmented_messages() {
        let mut s = frame(false, op::BINARY, b"a");
        for _ in 0..100 {
            s.extend(frame(false, op::CONTINUATION, b"bc"));
        }
        s.extend(frame(true, op::CONTINUATION, b""));
        s.extend(frame(true, op::TEXT, b"next"));
        let mut whole = b"a".to_vec();
        whole.extend(b"bc".repeat(100));
        let want = vec![
            Got::Data(Kind::Binary, whole),
            Got::Data(Kind::Text, b"next".to_vec()),
        ];
        for cut in 0..=s.len() {
            let mut r = Reader::default();
            assert_eq!(
                read_parts(&mut r, &[&s[..cut], &s[cut..]]),
                want,
                "cut {cut}"
            );
        }
        // The assembly buffer is reused, not handed out again.
        let mut r = Reader::default();
        let got = read_parts(&mut r, &[&s, &s]);
        assert_eq!(got.len(), 4);
        assert_eq!(got[2], want[0]);
    }

    #[test]
    fn compressed_messages_are_inflated() {
        let text = b"{\"op\":\"message\",\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";
        let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut z = Vec::with_capacity(256);
        c.compress_vec(text, &mut z, flate2::FlushCompress::Sync)
            .expect("deflate");
        z.truncate(z.len() - 4);
        let mut f = frame(true, op::TEXT, &z);
        f[0] |= 0x40;
        let mut r = Reader::default();
        r.push(&f);
        r.push(&f);
        for _ in 0..2 {
            assert_eq!(
                r.next().expect("a message"),
                Some(Item::Data(Kind::Text, &text[..]))
            );
        }
        assert_eq!(r.next().expect("nothing more"), None);
    }

    #[test]
    fn protocol_errors() {
        let bad: [&[u8]; 8] = [
            // Masked server frame.
            &[0x81, 0x81, 1, 2, 3, 4, b'a'],
            // Reserved bit (RSV2; RSV1 is permessage-deflate's).
            &[0xA1, 0x00],
            // Reserved opcode.
            &[0x83, 0x00],
            // Fragmented ping.
            &[0x09, 0x00],
            // Ping over 125 bytes.
            &[0x89, 126, 0, 126],
            // Continuation outside a message.
            &[0x80, 0x00],
            // 64-bit length with the high bit set.
            &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
            // Over the size limit.
            &[0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0],
        ];
        for b in bad {
            let mut r = Reader::default();
            r.push(b);
            assert!(r.next().is_err(), "{b:?}");
        }
        // A new message inside a fragmented one.
        let mut r = Reader::default();
        r.push(&frame(false, op::TEXT, b"a"));
        r.push(&frame(true, op::TEXT, b"b"));
        assert!(r.next().is_err());
    }

    /// Unmasks one client frame at the start of `b`: (FIN and opcode byte, payload, frame size).
    fn unmask(b: &[u8]) -> (u8, Vec<u8>, usize) {
        assert_eq!(b[1] & 0x80, 0x80, "client frames are masked");
        let (len, at) = match b[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(be) as usize, 10)
            }
            n => (usize::from(n), 2),
        };
        let key = &b[at..at + 4];
        let p = b[at + 4..at + 4 + len]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ key[i % 4])
            .collect();
        (b[0], p, at + 4 + len)
    }

    #[test]
    fn client_frames_are_masked() {
        let mut w = Writer::new(7);
        let long = vec![b'z'; 200];
        let huge = vec![b'y'; 70_000];
        w.frame(op::TEXT, b"hello");
        w.frame(op::BINARY, &long);
        w.frame(op::PONG, b"");
        w.frame(op::BINARY, &huge);
        let mut b = w.pending();
        let mut got = Vec::new();
        while !b.is_empty() {
            let (h, p, n) = unmask(b);
            got.push((h, p));
            b = &b[n..];
        }
        assert_eq!(
            got,
            vec![
                (0x81, b"hello".to_vec()),
                (0x82, long),
                (0x8A, Vec::new()),
                (0x82, huge)
            ]
        );
        // Keys differ from frame to frame.
        let mut w = Writer::new(7);
        w.frame(op::TEXT, b"aaaa");
        w.frame(op::TEXT, b"aaaa");
        let out = w.pending();
        assert_ne!(out[2..6], out[12..16]);
        // Nothing after a close.
        let mut w = Writer::new(1);
        w.close(1000);
        w.frame(op::TEXT, b"late");
        w.close(1001);
        assert_eq!(unmask(w.pending()), (0x88, vec![3, 0xe8], 8));
        assert_eq!(w.pending().len(), 8);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_reason(b""), (None, String::new()));
        assert_eq!(close_reason(b"\x03\xe9"), (Some(1001), String::new()));
        assert_eq!(close_reason(b"\x03\xf0bye"), (Some(1008), "bye".to_owned()));
    }

    /// A connected pair: the client's end as a [`RawWs`] (with `early` bytes), the server's end.
    async fn pair(early: &[u8]) -> (RawWs, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.expect("connect");
        let (server, _) = server.expect("accept");
        (RawWs::new(client, early, 1), server)
    }

    #[tokio::test]
    async fn pings_are_answered_and_close_ends_the_connection() {
        let mut first = frame(true, op::TEXT, b"early");
        first.extend(frame(false, op::TEXT, b"par"));
        let (mut ws, mut server) = pair(&first).await;
        let mut wire = frame(true, op::PING, b"hello");
        wire.extend(frame(true, op::CONTINUATION, b"t"));
        wire.extend(frame(true, op::CLOSE, b"\x03\xe9going"));
        server.write_all(&wire).await.expect("write");

        let mut seen = Vec::new();
        let err = loop {
            match ws.next_data() {
                Ok(Step::Data(k, p)) => seen.push((k, p.to_vec())),
                Ok(Step::Control) => {}
                Ok(Step::Empty) => ws.fill().await.expect("read"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            seen,
            vec![
                (Kind::Text, b"early".to_vec()),
                (Kind::Text, b"part".to_vec())
            ]
        );
        assert_eq!(err.0, "closed by the server (code 1001, \"going\")");
        ws.close().await;
        let mut back = Vec::new();
        server.read_to_end(&mut back).await.expect("read");
        let (h, p, n) = unmask(&back);
        assert_eq!((h, p.as_slice()), (0x8A, &b"hello"[..]), "a masked pong");
        let (h, p, m) = unmask(&back[n..]);
        assert_eq!(
            (h, p.as_slice()),
            (0x88, &b"\x03\xe9"[..]),
            "the close echoed"
        );
        assert_eq!(n + m, back.len(), "nothing else");
    }

    #[tokio::test]
    async fn end_of_stream_is_an_error() {
        let (mut ws, server) = pair(b"").await;
        drop(server);
        let e = ws.fill().await.expect_err("closed");
        assert_eq!(e.0, "connection closed by the server");
    }
}
