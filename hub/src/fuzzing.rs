//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`): crate
//! internals that take untrusted bytes. Not part of the crate's API, and not in a default build.

use crate::codec::{Decoder, Message};

/// What the frame reader made of some bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Read {
    /// Messages and control frames decoded, in order.
    pub frames: usize,
    /// The close code of the violation that ended the stream, if one did.
    pub close: Option<u16>,
}

/// Feeds `bytes` to the hub's frame reader in the pieces `cuts` makes of them (each cut a
/// length; the rest in one piece), decoding after each piece, with messages of at most `max`
/// bytes; stops at the first violation, as a session does. With `deflate`, as a session that
/// negotiated permessage-deflate (compressed messages are inflated, to at most `max` bytes).
pub fn read_frames(bytes: &[u8], cuts: &[u16], max: usize, deflate: bool) -> Read {
    let decoder = Decoder::new(&[], max);
    let mut decoder = if deflate {
        decoder.with_deflate()
    } else {
        decoder
    };
    let mut read = Read::default();
    let mut rest = bytes;
    let mut pieces = cuts.iter().map(|c| usize::from(*c));
    loop {
        let n = pieces.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, after) = rest.split_at(n);
        rest = after;
        decoder.extend(piece);
        loop {
            match decoder.decode() {
                Ok(Some(message)) => {
                    read.frames += 1;
                    if let Message::Close(_) = message {
                        return read;
                    }
                }
                Ok(None) => break,
                Err(violation) => {
                    read.close = Some(violation.code);
                    return read;
                }
            }
        }
        if rest.is_empty() {
            return read;
        }
    }
}

/// A compressed message's payload inflated as the hub inflates a client's, to at most `max`
/// bytes: `Err(true)` when it inflates to more, `Err(false)` when it is not deflate data.
pub fn inflate(payload: &[u8], max: usize) -> Result<Vec<u8>, bool> {
    crate::deflate::inflate(payload, max).map_err(|e| e == crate::deflate::InflateError::TooBig)
}

/// `data` as the hub sends it to members that negotiated permessage-deflate: the compressed
/// payload of its binary frame, `None` when it goes out plain.
pub fn deflate(data: &[u8]) -> Option<Vec<u8>> {
    let frame =
        crate::deflate::deflate_frame(&crate::codec::frame(crate::codec::opcode::BINARY, data))?;
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some(frame[header..].to_vec())
}

/// The hub's answer to a client's `Sec-WebSocket-Extensions` header values: the response's
/// value, if it accepted a permessage-deflate offer.
pub fn negotiate_deflate(values: &[&str]) -> Option<String> {
    crate::deflate::negotiate(values.iter().copied()).map(|agreed| agreed.response)
}
