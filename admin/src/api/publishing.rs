//! The HTTP publishing API of the public listener: backends publish into rooms with API keys.
//!
//! - `POST /api/rooms/{room}/publish`: one message, JSON.
//! - `POST /api/broadcast`: the same data to many rooms.
//! - `POST /api/rooms/{room}/stream`: NDJSON, each line published the moment its newline
//!   arrives, for as long as the body lasts.
//! - `POST /api/publish`: `multipart/form-data`, each part published the moment it ends.
//!
//! Request bodies are processed as they arrive and never held whole: a stream holds at most one
//! line, a multipart upload at most one part, each bounded by the message limit. Every publish
//! is awaited before more of the body is read, so a publisher whose rooms' queues are full is
//! read more slowly (TCP pushes back on it) instead of losing messages; a body that sends
//! nothing for the idle timeout ends the request. What a request publishes is counted by the
//! hub as source `http`, and its messages carry `"from":"http"`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_multipart::{Field, Multipart};
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, Error, HttpResponse, ResponseError};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::{Choice, ConstantTimeEq};
use switchboard_protocol::{validate_room, Scope};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::auth::{bearer_token, digest, TokenDigest};
use super::erased::DynHub;
use super::error::{self, ApiError, ApiErrorCode, ErrorBody};
use super::model::{JsonObject, PublishScope, RoomPath};
use super::resource;
use crate::hub::{HttpRoute, Hub, HubError, Publisher};

/// The most rooms one broadcast names.
pub const MAX_BROADCAST_ROOMS: usize = 1000;

/// The most refusals a stream's answer lists one by one; the rest are only counted.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// How the HTTP publishing API is set up.
#[derive(Clone)]
pub struct PublishingOptions {
    /// The API keys, any of which a request may present as `Authorization: Bearer <key>`.
    /// Empty: the API is off and its routes are not mounted (the listener answers 404).
    pub api_keys: Vec<String>,
    /// The longest NDJSON line or multipart part, in bytes.
    pub max_item_bytes: usize,
    /// A request body that sends nothing for this long ends the request.
    pub idle_timeout: Duration,
    /// The most parts one multipart request may carry.
    pub max_parts: usize,
}

/// Keys must never reach a log line through `{:?}`.
impl fmt::Debug for PublishingOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishingOptions")
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field("max_item_bytes", &self.max_item_bytes)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_parts", &self.max_parts)
            .finish()
    }
}

/// What every handler shares.
pub(crate) struct Publishing {
    hub: Arc<dyn DynHub>,
    max_item_bytes: usize,
    idle_timeout: Duration,
    max_parts: usize,
}

/// The HTTP publishing routes, for `App::new().configure(...)` on the public listener (called
/// once per HTTP worker). With no API keys configured it registers nothing, so the app's own
/// default service answers every `/api/` path (404).
pub fn configure_publishing<H>(
    hub: Arc<H>,
    options: PublishingOptions,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static
where
    H: Hub + Send + Sync,
{
    let hub: Arc<dyn DynHub> = hub;
    let keys: Arc<[TokenDigest]> = options
        .api_keys
        .iter()
        .filter(|k| !k.is_empty())
        .map(|k| digest(k.as_bytes()))
        .collect();
    let (max_item_bytes, idle_timeout, max_parts) = (
        options.max_item_bytes,
        options.idle_timeout,
        options.max_parts,
    );
    move |cfg: &mut web::ServiceConfig| {
        if keys.is_empty() {
            return;
        }
        let api = web::Data::new(Publishing {
            hub: Arc::clone(&hub),
            max_item_bytes,
            idle_timeout,
            max_parts,
        });
        let keys = Arc::clone(&keys);
        let counted = Arc::clone(&hub);
        cfg.service(
            web::scope("/api")
                .app_data(api)
                .app_data(error::json_config())
                .app_data(error::path_config())
                .app_data(error::query_config())
                .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                    let keys = Arc::clone(&keys);
                    let hub = Arc::clone(&counted);
                    async move { require_key(&keys, &*hub, req, next).await }
                }))
                .service(resource("/openapi.json", "GET").route(web::get().to(openapi_json)))
                .service(resource("/rooms/{room}/publish", "POST").route(web::post().to(publish)))
                .service(resource("/broadcast", "POST").route(web::post().to(broadcast)))
                .service(
                    resource("/rooms/{room}/stream", "POST, PUT")
                        .route(web::post().to(stream))
                        .route(web::put().to(stream)),
                )
                .service(resource("/publish", "POST").route(web::post().to(multipart)))
                .default_service(web::to(super::not_found)),
        );
    }
}

