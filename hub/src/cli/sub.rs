//! `switchboard sub URL ROOM...`: subscribes to rooms and prints their messages on stdout, one
//! JSON line each, for as long as it runs; reconnects (to the next URL of the list) when the
//! connection is lost and recovers what history rooms published meanwhile, exactly once.

use std::{
    collections::HashMap,
    io::{self, Write},
    process::ExitCode,
};

use super::client::{self, one_line, Connector, End, Failure, Frame, Recover, Request, Session};

/// Text after the options in `switchboard sub --help`.
pub(crate) const HELP: &str = "\
Output: each `message` frame as one JSON line on stdout, exactly as the hub sent it (with \
--data, only its `data`); connection notices, errors and gaps go to stderr.

Reconnection: after a lost connection (or 2.5 heartbeats without even a ping), and after the \
close codes 1001, 1005, 1006, 1011, 1012, 1013 and 4000-4499 (but 4001 kicked and 4002 token \
expired), with a jittered backoff from 0.1 s up to 5 s, to the URLs of the list in turn. After \
a first session, failed handshakes are retried too (but 401 and 403). A history room is resubscribed with \
`recover` from the last offset printed: what it missed is printed, and nothing twice. When \
messages may have been missed (the hub answers recovered:false, sends a `gap`, or a room without \
history was resubscribed), stderr shows
  switchboard sub: gap in room \"ROOM\": <reason>

Exit codes: 0 after --count messages or on Ctrl-C; 1 on failures that may pass (nothing \
listening at the first connection after 5 attempts, a close that forbids reconnecting); 2 on \
refusals (a 4xx answer to the first handshake, or a 401/403 to any; an `error` answer to a \
subscribe such as forbidden or invalid_room; closes 4001 and 4002) and bad command lines.

Examples:
  switchboard sub ws://127.0.0.1:8080/ws chat:lobby
  switchboard sub --data --count 10 ws://hub-a:8080/ws,ws://hub-b:8080/ws metrics | jq .";

#[derive(Debug, clap::Args)]
pub struct SubArgs {
    /// The hub's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws; several URLs, comma-separated,
    /// are tried in turn on every reconnect (nodes of one cluster).
    #[arg(value_name = "URL")]
    url: String,
    /// The rooms to subscribe to.
    #[arg(value_name = "ROOM", required = true)]
    rooms: Vec<String>,
    /// Print only each message's `data`, one JSON value per line.
    #[arg(long)]
    data: bool,
    /// Exit 0 once this many messages were printed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// The token (a JWT), sent as `Authorization: Bearer`.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// No connection notices on stderr (errors and gaps are still shown).
    #[arg(long, short)]
    quiet: bool,
}

const COMMAND: &str = "sub";

/// Runs `switchboard sub`.
pub(crate) fn main(args: SubArgs) -> ExitCode {
    let mut connector = match Connector::from_args(COMMAND, &args.url, args.token.as_deref()) {
        Ok(connector) => connector,
        Err(failure) => return failure.report(COMMAND),
    };
    client::block_on(COMMAND, async move {
        let outcome = tokio::select! {
            outcome = run(&args, &mut connector) => outcome,
            () = client::interrupted() => Ok(()),
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(COMMAND),
        }
    })
}

/// Where a room stands: the last message printed, and whether a session subscribed it before.
#[derive(Debug)]
struct Room {
    name: String,
    position: Option<Position>,
    subscribed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    epoch: String,
    offset: u64,
}

/// How a session ended.
enum Outcome {
    /// `--count` messages were printed, or stdout was closed.
    Done,
    /// The session ended; reconnect if the end allows it.
    Ended(End),
    /// The hub answered a subscribe with an error that may pass (`internal`, `unavailable`,
    /// `rate_limited`): reconnect.
    Retry(String),
    /// The command ends.
    Failed(Failure),
}

async fn run(args: &SubArgs, connector: &mut Connector) -> Result<(), Failure> {
    let mut rooms: Vec<Room> = Vec::new();
    for name in &args.rooms {
        if !rooms.iter().any(|r| &r.name == name) {
            rooms.push(Room {
                name: name.clone(),
                position: None,
                subscribed: false,
            });
        }
    }
    let index: HashMap<String, usize> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i))
        .collect();
    let mut output = Output {
        data_only: args.data,
        remaining: args.count,
    };
    loop {
        let mut session = connector.connect().await?;
        let outcome = serve(
            &mut session,
            connector,
            &mut rooms,
            &index,
            &mut output,
            args.quiet,
        )
        .await;
        match outcome {
            Outcome::Done => {
                session.close().await;
                return Ok(());
            }
            Outcome::Failed(failure) => {
                session.close().await;
                return Err(failure);
            }
            Outcome::Retry(why) => {
                session.close().await;
                connector.pause(Some(why)).await;
            }
            Outcome::Ended(end) if end.may_reconnect() => {
                let why = (!args.quiet).then(|| format!("{}: {end}", session.url));
                connector.pause(why).await;
            }
            Outcome::Ended(end) => return Err(end.into_failure(&session.url)),
        }
    }
}

