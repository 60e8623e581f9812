//! Switchboard, protocol `switchboard.v1` (protocol/README.md).
//!
//! The hub writes `op` first in every frame, so frames are told apart by prefix; anything else
//! falls back to a JSON parse. A delivery's `data` is the publisher's bytes verbatim, so the
//! payload scan runs on the frame text directly.

use tokio_tungstenite::tungstenite::Message;

use super::{Adapter, AdapterOpts, Event};
use crate::{
    error::{Error, Result},
    net::Endpoint,
    payload::Scanner,
    wire::Kind,
    PublishScope,
};

/// A Switchboard client.
#[derive(Debug)]
pub(crate) struct Switchboard {
    ready: bool,
    scope: &'static str,
    next_id: u64,
    /// Publishes without `id`: the hub answers none of them.
    fire_and_forget: bool,
}

impl Adapter for Switchboard {
    const ACKS_PUBLISHES: bool = true;

    fn new(opts: &AdapterOpts) -> Self {
        Self {
            ready: false,
            scope: match opts.scope {
                PublishScope::Worker => "worker",
                PublishScope::Node => "node",
                PublishScope::Cluster => "cluster",
            },
            next_id: 1,
            fire_and_forget: opts.fire_and_forget,
        }
    }

    fn url(ep: &Endpoint, _room: Option<usize>) -> String {
        ep.url("", None)
    }

    fn scanner() -> Scanner {
        Scanner::plain()
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn subscribe(&mut self, room: usize) -> Option<Message> {
        let id = self.id();
        Some(Message::Text(format!(
            r#"{{"op":"subscribe","room":"room-{room}","id":{id}}}"#
        )))
    }

    fn publish(&mut self, room: usize, payload: &[u8]) -> Message {
        let mut num = itoa::Buffer::new();
        let mut out = Vec::with_capacity(payload.len() + 80);
        out.extend_from_slice(br#"{"op":"publish","room":"room-"#);
        out.extend_from_slice(num.format(room).as_bytes());
        out.extend_from_slice(br#"","scope":""#);
        out.extend_from_slice(self.scope.as_bytes());
        if self.fire_and_forget {
            out.extend_from_slice(br#"","data":"#);
        } else {
            out.extend_from_slice(br#"","id":"#);
            out.extend_from_slice(num.format(self.id()).as_bytes());
            out.extend_from_slice(br#","data":"#);
        }
        out.extend_from_slice(payload);
        out.push(b'}');
        // The payload is ASCII JSON, so this never fails; a lossy conversion keeps it total.
        Message::Text(
            String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    fn on_frame(&mut self, kind: Kind, b: &[u8], events: &mut impl FnMut(Event<'_>)) -> Result<()> {
        if kind == Kind::Binary {
            return Err("the hub sent a binary message".into());
        }
        if b.starts_with(br#"{"op":"message""#) {
            events(Event::Delivery(b));
        } else if b.starts_with(br#"{"op":"ack""#) {
            events(Event::Ack);
        } else if b.starts_with(br#"{"op":"welcome""#) {
            self.ready = true;
        } else {
            self.other(b, events)?;
        }
        Ok(())
    }

    fn take_reply(&mut self) -> Option<Message> {
        None
    }
}

impl Switchboard {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A frame that does not start with a known `op`: parsed as JSON.
    fn other(&mut self, b: &[u8], events: &mut impl FnMut(Event<'_>)) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| {
            Error(format!(
                "the hub sent invalid JSON ({e}): {}",
                String::from_utf8_lossy(b)
            ))
        })?;
        match v.get("op").and_then(|op| op.as_str()) {
            Some("message") => events(Event::Delivery(b)),
            Some("ack") => events(Event::Ack),
            Some("welcome") => self.ready = true,
            Some("error") => {
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?");
                return Err(Error(format!(
                    "the hub answered error `{}`: {}",
                    field("code"),
                    field("message")
                )));
            }
            // Unknown ops are ignored (forward compatibility), pongs too.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testing::{events, replies};
    use serde_json::json;

    fn sb() -> Switchboard {
        Switchboard::new(&AdapterOpts {
            scope: PublishScope::Node,
            fire_and_forget: false,
        })
    }

    #[test]
    fn fire_and_forget_publishes_carry_no_id() {
        let mut a = Switchboard::new(&AdapterOpts {
            scope: PublishScope::Node,
            fire_and_forget: true,
        });
        let Message::Text(publ) = a.publish(2, br#"{"p":1}"#) else {
            panic!("publish is a text frame")
        };
        let v: serde_json::Value = serde_json::from_str(&publ).expect("JSON");
        assert_eq!(v["op"], "publish");
        assert_eq!(v["room"], "room-2");
        assert!(v.get("id").is_none(), "{publ}");
    }

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned())
    }

    #[test]
    fn welcome_makes_it_ready() {
        let mut a = sb();
        assert!(!a.ready());
        let w = r#"{"op":"welcome","session":"s-1","node":"n","worker":0,"protocol":"switchboard.v1","heartbeat":25}"#;
        assert_eq!(events(&mut a, text(w)).expect("ok"), vec![]);
        assert!(a.ready());
        assert!(replies(&mut a).is_empty());
    }

    #[test]
    fn requests_are_valid_protocol_frames() {
        let mut a = sb();
        let Some(Message::Text(sub)) = a.subscribe(3) else {
            panic!("subscribe is a text frame")
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&sub).expect("json"),
            json!({"op": "subscribe", "room": "room-3", "id": 1})
        );
        let Message::Text(publ) = a.publish(0, br#"{"p":1,"s":2,"t":3}"#) else {
            panic!("publish is a text frame")
        };
        match switchboard_protocol::decode(&publ).expect("decodes") {
            switchboard_protocol::ClientFrame::Publish(p) => {
                assert_eq!(p.room, "room-0");
                assert_eq!(p.data.get(), r#"{"p":1,"s":2,"t":3}"#);
                assert_eq!(p.scope, switchboard_protocol::Scope::Node);
                assert_eq!(p.id, Some(2));
            }
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn acks_deliveries_and_errors() {
        let mut a = sb();
        assert_eq!(
            events(&mut a, text(r#"{"op":"ack","id":4}"#)).expect("ok"),
            vec![None]
        );
        let m = r#"{"op":"message","room":"room-0","data":{"p":0,"s":1,"t":2},"from":"s-2"}"#;
        assert_eq!(
            events(&mut a, text(m)).expect("ok"),
            vec![Some(m.as_bytes().to_vec())]
        );
        // Field order other than the hub's still works.
        assert_eq!(
            events(&mut a, text(r#"{"id":4,"op":"ack"}"#)).expect("ok"),
            vec![None]
        );
        assert_eq!(
            events(&mut a, text(r#"{"op":"pong","id":1}"#)).expect("ok"),
            vec![]
        );
        let e = events(
            &mut a,
            text(r#"{"op":"error","id":5,"code":"too_large","message":"frame too large"}"#),
        )
        .expect_err("error frame");
        assert!(e.0.contains("too_large"), "{e}");
        assert!(events(&mut a, Message::Binary(vec![1])).is_err());
    }
}