/// True when `headers` carry `Authorization: Bearer <k>` for one of `keys`. Every key is
/// compared, each in constant time (as digests, so lengths do not show either), whichever
/// matches.
fn key_matches(keys: &[TokenDigest], headers: &HeaderMap) -> bool {
    let Some(token) = bearer_token(headers.get(header::AUTHORIZATION)) else {
        return false;
    };
    let presented = digest(token);
    let found = keys
        .iter()
        .fold(Choice::from(0), |found, key| found | presented.ct_eq(key));
    bool::from(found)
}

async fn require_key(
    keys: &[TokenDigest],
    hub: &dyn DynHub,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if !key_matches(keys, req.headers()) {
        if let Some(route) = route_of(req.path()) {
            hub.http_rejected(route, "unauthorized");
        }
        return Ok(req.into_response(unauthorized().error_response()));
    }
    next.call(req).await
}

/// The publishing route a path names, for counting requests refused before routing.
fn route_of(path: &str) -> Option<HttpRoute> {
    match path {
        "/api/publish" => Some(HttpRoute::Multipart),
        "/api/broadcast" => Some(HttpRoute::Broadcast),
        p if p.starts_with("/api/rooms/") && p.ends_with("/stream") => Some(HttpRoute::Stream),
        p if p.starts_with("/api/rooms/") && p.ends_with("/publish") => Some(HttpRoute::Publish),
        _ => None,
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::Unauthorized,
        "an API key is required (Authorization: Bearer <key>)",
    )
}

/// A refusal of one message, line or part, in a per-item result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refusal {
    pub code: ApiErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The metric label of its reason.
    fn reason(&self) -> &'static str {
        match self.code {
            ApiErrorCode::TooLarge => "too_large",
            ApiErrorCode::InvalidRoom => "invalid_room",
            ApiErrorCode::Unavailable => "unavailable",
            _ => "bad_request",
        }
    }
}

fn refusal_of(error: HubError) -> Refusal {
    match error {
        HubError::TooLarge { limit, size } => Refusal::new(
            ApiErrorCode::TooLarge,
            format!("message of {size} bytes is over the {limit}-byte limit"),
        ),
        HubError::Unavailable(why) => Refusal::new(ApiErrorCode::Unavailable, why),
        HubError::NotFound => Refusal::new(ApiErrorCode::NotFound, "no such room"),
    }
}

fn check_room(room: &str) -> Result<(), Refusal> {
    validate_room(room).map_err(|(_, reason)| Refusal::new(ApiErrorCode::InvalidRoom, reason))
}

impl Publishing {
    /// Publishes `data` to `room` as `http`; the refusal, counted for `route`, if it failed.
    async fn publish(
        &self,
        route: HttpRoute,
        room: &str,
        data: &RawValue,
        scope: Scope,
    ) -> Result<(), Refusal> {
        let result = match check_room(room) {
            Ok(()) => self
                .hub
                .publish(room, data, scope, Publisher::Http)
                .await
                .map_err(refusal_of),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = &result {
            self.hub.http_rejected(route, refusal.reason());
        }
        result
    }

    fn reject(&self, route: HttpRoute, refusal: Refusal) -> Refusal {
        self.hub.http_rejected(route, refusal.reason());
        refusal
    }

    fn done(&self, route: HttpRoute, started: Instant) {
        self.hub
            .http_request_done(route, started.elapsed().as_secs_f64());
    }

    /// The next chunk of a body: `Ok(None)` at its end, `Err` when the client went away or
    /// sent nothing for the idle timeout.
    async fn next_chunk<S, E>(&self, body: &mut S) -> Result<Option<web::Bytes>, Ended>
    where
        S: Stream<Item = Result<web::Bytes, E>> + Unpin,
    {
        match actix_web::rt::time::timeout(self.idle_timeout, body.next()).await {
            Err(_) => Err(Ended::Idle),
            Ok(None) => Ok(None),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(_))) => Err(Ended::Cut),
        }
    }
}

