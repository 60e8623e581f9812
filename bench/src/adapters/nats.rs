//! NATS over nats-server's WebSocket listener: the NATS client protocol in WebSocket frames.
//!
//! One frame may carry several protocol lines and a message may span frames, so the connection
//! keeps a byte buffer; when it is empty (the common case: nats-server writes whole messages),
//! a frame is parsed in place and only an incomplete tail is copied.

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Message;

use super::{Adapter, AdapterOpts, Event};
use crate::{
    error::{Error, Result},
    net::Endpoint,
    payload::Scanner,
    wire::Kind,
};

/// What the client says after the server's `INFO`.
const CONNECT: &[u8] = br#"CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":false,"no_responders":false,"name":"switchboard-bench","lang":"rust"}"#;

/// A NATS client.
#[derive(Debug, Default)]
pub(crate) struct Nats {
    /// Bytes of an incomplete line or message, waiting for the next frame.
    buf: Vec<u8>,
    state: State,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    replies: VecDeque<Message>,
}

impl Adapter for Nats {
    fn new(_opts: &AdapterOpts) -> Self {
        Self::default()
    }

    fn url(ep: &Endpoint, _room: Option<usize>) -> String {
        ep.url("", None)
    }

    fn scanner() -> Scanner {
        Scanner::plain()
    }

    fn ready(&self) -> bool {
        self.state.ready
    }

    fn subscribe(&mut self, room: usize) -> Option<Message> {
        // The PONG to this PING proves the SUB was processed.
        Some(Message::Binary(
            format!("SUB room.{room} 1\r\nPING\r\n").into_bytes(),
        ))
    }

