//! What `switchboard sub` and `switchboard pub` share: a `switchboard.v1` session over
//! tokio-tungstenite (connect, the welcome, request ids, frames in and out), the reconnection
//! policy (a list of URLs tried in turn, capped jittered exponential backoff, which failures end
//! the command), exit codes and the JSON-or-string rule for data given on the command line.

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    process::ExitCode,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    tungstenite::{
        self,
        client::IntoClientRequest,
        http::{header, HeaderValue},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

/// Exit code: the command failed in a way that may pass when tried again (nothing listening, the
/// connection lost before an answer, a hub that went away for good, some lines of a stream not
/// published).
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: the command cannot work as it stands: the hub refused it (an HTTP 4xx answer to
/// the handshake or to an HTTP publish, an `error` answer, a close with 4001 or 4002) or the
/// command line is wrong (as for every command line clap refuses).
pub(crate) const EXIT_REFUSED: u8 = 2;
/// Exit code of `pub` interrupted by Ctrl-C (128 + SIGINT): what was in flight is unconfirmed.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// First delay of the backoff, before jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay of the backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Longest wait a `Retry-After` header can impose.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// Attempts of the very first connection before giving up (about 1.5 s of backoff): a command
/// pointed at nothing should say so promptly. Once a session was established, reconnection is
/// attempted for as long as the command runs.
const FIRST_CONNECT_ATTEMPTS: u32 = 5;
/// Time for the TCP connection and the WebSocket handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the welcome frame after the handshake.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat assumed until the welcome says otherwise (the hub's default).
const DEFAULT_HEARTBEAT: f64 = 25.0;

/// Why a command stops with a non-zero exit code: the code and the text for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: u8,
    pub(crate) message: String,
}

impl Failure {
    /// A failure that may pass when tried again (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            exit: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// A refusal or a wrong command line (exit 2).
    pub(crate) fn refused(message: impl Into<String>) -> Failure {
        Failure {
            exit: EXIT_REFUSED,
            message: message.into(),
        }
    }

    /// Prints the message as `switchboard <command>: ...` and returns the exit code.
    pub(crate) fn report(self, command: &str) -> ExitCode {
        eprintln!("switchboard {command}: {}", self.message);
        ExitCode::from(self.exit)
    }
}

/// Runs a command's future on a current-thread runtime.
pub(crate) fn block_on(command: &str, future: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => Failure::failed(format!("cannot start the runtime: {e}")).report(command),
    }
}

/// Resolves on Ctrl-C (never, when the handler cannot be installed).
pub(crate) async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The `ws://` URLs of a comma-separated list, each checked; `wss://` is refused with a hint
/// (the command-line client carries no TLS).
pub(crate) fn ws_urls(list: &str) -> Result<Vec<String>, Failure> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(Failure::refused("no URL given"));
    }
    for url in &urls {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "ws" => {}
            "wss" => return Err(Failure::refused(format!("{url}: {}", no_tls("wss")))),
            "http" | "https" => {
                return Err(Failure::refused(format!(
                    "{url}: expected a ws:// URL of a hub endpoint, such as ws://127.0.0.1:8080/ws \
                     (`pub --http` takes the hub's http:// address)"
                )))
            }
            _ => {
                return Err(Failure::refused(format!(
                    "{url}: expected a ws:// URL of a hub endpoint, such as ws://127.0.0.1:8080/ws"
                )))
            }
        }
        if let Err(e) = url.as_str().into_client_request() {
            return Err(Failure::refused(format!("{url}: not a usable URL: {e}")));
        }
    }
    Ok(urls)
}

/// The refusal of a TLS scheme.
pub(crate) fn no_tls(scheme: &str) -> String {
    let plain = if scheme == "wss" { "ws" } else { "http" };
    format!(
        "{scheme}:// is not supported by the CLI, which speaks plain {plain}:// only: use \
         {plain}:// to the hub's own listener (through an `ssh -L` tunnel when it is remote), \
         or put a local TLS client proxy such as stunnel in front of the CLI"
    )
}

