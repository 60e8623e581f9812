//! Reassembly of fragmented messages.
//!
//! actix-web-actors hands out each fragment as a `Continuation` item and keeps nothing, so the
//! session joins them here. Text is checked for UTF-8 as fragments arrive (a bad sequence closes
//! the session without waiting for the last fragment). The size limit for the whole message is
//! enforced earlier, on frame headers, by the transport's guard.

use bytes::BytesMut;

/// A message being reassembled.
#[derive(Debug)]
pub(crate) struct Reassembly {
    text: bool,
    buf: BytesMut,
    /// Prefix of `buf` known to be valid UTF-8.
    checked: usize,
}

/// A whole message.
#[derive(Debug)]
pub(crate) enum Assembled {
    Text(String),
    Binary(BytesMut),
}

/// The message's text is not UTF-8.
#[derive(Debug)]
pub(crate) struct InvalidUtf8;

impl Reassembly {
    pub(crate) fn start(text: bool, first: &[u8]) -> Result<Self, InvalidUtf8> {
        let mut r = Reassembly {
            text,
            buf: BytesMut::new(),
            checked: 0,
        };
        r.push(first)?;
        Ok(r)
    }

    pub(crate) fn push(&mut self, fragment: &[u8]) -> Result<(), InvalidUtf8> {
        self.buf.extend_from_slice(fragment);
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.buf[self.checked..]) {
            Ok(_) => self.checked = self.buf.len(),
            // A sequence cut at the fragment's end may be completed by the next fragment.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(InvalidUtf8),
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<Assembled, InvalidUtf8> {
        if !self.text {
            return Ok(Assembled::Binary(self.buf));
        }
        String::from_utf8(self.buf.to_vec())
            .map(Assembled::Text)
            .map_err(|_| InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let s = "héllo wörld €";
        let bytes = s.as_bytes();
        for cut in 1..bytes.len() {
            let mut r = Reassembly::start(true, &bytes[..cut]).unwrap();
            r.push(&bytes[cut..]).unwrap();
            match r.finish().unwrap() {
                Assembled::Text(t) => assert_eq!(t, s),
                Assembled::Binary(_) => panic!("text expected"),
            }
        }
    }

    #[test]
    fn binary_fragments_are_joined_without_utf8_checks() {
        let mut r = Reassembly::start(false, &[0xff, 0x00]).unwrap();
        r.push(&[0xfe]).unwrap();
        match r.finish().unwrap() {
            Assembled::Binary(b) => assert_eq!(&b[..], &[0xff, 0x00, 0xfe]),
            Assembled::Text(_) => panic!("binary expected"),
        }
    }

    #[test]
    fn invalid_utf8_is_refused_before_the_last_fragment() {
        let mut r = Reassembly::start(true, b"ok").unwrap();
        assert!(r.push(&[0xff, b'a']).is_err());
    }

    #[test]
    fn truncated_utf8_at_the_end_is_refused() {
        let r = Reassembly::start(true, &[b'a', 0xe2, 0x82]).unwrap();
        assert!(r.finish().is_err());
    }
}