/// Why a body ended before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Nothing arrived for the idle timeout.
    Idle,
    /// The connection broke (or the body was malformed) mid-way.
    Cut,
}

/// The answer to a body that broke off (the connection failed, or the framing was broken): a
/// client that went away reads none, one that sent a broken body learns what was done.
fn broke_off(done: String) -> HttpResponse {
    let mut response =
        ApiError::bad_request(format!("the request body broke off; {done}")).error_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

fn refusal_response(status: StatusCode, refusal: Refusal) -> HttpResponse {
    ApiError::new(status, refusal.code, refusal.message).error_response()
}

/// How far a message travels, for the routes whose body is not a JSON object.
#[derive(Clone, Copy, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// `worker`, `node` or `cluster` (the default).
    pub scope: Option<PublishScope>,
}

/// One message for one room.
#[derive(Debug, Deserialize, ToSchema)]
pub struct HttpPublishRequest {
    /// Any JSON value; delivered byte for byte as the `data` of each `message` frame.
    #[schema(value_type = serde_json::Value, example = json!({"text": "hello"}))]
    pub data: Box<RawValue>,
    /// How far the message travels; `cluster` when absent.
    #[serde(default)]
    pub scope: Option<PublishScope>,
}

/// The answer to a publish that was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Always `true`.
    pub ok: bool,
}

/// Publishes one message; answers once it is accepted (in cluster mode: once Redis took it).
#[utoipa::path(
    post,
    path = "/api/rooms/{room}/publish",
    tag = "publishing",
    params(RoomPath),
    request_body = HttpPublishRequest,
    responses(
        (status = 200, description = "Published", body = Accepted),
        (status = 400, description = "The body is not JSON of this shape (`bad_request`), or \
            the room name is not valid (`invalid_room`)", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or the message over the hub's \
            message size limit (`too_large`)", body = ErrorBody),
        (status = 503, description = "The hub cannot publish now, for instance Redis is out \
            of reach in cluster mode (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn publish(
    api: web::Data<Publishing>,
    path: web::Path<RoomPath>,
    body: web::Json<JsonObject<HttpPublishRequest>>,
) -> HttpResponse {
    let started = Instant::now();
    let JsonObject(body) = body.into_inner();
    let scope = body.scope.map_or(Scope::default(), Scope::from);
    let response = match api
        .publish(HttpRoute::Publish, &path.room, &body.data, scope)
        .await
    {
        Ok(()) => HttpResponse::Ok().json(Accepted { ok: true }),
        Err(refusal) => refusal_response(status_of(&refusal), refusal),
    };
    api.done(HttpRoute::Publish, started);
    response
}

fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal.code {
        ApiErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ApiErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The same data for many rooms.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BroadcastRequest {
    /// 1 to 1,000 room names.
    #[schema(min_items = 1, max_items = 1000)]
    pub rooms: Vec<String>,
    /// Any JSON value, as for a single publish.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<RawValue>,
    /// How far the messages travel; `cluster` when absent.
    #[serde(default)]
    pub scope: Option<PublishScope>,
}

/// What happened to one room's message, one part, or one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemResult {
    /// The room (for a multipart part: its field name; `null` if it had none).
    #[schema(required = true)]
    pub room: Option<String>,
    /// Whether the message was published.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ApiErrorCode>,
    /// Why not, for people, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ItemResult {
    fn of(room: Option<String>, result: Result<(), Refusal>) -> Self {
        let (code, message) = match result {
            Ok(()) => (None, None),
            Err(r) => (Some(r.code), Some(r.message)),
        };
        ItemResult {
            room,
            ok: code.is_none(),
            code,
            message,
        }
    }
}

/// The answer to a broadcast: one result per room, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BroadcastResults {
    pub results: Vec<ItemResult>,
}

/// Publishes the same data to every room named, one after the other; each room's result is
/// its own (an invalid room name fails that room only).
#[utoipa::path(
    post,
    path = "/api/broadcast",
    tag = "publishing",
    request_body = BroadcastRequest,
    responses(
        (status = 200, description = "One result per room, in order", body = BroadcastResults),
        (status = 400, description = "The body is not JSON of this shape, or names no room or \
            more than 1,000 (`bad_request`)", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB (`too_large`)", body = ErrorBody),
    )
)]
pub(crate) async fn broadcast(
    api: web::Data<Publishing>,
    body: web::Json<JsonObject<BroadcastRequest>>,
) -> HttpResponse {
    let started = Instant::now();
    let JsonObject(body) = body.into_inner();
    if body.rooms.is_empty() || body.rooms.len() > MAX_BROADCAST_ROOMS {
        let refusal = api.reject(
            HttpRoute::Broadcast,
            Refusal::new(
                ApiErrorCode::BadRequest,
                format!("a broadcast names 1 to {MAX_BROADCAST_ROOMS} rooms"),
            ),
        );
        return refusal_response(StatusCode::BAD_REQUEST, refusal);
    }
    let scope = body.scope.map_or(Scope::default(), Scope::from);
    let mut results = Vec::with_capacity(body.rooms.len());
    for room in body.rooms {
        let result = api
            .publish(HttpRoute::Broadcast, &room, &body.data, scope)
            .await;
        results.push(ItemResult::of(Some(room), result));
    }
    api.done(HttpRoute::Broadcast, started);
    HttpResponse::Ok().json(BroadcastResults { results })
}

