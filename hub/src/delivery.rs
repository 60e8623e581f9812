//! [`Delivery`]: handing one encoded frame to the members of a room, with the hub's one wait
//! policy.
//!
//! A publisher on a session worker delivers to that worker's members itself, straight into
//! their outboxes ([`Here`]): no actor message, and the members there see its publishes in the
//! order it made them. Each other worker's room actor gets the frame with `try_send`. A room
//! whose queue is full is not skipped and its queue does not grow: the hand-over waits, and the
//! publisher with it, until there is room. A session publisher waits inside its actor
//! (`ctx.wait`), so it stops reading its socket and its messages keep their order; an HTTP or
//! admin caller awaits [`Delivery::finish`]. Nothing here decides where a publish goes; that is
//! `publish.rs`.

use std::{future::Future, pin::Pin, rc::Rc, sync::Arc, time::Instant};

use actix::{prelude::SendError, Addr};

use crate::{
    broadcaster::Broadcaster,
    codec::Frame,
    history::Placed,
    messages::Fanout,
    metrics::FanoutTimer,
    room::{Queued, Room},
    SessionId,
};

/// The publisher's own worker, which delivers to its members directly (implemented by
/// `WorkerRooms`; a trait so that this module does not depend on the worker's).
pub(crate) trait Here {
    /// The worker's index, as the broadcaster knows it.
    fn index(&self) -> usize;
    /// Delivers `frame` to this worker's members of `room` but `except`, now, if the room is in
    /// direct mode (see `room::Mode`).
    fn deliver_here(&self, room: &str, frame: Frame, except: Option<SessionId>) -> Local;
}

/// What the publisher's own worker did with a publish.
#[derive(Debug)]
pub(crate) enum Local {
    /// Delivered to its members.
    Delivered,
    /// The room has no members on this worker.
    NoMembers,
    /// The room is queued: the frame goes to its actor, with the guard that counts it.
    Queue(Rc<Addr<Room>>, Frame, Queued),
}

/// The broker's answer to a cluster publish: `Ok` once it accepted it (it then reaches every
/// node), with the message's place in a history room's history, or why it could not.
pub(crate) type Acceptance = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// What a publish's delivery ends with.
pub(crate) type Answered = Result<Option<Placed>, Unavailable>;

/// A cluster publish the broker could not accept: it reached nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(pub(crate) String);

/// A frame handed to rooms; what is left to wait for, if a room queue was full or the broker
/// has yet to accept the publish.
#[derive(Default)]
#[must_use = "a delivery waiting for a full room queue must be finished"]
pub(crate) struct Delivery {
    waiting: Vec<(Addr<Room>, Fanout)>,
    accepted: Option<Acceptance>,
    /// The broker queued the publish in order already: the publisher may go on with its next
    /// ones while it waits for this one's answer.
    pipelined: bool,
    /// A history room's message: its place, for the ack.
    placed: Option<Placed>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("waiting", &self.waiting.len())
            .field("broker", &self.accepted.is_some())
            .finish()
    }
}

impl Delivery {
    /// A publish handed to the broker, done once the broker accepted it: its members, here and
    /// on every other node, get it from the broker.
    /// `pipelined`: the broker queued it in order already (see [`Delivery::pipelined`]).
    pub(crate) fn by_broker(accepted: Acceptance, pipelined: bool) -> Self {
        Delivery {
            waiting: Vec::new(),
            accepted: Some(accepted),
            pipelined,
            placed: None,
        }
    }

    /// A message appended to its room's log at `placed`: delivered from there.
    pub(crate) fn placed(placed: Placed) -> Self {
        Delivery {
            placed: Some(placed),
            ..Delivery::default()
        }
    }

    /// The place of a history room's message that is done already.
    pub(crate) fn take_placed(&mut self) -> Option<Placed> {
        self.placed.take()
    }

