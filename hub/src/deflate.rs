//! permessage-deflate (RFC 7692): the offer a client makes at the handshake, and the one
//! compressor and the one inflater of each worker thread.
//!
//! The hub always answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (the RFC lets a server add both to any offer it accepts). Each message is then deflated on
//! its own, with no window carried over from the messages before it, which is what lets a
//! published message be compressed once and the same compressed frame go to every member that
//! negotiated compression, and lets a session keep no deflate state between messages: the
//! compressor and the inflater belong to the worker thread, not to the session (a 32 KiB
//! window per session would be ten times what an idle session costs today).
//!
//! Pure bytes in, bytes out: no socket and no session, so that the fuzz targets reach it.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::codec::Frame;

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// Deflate level 1: on JSON payloads it keeps most of level 6's saving at a third of its CPU.
const LEVEL: u32 = 1;

/// The four bytes a sync flush ends with, which RFC 7692 takes off a compressed message and the
/// receiver puts back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Offers a client may make, at most, before the hub stops reading them.
const MAX_OFFERS: usize = 16;

/// A permessage-deflate offer the hub accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub(crate) response: String,
    /// Whether the hub may send compressed messages: not when the client asked for a window
    /// smaller than 32 KiB (`server_max_window_bits` under 15), which the one shared compressor
    /// does not honour. Such a client is sent every message uncompressed, which the RFC allows;
    /// what it sends is still inflated.
    pub(crate) compress_out: bool,
}

/// Picks the first permessage-deflate offer the hub can accept from the client's
/// `Sec-WebSocket-Extensions` header values, in the client's order. An offer with an unknown or
/// repeated parameter, or a bad value, is declined (the next one is tried); with none left the
/// session runs without compression, which is not an error.
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .take(MAX_OFFERS)
        .find_map(accept)
}

/// One extension offer (`name; param; param=value`): the agreement, if it is an acceptable
/// permessage-deflate offer.
fn accept(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let (mut server_nct, mut client_nct) = (false, false);
    let mut server_bits: Option<u8> = None;
    let mut client_bits: Option<Option<u8>> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !server_nct => server_nct = true,
            ("client_no_context_takeover", None) if !client_nct => client_nct = true,
            ("server_max_window_bits", Some(v)) if server_bits.is_none() => {
                server_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", v) if client_bits.is_none() => {
                client_bits = Some(match v {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
            }
            _ => return None,
        }
    }
    let mut response =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        // Accepting the offer means answering with the same (or a smaller) value.
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    // `client_max_window_bits` is not answered: the inflater takes any window up to 15 bits,
    // so the client may use what it likes.
    Some(Agreed {
        response,
        compress_out: server_bits.is_none_or(|bits| bits == 15),
    })
}

/// A parameter value, without the quotes of a quoted string (RFC 7692 allows either form).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size: 8 to 15, as plain digits.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // No leading zero: "08" is not a value the RFC's grammar allows.
    if value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// The worker's compressor, reset before every message.
    static DEFLATER: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
    /// The worker's inflater, reset before every message.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// The compressed form of one of the hub's own data frames (unfragmented, unmasked), with RSV1
/// set; `None` when it is not a data frame or deflate does not make it shorter, and the plain
/// frame should go out instead.
pub(crate) fn deflate_frame(frame: &[u8]) -> Option<Frame> {
    let (opcode, header) = data_frame_header(frame)?;
    let payload = &frame[header..];
    let compressed = DEFLATER.with(|d| compress(&mut d.borrow_mut(), payload))?;
    // With its header the compressed frame must be shorter than the plain one.
    if compressed.len() + 10 >= payload.len() + header {
        return None;
    }
    crate::metrics::metrics().deflate_out.inc();
    let mut out = crate::codec::frame(opcode, &compressed).to_vec();
    out[0] |= RSV1;
    Some(Bytes::from(out))
}

/// The RSV1 bit of a frame's first byte: "this message is compressed".
pub(crate) const RSV1: u8 = 0x40;