/// A refused line of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineRefusal {
    /// Its line number, from 1 (empty lines count).
    pub line: u64,
    #[serde(flatten)]
    pub refusal: Refusal,
}

/// The answer to a stream, once its body ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamSummary {
    /// Lines published.
    pub published: u64,
    /// Refused lines, the first 1,000 of them.
    pub rejected: Vec<LineRefusal>,
    /// Every refused line, listed or not.
    pub rejected_count: u64,
    /// Set when the body did not end normally: `idle_timeout` (nothing arrived for the idle
    /// timeout; the answer is then 408).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

impl StreamSummary {
    fn refuse(&mut self, line: u64, refusal: Refusal) {
        self.rejected_count += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(LineRefusal { line, refusal });
        }
    }
}

/// Publishes an NDJSON body line by line, each the moment its newline arrives (the last line
/// also without one, when the body ends normally); `PUT` does the same, for clients that
/// upload that way (`curl -T`). Empty lines are skipped. A body may last as
/// long as it keeps sending: the hub holds one line at most.
#[utoipa::path(
    method(post, put),
    path = "/api/rooms/{room}/stream",
    tag = "publishing",
    params(RoomPath, ScopeQuery),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON value per line; usually sent with `Transfer-Encoding: chunked`"),
    responses(
        (status = 200, description = "The body ended; what was published and refused",
            body = StreamSummary),
        (status = 400, description = "Not `Content-Type: application/x-ndjson` \
            (`bad_request`), the room name is not valid (`invalid_room`), or the body broke \
            off (`bad_request`; the lines that ended were published)", body = ErrorBody),
        (status = 408, description = "Nothing arrived for the idle timeout; what was \
            published and refused until then", body = StreamSummary),
    )
)]
pub(crate) async fn stream(
    api: web::Data<Publishing>,
    path: web::Path<RoomPath>,
    query: web::Query<ScopeQuery>,
    req: actix_web::HttpRequest,
    mut body: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let route = HttpRoute::Stream;
    if !has_content_type(
        req.headers(),
        &["application/x-ndjson", "application/jsonl"],
    ) {
        let refusal = api.reject(
            route,
            Refusal::new(
                ApiErrorCode::BadRequest,
                "a stream's body must be NDJSON (Content-Type: application/x-ndjson)",
            ),
        );
        return refusal_response(StatusCode::BAD_REQUEST, refusal);
    }
    if let Err(refusal) = check_room(&path.room) {
        let refusal = api.reject(route, refusal);
        return refusal_response(StatusCode::BAD_REQUEST, refusal);
    }
    let scope = query.scope.map_or(Scope::default(), Scope::from);
    let mut summary = StreamSummary::default();
    let mut lines = Lines::new(api.max_item_bytes);
    let ended = loop {
        let chunk = match api.next_chunk(&mut body).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                // A last line without its newline is complete: the body ended normally.
                if let Some(line) = lines.finish() {
                    let done = publish_line(&api, &path.room, scope, line, &mut summary).await;
                    lines.recycle(done);
                }
                break None;
            }
            Err(ended) => break Some(ended),
        };
        let mut rest = &chunk[..];
        while let Some(line) = lines.feed(&mut rest) {
            let done = publish_line(&api, &path.room, scope, line, &mut summary).await;
            lines.recycle(done);
        }
    };
    let response = match ended {
        None => HttpResponse::Ok().json(&summary),
        Some(Ended::Idle) => {
            api.hub.http_rejected(route, "idle_timeout");
            summary.ended = Some("idle_timeout".to_owned());
            HttpResponse::build(StatusCode::REQUEST_TIMEOUT)
                .insert_header((header::CONNECTION, "close"))
                .json(&summary)
        }
        Some(Ended::Cut) => {
            // The partial line is dropped, and counted.
            if lines.pending() {
                api.hub.http_rejected(route, "cut");
            }
            broke_off(format!("{} lines published before it", summary.published))
        }
    };
    api.done(route, started);
    response
}

