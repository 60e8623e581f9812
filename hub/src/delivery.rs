//! [`Delivery`]: handing one encoded frame to the room actors that serve a room, with the hub's
//! one wait policy.
//!
//! Each room actor gets the frame with `try_send`. A room whose queue is full is not skipped and
//! its queue does not grow: the hand-over waits, and the publisher with it, until there is room.
//! A session publisher waits inside its actor (`ctx.wait`), so it stops reading its socket and
//! its messages keep their order; an HTTP or admin caller awaits [`Delivery::finish`]. Nothing
//! here decides where a publish goes; that is `publish.rs`.

use std::sync::Arc;

use actix::{prelude::SendError, Addr};

use crate::{
    broadcaster::Broadcaster, codec::Frame, messages::Fanout, metrics::FanoutTimer, room::Room,
    SessionId,
};

/// A frame handed to rooms; what is left to wait for, if a room queue was full.
#[derive(Debug, Default)]
#[must_use = "a delivery waiting for a full room queue must be finished"]
pub(crate) struct Delivery {
    waiting: Vec<(Addr<Room>, Fanout)>,
}

impl Delivery {
    /// Hands `frame` to one room actor (a worker-scope publish).
    pub(crate) fn to_room(
        room: Option<&Addr<Room>>,
        frame: Frame,
        except: Option<SessionId>,
    ) -> Self {
        let mut delivery = Delivery::default();
        if let Some(addr) = room {
            let fanout = Fanout {
                frame,
                except,
                timer: Some(FanoutTimer::start()),
            };
            delivery.hand(addr, fanout);
        }
        delivery
    }

    /// Hands `frame` to the room actor of every worker with members of `room`.
    pub(crate) fn to_node(
        broadcaster: &Broadcaster,
        room: &str,
        frame: Frame,
        except: Option<SessionId>,
    ) -> Self {
        let mut delivery = Delivery::default();
        // One timer per publish, shared by its rooms; none when nobody is there to time.
        let mut timer: Option<Arc<FanoutTimer>> = None;
        broadcaster.for_each_worker(room, |addr| {
            let fanout = Fanout {
                frame: frame.clone(),
                except,
                timer: Some(timer.get_or_insert_with(FanoutTimer::start).clone()),
            };
            delivery.hand(addr, fanout);
        });
        delivery
    }

    fn hand(&mut self, addr: &Addr<Room>, fanout: Fanout) {
        match addr.try_send(fanout) {
            Ok(()) => {}
            Err(SendError::Full(fanout)) => self.waiting.push((addr.clone(), fanout)),
            // The room lost its last member since the lookup: nobody to deliver to.
            Err(SendError::Closed(_)) => {}
        }
    }

    /// True when every room took the frame at once.
    pub(crate) fn is_done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Waits until every room whose queue was full has taken the frame.
    pub(crate) async fn finish(self) {
        for (addr, fanout) in self.waiting {
            // A room that stops meanwhile had nobody left to deliver to.
            let _ = addr.send(fanout).await;
        }
    }
}