/// The opcode and header length of a server data frame, `None` for any other frame.
fn data_frame_header(frame: &[u8]) -> Option<(u8, usize)> {
    let (&first, rest) = frame.split_first()?;
    let opcode = first & 0x0f;
    if first & 0xf0 != 0x80 || !matches!(opcode, 0x1 | 0x2) {
        return None;
    }
    let header = match rest.first()? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (frame.len() >= header).then_some((opcode, header))
}

/// `payload` deflated on its own (raw deflate, a sync flush, the four-byte tail taken off).
fn compress(deflater: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    deflater.reset();
    // One call, into room for the worst case (stored blocks: 5 bytes per 16 KiB, and the
    // flush). Fed into a smaller buffer and called again as it filled, the pure-Rust backend
    // was seen to lose output on incompressible stretches (a PDF of the conformance suite).
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 64);
    deflater
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .ok()?;
    // All of it in, and the flush complete (room left over): anything else goes out plain.
    if usize::try_from(deflater.total_in()).ok()? != payload.len() || out.len() == out.capacity() {
        return None;
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Some(out)
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates to more than the limit: a deflate bomb is refused, not held in memory.
    TooBig,
    /// It is not deflate data.
    Invalid,
}

/// A compressed message's payload inflated, to at most `max` bytes.
pub(crate) fn inflate(payload: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let out = INFLATER.with(|i| inflate_with(&mut i.borrow_mut(), payload, max))?;
    crate::metrics::metrics().deflate_in.inc();
    Ok(out)
}

