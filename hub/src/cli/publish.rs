//! `switchboard pub URL ROOM [DATA]`: publishes one message, or one per line of stdin
//! (pipelined, a bounded window of requests in flight), over a `switchboard.v1` session or,
//! with `--http`, through the hub's HTTP publishing API.

use std::{collections::HashMap, io::IsTerminal, process::ExitCode, time::Duration};

use serde_json::value::RawValue;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, Stdin},
    time::{interval_at, timeout, Instant, Interval},
};

use super::{
    client::{
        self, Connector, End, Failure, Frame, Request, Tally, EXIT_FAILURE, EXIT_INTERRUPTED,
    },
    http,
};

/// Text after the options in `switchboard pub --help`.
pub(crate) const HELP: &str = "\
Data: DATA, and each line of stdin, is sent as it is when it parses as JSON (an object, an \
array, a string in quotes, a number, true, false or null), else as a JSON string: `hello` is \
published as \"hello\", `42` as the number 42 (with --string, as \"42\"). Empty lines are \
skipped.

Without DATA, every line of stdin is a message: up to 256 publishes are in flight at once, \
each answered by the hub before more are sent past that. A progress line goes to stderr every \
second (when stderr is a terminal, or with --progress), and at the end the summary
  switchboard pub: published N, errors E in T s (R/s)
When the connection is lost, the publishes in flight count as errors (unconfirmed) and the \
next URL is tried with a jittered backoff.

