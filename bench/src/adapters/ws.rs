//! A plain broadcast server: a client connected to `<url>/<room>` receives every message any
//! other client sends on the same path. No greeting, no acks: a connection is subscribed to its
//! room by its URL, and a publisher opens one connection per room.

use tokio_tungstenite::tungstenite::Message;

use super::{Adapter, AdapterOpts, Event};
use crate::{error::Result, net::Endpoint, payload::Scanner, wire::Kind};

/// A client of the plain broadcast server.
#[derive(Debug, Default)]
pub(crate) struct PlainWs;

impl Adapter for PlainWs {
    const CONNECTION_PER_ROOM: bool = true;

    fn new(_opts: &AdapterOpts) -> Self {
        PlainWs
    }

    fn url(ep: &Endpoint, room: Option<usize>) -> String {
        match room {
            Some(r) => ep.url(&format!("/room-{r}"), None),
            None => ep.url("", None),
        }
    }

    fn scanner() -> Scanner {
        Scanner::plain()
    }

    fn ready(&self) -> bool {
        true
    }

    fn subscribe(&mut self, _room: usize) -> Option<Message> {
        None
    }

    fn publish(&mut self, _room: usize, payload: &[u8]) -> Message {
        Message::Text(String::from_utf8_lossy(payload).into_owned())
    }

    fn on_frame(
        &mut self,
        _kind: Kind,
        payload: &[u8],
        events: &mut impl FnMut(Event<'_>),
    ) -> Result<()> {
        events(Event::Delivery(payload));
        Ok(())
    }

    fn take_reply(&mut self) -> Option<Message> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testing::events;

    #[test]
    fn every_message_is_a_delivery() {
        let ep = Endpoint::parse("--url", "ws://127.0.0.1:3001", 1).expect("ok");
        assert_eq!(PlainWs::url(&ep, Some(2)), "ws://127.0.0.1:3001/room-2");
        let mut a = PlainWs;
        assert!(a.ready());
        assert_eq!(a.subscribe(1), None);
        let mut payload = Vec::new();
        crate::payload::write(&mut payload, 64, 0, 9, 1);
        let msg = a.publish(0, &payload);
        let ev = events(&mut a, msg).expect("ok");
        assert_eq!(ev, vec![Some(payload.clone())]);
        assert_eq!(
            PlainWs::scanner().scan(&payload),
            Some(crate::payload::Stamp { p: 0, s: 9, t: 1 })
        );
    }
}
