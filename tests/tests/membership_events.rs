//! Membership events: every way a session can end takes it out of its rooms exactly once, and
//! the node raises "room active", "member joined", "member left" and "room idle" exactly once per
//! transition, in order, even with two workers joining and leaving one room at the same moment.
//! The hub runs in this process so that the test can observe its node; the clients are real
//! WebSocket clients on real sockets.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::json;
use switchboard_admin::Hub;
use switchboard_hub::{Control, MembershipEvent, MembershipObserver};
use switchboard_tests::{
    frame, sign_token, spread_clients, unix_now, Client, InProcessHub, RawClient, Target, STEP,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Active(String),
    Idle(String),
    Joined(String, String, Option<String>),
    Left(String, String, Option<String>),
}

impl Ev {
    fn room(&self) -> &str {
        match self {
            Ev::Active(r) | Ev::Idle(r) | Ev::Joined(r, _, _) | Ev::Left(r, _, _) => r,
        }
    }
}

/// Records every event, in the order the hub raised them.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Ev>>);

impl MembershipObserver for Recorder {
    fn event(&self, event: &MembershipEvent<'_>) {
        let ev = match *event {
            MembershipEvent::RoomActive { room } => Ev::Active(room.into()),
            MembershipEvent::RoomIdle { room } => Ev::Idle(room.into()),
            MembershipEvent::MemberJoined {
                room,
                session,
                user,
                ..
            } => Ev::Joined(room.into(), session.into(), user.map(Into::into)),
            MembershipEvent::MemberLeft {
                room,
                session,
                user,
                ..
            } => Ev::Left(room.into(), session.into(), user.map(Into::into)),
        };
        self.0.lock().unwrap().push(ev);
    }
}