/// One session: subscribes every room (recovering where a position is known), then prints
/// messages until the session ends or `--count` is reached.
async fn serve(
    session: &mut Session,
    connector: &mut Connector,
    rooms: &mut [Room],
    index: &HashMap<String, usize>,
    output: &mut Output,
    quiet: bool,
) -> Outcome {
    let mut pending: HashMap<u64, usize> = HashMap::new();
    for (i, room) in rooms.iter().enumerate() {
        let recover = room.position.as_ref().map(|p| Recover {
            epoch: &p.epoch,
            offset: p.offset,
        });
        match session
            .request(Request::subscribe(&room.name, recover))
            .await
        {
            Ok(id) => {
                pending.insert(id, i);
            }
            Err(end) => return Outcome::Ended(end),
        }
    }
    if let Err(end) = session.flush().await {
        return Outcome::Ended(end);
    }
    let resumed = rooms.iter().any(|r| r.subscribed);
    loop {
        let text = match session.recv().await {
            Ok(text) => text,
            Err(end) => return Outcome::Ended(end),
        };
        let frame: Frame = match serde_json::from_str(&text) {
            Ok(frame) => frame,
            Err(e) => {
                eprintln!(
                    "switchboard {COMMAND}: {}: ignoring a frame that is not understood ({e}): {}",
                    session.url,
                    one_line(&text)
                );
                continue;
            }
        };
        match frame.op.as_str() {
            "message" => {
                let Some(&i) = frame.room.as_ref().and_then(|r| index.get(r)) else {
                    continue;
                };
                if !rooms[i].take(&frame) {
                    continue;
                }
                match output.print(&text, &frame) {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Done,
                    // The reader went away (`| head`): done, quietly.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Outcome::Done,
                    Err(e) => {
                        return Outcome::Failed(Failure::failed(format!("writing stdout: {e}")))
                    }
                }
            }
            "ack" => {
                let Some(i) = frame.id.and_then(|id| pending.remove(&id)) else {
                    continue;
                };
                if let Some(reason) = rooms[i].acknowledged(&frame) {
                    gap(&rooms[i].name, &reason);
                }
                if pending.is_empty() {
                    connector.succeeded();
                    if !quiet {
                        let verb = if resumed { "reconnected" } else { "connected" };
                        let node = if session.node.is_empty() {
                            String::new()
                        } else {
                            format!(" (node {})", session.node)
                        };
                        eprintln!(
                            "switchboard {COMMAND}: {verb} to {}{node}, subscribed to {} room{}",
                            session.url,
                            rooms.len(),
                            if rooms.len() == 1 { "" } else { "s" }
                        );
                    }
                }
            }
            "error" => {
                let Some(i) = frame.id.and_then(|id| pending.remove(&id)) else {
                    eprintln!(
                        "switchboard {COMMAND}: {}: the hub reported {}",
                        session.url,
                        frame.error_text()
                    );
                    continue;
                };
                let text = format!(
                    "{}: subscribe {:?}: {}",
                    session.url,
                    rooms[i].name,
                    frame.error_text()
                );
                return match frame.code.as_deref() {
                    Some("internal" | "unavailable" | "rate_limited") => Outcome::Retry(text),
                    _ => Outcome::Failed(Failure::refused(text)),
                };
            }
            "gap" => {
                if let Some(room) = frame.room.as_deref().filter(|r| index.contains_key(*r)) {
                    gap(room, "the hub reports that messages may have been missed");
                }
            }
            _ => {}
        }
    }
}

fn gap(room: &str, reason: &str) {
    eprintln!("switchboard {COMMAND}: gap in room {room:?}: {reason}");
}

impl Room {
    /// Whether to print a message of this room: not when it repeats one already printed (an
    /// offset at or before the last one of the same epoch). Moves the position on.
    fn take(&mut self, message: &Frame) -> bool {
        let (Some(offset), Some(epoch)) = (message.offset, message.epoch.as_deref()) else {
            return true;
        };
        if let Some(p) = &self.position {
            if p.epoch == epoch && offset <= p.offset {
                return false;
            }
        }
        self.position = Some(Position {
            epoch: epoch.to_owned(),
            offset,
        });
        true
    }