--http: URL is the hub's HTTP address (http://host:port) and --api-key (or \
SWITCHBOARD_API_KEY) one of its api_keys. DATA goes to POST /api/rooms/ROOM/publish; stdin \
goes to one chunked POST /api/rooms/ROOM/stream, line by line as it is read, and the hub's \
final summary ({\"published\":..,\"rejected\":[..],\"rejected_count\":..}) is printed on stdout. \
Nothing is retried over HTTP.

Exit codes: 0 when everything was published; 1 when something failed that may pass (nothing \
listening after 5 attempts, the connection lost before the answer, lines of stdin not \
published, a 5xx answer); 2 on refusals (a 4xx answer to the handshake or to an HTTP publish, \
an `error` answer to DATA's publish) and bad command lines; 130 on Ctrl-C.

Examples:
  switchboard pub ws://127.0.0.1:8080/ws chat:lobby '{\"text\":\"hi\"}'
  tail -f app.log | switchboard pub --scope node ws://127.0.0.1:8080/ws logs
  switchboard pub --http --api-key \"$KEY\" http://127.0.0.1:8080 alerts 'disk full'";

/// How far a message travels (`scope` of a publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scope {
    Worker,
    Node,
    Cluster,
}

impl Scope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Node => "node",
            Scope::Cluster => "cluster",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PubArgs {
    /// The hub's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws (several, comma-separated, are
    /// tried in turn); with --http, its HTTP address, e.g. http://127.0.0.1:8080.
    #[arg(value_name = "URL")]
    url: String,
    /// The room to publish to.
    #[arg(value_name = "ROOM")]
    room: String,
    /// The message: JSON if it parses as JSON, else a JSON string. Without it, one message per
    /// line of stdin.
    #[arg(value_name = "DATA", allow_hyphen_values = true)]
    data: Option<String>,
    /// Send DATA (and every line) as a JSON string even when it parses as JSON.
    #[arg(long)]
    string: bool,
    /// How far the message travels (the hub's default: cluster).
    #[arg(long, value_enum)]
    scope: Option<Scope>,
    /// The token (a JWT), sent as `Authorization: Bearer` on the WebSocket handshake.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Publish through the HTTP publishing API instead of a WebSocket session.
    #[arg(long)]
    http: bool,
    /// An API key of the hub (--http), sent as `Authorization: Bearer`.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the progress line every second even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
}

const COMMAND: &str = "pub";

/// Most publishes in flight on a session when reading stdin.
const WINDOW: usize = 256;
/// Time for the answer to a single publish.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line of stdin taken; a longer one is reported and skipped.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Refused lines reported one by one on stderr; the rest are only counted.
const REPORTED_ERRORS: u64 = 20;

/// Runs `switchboard pub`.
pub(crate) fn main(args: PubArgs) -> ExitCode {
    let data = match args
        .data
        .as_deref()
        .map(|d| client::to_data(d, args.string))
    {
        None => None,
        Some(Ok(data)) => Some(data),
        Some(Err(e)) => return Failure::refused(format!("DATA: {e}")).report(COMMAND),
    };
    let scope = args.scope.map(Scope::name);
    if args.http {
        let job = http::HttpPublish {
            url: &args.url,
            api_key: args.api_key.as_deref(),
            room: &args.room,
            scope,
            force_string: args.string,
            progress: show_progress(&args),
        };
        return http::main(job, data);
    }
    let mut connector = match Connector::from_args(COMMAND, &args.url, args.token.as_deref()) {
        Ok(connector) => connector,
        Err(failure) => return failure.report(COMMAND),
    };
    match data {
        Some(data) => client::block_on(COMMAND, async move {
            tokio::select! {
                result = publish_one(&mut connector, &args.room, &data, scope) => match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(failure) => failure.report(COMMAND),
                },
                () = client::interrupted() => ExitCode::from(EXIT_INTERRUPTED),
            }
        }),
        None => client::block_on(COMMAND, async move {
            let mut tally = Tally::new();
            let mut started = false;
            let result = tokio::select! {
                result = publish_lines(&mut connector, &args, scope, &mut tally, &mut started) => {
                    result.map(|()| None)
                }
                () = client::interrupted() => Ok(Some(())),
            };
            if started {
                eprintln!("switchboard {COMMAND}: {}", tally.summary_line());
            }
            match result {
                Ok(Some(())) => {
                    eprintln!("switchboard {COMMAND}: interrupted");
                    ExitCode::from(EXIT_INTERRUPTED)
                }
                Ok(None) if tally.errors > 0 => ExitCode::from(EXIT_FAILURE),
                Ok(None) => ExitCode::SUCCESS,
                Err(failure) => failure.report(COMMAND),
            }
        }),
    }
}

/// Whether the progress line is printed.
pub(crate) fn show_progress(args: &PubArgs) -> bool {
    args.progress || std::io::stderr().is_terminal()
}

/// A tick once per second, from a second from now.
pub(crate) fn ticker() -> Interval {
    let second = Duration::from_secs(1);
    interval_at(Instant::now() + second, second)
}

/// Publishes one message and waits for its answer.
async fn publish_one(
    connector: &mut Connector,
    room: &str,
    data: &RawValue,
    scope: Option<&'static str>,
) -> Result<(), Failure> {
    let mut session = connector.connect().await?;
    let url = session.url.clone();
    let unconfirmed = |end: End| {
        Failure::failed(format!(
            "{url}: {end} before the publish was answered: it may or may not have been published"
        ))
    };
    let id = session
        .request(Request::publish(room, data, scope))
        .await
        .map_err(unconfirmed)?;
    session.flush().await.map_err(unconfirmed)?;
    let answer = timeout(ANSWER_TIMEOUT, async {
        loop {
            let text = session.recv().await.map_err(unconfirmed)?;
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                continue;
            };
            match frame.op.as_str() {
                "ack" if frame.id == Some(id) => return Ok(()),
                "error" if frame.id == Some(id) || frame.id.is_none() => {
                    return Err(Failure::refused(format!(
                        "{url}: publish to {room:?}: {}",
                        frame.error_text()
                    )))
                }
                _ => {}
            }
        }
    })
    .await;
    let result = answer.unwrap_or_else(|_| {
        Err(Failure::failed(format!(
            "{url}: no answer to the publish within {} s",
            ANSWER_TIMEOUT.as_secs()
        )))
    });
    session.close().await;
    result
}

/// What reading stdin gave.
pub(crate) enum Line {
    /// A line to publish: its number (from 1) and its data.
    Data(u64, Box<RawValue>),
    /// A line that cannot be published: its number and why.
    Bad(u64, String),
    /// The end of stdin.
    End,
}

