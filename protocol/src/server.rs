use std::fmt::Write as _;

use serde_json::value::RawValue;

use crate::{ErrorCode, PROTOCOL};

/// A frame the hub sends. Encoded by hand into one `String`: the hub encodes a `message` once per
/// publish and shares the bytes with every recipient, so this is the whole per-publish JSON cost.
#[derive(Debug, Clone)]
pub enum ServerFrame<'a> {
    /// Sent once, first, on every new session.
    Welcome(Welcome<'a>),
    /// A request succeeded.
    Ack { id: Option<u64> },
    /// The answer to `ping`.
    Pong { id: Option<u64> },
    /// A delivery: `data` is written exactly as the publisher sent it.
    Message {
        room: &'a str,
        data: &'a RawValue,
        from: &'a str,
        /// The publisher's user id (its token's `sub`), when it has one.
        user: Option<&'a str>,
        /// In a history room: the message's place in the room's history.
        at: Option<Position<'a>>,
    },
    /// A request about a history room succeeded: the ack of a publish (the message's
    /// position) or of a subscribe (the room's latest position, and with `recover`, whether the
    /// missed messages follow).
    AckAt {
        id: Option<u64>,
        at: Position<'a>,
        recovered: Option<bool>,
    },
    /// A subscribe to a history room whose position could not be read (cluster mode, Redis out
    /// of reach): the session is a member, but nothing was recovered.
    AckUnrecovered { id: Option<u64> },
    /// The answer to `history`: `messages` are the `message` frames' JSON texts, oldest first.
    History {
        id: Option<u64>,
        room: &'a str,
        at: Position<'a>,
        messages: &'a [&'a str],
    },
    /// The answer to `presence`.
    Presence {
        id: Option<u64>,
        room: &'a str,
        members: &'a [Member<'a>],
    },
    /// A user (or a session without one) came into the room.
    Join {
        room: &'a str,
        session: &'a str,
        user: Option<&'a str>,
    },
    /// A user (or a session without one) left the room and did not come back in time.
    Leave {
        room: &'a str,
        session: &'a str,
        user: Option<&'a str>,
    },
    /// A message to this session alone, from the operator (`from` is `"admin"`).
    Direct { data: &'a RawValue, from: &'a str },
    /// Messages of `room` may have been missed: the node's link to the other nodes was lost
    /// and is back (cluster mode).
    Gap { room: &'a str },
    /// A request failed; the session stays open.
    Error {
        id: Option<u64>,
        code: ErrorCode,
        message: &'a str,
    },
}

/// A place in a history room: the room's `epoch` and an `offset` in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    pub epoch: &'a str,
    pub offset: u64,
}

/// One member in a `presence` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub session: &'a str,
    pub user: Option<&'a str>,
    pub node: &'a str,
}