async fn publish_line(
    api: &Publishing,
    room: &str,
    scope: Scope,
    line: Line,
    summary: &mut StreamSummary,
) -> Option<Vec<u8>> {
    let route = HttpRoute::Stream;
    let mut buffer = None;
    let (number, result) = match line {
        Line::Empty(_) => return None,
        Line::TooLong(number) => (
            number,
            Err(api.reject(
                route,
                Refusal::new(
                    ApiErrorCode::TooLarge,
                    format!("line is over the {}-byte limit", api.max_item_bytes),
                ),
            )),
        ),
        Line::Text(number, bytes) => {
            let result = match json_of(&bytes) {
                Ok(data) => api.publish(route, room, data, scope).await,
                Err(refusal) => Err(api.reject(route, refusal)),
            };
            buffer = Some(bytes);
            (number, result)
        }
    };
    match result {
        Ok(()) => summary.published += 1,
        Err(refusal) => summary.refuse(number, refusal),
    }
    buffer
}

/// `bytes` as a JSON value, borrowed.
fn json_of(bytes: &[u8]) -> Result<&RawValue, Refusal> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Refusal::new(ApiErrorCode::BadRequest, "not UTF-8"))?;
    serde_json::from_str::<&RawValue>(text)
        .map_err(|e| Refusal::new(ApiErrorCode::BadRequest, format!("not JSON: {e}")))
}

/// A line of an NDJSON body, numbered from 1.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Only whitespace: skipped.
    Empty(u64),
    /// Over the limit: dropped as it arrived, never held.
    TooLong(u64),
    Text(u64, Vec<u8>),
}

/// Splits a body into lines as its chunks arrive, holding at most one line of at most `max`
/// bytes (an over-long line is counted and skipped to its newline).
#[derive(Debug)]
struct Lines {
    max: usize,
    buf: Vec<u8>,
    /// The previous line's buffer, given back once it was published: the next line is read
    /// into it, so a stream does not allocate per line.
    spare: Vec<u8>,
    /// In an over-long line: the rest of it is dropped up to its newline.
    skipping: bool,
    /// Bytes of the current line seen so far (held or skipped).
    seen: usize,
    number: u64,
}