/// Stdin as lines of data, in bounded memory: a line longer than [`MAX_LINE`] is reported and
/// skipped. [`Lines::next`] is cancel-safe: what was read stays buffered for the next call.
pub(crate) struct Lines<R = Stdin> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    number: u64,
    skipping: bool,
    force_string: bool,
    ended: bool,
}

impl Lines<Stdin> {
    pub(crate) fn stdin(force_string: bool) -> Lines<Stdin> {
        Lines::new(tokio::io::stdin(), force_string)
    }
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R, force_string: bool) -> Lines<R> {
        Lines {
            reader: BufReader::with_capacity(64 * 1024, reader),
            buf: Vec::new(),
            number: 0,
            skipping: false,
            force_string,
            ended: false,
        }
    }

    /// True when the next line (if any) is not yet read from stdin: the moment to write out
    /// what was buffered for the hub.
    pub(crate) fn drained(&self) -> bool {
        self.ended || self.reader.buffer().is_empty()
    }

    /// The next line (empty lines skipped).
    pub(crate) async fn next(&mut self) -> std::io::Result<Line> {
        loop {
            if self.ended {
                return Ok(Line::End);
            }
            let limit = (MAX_LINE + 1).saturating_sub(self.buf.len()) as u64;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .await?;
            if let Some(line) = self.complete(n) {
                return Ok(line);
            }
        }
    }

    /// What the bytes read so far make, after a read of `n` bytes.
    fn complete(&mut self, n: usize) -> Option<Line> {
        if n == 0 {
            // The end of stdin; a last line without its newline counts.
            if self.skipping || self.buf.is_empty() {
                self.ended = true;
                return Some(Line::End);
            }
            return self.take_line();
        }
        if self.buf.last() == Some(&b'\n') {
            if std::mem::take(&mut self.skipping) {
                self.buf.clear();
                return None;
            }
            return self.take_line();
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
            if !self.skipping {
                self.skipping = true;
                self.number += 1;
                return Some(Line::Bad(
                    self.number,
                    format!("longer than {} MiB", MAX_LINE / (1024 * 1024)),
                ));
            }
        }
        // A part of a line (the end of stdin follows, or more of an over-long line).
        None
    }

    fn take_line(&mut self) -> Option<Line> {
        self.number += 1;
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let line = match String::from_utf8(bytes) {
            Ok(line) => line,
            Err(_) => return Some(Line::Bad(self.number, "not UTF-8".to_owned())),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(match client::to_data(&line, self.force_string) {
            Ok(data) => Line::Data(self.number, data),
            Err(e) => Line::Bad(self.number, e),
        })
    }
}

/// Reports a line that was not published (the first [`REPORTED_ERRORS`] of them).
pub(crate) fn report_error(tally: &mut Tally, line: u64, why: &str) {
    tally.errors += 1;
    if tally.errors <= REPORTED_ERRORS {
        eprintln!("switchboard {COMMAND}: line {line}: {why}");
    }
    if tally.errors == REPORTED_ERRORS {
        eprintln!("switchboard {COMMAND}: (further errors are only counted)");
    }
}

enum Step {
    Input(std::io::Result<Line>),
    Frame(Result<String, End>),
    Tick,
}

