//! The WebSocket frame codec: server frames encoded once into shared bytes, and client frames
//! decoded from a buffer with the size limit enforced on the header, before any payload arrives.
//!
//! Pure bytes in, bytes or messages out: no socket, no session, no actor. The transport feeds
//! the [`Decoder`] what it reads and writes the [`Frame`]s that outboxes hold.

use actix_codec::Decoder as _;
use actix_http::ws::{Codec, Frame as WsFrame, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use switchboard_protocol::{close, ServerFrame};

use crate::deflate::{inflate, InflateError, RSV1};

pub(crate) use actix_http::ws::{Item, Message};

/// A complete WebSocket frame (header and payload) as it goes on the wire, encoded once per
/// publish and shared by reference count between every recipient: server frames are not masked,
/// so the same bytes serve every connection.
pub(crate) type Frame = Bytes;

/// Opcodes of the frames the hub writes.
pub(crate) mod opcode {
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Encodes one unfragmented server frame.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Frame {
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

/// Encodes a text frame: what a publish's `message` becomes, once, for all its recipients.
pub(crate) fn text_frame(payload: &[u8]) -> Frame {
    frame(opcode::TEXT, payload)
}

/// The longest server frame header: 2 bytes, and 8 of length.
const MAX_HEADER: usize = 10;

/// Encodes a protocol frame as a text frame in one allocation: the JSON is written after room
/// for the header, and the header goes in front of it. For a `message` (the frame every
/// recipient shares) and an `ack` (one per acknowledged publish) the length is known before
/// encoding, so the header and the allocation fit exactly (and the bytes take the buffer
/// without a second allocation); other frames are small, and their text moves up by the unused
/// header bytes.
pub(crate) fn text_frame_of(frame: &ServerFrame<'_>) -> Frame {
    let known = frame.exact_len();
    let front = known.map_or(MAX_HEADER, header_len);
    let mut buf = frame.encode_after(front);
    let len = buf.len() - front;
    let needed = header_len(len);
    if needed < front {
        buf.drain(..front - needed);
    }
    write_header(&mut buf[..needed], opcode::TEXT, len);
    Bytes::from(buf)
}

/// Bytes of the header of a frame with `len` bytes of payload.
fn header_len(len: usize) -> usize {
    match len {
        n if n < 126 => 2,
        n if n <= usize::from(u16::MAX) => 4,
        _ => MAX_HEADER,
    }
}

/// Writes a frame header into `out`, which is exactly `header_len(len)` bytes.
fn write_header(out: &mut [u8], opcode: u8, len: usize) {
    out[0] = 0x80 | opcode;
    match len {
        n if n < 126 => out[1] = n as u8,
        n if n <= usize::from(u16::MAX) => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// Encodes a close frame; the reason is cut to fit the 125 bytes a control frame may carry.
pub(crate) fn close_frame(code: u16, reason: &str) -> Frame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(opcode::CLOSE, &payload)
}

/// Encodes a ping or pong (`opcode` 0x9 or 0xA), its payload cut to 125 bytes.
pub(crate) fn control_frame(opcode: u8, payload: &[u8]) -> Frame {
    frame(opcode, &payload[..payload.len().min(125)])
}

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
const INVALID_DEFLATE: Violation = Violation {
    code: close::INVALID_PAYLOAD,
    reason: "invalid compressed data",
};

/// What decoding hands the session: a message, or the close code for a broken protocol.
pub(crate) type Inbound = Result<Message, Violation>;

/// What the transport's reader hands the session at a time: the messages that were complete in
/// what had arrived (at least one; a violation, if any, last).
pub(crate) type Batch = Vec<Inbound>;

/// Decodes client frames from the bytes fed to it.
///
/// It keeps only the bytes of a frame that has not fully arrived (nothing, and no allocation,
/// between frames). A frame, or a fragmented message, whose header announces more than the limit
/// is refused on the header alone, before its payload is read.
pub(crate) struct Decoder {
    buf: BytesMut,
    codec: Codec,
    max: u64,
    /// Bytes of the fragmented message being received so far.
    message_len: u64,
    /// A text frame at the front of the buffer that has not fully arrived: how much of its
    /// payload is known to be valid UTF-8 so far (see [`Decoder::check_partial_text`]).
    partial: Option<PartialText>,
    /// A fragmented message is in progress (its first fragment came, its last has not).
    fragmented: bool,
    /// permessage-deflate was negotiated: a data message with RSV1 set is compressed.
    deflate: bool,
    /// The frame at the front of the buffer starts a compressed message (its RSV1 bit, taken
    /// off the buffer for the frame parser, which knows no extension).
    front_compressed: bool,
    /// A compressed message that came in fragments, so far: its payload is inflated whole,
    /// once the last fragment is in (each message is deflated on its own, see `deflate.rs`).
    compressed: Option<(bool, BytesMut)>,
}

/// What one decoded frame gives: a message for the session, or nothing yet.
enum Step {
    Message(Message),
    /// The frame was taken in (a fragment of a compressed message); decode the next one.
    Absorbed,
    NeedMore,
}

/// The part of an incomplete text frame checked so far.
#[derive(Debug, Clone, Copy)]
struct PartialText {
    /// Payload bytes checked.
    checked: usize,
    /// The start of a character cut by the end of what had arrived, still to be completed.
    carry: [u8; 3],
    carry_len: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len())
            .field("max", &self.max)
            .finish()
    }
}

impl Decoder {
    /// A decoder for messages of at most `max` bytes, starting with the bytes that arrived with
    /// the handshake.
    pub(crate) fn new(early: &[u8], max: usize) -> Self {
        Decoder {
            buf: if early.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(early)
            },
            codec: Codec::new().max_size(max),
            max: max as u64,
            message_len: 0,
            partial: None,
            fragmented: false,
            deflate: false,
            front_compressed: false,
            compressed: None,
        }
    }

    /// The same decoder for a session that negotiated permessage-deflate.
    pub(crate) fn with_deflate(mut self) -> Self {
        self.deflate = true;
        self
    }

    /// Adds bytes read from the socket.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held for frames not yet complete.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Checks the header at the front of the buffer, if complete, before any payload is read.
    ///
    /// What the first two bytes break (reserved bits, an unknown opcode, a client frame not
    /// masked) is checked before the length, so that a frame that breaks both gets the same close
    /// code however its bytes arrive.
    fn check_header(&self) -> Result<(), Violation> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(());
        }
        let opcode = b[0] & 0x0f;
        // RSV1 marks a compressed message, so only on a message's first frame, and only with
        // permessage-deflate negotiated; RSV2 and RSV3 mean nothing here.
        let rsv = b[0] & 0x70;
        let rsv_ok = rsv == 0 || (rsv == RSV1 && self.deflate && matches!(opcode, 0x1 | 0x2));
        if !rsv_ok || b[1] & 0x80 == 0 || !matches!(opcode, 0x0..=0x2 | 0x8..=0xa) {
            return Err(PROTOCOL_ERROR);
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

    /// Checks the payload of an incomplete, unfragmented text frame at the front of the buffer
    /// as it arrives, so that invalid UTF-8 fails the session at once (1007) rather than once
    /// the whole frame is in. Only the bytes that arrived since the last check are looked at (a
    /// character cut at the end waits in `carry`), so a large frame arriving in many reads is
    /// checked once. The fragments of a fragmented message are checked by the session's
    /// reassembly, each as it completes, as a complete frame is here.
    fn check_partial_text(&mut self) -> Result<(), Violation> {
        let b = &self.buf;
        // During a fragmented message a text frame is a protocol error (1002), which the codec
        // reports once the frame is in; it is not checked for UTF-8 meanwhile. A compressed
        // frame's text is known only once it is inflated.
        // A text frame without FIN starts a fragmented message: its text is checked the same
        // way (a character may be cut at its end, to be completed by the next fragment).
        if b.len() < 2 || b[0] & 0x0f != 0x1 || self.fragmented || self.front_compressed {
            self.partial = None;
            return Ok(());
        }
        let (ext, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (2, u64::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (8, u64::from_be_bytes(n))
            }
            126 | 127 => return Ok(()),
            n => (0, u64::from(n)),
        };
        // Client frames are masked (`check_header` refused the others).
        let head = 2 + ext + 4;
        if b.len() <= head {
            return Ok(());
        }
        let mask = [b[head - 4], b[head - 3], b[head - 2], b[head - 1]];
        let arrived = (b.len() - head).min(usize::try_from(len).unwrap_or(usize::MAX));
        let mut state = self.partial.unwrap_or(PartialText {
            checked: 0,
            carry: [0; 3],
            carry_len: 0,
        });
        if arrived <= state.checked {
            return Ok(());
        }
        // Unmasked in chunks on the stack, each with the carried start of a cut character.
        let mut chunk = [0u8; 4096 + 3];
        let mut at = state.checked;
        while at < arrived {
            let n = (arrived - at).min(4096);
            chunk[..state.carry_len].copy_from_slice(&state.carry[..state.carry_len]);
            for i in 0..n {
                chunk[state.carry_len + i] = b[head + at + i] ^ mask[(at + i) % 4];
            }
            let filled = state.carry_len + n;
            match std::str::from_utf8(&chunk[..filled]) {
                Ok(_) => state.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    let cut = filled - e.valid_up_to();
                    state.carry[..cut].copy_from_slice(&chunk[e.valid_up_to()..filled]);
                    state.carry_len = cut;
                }
                Err(_) => return Err(INVALID_UTF8),
            }
            at += n;
        }
        state.checked = arrived;
        self.partial = Some(state);
        Ok(())
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub(crate) fn decode(&mut self) -> Result<Option<Message>, Violation> {
        loop {
            match self.step()? {
                Step::Message(message) => return Ok(Some(message)),
                Step::Absorbed => {}
                Step::NeedMore => return Ok(None),
            }
        }
    }

    fn step(&mut self) -> Result<Step, Violation> {
        self.check_header()?;
        // Only once `check_header` has seen the first two bytes (RSV1 on a continuation or
        // control frame is refused there): a bit taken off before that would hide the frame's
        // violation from it.
        if self.deflate && self.buf.len() >= 2 && self.buf[0] & RSV1 != 0 {
            self.buf[0] &= !RSV1;
            self.front_compressed = true;
        }
        let frame = match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => {
                self.partial = None;
                frame
            }
            Ok(None) => {
                self.check_partial_text()?;
                return Ok(Step::NeedMore);
            }
            Err(ProtocolError::Overflow) => return Err(TOO_BIG),
            Err(_) => return Err(PROTOCOL_ERROR),
        };
        let compressed = std::mem::take(&mut self.front_compressed);
        if self.buf.is_empty() {
            // Release the allocation: an idle connection holds no buffer.
            self.buf = BytesMut::new();
        }
        Ok(Step::Message(match frame {
            WsFrame::Text(data) if compressed => self.inflated(true, &data)?,
            WsFrame::Binary(data) if compressed => self.inflated(false, &data)?,
            WsFrame::Text(data) => {
                Message::Text(ByteString::try_from(data).map_err(|_| INVALID_UTF8)?)
            }
            WsFrame::Binary(data) => Message::Binary(data),
            WsFrame::Ping(data) => Message::Ping(data),
            WsFrame::Pong(data) => Message::Pong(data),
            WsFrame::Close(reason) => Message::Close(reason),
            WsFrame::Continuation(item) => {
                match &item {
                    Item::FirstText(b) | Item::FirstBinary(b) => {
                        // A first text fragment fails on invalid UTF-8 here, whole, as it does
                        // while it arrives (`check_partial_text`): one answer however its bytes
                        // came. A character cut at its end is the next fragment's to complete.
                        if !compressed && matches!(item, Item::FirstText(_)) {
                            if let Err(e) = std::str::from_utf8(b) {
                                if e.error_len().is_some() {
                                    return Err(INVALID_UTF8);
                                }
                            }
                        }
                        self.message_len = b.len() as u64;
                        self.fragmented = true;
                        if compressed {
                            let text = matches!(item, Item::FirstText(_));
                            self.compressed = Some((text, BytesMut::from(&b[..])));
                            return Ok(Step::Absorbed);
                        }
                    }
                    Item::Continue(b) => {
                        self.message_len += b.len() as u64;
                        if let Some((_, whole)) = &mut self.compressed {
                            whole.extend_from_slice(b);
                            return Ok(Step::Absorbed);
                        }
                    }
                    Item::Last(b) => {
                        self.message_len += b.len() as u64;
                        self.fragmented = false;
                        if let Some((text, mut whole)) = self.compressed.take() {
                            whole.extend_from_slice(b);
                            return Ok(Step::Message(self.inflated(text, &whole)?));
                        }
                    }
                }
                Message::Continuation(item)
            }
        }))
    }

    /// A compressed message's payload, inflated to at most the message limit.
    fn inflated(&self, text: bool, payload: &[u8]) -> Result<Message, Violation> {
        let max = usize::try_from(self.max).unwrap_or(usize::MAX);
        let data = Bytes::from(inflate(payload, max).map_err(|e| match e {
            InflateError::TooBig => TOO_BIG,
            InflateError::Invalid => INVALID_DEFLATE,
        })?);
        Ok(if text {
            Message::Text(ByteString::try_from(data).map_err(|_| INVALID_UTF8)?)
        } else {
            Message::Binary(data)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Found by the `frame_reader` fuzz target: an unmasked frame whose length is also over
    /// the limit got 1009 when its header arrived whole and 1002 when it arrived in two pieces.
    #[test]
    fn a_frame_breaking_two_rules_gets_one_close_code_however_it_arrives() {
        let frame = [0x81u8, 0x7e, 0x81, 0x81, 0xff, 0xff];
        let mut whole = Decoder::new(&frame, 4096);
        assert_eq!(whole.decode().unwrap_err().code, close::PROTOCOL_ERROR);
        let mut cut = Decoder::new(&frame[..2], 4096);
        let first = cut.decode();
        cut.extend(&frame[2..]);
        let code = match first {
            Err(v) => v.code,
            Ok(_) => cut.decode().unwrap_err().code,
        };
        assert_eq!(code, close::PROTOCOL_ERROR);
    }

    /// What a decoder makes of `bytes` fed in pieces of `cuts` (then the rest): the number of
    /// messages and the close code, if any.
    fn read(bytes: &[u8], cuts: &[usize]) -> (usize, Option<u16>) {
        let mut d = Decoder::new(&[], 4096);
        let (mut n, mut rest) = (0, bytes);
        for piece in cuts.iter().copied().chain([usize::MAX]) {
            let (now, after) = rest.split_at(piece.min(rest.len()));
            rest = after;
            d.extend(now);
            loop {
                match d.decode() {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break,
                    Err(v) => return (n, Some(v.code)),
                }
            }
            if rest.is_empty() {
                return (n, None);
            }
        }
        (n, None)
    }

    /// Inputs the `frame_reader` fuzz target found giving another answer cut than whole: a
    /// text frame inside a fragmented message (1002 either way, not 1007 when it came in
    /// pieces), and a first fragment's invalid text (1007 whether it is whole or still arriving).
    #[test]
    fn how_the_bytes_arrive_changes_no_answer() {
        let inside: &[u8] = &[
            1, 129, 129, 250, 137, 137, 137, 129, 137, 137, 46, 129, 129, 117, 117, 117, 117, 117,
            117, 117, 117, 117, 117, 117,
        ];
        assert_eq!(read(inside, &[16]), read(inside, &[]));
        assert_eq!(read(inside, &[]).1, Some(close::PROTOCOL_ERROR));
        let fragment = client_frame(false, 0x1, b"\xff\xfe partial");
        let mut cut = read(&fragment, &[8]);
        assert_eq!(cut, read(&fragment, &[]));
        assert_eq!(cut.1, Some(close::INVALID_PAYLOAD));
        cut = read(&fragment[..10], &[]);
        assert_eq!(
            cut,
            (0, Some(close::INVALID_PAYLOAD)),
            "a first fragment's text is checked while it arrives"
        );
        // A first fragment that ends inside a character is fine: the next one completes it.
        let open = client_frame(false, 0x1, "ok \u{20ac}".as_bytes().split_last().unwrap().1);
        assert_eq!(read(&open, &[5]), (1, None));
    }

    /// Invalid UTF-8 in a text frame fails it while the frame is still arriving; valid text
    /// arriving a byte at a time, characters cut anywhere, decodes whole.
    #[test]
    fn invalid_utf8_fails_while_the_frame_arrives_and_valid_text_survives_any_cut() {
        let bad = client_frame(true, 0x1, b"hello \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80 and more text after it");
        // The header and the payload up to just past the invalid sequence (ED A0 80).
        let upto = bad.len() - b" and more text after it".len();
        let mut d = Decoder::new(&bad[..upto], 4096);
        assert_eq!(d.decode().unwrap_err().code, close::INVALID_PAYLOAD);

        let text = "κόσμε — ünïcödé ✓ 𝄞 end";
        let good = client_frame(true, 0x1, text.as_bytes());
        let mut d = Decoder::new(&[], 4096);
        let mut got = None;
        for byte in &good {
            d.extend(std::slice::from_ref(byte));
            if let Some(m) = d.decode().unwrap() {
                got = Some(m);
            }
        }
        match got {
            Some(Message::Text(t)) => assert_eq!(&*t, text),
            other => panic!("{other:?}"),
        }
    }

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A client's compressed frame: `payload` deflated on its own, RSV1 set on a first frame.
    fn compressed_frames(opcode: u8, payload: &[u8], pieces: usize) -> Vec<u8> {
        let plain = frame(opcode, payload);
        let z = crate::deflate::deflate_frame(&plain).unwrap();
        let header = match z[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let data = &z[header..];
        let step = data.len().div_ceil(pieces);
        let mut out = Vec::new();
        for (i, chunk) in data.chunks(step).enumerate() {
            let last = (i + 1) * step >= data.len();
            let mut f = client_frame(last, if i == 0 { opcode } else { 0x0 }, chunk);
            if i == 0 {
                f[0] |= RSV1;
            }
            out.extend(f);
        }
        out
    }

    #[test]
    fn compressed_messages_whole_or_in_fragments_decode_to_their_text() {
        let text = "{\"op\":\"publish\",\"room\":\"r\",\"data\":\"".to_owned()
            + &"abc".repeat(300)
            + "\"}";
        for pieces in [1, 2, 5] {
            let bytes = compressed_frames(opcode::TEXT, text.as_bytes(), pieces);
            let mut d = Decoder::new(&bytes, 4096).with_deflate();
            match d.decode() {
                Ok(Some(Message::Text(t))) => assert_eq!(&*t, text, "{pieces}"),
                other => panic!("{pieces}: {other:?}"),
            }
            assert!(matches!(d.decode(), Ok(None)));
            // Without the extension negotiated, RSV1 is a protocol error.
            let mut plain = Decoder::new(&bytes, 4096);
            assert_eq!(plain.decode().unwrap_err().code, close::PROTOCOL_ERROR);
        }
        // A ping between the fragments of a compressed message comes out first.
        let mut bytes = compressed_frames(opcode::BINARY, &[7u8; 3000], 2);
        let ping = client_frame(true, opcode::PING, b"p");
        let first_len = 2 + 4 + (bytes[1] & 0x7f) as usize;
        bytes.splice(first_len..first_len, ping);
        let mut d = Decoder::new(&bytes, 4096).with_deflate();
        assert!(matches!(d.decode(), Ok(Some(Message::Ping(_)))));
        match d.decode() {
            Ok(Some(Message::Binary(b))) => assert_eq!(&b[..], &[7u8; 3000][..]),
            other => panic!("{other:?}"),
        }
    }

    /// Found by the `frame_reader` fuzz target: RSV1 on a continuation frame whose first byte
    /// arrived alone was taken off before the header was checked, so the frame passed.
    #[test]
    fn rsv1_on_a_continuation_is_refused_however_its_header_arrives() {
        let bytes = [0x40u8, 0xfd, 0x00];
        let mut whole = Decoder::new(&bytes, 4096).with_deflate();
        assert_eq!(whole.decode().unwrap_err().code, close::PROTOCOL_ERROR);
        let mut cut = Decoder::new(&bytes[..1], 4096).with_deflate();
        assert!(matches!(cut.decode(), Ok(None)));
        cut.extend(&bytes[1..]);
        assert_eq!(cut.decode().unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn compressed_input_is_held_to_the_limit_after_inflating_and_must_be_deflate() {
        // 1 MiB of zeros, a few KiB compressed: refused with 1009, not inflated into memory.
        let bomb = compressed_frames(opcode::BINARY, &vec![0u8; 1 << 20], 1);
        assert!(bomb.len() < 65_536);
        let mut d = Decoder::new(&bomb, 65_536).with_deflate();
        assert_eq!(d.decode().unwrap_err().code, close::MESSAGE_TOO_BIG);
        let mut junk = client_frame(true, opcode::TEXT, &[0xff; 20]);
        junk[0] |= RSV1;
        let mut d = Decoder::new(&junk, 4096).with_deflate();
        assert_eq!(d.decode().unwrap_err().code, close::INVALID_PAYLOAD);
        // RSV1 on a continuation frame, or RSV2, is a protocol error even with the extension.
        let mut bytes = client_frame(false, opcode::TEXT, b"ab");
        let mut cont = client_frame(true, 0x0, b"cd");
        cont[0] |= RSV1;
        bytes.extend(cont);
        let mut d = Decoder::new(&bytes, 4096).with_deflate();
        assert!(matches!(d.decode(), Ok(Some(Message::Continuation(_)))));
        assert_eq!(d.decode().unwrap_err().code, close::PROTOCOL_ERROR);
        let mut rsv2 = client_frame(true, opcode::TEXT, b"x");
        rsv2[0] |= 0x20;
        let mut d = Decoder::new(&rsv2, 4096).with_deflate();
        assert_eq!(d.decode().unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn frame_headers_use_the_shortest_length_form() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let f = frame(opcode::BINARY, &[0; 126]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 126]);
        let f = frame(opcode::BINARY, &[0; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(f.len(), 70_010);
    }

    #[test]
    fn protocol_frames_encode_in_place_as_their_text_frame() {
        use switchboard_protocol::RawValue;
        for size in [0usize, 100, 125, 126, 200, 65_535, 65_536, 70_000] {
            let json = format!("\"{}\"", "x".repeat(size));
            let data = RawValue::from_string(json).unwrap();
            let message = ServerFrame::Message {
                at: None,
                room: "r",
                data: &data,
                from: "s",
                user: None,
            };
            assert_eq!(
                text_frame_of(&message),
                text_frame(message.encode().as_bytes()),
                "{size}"
            );
        }
        let ack = ServerFrame::Ack { id: Some(3) };
        assert_eq!(text_frame_of(&ack), text_frame(ack.encode().as_bytes()));
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let f = close_frame(4000, &reason);
        assert!(f.len() <= 2 + 125);
        let text = std::str::from_utf8(&f[4..]).unwrap();
        assert!(reason.starts_with(text));
        assert_eq!(&f[2..4], &4000u16.to_be_bytes());
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let bytes = client_frame(true, opcode::TEXT, b"hello");
        for split in 0..bytes.len() {
            let mut d = Decoder::new(&bytes[..split], 100);
            assert!(matches!(d.decode(), Ok(None)), "split {split}");
            d.extend(&bytes[split..]);
            match d.decode() {
                Ok(Some(Message::Text(t))) => assert_eq!(&*t, "hello"),
                other => panic!("{other:?}"),
            }
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload() {
        // Only the header of a 1 GiB frame: refused at once.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        let mut d = Decoder::new(&header, 1024);
        assert_eq!(d.decode().unwrap_err().code, close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn fragments_count_towards_the_message_limit() {
        let mut d = Decoder::new(&client_frame(false, opcode::TEXT, &[b'a'; 60]), 100);
        assert!(matches!(d.decode(), Ok(Some(Message::Continuation(_)))));
        d.extend(&client_frame(true, 0x0, &[b'a'; 60]));
        assert_eq!(d.decode().unwrap_err().code, close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn invalid_utf8_and_reserved_bits_are_violations() {
        let mut d = Decoder::new(&client_frame(true, opcode::TEXT, &[0xff, 0xfe]), 100);
        assert_eq!(d.decode().unwrap_err().code, close::INVALID_PAYLOAD);
        let mut bytes = client_frame(true, opcode::TEXT, b"x");
        bytes[0] |= 0x40;
        let mut d = Decoder::new(&bytes, 100);
        assert_eq!(d.decode().unwrap_err().code, close::PROTOCOL_ERROR);
    }
}