impl Lines {
    fn new(max: usize) -> Self {
        Lines {
            max,
            buf: Vec::new(),
            spare: Vec::new(),
            skipping: false,
            seen: 0,
            number: 0,
        }
    }

    /// The next complete line in `rest` (advancing it past the line and its newline), or
    /// `None` once `rest` holds no newline (what is left of it is kept for the next chunk).
    fn feed(&mut self, rest: &mut &[u8]) -> Option<Line> {
        let newline = rest.iter().position(|&b| b == b'\n');
        let (piece, after) = match newline {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&rest[..], &rest[rest.len()..]),
        };
        self.seen += piece.len();
        if self.seen > self.max {
            if !self.skipping {
                self.skipping = true;
                self.buf = Vec::new();
            }
        } else {
            self.buf.extend_from_slice(piece);
        }
        *rest = after;
        newline.map(|_| self.take())
    }

    fn take(&mut self) -> Line {
        self.number += 1;
        let line = if std::mem::take(&mut self.skipping) {
            Line::TooLong(self.number)
        } else {
            let mut text = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
            if text.last() == Some(&b'\r') {
                text.pop();
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                Line::Empty(self.number)
            } else {
                Line::Text(self.number, text)
            }
        };
        self.seen = 0;
        line
    }

    /// Takes back a line's buffer (its capacity is at most `max`, so keeping it is bounded).
    fn recycle(&mut self, buffer: Option<Vec<u8>>) {
        if let Some(mut buffer) = buffer {
            buffer.clear();
            self.spare = buffer;
        }
    }

    /// At the end of the body: the last line if it had no newline.
    fn finish(&mut self) -> Option<Line> {
        self.pending().then(|| self.take())
    }

    /// Whether part of a line has arrived without its newline.
    fn pending(&self) -> bool {
        self.seen > 0
    }
}

/// The answer to a multipart upload: one result per part, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartResults {
    pub parts: Vec<ItemResult>,
    /// Set when the upload was cut short: `too_many_parts` (the answer is then 413) or
    /// `idle_timeout` (408).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// Publishes each part of a `multipart/form-data` body the moment it ends: the part's field
/// name is the room; an `application/json` part's body is the data, any other part's body
/// the data as a JSON string (it must be UTF-8). A refused part is reported and the others go
/// on; a part cut by the end of the connection is not published.
#[utoipa::path(
    post,
    path = "/api/publish",
    tag = "publishing",
    params(ScopeQuery),
    request_body(content = String, content_type = "multipart/form-data",
        description = "One part per message, its field name the room"),
    responses(
        (status = 200, description = "One result per part, in order", body = PartResults),
        (status = 400, description = "Not `multipart/form-data` with a boundary, or the \
            body broke off (`bad_request`; the parts that ended were published)",
            body = ErrorBody),
        (status = 408, description = "Nothing arrived for the idle timeout; the parts until \
            then", body = PartResults),
        (status = 413, description = "More parts than allowed; the parts until then",
            body = PartResults),
    )
)]
pub(crate) async fn multipart(
    api: web::Data<Publishing>,
    query: web::Query<ScopeQuery>,
    req: actix_web::HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let route = HttpRoute::Multipart;
    if !has_content_type(req.headers(), &["multipart/form-data"]) {
        let refusal = api.reject(
            route,
            Refusal::new(
                ApiErrorCode::BadRequest,
                "the body must be multipart/form-data with a boundary",
            ),
        );
        return refusal_response(StatusCode::BAD_REQUEST, refusal);
    }
    let scope = query.scope.map_or(Scope::default(), Scope::from);
    let mut form = Multipart::new(req.headers(), body);
    let mut parts = Vec::new();
    let ended = loop {
        let field = match actix_web::rt::time::timeout(api.idle_timeout, form.next()).await {
            Err(_) => break Some(Ended::Idle),
            Ok(None) => break None,
            Ok(Some(Ok(field))) => field,
            Ok(Some(Err(e))) => {
                if parts.is_empty() {
                    // Not a form at all (no boundary, a broken first delimiter).
                    let refusal = api.reject(
                        route,
                        Refusal::new(ApiErrorCode::BadRequest, format!("not a form: {e}")),
                    );
                    api.done(route, started);
                    return refusal_response(StatusCode::BAD_REQUEST, refusal);
                }
                break Some(Ended::Cut);
            }
        };
        if parts.len() >= api.max_parts {
            api.hub.http_rejected(route, "too_many_parts");
            api.done(route, started);
            return HttpResponse::build(StatusCode::PAYLOAD_TOO_LARGE)
                .insert_header((header::CONNECTION, "close"))
                .json(PartResults {
                    parts,
                    ended: Some("too_many_parts".to_owned()),
                });
        }
        match publish_part(&api, scope, field).await {
            Ok(result) => parts.push(result),
            Err(ended) => break Some(ended),
        }
    };
    let response = match ended {
        None => HttpResponse::Ok().json(PartResults { parts, ended: None }),
        Some(Ended::Idle) => {
            api.hub.http_rejected(route, "idle_timeout");
            HttpResponse::build(StatusCode::REQUEST_TIMEOUT)
                .insert_header((header::CONNECTION, "close"))
                .json(PartResults {
                    parts,
                    ended: Some("idle_timeout".to_owned()),
                })
        }
        Some(Ended::Cut) => {
            api.hub.http_rejected(route, "cut");
            broke_off(format!("{} parts ended before it", parts.len()))
        }
    };
    api.done(route, started);
    response
}

