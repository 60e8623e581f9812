//! Socket.IO 4 (Engine.IO v4), websocket transport only, default namespace.
//!
//! Engine.IO packets are text frames whose first character is the packet type: `0` open (with a
//! JSON handshake), `1` close, `2` ping (answer `3` pong), `4` message, `6` noop. A `4` message
//! carries a Socket.IO packet: `0` connect (`40`, answered `40{"sid":…}`), `1` disconnect,
//! `2` event (`42["event",…]` or `42<id>[…]` asking for an ack), `3` ack (`43<id>[…]`),
//! `4` connect error.
//!
//! The peer server handles `join` (room, ack) and `publish` (room, data) by emitting
//! `message` with `data` to the room. Data is sent as a JSON string holding the payload, so
//! deliveries arrive as `42["message","{\"p\":…}"]` and the scanner looks for escaped quotes.

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Message;

use super::{Adapter, AdapterOpts, Event};
use crate::{
    error::{Error, Result},
    net::Endpoint,
    payload::{push_escaped, Scanner},
    wire::Kind,
};

/// A Socket.IO client.
#[derive(Debug, Default)]
pub(crate) struct SocketIo {
    phase: Phase,
    next_ack: u64,
    replies: VecDeque<Message>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the Engine.IO open packet.
    #[default]
    Opening,
    /// `40` sent, waiting for the namespace connect reply.
    Connecting,
    /// Connected to the default namespace.
    Ready,
}

impl Adapter for SocketIo {
    fn new(_opts: &AdapterOpts) -> Self {
        Self::default()
    }

    fn url(ep: &Endpoint, _room: Option<usize>) -> String {
        ep.url("/socket.io/", Some("EIO=4&transport=websocket"))
    }

    fn scanner() -> Scanner {
        Scanner::escaped()
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    fn subscribe(&mut self, room: usize) -> Option<Message> {
        let id = self.next_ack;
        self.next_ack += 1;
        Some(Message::Text(format!(r#"42{id}["join","room-{room}"]"#)))
    }

    fn publish(&mut self, room: usize, payload: &[u8]) -> Message {
        let mut num = itoa::Buffer::new();
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 4 + 40);
        out.extend_from_slice(br#"42["publish","room-"#);
        out.extend_from_slice(num.format(room).as_bytes());
        out.extend_from_slice(br#"",""#);
        push_escaped(&mut out, payload);
        out.extend_from_slice(br#""]"#);
        // ASCII throughout, so this never fails; a lossy conversion keeps it total.
        Message::Text(
            String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    fn on_frame(&mut self, kind: Kind, b: &[u8], events: &mut impl FnMut(Event<'_>)) -> Result<()> {
        if kind == Kind::Binary {
            // Binary attachments are not part of this bench.
            return Ok(());
        }
        match b.first() {
            Some(b'4') => self.socket_packet(b, events),
            Some(b'2') => {
                // Ping (with whatever payload it carries) → pong with the same payload.
                let mut pong = String::with_capacity(b.len());
                pong.push('3');
                pong.push_str(&String::from_utf8_lossy(&b[1..]));
                self.replies.push_back(Message::Text(pong));
                Ok(())
            }
            Some(b'0') => {
                if self.phase == Phase::Opening {
                    self.replies.push_back(Message::Text("40".into()));
                    self.phase = Phase::Connecting;
                }
                Ok(())
            }
            Some(b'1') => Err("Socket.IO: the server closed the Engine.IO session".into()),
            _ => Ok(()),
        }
    }

    fn take_reply(&mut self) -> Option<Message> {
        self.replies.pop_front()
    }
}

impl SocketIo {
    /// An Engine.IO `4` message: a Socket.IO packet.
    fn socket_packet(&mut self, b: &[u8], events: &mut impl FnMut(Event<'_>)) -> Result<()> {
        match b.get(1) {
            Some(b'2') if b.starts_with(br#"42["message","#) => events(Event::Delivery(b)),
            Some(b'3') => events(Event::Ack),
            Some(b'0') if self.phase == Phase::Connecting => self.phase = Phase::Ready,
            Some(b'4') => {
                return Err(Error(format!(
                    "Socket.IO: connection refused: {}",
                    String::from_utf8_lossy(&b[2..])
                )))
            }
            Some(b'1') => return Err("Socket.IO: the server disconnected the socket".into()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testing::{events, replies};

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned())
    }

    #[test]
    fn handshake() {
        let mut a = SocketIo::default();
        let open = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert!(events(&mut a, text(open)).expect("ok").is_empty());
        assert!(!a.ready());
        assert_eq!(replies(&mut a), vec!["40"]);
        events(&mut a, text(r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#)).expect("ok");
        assert!(a.ready());
        assert!(replies(&mut a).is_empty());
    }

    #[test]
    fn connect_error() {
        let mut a = SocketIo::default();
        events(&mut a, text(r#"0{"sid":"x"}"#)).expect("ok");
        let e = events(&mut a, text(r#"44{"message":"Not authorized"}"#)).expect_err("refused");
        assert!(e.0.contains("Not authorized"), "{e}");
    }

    #[test]
    fn ping_pong_acks_and_deliveries() {
        let mut a = SocketIo::default();
        events(&mut a, text("2")).expect("ok");
        events(&mut a, text("2probe")).expect("ok");
        assert_eq!(replies(&mut a), vec!["3", "3probe"]);
        assert_eq!(events(&mut a, text("430[]")).expect("ok"), vec![None]);
        assert_eq!(
            events(&mut a, text(r#"4312["ok"]"#)).expect("ok"),
            vec![None]
        );
        let d = r#"42["message","{\"p\":1,\"s\":2,\"t\":3}"]"#;
        assert_eq!(
            events(&mut a, text(d)).expect("ok"),
            vec![Some(d.as_bytes().to_vec())]
        );
        assert!(events(&mut a, text(r#"42["other",1]"#))
            .expect("ok")
            .is_empty());
        assert!(events(&mut a, text("6")).expect("ok").is_empty());
        assert!(events(&mut a, text("41")).is_err());
        assert!(events(&mut a, text("1")).is_err());
    }

    #[test]
    fn requests_and_payload_round_trip() {
        let mut a = SocketIo::default();
        assert_eq!(a.subscribe(4), Some(text(r#"420["join","room-4"]"#)));
        assert_eq!(a.subscribe(5), Some(text(r#"421["join","room-5"]"#)));
        let mut payload = Vec::new();
        crate::payload::write(&mut payload, 90, 1, 2, 3);
        let Message::Text(publ) = a.publish(6, &payload) else {
            panic!("text")
        };
        let args: serde_json::Value = serde_json::from_str(&publ[2..]).expect("json");
        assert_eq!(args[0], "publish");
        assert_eq!(args[1], "room-6");
        assert_eq!(args[2].as_str().map(str::as_bytes), Some(&payload[..]));
        // What the server emits: the same string as the `message` event's argument.
        let delivery = format!(r#"42["message",{}]"#, args[2]);
        let ev = events(&mut a, text(&delivery)).expect("ok");
        let Some(Some(bytes)) = ev.first() else {
            panic!("a delivery")
        };
        assert_eq!(
            SocketIo::scanner().scan(bytes),
            Some(crate::payload::Stamp { p: 1, s: 2, t: 3 })
        );
    }
}
