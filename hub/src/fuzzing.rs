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
/// bytes; stops at the first violation, as a session does.
pub fn read_frames(bytes: &[u8], cuts: &[u16], max: usize) -> Read {
    let mut decoder = Decoder::new(&[], max);
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
