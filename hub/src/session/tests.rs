#![allow(clippy::unwrap_used)]

use std::{
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{task::noop_waker, Stream};
use switchboard_admin::{hub::HubError, Hub, Mode};
use switchboard_protocol::RawValue;

use super::{start_context, WsSession, MAILBOX_CAPACITY};
use crate::{
    config::Config,
    node::Node,
    outbox::{Outbox, SharedOutbox},
    transport::handshake::Admission,
    worker::WorkerRooms,
    Control,
};

/// A session actor in its real context, with an inbound stream that never yields, polled by
/// hand: between polls it is a session whose worker is busy elsewhere.
struct Stalled {
    ctx: Pin<Box<dyn Stream<Item = Result<bytes::Bytes, actix_web::Error>>>>,
    node: Arc<Node>,
    out: SharedOutbox,
}

impl Stalled {
    fn start() -> Stalled {
        let node = Node::new(Config::defaults());
        let worker = Rc::new(WorkerRooms::new(0, node.clone()));
        let slot = node.try_acquire_slot().unwrap();
        let out = Outbox::new(node.config.outbox_capacity, node.config.outbox_max_bytes);
        let admission = Admission {
            deflate: None,
            endpoint: Arc::from("default"),
            mode: Mode::Json,
            relay: None,
            claims: None,
        };
        let session = WsSession::new(node.clone(), worker, slot, out.clone(), admission);
        let ctx = Box::pin(start_context(session, futures_util::stream::pending()));
        let mut stalled = Stalled { ctx, node, out };
        // The first turn runs `started`: the session registers with the node.
        assert!(stalled.run());
        stalled
    }

    /// Lets the session run until it waits (true) or ends (false).
    fn run(&mut self) -> bool {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.ctx.as_mut().poll_next(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(None) => false,
            Poll::Ready(Some(_)) => panic!("the context's own stream yielded"),
        }
    }

    fn label(&self) -> String {
        self.node.sessions.iter().next().unwrap().info.label.clone()
    }
}

#[actix_rt::test]
async fn admin_direct_sends_queue_up_to_the_mailbox_bound_then_answer_unavailable() {
    let mut session = Stalled::start();
    let id = session.label();
    let control = Control::new(session.node.clone());
    let data: Box<RawValue> = RawValue::from_string("{\"n\":1}".into()).unwrap();
    for n in 0..MAILBOX_CAPACITY {
        assert!(control.send(&id, &data).await.is_ok(), "send {n}");
    }
    assert!(matches!(
        control.send(&id, &data).await,
        Err(HubError::Unavailable(_))
    ));
    // Once the session runs, each accepted frame is in its outbox (after the welcome), and the
    // mailbox takes sends again.
    assert!(session.run());
    assert_eq!(session.out.borrow().len_frames(), 1 + MAILBOX_CAPACITY);
    assert!(control.send(&id, &data).await.is_ok());
}

#[actix_rt::test]
async fn a_kick_reaches_a_session_whose_mailbox_is_full() {
    let mut session = Stalled::start();
    let id = session.label();
    let control = Control::new(session.node.clone());
    let data: Box<RawValue> = RawValue::from_string("1".into()).unwrap();
    while control.send(&id, &data).await.is_ok() {}
    assert!(control.kick(&id).await);
    assert!(!session.run(), "the kicked session ends");
    // Every direct frame, then the close frame, and the session has ended.
    let out = session.out.borrow();
    assert_eq!(out.len_frames(), 1 + MAILBOX_CAPACITY + 1);
    assert_eq!(
        out.ended,
        Some(crate::metrics::Disconnect::Code(
            switchboard_protocol::close::KICKED
        ))
    );
    drop(out);
    assert!(session.node.sessions.is_empty());
}