/// The `Authorization: Bearer` value of a token or API key, checked for characters a header
/// cannot carry.
pub(crate) fn bearer(what: &str, secret: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| Failure::refused(format!("the {what} holds characters a header cannot carry")))
}

/// Data given on the command line or on a line of stdin: the text itself when it parses as JSON
/// (objects, arrays, strings, numbers, `true`, `false`, `null`), else the text as a JSON string;
/// always a string with `force_string`. Surrounding whitespace is not part of JSON data.
pub(crate) fn to_data(text: &str, force_string: bool) -> Result<Box<RawValue>, String> {
    if !force_string {
        if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text.trim()) {
            return Ok(raw);
        }
    }
    serde_json::value::to_raw_value(text).map_err(|e| format!("cannot encode as a string: {e}"))
}

/// The description of an HTTP refusal: `401 unauthorized: missing token` from the hub's JSON
/// error body, else the status and its reason phrase (and the body's start, if any).
pub(crate) fn describe_refusal(status: u16, reason: Option<&str>, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorFields,
    }
    #[derive(Deserialize)]
    struct ErrorFields {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        let code = error.code.unwrap_or_else(|| "error".to_owned());
        return match error.message {
            Some(message) => format!("{status} {code}: {message}"),
            None => format!("{status} {code}"),
        };
    }
    let mut text = format!("{status} {}", reason.unwrap_or("").trim());
    let body = String::from_utf8_lossy(body);
    let body = body.trim();
    if !body.is_empty() {
        let short: String = body.chars().take(200).collect();
        text.push_str(&format!(": {}", one_line(&short)));
    }
    text.trim_end().to_owned()
}

/// `text` on one line: newlines and carriage returns become spaces. In JSON text they can only
/// be whitespace between tokens (inside strings they are escaped), so a JSON frame stays valid.
pub(crate) fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(text.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Capped exponential backoff with jitter: attempt k waits a random time between half and all
/// of `min(100 ms × 2^k, 5 s)`.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt; each call lengthens the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let full = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_CAP);
        self.failures = self.failures.saturating_add(1);
        full.mul_f64(0.5 + 0.5 * random_unit())
    }

    /// Back to the first delay (after a session that worked).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A number in [0, 1) that differs between calls and processes: enough to spread reconnects,
/// without a random-number crate.
fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A client request of `switchboard.v1`; the session gives it its id.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    op: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recover: Option<Recover<'a>>,
    id: u64,
}

/// `"recover":{"epoch":..,"offset":..}` of a subscribe.
#[derive(Debug, Serialize)]
pub(crate) struct Recover<'a> {
    pub(crate) epoch: &'a str,
    pub(crate) offset: u64,
}

impl<'a> Request<'a> {
    pub(crate) fn subscribe(room: &'a str, recover: Option<Recover<'a>>) -> Self {
        Request {
            op: "subscribe",
            room,
            data: None,
            scope: None,
            recover,
            id: 0,
        }
    }

    pub(crate) fn publish(room: &'a str, data: &'a RawValue, scope: Option<&'static str>) -> Self {
        Request {
            op: "publish",
            room,
            data: Some(data),
            scope,
            recover: None,
            id: 0,
        }
    }
}

/// The fields of hub frames the commands read (others are ignored, as the protocol asks).
#[derive(Debug, Deserialize)]
pub(crate) struct Frame {
    pub(crate) op: String,
    pub(crate) id: Option<u64>,
    pub(crate) room: Option<String>,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) offset: Option<u64>,
    pub(crate) epoch: Option<String>,
    pub(crate) recovered: Option<bool>,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) heartbeat: Option<f64>,
}

impl Frame {
    /// `code: message` of an `error` frame.
    pub(crate) fn error_text(&self) -> String {
        format!(
            "{}: {}",
            self.code.as_deref().unwrap_or("error"),
            self.message.as_deref().unwrap_or("")
        )
    }
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The hub sent a close frame (1005: one without a code).
    Closed { code: u16, reason: String },
    /// The connection broke or ended without a close frame.
    Lost(String),
    /// Nothing at all arrived for this long (the hub pings every heartbeat): taken as lost.
    Silent(Duration),
}