fn inflate_with(
    inflater: &mut Decompress,
    payload: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    inflater.reset(false);
    // The output grows as it fills, so that a small message costs a small buffer; it never
    // grows past `max` and one byte (which tells "too big").
    let mut out = Vec::with_capacity((payload.len() * 4).max(64).min(max.saturating_add(1)));
    let inputs: [&[u8]; 2] = [payload, &TAIL];
    for input in inputs {
        let mut at = 0;
        loop {
            if out.len() == out.capacity() {
                let more = out.capacity().max(64).min(max + 1 - out.len());
                out.reserve_exact(more);
            }
            let (before_in, before_out) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            let consumed = inflater.total_in() - before_in;
            at += usize::try_from(consumed).unwrap_or(usize::MAX);
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A final block: whatever follows (the tail) is not part of the message.
                return Ok(out);
            }
            // Called again until a call with room to spare gives nothing more: the inflater
            // may hold output back even once all of the input is in.
            if consumed == 0 && out.len() == before_out {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::codec::{frame, opcode};

    /// The payload of one of the hub's frames.
    fn payload_of(frame: &[u8]) -> &[u8] {
        let header = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &frame[header..]
    }

    #[test]
    fn offers_are_accepted_with_both_no_context_takeover_parameters() {
        let agreed = negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(
            agreed.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(agreed.compress_out);
        let agreed = negotiate(["x-webkit-deflate-frame", "permessage-deflate"]).unwrap();
        assert!(agreed.compress_out);
        let agreed = negotiate([
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=\"15\"",
        ])
        .unwrap();
        assert!(agreed.response.ends_with("; server_max_window_bits=15"));
        assert!(agreed.compress_out);
    }

    #[test]
    fn a_small_server_window_is_accepted_but_nothing_is_sent_compressed() {
        let agreed = negotiate(["permessage-deflate; server_max_window_bits=9"]).unwrap();
        assert!(agreed.response.ends_with("; server_max_window_bits=9"));
        assert!(!agreed.compress_out);
    }

    #[test]
    fn broken_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
            "deflate-stream",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
            let next = negotiate([bad, "permessage-deflate; client_no_context_takeover"]);
            assert!(next.is_some_and(|a| a.compress_out), "{bad}");
        }
        let agreed =
            negotiate(["permessage-deflate; client_max_window_bits=10, permessage-deflate"]);
        assert!(agreed.is_some());
    }

    #[test]
    fn a_compressed_frame_inflates_to_the_plain_payload() {
        let payload = br#"{"op":"message","room":"dash","data":{"cpu":[0.5,0.25,0.5,0.25,0.5,0.25,0.5,0.25,0.5,0.25,0.5,0.25],"host":"web-1"}}"#;
        let plain = frame(opcode::TEXT, payload);
        let z = deflate_frame(&plain).unwrap();
        assert_eq!(z[0], 0x80 | RSV1 | opcode::TEXT);
        assert!(z.len() < plain.len());
        assert_eq!(inflate(payload_of(&z), 4096).unwrap(), payload);
        // Twice: nothing of the first message is left in the worker's compressor.
        assert_eq!(deflate_frame(&plain).unwrap(), z);
        // Incompressible and control frames go out plain.
        assert_eq!(deflate_frame(&frame(opcode::TEXT, b"hi")), None);
        assert_eq!(deflate_frame(&frame(opcode::PING, &[b'a'; 100])), None);
    }

    #[test]
    fn incompressible_messages_round_trip_or_go_out_plain() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let payload: Vec<u8> = (0..131_072)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        // Half random, half text: compressible, but with long stretches that are not.
        let mut mixed = payload[..65_536].to_vec();
        mixed.extend("the quick brown fox ".repeat(3_300).bytes());
        for data in [&payload, &mixed] {
            if let Some(z) = deflate_frame(&frame(opcode::BINARY, data)) {
                assert_eq!(&inflate(payload_of(&z), 1 << 20).unwrap(), data);
            }
        }
        assert!(deflate_frame(&frame(opcode::BINARY, &mixed)).is_some());
    }

    /// The conformance suite's PDF, in the windows it sends them (65,536 bytes from a pointer
    /// that wraps around): mixed compressible and incompressible stretches.
    #[test]
    fn mixed_binary_round_trips_through_the_shared_compressor() {
        let mut x = 7u64;
        let data: Vec<u8> = (0..1_042_328usize)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Stretches of text between stretches of noise.
                if (i / 3000) % 3 == 0 {
                    b"stream endobj 0 obj << /Length >> "[i % 34]
                } else {
                    (x >> 24) as u8
                }
            })
            .collect();
        let mut ptr = 0;
        for _ in 0..40 {
            let end = ptr + 65_536;
            let msg: Vec<u8> = if end <= data.len() {
                data[ptr..end].to_vec()
            } else {
                [&data[ptr..], &data[..end % data.len()]].concat()
            };
            ptr = end % data.len();
            if let Some(z) = deflate_frame(&frame(opcode::BINARY, &msg)) {
                assert_eq!(inflate(payload_of(&z), 1 << 20).unwrap(), msg);
            }
        }
        // Output that grows from a small buffer comes out whole.
        let zeros = deflate_frame(&frame(opcode::BINARY, &[0u8; 1 << 20])).unwrap();
        assert_eq!(
            inflate(payload_of(&zeros), 2 << 20).unwrap(),
            vec![0u8; 1 << 20]
        );
    }

    #[test]
    fn large_messages_round_trip() {
        let payload: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        let z = deflate_frame(&frame(opcode::BINARY, &payload)).unwrap();
        assert_eq!(inflate(payload_of(&z), payload.len()).unwrap(), payload);
        assert_eq!(
            inflate(payload_of(&z), payload.len() - 1),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit_and_garbage_is_invalid() {
        let zeros = vec![0u8; 10 << 20];
        let z = deflate_frame(&frame(opcode::BINARY, &zeros)).unwrap();
        assert!(z.len() < 100_000, "{}", z.len());
        assert_eq!(inflate(payload_of(&z), 65_536), Err(InflateError::TooBig));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 65_536),
            Err(InflateError::Invalid)
        );
        // An empty compressed message is an empty message, with or without a final block.
        assert_eq!(inflate(&[], 10).unwrap(), b"");
        assert_eq!(inflate(&[0x02, 0x00], 10).unwrap(), b"");
    }
}