    /// Takes the ack of this room's subscribe; returns the reason of a gap if messages may have
    /// been missed since the last session.
    fn acknowledged(&mut self, ack: &Frame) -> Option<String> {
        let resumed = std::mem::replace(&mut self.subscribed, true);
        let asked = self.position.clone();
        let latest = match (&ack.epoch, ack.offset) {
            (Some(epoch), Some(offset)) => Some(Position {
                epoch: epoch.clone(),
                offset,
            }),
            _ => None,
        };
        match (ack.recovered, asked) {
            // What was missed follows, before any live message: the position stays at the last
            // message printed.
            (Some(true), Some(_)) => None,
            (_, Some(asked)) => {
                self.position = latest.clone();
                Some(match latest {
                    None => "the hub could not tell the room's position (recovered:false)"
                        .to_owned(),
                    Some(latest) if latest.epoch != asked.epoch => format!(
                        "its history was lost (a new epoch): messages after offset {} may be missed",
                        asked.offset
                    ),
                    Some(_) => format!(
                        "messages after offset {} are no longer in its history",
                        asked.offset
                    ),
                })
            }
            (_, None) => {
                self.position = latest;
                resumed.then(|| {
                    "resubscribed after a lost connection without a position to recover from: \
                     messages published meanwhile may be missed"
                        .to_owned()
                })
            }
        }
    }
}

/// Stdout, one message per line, flushed after each (it is usually a pipe).
struct Output {
    data_only: bool,
    remaining: Option<u64>,
}

impl Output {
    /// Prints a message; `Ok(false)` once `--count` is reached.
    fn print(&mut self, text: &str, frame: &Frame) -> io::Result<bool> {
        let line = if self.data_only {
            frame.data.as_ref().map_or("null", |d| d.get())
        } else {
            text
        };
        let mut stdout = io::stdout().lock();
        stdout.write_all(one_line(line).as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        Ok(match &mut self.remaining {
            None => true,
            Some(n) => {
                *n -= 1;
                *n > 0
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame(json: &str) -> Frame {
        serde_json::from_str(json).unwrap()
    }

    fn room() -> Room {
        Room {
            name: "r".into(),
            position: None,
            subscribed: false,
        }
    }

    #[test]
    fn repeated_offsets_are_dropped_and_new_epochs_taken() {
        let mut r = room();
        assert!(r
            .acknowledged(&frame(r#"{"op":"ack","id":1,"offset":2,"epoch":"e"}"#))
            .is_none());
        let m = |o: u64, e: &str| {
            frame(&format!(
                r#"{{"op":"message","room":"r","data":1,"offset":{o},"epoch":"{e}"}}"#
            ))
        };
        assert!(!r.take(&m(2, "e")));
        assert!(r.take(&m(3, "e")));
        assert!(!r.take(&m(3, "e")));
        assert!(r.take(&m(1, "f")));
        assert!(r.take(&frame(r#"{"op":"message","room":"r","data":1}"#)));
    }

    #[test]
    fn acks_of_resubscribes_tell_whether_messages_may_be_missed() {
        // A room without history: no gap at first, a gap once resubscribed.
        let mut plain = room();
        assert!(plain
            .acknowledged(&frame(r#"{"op":"ack","id":1}"#))
            .is_none());
        assert!(plain
            .acknowledged(&frame(r#"{"op":"ack","id":1}"#))
            .is_some());

        // A history room recovered: no gap, the position stays.
        let mut h = room();
        h.acknowledged(&frame(r#"{"op":"ack","id":1,"offset":5,"epoch":"e"}"#));
        let ok = frame(r#"{"op":"ack","id":1,"offset":9,"epoch":"e","recovered":true}"#);
        assert!(h.acknowledged(&ok).is_none());
        assert_eq!(h.position.as_ref().unwrap().offset, 5);

        // Not recovered: a gap, and the position is the ack's.
        let lost = frame(r#"{"op":"ack","id":1,"offset":3,"epoch":"f","recovered":false}"#);
        let reason = h.acknowledged(&lost).unwrap();
        assert!(reason.contains("new epoch"), "{reason}");
        assert_eq!(
            h.position,
            Some(Position {
                epoch: "f".into(),
                offset: 3
            })
        );
        let unknown = frame(r#"{"op":"ack","id":1,"recovered":false}"#);
        assert!(h.acknowledged(&unknown).is_some());
        assert!(h.position.is_none());
    }
}