impl End {
    /// Whether to reconnect: after a lost connection, and after the closes that say a new
    /// session may work (1001 going away, 1005 no code, 1006, 1011 hub failure, 1012 restart,
    /// 1013 try again later, and 4000–4499 but 4001 kicked and 4002 token expired).
    pub(crate) fn may_reconnect(&self) -> bool {
        match self {
            End::Lost(_) | End::Silent(_) => true,
            End::Closed { code, .. } => {
                matches!(code, 1001 | 1005 | 1006 | 1011 | 1012 | 1013)
                    || ((4000..4500).contains(code) && !matches!(code, 4001 | 4002))
            }
        }
    }

    /// The failure that ends the command after a close that forbids reconnecting: exit 2 for
    /// 4001 and 4002 (the hub refused this client or its token), 1 otherwise.
    pub(crate) fn into_failure(self, url: &str) -> Failure {
        let refused = matches!(
            self,
            End::Closed {
                code: 4001 | 4002,
                ..
            }
        );
        let hint = match self {
            End::Closed { code: 4001, .. } => " (an operator closed the session)",
            End::Closed { code: 4002, .. } => " (the token expired: use a new one)",
            _ => "",
        };
        let message = format!("{url}: {self}{hint}");
        if refused {
            Failure::refused(message)
        } else {
            Failure::failed(message)
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed { code, reason } if reason.is_empty() => {
                write!(f, "closed by the hub with {code}")
            }
            End::Closed { code, reason } => write!(f, "closed by the hub with {code} {reason:?}"),
            End::Lost(why) => write!(f, "connection lost ({why})"),
            End::Silent(d) => write!(
                f,
                "connection lost (nothing heard for {:.0} s)",
                d.as_secs_f64()
            ),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open `switchboard.v1` session, past its welcome.
#[derive(Debug)]
pub(crate) struct Session {
    ws: Ws,
    /// The URL it was opened with.
    pub(crate) url: String,
    /// The serving node (`welcome.node`).
    pub(crate) node: String,
    /// Nothing at all (not even a ping) for this long means the connection is dead.
    silence: Duration,
    last_id: u64,
}

impl Session {
    /// Sends a request (buffered: see [`Session::flush`]) with the session's next request id,
    /// which it returns.
    pub(crate) async fn request(&mut self, mut request: Request<'_>) -> Result<u64, End> {
        self.last_id += 1;
        request.id = self.last_id;
        let text = serde_json::to_string(&request)
            .map_err(|e| End::Lost(format!("cannot encode a request: {e}")))?;
        self.ws
            .feed(Message::Text(text))
            .await
            .map_err(|e| End::Lost(e.to_string()))?;
        Ok(self.last_id)
    }

    /// Writes out what [`Session::request`] buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        self.ws.flush().await.map_err(|e| End::Lost(e.to_string()))
    }

    /// The next text frame. Pings are answered (tungstenite queues the pong and writes it on
    /// this read), binary messages (not part of the protocol) skipped. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<String, End> {
        loop {
            let next = match timeout(self.silence, self.ws.next()).await {
                Ok(next) => next,
                Err(_) => return Err(End::Silent(self.silence)),
            };
            match next {
                None => return Err(End::Lost("the connection ended".to_owned())),
                Some(Err(tungstenite::Error::ConnectionClosed)) => {
                    return Err(End::Lost("the connection ended".to_owned()))
                }
                Some(Err(e)) => return Err(End::Lost(e.to_string())),
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Close(frame))) => {
                    // Reading on lets tungstenite send the close reply; then the stream ends.
                    let _ = timeout(Duration::from_millis(200), self.ws.next()).await;
                    return Err(match frame {
                        Some(f) => End::Closed {
                            code: u16::from(f.code),
                            reason: f.reason.into_owned(),
                        },
                        None => End::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    });
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Closes the session (1000) and waits a moment for the hub's close reply.
    pub(crate) async fn close(mut self) {
        let _ = timeout(Duration::from_secs(1), async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Why an attempt to open a session failed.
#[derive(Debug)]
enum OpenError {
    /// An HTTP 4xx answer (but 408 and 429): the status and the description.
    Refused(u16, String),
    /// 408, 429 and 5xx answers: may work later; with the `Retry-After` the hub asked for.
    Busy(String, Option<Duration>),
    /// No connection, a broken handshake, or a close before the welcome.
    Net(String),
    /// Not a `switchboard.v1` endpoint.
    NotHub(String),
}

async fn open(url: &str, token: Option<&HeaderValue>) -> Result<Session, OpenError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| OpenError::NotHub(format!("{url}: {e}")))?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, token.clone());
    }
    let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
    let ws = match timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(OpenError::Net(format!(
                "{url}: no handshake within {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let text = format!(
                "{url}: {}",
                describe_refusal(
                    status,
                    response.status().canonical_reason(),
                    response.body().as_deref().unwrap_or_default(),
                )
            );
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(match status {
                408 | 429 | 500.. => OpenError::Busy(text, retry_after),
                _ => OpenError::Refused(status, text),
            });
        }
        Ok(Err(tungstenite::Error::Io(e))) => return Err(OpenError::Net(format!("{url}: {e}"))),
        Ok(Err(e)) => return Err(OpenError::Net(format!("{url}: handshake failed: {e}"))),
    };
    let mut session = Session {
        ws,
        url: url.to_owned(),
        node: String::new(),
        silence: WELCOME_TIMEOUT,
        last_id: 0,
    };
    let first = match session.recv().await {
        Ok(text) => text,
        Err(End::Silent(_)) => {
            return Err(OpenError::NotHub(format!(
                "{url}: no welcome frame within {} s: is this a switchboard.v1 endpoint?",
                WELCOME_TIMEOUT.as_secs()
            )))
        }
        Err(end) => return Err(OpenError::Net(format!("{url}: {end} before the welcome"))),
    };
    match serde_json::from_str::<Frame>(&first) {
        Ok(welcome) if welcome.op == "welcome" => {
            session.node = welcome.node.unwrap_or_default();
            let heartbeat = welcome
                .heartbeat
                .filter(|h| h.is_finite() && *h > 0.0)
                .unwrap_or(DEFAULT_HEARTBEAT);
            // The hub pings every heartbeat; allow two and a half of them, and never under 3 s.
            session.silence = Duration::from_secs_f64((heartbeat * 2.5).clamp(3.0, 3600.0));
            Ok(session)
        }
        _ => Err(OpenError::NotHub(format!(
            "{url}: the first frame is not a welcome: is this a switchboard.v1 endpoint? ({})",
            one_line(&first.chars().take(200).collect::<String>())
        ))),
    }
}

/// Opens sessions for a command: the URLs in turn, with the backoff between attempts.
#[derive(Debug)]
pub(crate) struct Connector {
    command: &'static str,
    urls: Vec<String>,
    next: usize,
    token: Option<HeaderValue>,
    backoff: Backoff,
    connected_once: bool,
}

impl Connector {
    pub(crate) fn new(
        command: &'static str,
        urls: Vec<String>,
        token: Option<HeaderValue>,
    ) -> Connector {
        Connector {
            command,
            urls,
            next: 0,
            token,
            backoff: Backoff::default(),
            connected_once: false,
        }
    }

    /// A connector for the command line's URL list (comma-separated) and `--token`.
    pub(crate) fn from_args(
        command: &'static str,
        urls: &str,
        token: Option<&str>,
    ) -> Result<Connector, Failure> {
        let urls = ws_urls(urls)?;
        let token = token.map(|t| bearer("token", t)).transpose()?;
        Ok(Connector::new(command, urls, token))
    }

    /// Opens a session on the next URL, and on the following ones with the backoff between
    /// attempts. Ends the command (`Err`) on:
    /// - a 4xx answer (but 408 and 429) to the first connection, and a 401 or 403 to any;
    /// - an endpoint that is not `switchboard.v1`;
    /// - [`FIRST_CONNECT_ATTEMPTS`] failed attempts at the first connection.
    ///
    /// Everything else (no connection, 408, 429, 5xx, and after a first session other 4xx) is
    /// retried, honouring `Retry-After`.
    pub(crate) async fn connect(&mut self) -> Result<Session, Failure> {
        let mut attempts = 0u32;
        loop {
            let url = self.urls[self.next % self.urls.len()].clone();
            self.next = self.next.wrapping_add(1);
            attempts += 1;
            let (why, at_least) = match open(&url, self.token.as_ref()).await {
                Ok(session) => {
                    self.connected_once = true;
                    return Ok(session);
                }
                Err(OpenError::Refused(status, text)) => {
                    if !self.connected_once || status == 401 || status == 403 {
                        return Err(Failure::refused(text));
                    }
                    (text, None)
                }
                Err(OpenError::NotHub(text)) => return Err(Failure::refused(text)),
                Err(OpenError::Busy(text, retry_after)) => (text, retry_after),
                Err(OpenError::Net(text)) => (text, None),
            };
            if !self.connected_once && attempts >= FIRST_CONNECT_ATTEMPTS {
                return Err(Failure::failed(format!(
                    "{why} (gave up after {attempts} attempts)"
                )));
            }
            let delay = self
                .backoff
                .next_delay()
                .max(at_least.unwrap_or_default().min(RETRY_AFTER_CAP));
            eprintln!(
                "switchboard {}: {why}; retrying in {:.1} s",
                self.command,
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// A session worked (it is subscribed, or it published): the backoff starts over.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// Waits before reconnecting, saying why on stderr when `why` is given.
    pub(crate) async fn pause(&mut self, why: Option<String>) {
        let delay = self.backoff.next_delay();
        if let Some(why) = why {
            eprintln!(
                "switchboard {}: {why}; reconnecting in {:.1} s",
                self.command,
                delay.as_secs_f64()
            );
        }
        tokio::time::sleep(delay).await;
    }
}

/// Counts of a stream of publishes, for the progress and summary lines.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Messages published (acknowledged by the hub).
    pub(crate) published: u64,
    /// Lines that were not published: refused, unreadable, or unconfirmed when the connection
    /// was lost.
    pub(crate) errors: u64,
    started: Instant,
    last_tick: Instant,
    last_published: u64,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        let now = Instant::now();
        Tally {
            published: 0,
            errors: 0,
            started: now,
            last_tick: now,
            last_published: 0,
        }
    }

    /// `N published, R/s, E errors` over the time since the last progress line.
    pub(crate) fn progress_line(&mut self, what: &str) -> String {
        let now = Instant::now();
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        let rate = (self.published - self.last_published) as f64 / secs;
        self.last_tick = now;
        self.last_published = self.published;
        format!(
            "{} {what}, {rate:.0}/s, {} errors",
            self.published, self.errors
        )
    }

    /// `published N, errors E in T s (R/s)`.
    pub(crate) fn summary_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        format!(
            "published {}, errors {} in {secs:.2} s ({:.0}/s)",
            self.published,
            self.errors,
            self.published as f64 / secs.max(1e-3)
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let mut full = BACKOFF_BASE;
        for _ in 0..12 {
            let d = backoff.next_delay();
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} not within half of {full:?}"
            );
            full = (full * 2).min(BACKOFF_CAP);
        }
        assert!(backoff.next_delay() <= BACKOFF_CAP);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_BASE);
        // Jitter: not every delay is the same.
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::default().next_delay()).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn data_is_json_when_it_parses_and_a_string_otherwise() {
        let data = |text: &str, force| to_data(text, force).unwrap().get().to_owned();
        assert_eq!(data(r#"{"a": 1}"#, false), r#"{"a": 1}"#);
        assert_eq!(data("  [1,2] ", false), "[1,2]");
        assert_eq!(data("42", false), "42");
        assert_eq!(data("null", false), "null");
        assert_eq!(data(r#""quoted""#, false), r#""quoted""#);
        assert_eq!(data("hello world", false), r#""hello world""#);
        assert_eq!(data("{not json", false), r#""{not json""#);
        assert_eq!(data("42", true), r#""42""#);
        assert_eq!(data("say \"hi\"\t", false), r#""say \"hi\"\t""#);
        assert_eq!(data("", false), r#""""#);
    }

    #[test]
    fn urls_are_ws_and_tls_is_refused_with_a_hint() {
        assert_eq!(
            ws_urls("ws://a:1/ws, ws://b:2/ws").unwrap(),
            ["ws://a:1/ws", "ws://b:2/ws"]
        );
        let e = ws_urls("wss://a/ws").unwrap_err();
        assert_eq!(e.exit, EXIT_REFUSED);
        assert!(
            e.message.contains("not supported by the CLI"),
            "{}",
            e.message
        );
        assert!(ws_urls("http://a:1")
            .unwrap_err()
            .message
            .contains("--http"));
        assert!(ws_urls("a:1").is_err());
        assert!(ws_urls(" , ").is_err());
    }

    #[test]
    fn closes_that_allow_reconnecting_are_told_apart() {
        let closed = |code| End::Closed {
            code,
            reason: String::new(),
        };
        for code in [1001, 1005, 1006, 1011, 4000, 4003, 4499] {
            assert!(closed(code).may_reconnect(), "{code}");
        }
        for code in [1000, 1002, 1008, 1009, 4001, 4002, 4500] {
            assert!(!closed(code).may_reconnect(), "{code}");
        }
        assert!(End::Lost("reset".into()).may_reconnect());
        assert_eq!(closed(4001).into_failure("u").exit, EXIT_REFUSED);
        assert_eq!(closed(4002).into_failure("u").exit, EXIT_REFUSED);
        assert_eq!(closed(1009).into_failure("u").exit, EXIT_FAILURE);
        let kicked = End::Closed {
            code: 4001,
            reason: "bye".into(),
        };
        assert_eq!(
            kicked.into_failure("ws://h/ws").message,
            "ws://h/ws: closed by the hub with 4001 \"bye\" (an operator closed the session)"
        );
    }

    #[test]
    fn refusals_name_the_status_and_the_hubs_error_code() {
        let body = br#"{"error":{"code":"unauthorized","message":"missing token"}}"#;
        assert_eq!(
            describe_refusal(401, Some("Unauthorized"), body),
            "401 unauthorized: missing token"
        );
        assert_eq!(
            describe_refusal(404, Some("Not Found"), b""),
            "404 Not Found"
        );
        assert_eq!(
            describe_refusal(502, Some("Bad Gateway"), b"<html>\nproxy\n</html>"),
            "502 Bad Gateway: <html> proxy </html>"
        );
    }

    #[test]
    fn requests_carry_raw_data_and_their_id() {
        let data = to_data(r#"{"b": 2,"a":1}"#, false).unwrap();
        let mut request = Request::publish("chat:x", &data, Some("node"));
        request.id = 7;
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"op":"publish","room":"chat:x","data":{"b": 2,"a":1},"scope":"node","id":7}"#
        );
        let mut request = Request::subscribe(
            "r",
            Some(Recover {
                epoch: "e",
                offset: 4,
            }),
        );
        request.id = 1;
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"op":"subscribe","room":"r","recover":{"epoch":"e","offset":4},"id":1}"#
        );
    }

    #[test]
    fn frames_keep_their_data_verbatim() {
        let f: Frame = serde_json::from_str(
            r#"{"op":"message","room":"r","data":{"x": 1.50},"from":"s","offset":3,"epoch":"e"}"#,
        )
        .unwrap();
        assert_eq!(f.data.unwrap().get(), r#"{"x": 1.50}"#);
        assert_eq!((f.offset, f.epoch.as_deref()), (Some(3), Some("e")));
        assert_eq!(one_line("{\"a\":\n1}\r\n"), "{\"a\": 1}  ");
    }
}