/// Reads one part (at most `max_item_bytes` of it are held; the rest of an over-long part is
/// read and dropped) and publishes it once it has ended. `Err` when the body ended inside it:
/// that part is not published.
async fn publish_part(
    api: &Publishing,
    scope: Scope,
    mut field: Field,
) -> Result<ItemResult, Ended> {
    let route = HttpRoute::Multipart;
    let room = field.name().map(str::to_owned);
    let json = field
        .content_type()
        .is_some_and(|m| m.essence_str() == "application/json");
    let mut held = Vec::new();
    let mut size = 0usize;
    while let Some(chunk) = api.next_chunk(&mut field).await? {
        size += chunk.len();
        if size <= api.max_item_bytes {
            held.extend_from_slice(&chunk);
        } else {
            held = Vec::new();
        }
    }
    let Some(room_name) = room.as_deref() else {
        let refusal = api.reject(
            route,
            Refusal::new(
                ApiErrorCode::BadRequest,
                "a part needs a field name: the room",
            ),
        );
        return Ok(ItemResult::of(None, Err(refusal)));
    };
    if size > api.max_item_bytes {
        api.hub.http_rejected(route, "too_large");
        let refusal = Refusal::new(
            ApiErrorCode::TooLarge,
            format!(
                "part of {size} bytes is over the {}-byte limit",
                api.max_item_bytes
            ),
        );
        return Ok(ItemResult::of(room, Err(refusal)));
    }
    let result = if json {
        match json_of(&held) {
            Ok(data) => api.publish(route, room_name, data, scope).await,
            Err(refusal) => Err(api.reject(route, refusal)),
        }
    } else {
        match text_as_json(&held) {
            Ok(data) => api.publish(route, room_name, &data, scope).await,
            Err(refusal) => Err(api.reject(route, refusal)),
        }
    };
    Ok(ItemResult::of(room, result))
}

/// A text part as a JSON string value.
fn text_as_json(bytes: &[u8]) -> Result<Box<RawValue>, Refusal> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Refusal::new(
            ApiErrorCode::BadRequest,
            "a part that is not application/json must be UTF-8 text",
        )
    })?;
    let quoted = serde_json::to_string(text)
        .map_err(|e| Refusal::new(ApiErrorCode::BadRequest, e.to_string()))?;
    RawValue::from_string(quoted).map_err(|e| Refusal::new(ApiErrorCode::BadRequest, e.to_string()))
}

