//! The payload a publisher sends and a subscriber recognises.
//!
//! A compact JSON object `{"p":<publisher>,"s":<sequence>,"t":<send time, ns>,"x":"xxxx…"}`
//! padded with `x` to the requested size. `t` is nanoseconds since [`epoch`], one `Instant` shared
//! by the whole bench process, so latency needs no clock synchronisation.
//!
//! Subscribers do not parse JSON: [`Scanner`] finds `{"p":` in the received bytes (a whole
//! `message` frame for Switchboard, the payload of a NATS `MSG`, …) and reads the three numbers
//! that follow in order. For targets that carry the payload inside a JSON string (Socket.IO), the
//! quotes arrive escaped (`{\"p\":…`) and the scanner is built for that form.

use std::{sync::OnceLock, time::Instant};

use memchr::memmem::Finder;

/// The bench's clock origin: every timestamp in a payload counts from here.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Appends the payload of message `s` of publisher `p`, sent at `t`, padded to `size` bytes
/// (exactly `size` unless the three numbers alone need more). Allocates only if `out` must grow.
pub(crate) fn write(out: &mut Vec<u8>, size: usize, p: u32, s: u64, t: u64) {
    let start = out.len();
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(br#"{"p":"#);
    out.extend_from_slice(num.format(p).as_bytes());
    out.extend_from_slice(br#","s":"#);
    out.extend_from_slice(num.format(s).as_bytes());
    out.extend_from_slice(br#","t":"#);
    out.extend_from_slice(num.format(t).as_bytes());
    // What is left once the object is closed; `,"x":""` takes 7 bytes of it.
    let room = size.saturating_sub(out.len() - start + 1);
    if room >= 7 {
        out.extend_from_slice(br#","x":""#);
        out.resize(out.len() + room - 7, b'x');
        out.push(b'"');
    } else {
        // Too little room for the `x` field: pad with JSON whitespace instead.
        out.resize(out.len() + room, b' ');
    }
    out.push(b'}');
}

/// What a subscriber reads from a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Publisher index.
    pub(crate) p: u32,
    /// Sequence number, 0 ..< messages.
    pub(crate) s: u64,
    /// Send time, ns since [`epoch`].
    pub(crate) t: u64,
}

/// Finds and reads the `p`, `s`, `t` numbers of a payload inside received bytes.
#[derive(Debug)]
pub(crate) struct Scanner {
    start: Finder<'static>,
    sep_s: &'static [u8],
    sep_t: &'static [u8],
}

impl Scanner {
    /// A scanner for payloads carried as JSON (or raw bytes).
    pub(crate) fn plain() -> Self {
        Self {
            start: Finder::new(br#"{"p":"#),
            sep_s: br#","s":"#,
            sep_t: br#","t":"#,
        }
    }

    /// A scanner for payloads carried inside a JSON string, quotes escaped as `\"`.
    pub(crate) fn escaped() -> Self {
        Self {
            start: Finder::new(br#"{\"p\":"#),
            sep_s: br#",\"s\":"#,
            sep_t: br#",\"t\":"#,
        }
    }

    /// The stamp in `bytes`, or `None` when there is no well-formed one.
    pub(crate) fn scan(&self, bytes: &[u8]) -> Option<Stamp> {
        let at = self.start.find(bytes)? + self.start.needle().len();
        let (p, rest) = number(&bytes[at..])?;
        let rest = rest.strip_prefix(self.sep_s)?;
        let (s, rest) = number(rest)?;
        let rest = rest.strip_prefix(self.sep_t)?;
        let (t, _) = number(rest)?;
        Some(Stamp {
            p: u32::try_from(p).ok()?,
            s,
            t,
        })
    }
}

/// A decimal number at the start of `b` and the rest after it.
fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    let mut i = 0;
    while let Some(&d) = b.get(i) {
        if !d.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    if i == 0 {
        return None;
    }
    Some((n, &b[i..]))
}

/// Appends `bytes` as the inside of a JSON string: `"` and `\` escaped (the payload holds no
/// control characters).
pub(crate) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(size: usize, p: u32, s: u64, t: u64) -> Vec<u8> {
        let mut v = Vec::new();
        write(&mut v, size, p, s, t);
        v
    }

    #[test]
    fn padded_to_the_exact_size_and_valid_json() {
        for size in [
            0, 10, 30, 31, 32, 33, 35, 36, 37, 38, 40, 64, 100, 1000, 65_000,
        ] {
            let v = payload(size, 7, 123, 456_789);
            let bare = br#"{"p":7,"s":123,"t":456789}"#.len();
            assert_eq!(v.len(), size.max(bare), "size {size}");
            let json: serde_json::Value = serde_json::from_slice(&v).expect("valid JSON");
            assert_eq!(json["p"], 7);
            assert_eq!(json["s"], 123);
            assert_eq!(json["t"], 456_789);
        }
    }

    #[test]
    fn appends_after_existing_bytes() {
        let mut v = b"PREFIX".to_vec();
        write(&mut v, 50, 1, 2, 3);
        assert_eq!(v.len(), 56);
        assert!(v.starts_with(b"PREFIX{\"p\":1,"));
    }

    #[test]
    fn round_trip_plain() {
        let sc = Scanner::plain();
        for (p, s, t) in [(0, 0, 0), (3, 99, 1), (u32::MAX, u64::MAX, u64::MAX)] {
            let v = payload(100, p, s, t);
            assert_eq!(sc.scan(&v), Some(Stamp { p, s, t }));
        }
    }

    #[test]
    fn round_trip_inside_a_switchboard_message_frame() {
        let data = String::from_utf8(payload(120, 2, 77, 1_000_000)).expect("ascii");
        let raw = serde_json::value::RawValue::from_string(data).expect("raw json");
        let frame = switchboard_protocol::ServerFrame::Message {
            at: None,
            room: "room-3",
            data: &raw,
            from: "s-1",
            user: None,
        }
        .encode();
        assert_eq!(
            Scanner::plain().scan(frame.as_bytes()),
            Some(Stamp {
                p: 2,
                s: 77,
                t: 1_000_000
            })
        );
    }

    #[test]
    fn round_trip_escaped_in_a_json_string() {
        let v = payload(80, 5, 6, 7);
        let mut frame = br#"42["message",""#.to_vec();
        push_escaped(&mut frame, &v);
        frame.extend_from_slice(br#""]"#);
        let parsed: serde_json::Value = serde_json::from_slice(&frame[2..]).expect("json");
        assert_eq!(parsed[1].as_str().map(str::as_bytes), Some(&v[..]));
        assert_eq!(
            Scanner::escaped().scan(&frame),
            Some(Stamp { p: 5, s: 6, t: 7 })
        );
        assert_eq!(Scanner::plain().scan(&frame), None);
    }

    #[test]
    fn malformed_is_none() {
        let sc = Scanner::plain();
        for bad in [
            &b""[..],
            br#"{"op":"ack","id":1}"#,
            br#"{"p":,"s":1,"t":2}"#,
            br#"{"p":1,"t":1,"s":2}"#,
            br#"{"p":1,"s":1,"t":"#,
            br#"{"p":99999999999,"s":1,"t":2}"#,
            br#"{"p":1,"s":1,"t":99999999999999999999999}"#,
        ] {
            assert_eq!(sc.scan(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