/// Publishes every line of stdin, pipelined, until its end and the last answer.
async fn publish_lines(
    connector: &mut Connector,
    args: &PubArgs,
    scope: Option<&'static str>,
    tally: &mut Tally,
    started: &mut bool,
) -> Result<(), Failure> {
    let mut lines = Lines::stdin(args.string);
    let progress = show_progress(args);
    let mut ticker = ticker();
    // Request id → line number, for the publishes in flight.
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    loop {
        let mut session = connector.connect().await?;
        *started = true;
        let mut worked = false;
        let end = loop {
            if lines.ended && in_flight.is_empty() {
                session.close().await;
                return Ok(());
            }
            let can_read = !lines.ended && in_flight.len() < WINDOW;
            let step = tokio::select! {
                input = lines.next(), if can_read => Step::Input(input),
                frame = session.recv() => Step::Frame(frame),
                _ = ticker.tick(), if progress => Step::Tick,
            };
            match step {
                Step::Input(Ok(Line::Data(number, data))) => {
                    let request = Request::publish(&args.room, &data, scope);
                    match session.request(request).await {
                        Ok(id) => {
                            in_flight.insert(id, number);
                        }
                        Err(end) => {
                            report_error(tally, number, "not sent: the connection was lost");
                            break end;
                        }
                    }
                    if lines.drained() || in_flight.len() >= WINDOW {
                        if let Err(end) = session.flush().await {
                            break end;
                        }
                    }
                }
                Step::Input(Ok(Line::Bad(number, why))) => {
                    report_error(tally, number, &why);
                    if lines.drained() {
                        if let Err(end) = session.flush().await {
                            break end;
                        }
                    }
                }
                Step::Input(Ok(Line::End)) => {
                    if let Err(end) = session.flush().await {
                        break end;
                    }
                }
                Step::Input(Err(e)) => {
                    return Err(Failure::failed(format!("reading stdin: {e}")));
                }
                Step::Frame(Ok(text)) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                        continue;
                    };
                    let Some(number) = frame.id.and_then(|id| in_flight.remove(&id)) else {
                        if frame.op == "error" {
                            eprintln!(
                                "switchboard {COMMAND}: {}: the hub reported {}",
                                session.url,
                                frame.error_text()
                            );
                        }
                        continue;
                    };
                    match frame.op.as_str() {
                        "ack" => {
                            tally.published += 1;
                            if !worked {
                                worked = true;
                                connector.succeeded();
                            }
                        }
                        _ => report_error(tally, number, &frame.error_text()),
                    }
                }
                Step::Frame(Err(end)) => break end,
                Step::Tick => {
                    eprintln!(
                        "switchboard {COMMAND}: {}",
                        tally.progress_line("published")
                    );
                }
            }
        };
        if !in_flight.is_empty() {
            eprintln!(
                "switchboard {COMMAND}: {} publishes in flight are unconfirmed (counted as errors)",
                in_flight.len()
            );
            tally.errors += in_flight.len() as u64;
            in_flight.clear();
        }
        if !end.may_reconnect() {
            return Err(end.into_failure(&session.url));
        }
        connector
            .pause(Some(format!("{}: {end}", session.url)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every line of `input`, as `(number, data)` or `(number, "bad: why")`.
    fn lines(input: &[u8], force_string: bool) -> Vec<(u64, String)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut lines = Lines::new(input, force_string);
            let mut out = Vec::new();
            loop {
                match lines.next().await.unwrap() {
                    Line::Data(n, data) => out.push((n, data.get().to_owned())),
                    Line::Bad(n, why) => out.push((n, format!("bad: {why}"))),
                    Line::End => return out,
                }
            }
        })
    }

    #[test]
    fn stdin_lines_become_data_and_bad_lines_are_numbered() {
        let got = lines(b"{\"n\":1}\r\n\nplain text\n  \n\xff\xfe\n42\nlast", false);
        assert_eq!(
            got,
            [
                (1, r#"{"n":1}"#.to_owned()),
                (3, r#""plain text""#.to_owned()),
                (5, "bad: not UTF-8".to_owned()),
                (6, "42".to_owned()),
                (7, r#""last""#.to_owned()),
            ]
        );
        assert_eq!(lines(b"42\n", true), [(1, r#""42""#.to_owned())]);
        assert!(lines(b"", false).is_empty());
    }

    #[test]
    fn an_over_long_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n\"after\"\n");
        let got = lines(&input, false);
        assert_eq!(
            got,
            [
                (1, "bad: longer than 16 MiB".to_owned()),
                (2, r#""after""#.to_owned())
            ]
        );
    }

    #[test]
    fn scopes_have_their_protocol_names() {
        assert_eq!(Scope::Worker.name(), "worker");
        assert_eq!(Scope::Node.name(), "node");
        assert_eq!(Scope::Cluster.name(), "cluster");
    }
}