/// The fields of a `welcome` frame.
#[derive(Debug, Clone)]
pub struct Welcome<'a> {
    /// The session's id, unique within the node; shown to others as `from`.
    pub session: &'a str,
    /// The node's id.
    pub node: &'a str,
    /// The index of the worker thread serving the session.
    pub worker: usize,
    /// The server's ping interval in seconds.
    pub heartbeat_secs: f64,
    /// The session's user id (its token's `sub`), when it has one.
    pub user: Option<&'a str>,
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.size_hint());
        self.encode_into(&mut out);
        out
    }

    /// The frame as JSON bytes after `front` zero bytes, in one allocation: room for a header
    /// (such as a WebSocket frame header) that the caller writes once the length is known, so
    /// that header and text need not be copied together afterwards.
    pub fn encode_after(&self, front: usize) -> Vec<u8> {
        let mut out = String::with_capacity(front + self.size_hint());
        for _ in 0..front {
            out.push('\0');
        }
        self.encode_into(&mut out);
        out.into_bytes()
    }

    /// Appends the frame's JSON text to `out`.
    pub fn encode_into(&self, out: &mut String) {
        match self {
            ServerFrame::Welcome(w) => {
                out.push_str(r#"{"op":"welcome","session":"#);
                push_json_str(out, w.session);
                out.push_str(r#","node":"#);
                push_json_str(out, w.node);
                let _ = write!(out, r#","worker":{},"protocol":"#, w.worker);
                push_json_str(out, PROTOCOL);
                out.push_str(r#","heartbeat":"#);
                push_seconds(out, w.heartbeat_secs);
                if let Some(user) = w.user {
                    out.push_str(r#","user":"#);
                    push_json_str(out, user);
                }
                out.push('}');
            }
            ServerFrame::Ack { id } => {
                out.push_str(r#"{"op":"ack""#);
                push_id(out, *id, false);
                out.push('}');
            }
            ServerFrame::Pong { id } => {
                out.push_str(r#"{"op":"pong""#);
                push_id(out, *id, false);
                out.push('}');
            }
            ServerFrame::Message {
                room,
                data,
                from,
                user,
                at,
            } => {
                out.push_str(r#"{"op":"message","room":"#);
                push_json_str(out, room);
                out.push_str(r#","data":"#);
                out.push_str(data.get());
                out.push_str(r#","from":"#);
                push_json_str(out, from);
                if let Some(user) = user {
                    out.push_str(r#","user":"#);
                    push_json_str(out, user);
                }
                if let Some(at) = at {
                    push_position(out, at);
                }
                out.push('}');
            }
            ServerFrame::AckAt { id, at, recovered } => {
                out.push_str(r#"{"op":"ack""#);
                push_id(out, *id, false);
                push_position(out, at);
                if let Some(recovered) = recovered {
                    let _ = write!(out, r#","recovered":{recovered}"#);
                }
                out.push('}');
            }
            ServerFrame::AckUnrecovered { id } => {
                out.push_str(r#"{"op":"ack""#);
                push_id(out, *id, false);
                out.push_str(r#","recovered":false}"#);
            }
            ServerFrame::History {
                id,
                room,
                at,
                messages,
            } => {
                out.push_str(r#"{"op":"history""#);
                push_id(out, *id, false);
                out.push_str(r#","room":"#);
                push_json_str(out, room);
                push_position(out, at);
                out.push_str(r#","messages":["#);
                for (i, message) in messages.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(message);
                }
                out.push_str("]}");
            }
            ServerFrame::Presence { id, room, members } => {
                out.push_str(r#"{"op":"presence""#);
                push_id(out, *id, false);
                out.push_str(r#","room":"#);
                push_json_str(out, room);
                out.push_str(r#","members":["#);
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(r#"{"session":"#);
                    push_json_str(out, m.session);
                    if let Some(user) = m.user {
                        out.push_str(r#","user":"#);
                        push_json_str(out, user);
                    }
                    out.push_str(r#","node":"#);
                    push_json_str(out, m.node);
                    out.push('}');
                }
                out.push_str("]}");
            }
            ServerFrame::Join {
                room,
                session,
                user,
            }
            | ServerFrame::Leave {
                room,
                session,
                user,
            } => {
                let op = if matches!(self, ServerFrame::Join { .. }) {
                    "join"
                } else {
                    "leave"
                };
                let _ = write!(out, r#"{{"op":"{op}","room":"#);
                push_json_str(out, room);
                out.push_str(r#","session":"#);
                push_json_str(out, session);
                if let Some(user) = user {
                    out.push_str(r#","user":"#);
                    push_json_str(out, user);
                }
                out.push('}');
            }
            ServerFrame::Direct { data, from } => {
                out.push_str(r#"{"op":"direct","data":"#);
                out.push_str(data.get());
                out.push_str(r#","from":"#);
                push_json_str(out, from);
                out.push('}');
            }
            ServerFrame::Gap { room } => {
                out.push_str(r#"{"op":"gap","room":"#);
                push_json_str(out, room);
                out.push('}');
            }
            ServerFrame::Error { id, code, message } => {
                out.push_str(r#"{"op":"error""#);
                push_id(out, *id, true);
                out.push_str(r#","code":""#);
                out.push_str(code.as_str());
                out.push_str(r#"","message":"#);
                push_json_str(out, message);
                out.push('}');
            }
        }
    }

    /// The exact encoded length of a `message` frame, without encoding it; used to refuse a
    /// publish that would exceed the message limit before any work is done.
    pub fn message_len(room: &str, data: &RawValue, from: &str, user: Option<&str>) -> usize {
        r#"{"op":"message","room":,"data":,"from":}"#.len()
            + json_str_len(room)
            + data.get().len()
            + json_str_len(from)
            + user.map_or(0, |u| r#","user":"#.len() + json_str_len(u))
    }

    /// What a position adds to a `message` frame's length.
    pub fn position_len(at: Option<&Position<'_>>) -> usize {
        at.map_or(0, |at| {
            r#","offset":,"epoch":"#.len() + decimal_digits(at.offset) + json_str_len(at.epoch)
        })
    }

    /// The exact length of the frame's JSON text, for the frames whose length is cheap to know
    /// before encoding (a `message`, an `ack`): their encoding then needs no second allocation
    /// and no move to fit the WebSocket header in front.
    pub fn exact_len(&self) -> Option<usize> {
        match self {
            ServerFrame::Message {
                room,
                data,
                from,
                user,
                at,
            } => Some(Self::message_len(room, data, from, *user) + Self::position_len(at.as_ref())),
            // {"op":"ack"} or {"op":"ack","id":N}
            ServerFrame::Ack { id } => Some(12 + id.map_or(0, |id| 6 + decimal_digits(id))),
            _ => None,
        }
    }

    fn size_hint(&self) -> usize {
        self.exact_len().unwrap_or(128)
    }
}

/// Digits of `n` in decimal.
fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn push_id(out: &mut String, id: Option<u64>, null_when_absent: bool) {
    match id {
        Some(id) => {
            let _ = write!(out, r#","id":{id}"#);
        }
        None if null_when_absent => out.push_str(r#","id":null"#),
        None => {}
    }
}

fn push_position(out: &mut String, at: &Position<'_>) {
    let _ = write!(out, r#","offset":{},"epoch":"#, at.offset);
    push_json_str(out, at.epoch);
}

fn push_seconds(out: &mut String, secs: f64) {
    if secs.is_finite() && secs.fract() == 0.0 && secs.abs() < 1e15 {
        let _ = write!(out, "{}", secs as i64);
    } else if secs.is_finite() {
        let _ = write!(out, "{secs}");
    } else {
        out.push('0');
    }
}

/// Writes `s` as a JSON string literal (RFC 8259 escaping).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The length of `s` as written by [`push_json_str`], quotes included.
pub(crate) fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}