/// Whether the request's `Content-Type` is one of `wanted` (parameters aside).
fn has_content_type(headers: &HeaderMap, wanted: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            wanted
                .iter()
                .any(|w| essence.trim().eq_ignore_ascii_case(w))
        })
}

/// The OpenAPI 3.1 document of the HTTP publishing API.
pub fn publishing_openapi() -> utoipa::openapi::OpenApi {
    PublishingDoc::openapi()
}

/// This document, as served to clients.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi_json() -> HttpResponse {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    HttpResponse::Ok().json(DOCUMENT.get_or_init(publishing_openapi))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard HTTP publishing API",
        description = "Publishing into rooms over HTTP, on the hub's public listener. Every \
            route needs `Authorization: Bearer <API key>` (config `api_keys`); without keys \
            configured the routes answer 404. Every error response is \
            `{\"error\":{\"code\":..,\"message\":..}}`. Messages carry `\"from\":\"http\"`."
    ),
    paths(openapi_json, publish, broadcast, stream, multipart),
    components(schemas(ErrorBody, Refusal)),
    modifiers(&KeyAuth),
    tags(
        (name = "publishing", description = "Publishing into rooms"),
        (name = "meta", description = "This API's description"),
    )
)]
struct PublishingDoc;

struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        super::guard_paths(
            openapi,
            "/api/",
            "One of the API keys the hub was started with",
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Line>, Lines) {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while let Some(line) = lines.feed(&mut rest) {
                out.push(line);
            }
            assert!(rest.is_empty());
        }
        (out, lines)
    }

    #[test]
    fn lines_are_split_across_chunks_and_numbered() {
        let (out, mut lines) = split(100, &[b"{\"a\"", b":1}\n\n  \r\n[2", b"]\r\n\"tail\""]);
        assert_eq!(
            out,
            [
                Line::Text(1, b"{\"a\":1}".to_vec()),
                Line::Empty(2),
                Line::Empty(3),
                Line::Text(4, b"[2]".to_vec()),
            ]
        );
        assert!(lines.pending());
        assert_eq!(lines.finish(), Some(Line::Text(5, b"\"tail\"".to_vec())));
        assert!(!lines.pending());
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn an_over_long_line_is_dropped_as_it_arrives_and_the_next_one_is_whole() {
        let long = vec![b'x'; 50];
        let (out, lines) = split(10, &[&long, &long, b"\n1\n", b"12345678901\n"]);
        assert_eq!(
            out,
            [
                Line::TooLong(1),
                Line::Text(2, b"1".to_vec()),
                Line::TooLong(3)
            ]
        );
        // Nothing of the long lines was held.
        assert!(lines.buf.capacity() <= 16, "{}", lines.buf.capacity());
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_kept() {
        let (out, _) = split(3, &[b"123\n1234\n"]);
        assert_eq!(out, [Line::Text(1, b"123".to_vec()), Line::TooLong(2)]);
    }

    #[test]
    fn keys_are_matched_whole_with_any_scheme_case() {
        let keys = [digest(b"k1"), digest(b"second-key")];
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(key_matches(&keys, &with("Bearer k1")));
        assert!(key_matches(&keys, &with("bearer second-key")));
        assert!(!key_matches(&keys, &with("Bearer k")));
        assert!(!key_matches(&keys, &with("Bearer k1x")));
        assert!(!key_matches(&keys, &with("Basic k1")));
        assert!(!key_matches(&keys, &with("Bearer ")));
        assert!(!key_matches(&keys, &HeaderMap::new()));
    }

    #[test]
    fn text_parts_become_json_strings() {
        assert_eq!(
            text_as_json(b"he said \"hi\"\n").unwrap().get(),
            r#""he said \"hi\"\n""#
        );
        assert!(text_as_json(&[0xff, 0xfe]).is_err());
        assert!(json_of(b"{\"a\":").is_err());
        assert_eq!(json_of(b" [1, 2] ").unwrap().get(), "[1, 2]");
    }
}