    /// The broker's answer, when that is all there is to wait for, and whether the publish is
    /// already queued in order (then the publisher need not hold its next publishes until the
    /// answer comes; otherwise it must, for them to stay behind this one).
    pub(crate) fn into_broker(self) -> Result<(Acceptance, bool), Delivery> {
        match self.accepted {
            Some(accepted) if self.waiting.is_empty() => Ok((accepted, self.pipelined)),
            accepted => Err(Delivery {
                waiting: self.waiting,
                accepted,
                pipelined: self.pipelined,
                placed: self.placed,
            }),
        }
    }

    /// Delivers `frame` to the publisher's own worker's members (a worker-scope publish).
    pub(crate) fn to_worker(
        here: &dyn Here,
        room: &str,
        frame: Frame,
        except: Option<SessionId>,
    ) -> Self {
        let mut delivery = Delivery::default();
        delivery.here(here, room, frame, except, Instant::now(), &mut None);
        delivery
    }

    /// Delivers `frame` to every member of `room` on this node: directly on `here` (the
    /// publisher's own worker, if it has one), and through the room actor of every other worker
    /// with members.
    pub(crate) fn to_node(
        broadcaster: &Broadcaster,
        here: Option<&dyn Here>,
        room: &str,
        frame: Frame,
        except: Option<SessionId>,
    ) -> Self {
        let started = Instant::now();
        let mut delivery = Delivery::default();
        let skip = here.map(|h| h.index());
        // One timer per publish, shared by the rooms it is handed to; none when nobody is there.
        let mut timer: Option<Arc<FanoutTimer>> = None;
        broadcaster.for_each_worker(room, |worker, addr| {
            if Some(worker) == skip {
                return;
            }
            let shared = timer.get_or_insert_with(|| FanoutTimer::since(started));
            let fanout = Fanout {
                frame: frame.clone(),
                except,
                timer: Some(shared.clone()),
                local: None,
            };
            delivery.hand(addr, fanout);
        });
        // After the hand-overs, so that the other workers can start at once.
        if let Some(here) = here {
            delivery.here(here, room, frame, except, started, &mut timer);
        }
        delivery
    }

    /// The publisher's own worker's part: delivered there directly, or handed to its room actor
    /// while the room is queued. `timer` is the publish's shared timer, if rooms of other
    /// workers hold it already.
    fn here(
        &mut self,
        here: &dyn Here,
        room: &str,
        frame: Frame,
        except: Option<SessionId>,
        started: Instant,
        timer: &mut Option<Arc<FanoutTimer>>,
    ) {
        match here.deliver_here(room, frame, except) {
            Local::Delivered if timer.is_none() => FanoutTimer::observe(started),
            Local::Queue(addr, frame, queued) => {
                let shared = timer.get_or_insert_with(|| FanoutTimer::since(started));
                let fanout = Fanout {
                    frame,
                    except,
                    timer: Some(shared.clone()),
                    local: Some(queued),
                };
                self.hand(&addr, fanout);
            }
            Local::Delivered | Local::NoMembers => {}
        }
    }

    fn hand(&mut self, addr: &Addr<Room>, fanout: Fanout) {
        match addr.try_send(fanout) {
            Ok(()) => {}
            Err(SendError::Full(fanout)) => self.waiting.push((addr.clone(), fanout)),
            // The room lost its last member since the lookup: nobody to deliver to.
            Err(SendError::Closed(_)) => {}
        }
    }

    /// True when every room took the frame at once (and no broker is to be waited for).
    pub(crate) fn is_done(&self) -> bool {
        self.waiting.is_empty() && self.accepted.is_none()
    }

    /// Waits until every room whose queue was full has taken the frame, and the broker, if
    /// any, has answered.
    pub(crate) async fn finish(self) -> Answered {
        for (addr, fanout) in self.waiting {
            // A room that stops meanwhile had nobody left to deliver to.
            let _ = addr.send(fanout).await;
        }
        match self.accepted {
            Some(accepted) => accepted.await,
            None => Ok(self.placed),
        }
    }
}