impl Recorder {
    fn of(&self, room: &str) -> Vec<Ev> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.room() == room)
            .cloned()
            .collect()
    }

    /// Waits until `room` has gone idle `times` times; returns its events.
    async fn idle(&self, room: &str, times: usize) -> Vec<Ev> {
        let deadline = Instant::now() + STEP;
        loop {
            let events = self.of(room);
            let idles = events.iter().filter(|e| matches!(e, Ev::Idle(_))).count();
            if idles >= times {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "room {room} did not go idle: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn hub(toml: &str) -> (InProcessHub, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let hub = InProcessHub::start(toml, vec![recorder.clone()]);
    (hub, recorder)
}

/// The one life a room with one member has.
fn one_life(room: &str, session: &str, user: Option<&str>) -> Vec<Ev> {
    let user = user.map(str::to_owned);
    vec![
        Ev::Active(room.into()),
        Ev::Joined(room.into(), session.into(), user.clone()),
        Ev::Left(room.into(), session.into(), user),
        Ev::Idle(room.into()),
    ]
}

async fn raw_member(hub: &InProcessHub, room: &str, rcvbuf: Option<u32>) -> (RawClient, String) {
    let mut c = RawClient::connect_with_rcvbuf(hub, rcvbuf).await;
    c.send_text(&json!({"op":"subscribe","room":room,"id":1}).to_string())
        .await;
    assert_eq!(c.recv_json().await, json!({"op":"ack","id":1}));
    let session = c.session().to_owned();
    (c, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_raise_each_event_once() {
    let (hub, events) = hub("");
    let mut a = Client::connect(&hub).await;
    let s = a.session().to_owned();
    assert_eq!(
        a.request(json!({"op":"subscribe","room":"r","id":1})).await["op"],
        "ack"
    );
    // A second subscribe changes nothing.
    assert_eq!(
        a.request(json!({"op":"subscribe","room":"r","id":2})).await["op"],
        "ack"
    );
    assert_eq!(
        a.request(json!({"op":"unsubscribe","room":"r","id":3}))
            .await["op"],
        "ack"
    );
    assert_eq!(events.idle("r", 1).await, one_life("r", &s, None));
    // Unsubscribing again is an error and no event.
    assert_eq!(
        a.request(json!({"op":"unsubscribe","room":"r","id":4}))
            .await["op"],
        "error"
    );
    // Two members: one activation, one idling, when the last leaves.
    let mut b = Client::connect(&hub).await;
    let sb = b.session().to_owned();
    a.subscribe("two").await;
    b.subscribe("two").await;
    a.request(json!({"op":"unsubscribe","room":"two","id":5}))
        .await;
    b.request(json!({"op":"unsubscribe","room":"two","id":6}))
        .await;
    assert_eq!(
        events.idle("two", 1).await,
        vec![
            Ev::Active("two".into()),
            Ev::Joined("two".into(), s.clone(), None),
            Ev::Joined("two".into(), sb.clone(), None),
            Ev::Left("two".into(), s.clone(), None),
            Ev::Left("two".into(), sb.clone(), None),
            Ev::Idle("two".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_session_ends_takes_it_out_of_its_rooms_once() {
    let (mut hub, events) = hub("outbox_capacity = 8\noutbox_max_bytes = 65536\n");
    let control = Control::new(hub.node.clone());

    // The client sends a close frame.
    let mut closing = Client::connect(&hub).await;
    let s_close = closing.session().to_owned();
    closing.subscribe("by-close").await;
    closing
        .send_raw(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;

    // The connection drops without a close frame.
    let (dropped, s_drop) = raw_member(&hub, "by-drop", None).await;
    drop(dropped);

    // An operator kicks the session (close 4001), twice.
    let mut kicked = Client::connect(&hub).await;
    let s_kick = kicked.session().to_owned();
    kicked.subscribe("by-kick").await;
    assert!(control.kick(&s_kick).await);
    // The second kick may find the session gone already; either way it changes nothing.
    let _ = control.kick(&s_kick).await;
    assert_eq!(kicked.recv_close().await, Some(4001));

    // A protocol violation (a reserved bit): close 1002.
    let (mut violating, s_violation) = raw_member(&hub, "by-violation", None).await;
    violating
        .write(&frame(true, 0x4, 0x1, b"{}"))
        .await
        .unwrap();
    assert_eq!(violating.read_until_close().await, Some(1002));

    // A member that stops reading while messages pour in: evicted (close 4000) once the kernel
    // buffers and its outbox are full.
    let (_stalled, s_evicted) = raw_member(&hub, "by-eviction", Some(4096)).await;
    let mut publisher = Client::connect(&hub).await;
    let pad = "x".repeat(4000);
    for n in 0..5000 {
        let ack = publisher
            .request(json!({"op":"publish","room":"by-eviction","data":{"n":n,"pad":pad},"id":n}))
            .await;
        assert_eq!(ack["op"], "ack");
        if events.of("by-eviction").len() == 4 {
            break;
        }
    }

    assert_eq!(
        events.idle("by-close", 1).await,
        one_life("by-close", &s_close, None)
    );
    assert_eq!(
        events.idle("by-drop", 1).await,
        one_life("by-drop", &s_drop, None)
    );
    assert_eq!(
        events.idle("by-kick", 1).await,
        one_life("by-kick", &s_kick, None)
    );
    assert_eq!(
        events.idle("by-violation", 1).await,
        one_life("by-violation", &s_violation, None)
    );
    assert_eq!(
        events.idle("by-eviction", 1).await,
        one_life("by-eviction", &s_evicted, None)
    );

    // The node shuts down: every session is closed with 1001 and leaves its rooms.
    let mut staying = Vec::new();
    for room in ["by-shutdown-a", "by-shutdown-b"] {
        let mut c = Client::connect(&hub).await;
        c.subscribe(room).await;
        c.subscribe("by-shutdown-shared").await;
        staying.push((room, c.session().to_owned(), c));
    }
    hub.shut_down();
    for (room, session, mut c) in staying {
        assert_eq!(c.recv_close().await, Some(1001));
        assert_eq!(events.of(room), one_life(room, &session, None));
    }
    let shared = events.of("by-shutdown-shared");
    assert_eq!(shared.len(), 6, "{shared:?}");
    assert_eq!(
        shared.first(),
        Some(&Ev::Active("by-shutdown-shared".into()))
    );
    assert_eq!(shared.last(), Some(&Ev::Idle("by-shutdown-shared".into())));
    assert_eq!(hub.node.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_time_out_takes_the_session_out_of_its_rooms_once() {
    let (hub, events) = hub("heartbeat = 0.2\n");
    // A raw client answers no ping: after two heartbeats of silence it is closed with 4003.
    let (mut silent, session) = raw_member(&hub, "by-heartbeat", None).await;
    assert_eq!(silent.read_until_close().await, Some(4003));
    assert_eq!(
        events.idle("by-heartbeat", 1).await,
        one_life("by-heartbeat", &session, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiry_takes_the_session_out_of_its_rooms_once_with_its_user() {
    const SECRET: &str = "a-test-secret-of-32-bytes-length";
    let (hub, events) = hub(&format!("token_secret = \"{SECRET}\"\n"));
    let token = sign_token(
        SECRET.as_bytes(),
        &json!({"sub":"alice","exp":unix_now() + 2,"subscribe":["*"],"publish":["*"]}),
    );
    let bearer = format!("Bearer {token}");
    let mut c = Client::open_json(&hub.ws_url(), &[("Authorization", &bearer)])
        .await
        .unwrap();
    let session = c.session().to_owned();
    c.subscribe("by-expiry").await;
    assert_eq!(c.recv_close().await, Some(4002));
    assert_eq!(
        events.idle("by-expiry", 1).await,
        one_life("by-expiry", &session, Some("alice"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_joining_and_leaving_one_room_raise_one_transition_each() {
    const ROUNDS: u64 = 150;
    let (hub, events) = hub("");
    let clients = spread_clients(&hub, 6).await;
    let sessions: Vec<String> = clients.iter().map(|c| c.session().to_owned()).collect();
    // Every client joins and leaves the same room as fast as the hub answers, all at once, on
    // both workers.
    join_all(clients.into_iter().map(|mut c| async move {
        for i in 0..ROUNDS {
            let ack = c
                .request(json!({"op":"subscribe","room":"shared","id":2 * i}))
                .await;
            assert_eq!(ack["op"], "ack", "{ack}");
            let ack = c
                .request(json!({"op":"unsubscribe","room":"shared","id":2 * i + 1}))
                .await;
            assert_eq!(ack["op"], "ack", "{ack}");
        }
        c
    }))
    .await;

    let evs = events.of("shared");
    // Replay the events: activations and idlings alternate, nobody joins an idle room, and
    // the room is empty exactly when it goes idle.
    let mut active = false;
    let mut members: HashMap<String, bool> = HashMap::new();
    let (mut joins, mut leaves, mut activations) = (0u64, 0u64, 0u64);
    for (i, ev) in evs.iter().enumerate() {
        let present = members.values().filter(|m| **m).count();
        match ev {
            Ev::Active(_) => {
                assert!(!active, "event {i}: active twice: {ev:?}");
                assert_eq!(present, 0, "event {i}: active with members");
                active = true;
                activations += 1;
            }
            Ev::Idle(_) => {
                assert!(active, "event {i}: idle twice");
                assert_eq!(present, 0, "event {i}: idle with {present} members");
                active = false;
            }
            Ev::Joined(_, s, _) => {
                assert!(active, "event {i}: joined an idle room");
                let was = members.insert(s.clone(), true);
                assert_ne!(was, Some(true), "event {i}: {s} joined twice");
                joins += 1;
            }
            Ev::Left(_, s, _) => {
                let was = members.insert(s.clone(), false);
                assert_eq!(was, Some(true), "event {i}: {s} left without joining");
                leaves += 1;
            }
        }
    }
    let n = sessions.len() as u64;
    assert_eq!(joins, n * ROUNDS);
    assert_eq!(leaves, n * ROUNDS);
    assert!(!active, "the room ends idle");
    assert!(activations >= 1);
    assert!(hub.node.rooms() == 0);
}