    fn publish(&mut self, room: usize, payload: &[u8]) -> Message {
        let mut num = itoa::Buffer::new();
        let mut out = Vec::with_capacity(payload.len() + 32);
        out.extend_from_slice(b"PUB room.");
        out.extend_from_slice(num.format(room).as_bytes());
        out.push(b' ');
        out.extend_from_slice(num.format(payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        Message::Binary(out)
    }

    fn barrier(&mut self) -> Option<Message> {
        Some(Message::Binary(b"PING\r\n".to_vec()))
    }

    fn on_frame(
        &mut self,
        _kind: Kind,
        bytes: &[u8],
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()> {
        if self.buf.is_empty() {
            let used = parse(&mut self.state, bytes, events)?;
            self.buf.extend_from_slice(&bytes[used..]);
        } else {
            self.buf.extend_from_slice(bytes);
            let used = parse(&mut self.state, &self.buf, events)?;
            self.buf.drain(..used);
        }
        Ok(())
    }

    fn take_reply(&mut self) -> Option<Message> {
        self.state.replies.pop_front()
    }
}

/// Parses every complete protocol line (and message) of `data`; returns how many bytes were
/// used, the rest being an incomplete tail.
fn parse(st: &mut State, data: &[u8], events: &mut impl FnMut(Event<'_>)) -> Result<usize> {
    let mut pos = 0;
    while let Some(n) = memchr::memchr(b'\n', &data[pos..]) {
        let line = &data[pos..pos + n];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let body = pos + n + 1;
        let op = line.get(..4).unwrap_or(line);
        if op.eq_ignore_ascii_case(b"MSG ") || op.eq_ignore_ascii_case(b"HMSG") {
            let headers = op[0].eq_ignore_ascii_case(&b'H');
            let (skip, total) = msg_sizes(line, headers)?;
            let end = body + total;
            if data.len() < end + 2 {
                return Ok(pos);
            }
            if &data[end..end + 2] != b"\r\n" {
                return Err(Error(format!(
                    "NATS: message not followed by CRLF after `{}`",
                    String::from_utf8_lossy(line)
                )));
            }
            events(Event::Delivery(&data[body + skip..end]));
            pos = end + 2;
            continue;
        }
        if op.eq_ignore_ascii_case(b"PING") {
            st.replies.push_back(Message::Binary(b"PONG\r\n".to_vec()));
        } else if op.eq_ignore_ascii_case(b"PONG") {
            events(Event::Ack);
        } else if op.eq_ignore_ascii_case(b"INFO") {
            if !st.ready {
                let mut connect = CONNECT.to_vec();
                connect.extend_from_slice(b"\r\n");
                st.replies.push_back(Message::Binary(connect));
                st.ready = true;
            }
        } else if op.eq_ignore_ascii_case(b"-ERR") {
            return Err(Error(format!(
                "NATS server error: {}",
                String::from_utf8_lossy(line[4..].trim_ascii())
            )));
        } else if !op.eq_ignore_ascii_case(b"+OK") && !line.is_empty() {
            return Err(Error(format!(
                "NATS: unexpected line `{}`",
                String::from_utf8_lossy(line)
            )));
        }
        pos = body;
    }
    Ok(pos)
}

/// For a `MSG subject sid [reply] len` or `HMSG subject sid [reply] hdr_len total_len` line:
/// the header bytes to skip and the total payload length.
fn msg_sizes(line: &[u8], headers: bool) -> Result<(usize, usize)> {
    let bad = || {
        Error(format!(
            "NATS: malformed `{}`",
            String::from_utf8_lossy(line)
        ))
    };
    let num = |b: &[u8]| -> Result<usize> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let mut fields = line
        .split(|&c| c == b' ' || c == b'\t')
        .filter(|f| !f.is_empty())
        .rev();
    let total = num(fields.next().ok_or_else(bad)?)?;
    if headers {
        let hdr = num(fields.next().ok_or_else(bad)?)?;
        if hdr > total {
            return Err(bad());
        }
        Ok((hdr, total))
    } else {
        Ok((0, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testing::{events, replies};

    fn bin(b: &[u8]) -> Message {
        Message::Binary(b.to_vec())
    }

    const INFO: &[u8] =
        b"INFO {\"server_id\":\"X\",\"version\":\"2.9.10\",\"max_payload\":1048576}\r\n";

    #[test]
    fn info_is_answered_with_connect() {
        let mut a = Nats::default();
        assert!(!a.ready());
        assert!(events(&mut a, bin(INFO)).expect("ok").is_empty());
        assert!(a.ready());
        let r = replies(&mut a);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("CONNECT {"), "{r:?}");
        assert!(r[0].ends_with("}\r\n"));
        let json: serde_json::Value =
            serde_json::from_str(r[0]["CONNECT ".len()..].trim_end()).expect("json");
        assert_eq!(json["verbose"], false);
        // A later INFO (cluster update) changes nothing.
        events(&mut a, bin(INFO)).expect("ok");
        assert!(replies(&mut a).is_empty());
    }

    #[test]
    fn several_lines_in_one_frame() {
        let mut a = Nats::default();
        let frame = b"+OK\r\nPING\r\nMSG room.0 1 5\r\nhello\r\nMSG room.0 1 reply.x 3\r\nabc\r\nPONG\r\nHMSG room.1 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n";
        let ev = events(&mut a, bin(frame)).expect("ok");
        assert_eq!(
            ev,
            vec![
                Some(b"hello".to_vec()),
                Some(b"abc".to_vec()),
                None,
                Some(b"hello".to_vec())
            ]
        );
        assert_eq!(replies(&mut a), vec!["PONG\r\n".to_string()]);
        assert!(a.buf.is_empty());
    }

    #[test]
    fn messages_split_across_frames_at_every_byte() {
        let stream: &[u8] =
            b"MSG room.3 1 11\r\nhello\r\nworl\r\nPING\r\nMSG room.3 1 0\r\n\r\nMSG room.3 1 2\r\nok\r\n";
        let want = vec![
            Some(b"hello\r\nworl".to_vec()),
            Some(Vec::new()),
            Some(b"ok".to_vec()),
        ];
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut a = Nats::default();
                let mut got = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    got.extend(events(&mut a, bin(part)).expect("ok"));
                }
                assert_eq!(got, want, "cuts at {cut}, {cut2}");
                assert_eq!(replies(&mut a), vec!["PONG\r\n".to_string()]);
                assert!(a.buf.is_empty(), "cuts at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn errors() {
        let mut a = Nats::default();
        let e = events(&mut a, bin(b"-ERR 'Authorization Violation'\r\n")).expect_err("err");
        assert!(e.0.contains("Authorization Violation"), "{e}");
        assert!(events(&mut Nats::default(), bin(b"MSG room.0 1 x\r\n")).is_err());
        assert!(events(&mut Nats::default(), bin(b"MSG room.0 1 2\r\nabcd\r\n")).is_err());
        assert!(events(&mut Nats::default(), bin(b"WHAT\r\n")).is_err());
    }

    #[test]
    fn requests() {
        let mut a = Nats::default();
        let sub = a.subscribe(7).expect("sub");
        assert_eq!(sub, bin(b"SUB room.7 1\r\nPING\r\n"));
        assert_eq!(a.publish(2, b"abc"), bin(b"PUB room.2 3\r\nabc\r\n"));
        assert_eq!(a.barrier(), Some(bin(b"PING\r\n")));
    }

    #[test]
    fn payload_round_trip_through_msg() {
        let mut payload = Vec::new();
        crate::payload::write(&mut payload, 100, 3, 4, 5);
        let mut a = Nats::default();
        let Message::Binary(mut wire) = a.publish(0, &payload) else {
            panic!("binary")
        };
        // The server rewrites PUB to MSG with a sid.
        wire.splice(..3, b"MSG".iter().copied());
        let wire = String::from_utf8(wire)
            .expect("ascii")
            .replacen("room.0 ", "room.0 1 ", 1);
        let ev = events(&mut a, bin(wire.as_bytes())).expect("ok");
        let Some(Some(got)) = ev.first() else {
            panic!("a delivery: {ev:?}")
        };
        assert_eq!(
            Nats::scanner().scan(got),
            Some(crate::payload::Stamp { p: 3, s: 4, t: 5 })
        );
    }
}
