//! The HTTP publishing API (`/api/` on the public listener) with real HTTP clients over TCP:
//! chunked NDJSON streams published line by line while the request is open, multipart uploads
//! published part by part, bodies cut mid-line and mid-part, API keys, cluster scope, metrics,
//! and memory that stays flat during a 1 GiB stream.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_tests::{Client, RedisServer, TestHub, STEP};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const KEY: &str = "test-api-key-0123456789";

fn hub() -> TestHub {
    TestHub::builder().set("api_keys", KEY).start()
}

/// The status and body of a response read to the end of the connection or of its body
/// (`Content-Length` or chunked).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(parsed) = parse_response(&raw) {
            return parsed;
        }
        let n = timeout(STEP, stream.read(&mut buf))
            .await
            .expect("no response in time")
            .unwrap_or(0);
        if n == 0 {
            return parse_response(&raw).unwrap_or_else(|| {
                panic!("incomplete response: {:?}", String::from_utf8_lossy(&raw))
            });
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return (body.len() >= len)
            .then(|| (status, String::from_utf8_lossy(&body[..len]).into_owned()));
    }
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16)
                    .ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Some((status, String::from_utf8_lossy(&out).into_owned()));
            }
            if rest.len() < size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
    None
}

/// A request with a body sent in chunks as the test writes them.
struct Chunked(TcpStream);

impl Chunked {
    async fn open(hub: &TestHub, path: &str, content_type: &str, key: Option<&str>) -> Chunked {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: hub\r\n{auth}Content-Type: {content_type}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        Chunked(stream)
    }

    async fn send(&mut self, data: &[u8]) {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.0.write_all(&chunk).await.unwrap();
    }

    /// Ends the body and reads the answer.
    async fn finish(mut self) -> (u16, Value) {
        self.0.write_all(b"0\r\n\r\n").await.unwrap();
        let (status, body) = read_response(&mut self.0).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

/// A whole request with a `Content-Length` body; the status and the body as JSON.
async fn request(
    hub: &TestHub,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, Value) {
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn auth() -> String {
    format!("Authorization: Bearer {KEY}")
}

async fn publish_json(hub: &TestHub, room: &str, body: Value) -> (u16, Value) {
    request(
        hub,
        "POST",
        &format!("/api/rooms/{room}/publish"),
        &[&auth(), "Content-Type: application/json"],
        body.to_string().as_bytes(),
    )
    .await
}

async fn member(hub: &TestHub, room: &str) -> Client {
    let mut c = Client::connect(hub).await;
    c.subscribe(room).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_publish_reaches_members_from_http_and_refusals_have_their_codes() {
    let hub = hub();
    let mut m = member(&hub, "news").await;
    let (status, body) = publish_json(&hub, "news", json!({"data": {"headline": "hi"}})).await;
    assert_eq!((status, body), (200, json!({"ok": true})));
    let got = m.recv().await;
    assert_eq!(
        got,
        json!({"op":"message","room":"news","data":{"headline":"hi"},"from":"http"})
    );

    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    let (status, body) = publish_json(&hub, "news", json!({"nodata": 1})).await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_request"));
    let (status, body) = publish_json(&hub, "%01bad", json!({"data": 1})).await;
    assert_eq!((status, code(&body).as_str()), (400, "invalid_room"));
    let big = "x".repeat(70 * 1024);
    let (status, body) = publish_json(&hub, "news", json!({ "data": big })).await;
    assert_eq!((status, code(&body).as_str()), (413, "too_large"));
    let (status, body) = publish_json(&hub, "news", json!({"data": 1, "scope": "galaxy"})).await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_request"));

    // Broadcast: one result per room, in order; the good rooms got the message.
    let mut other = member(&hub, "sports").await;
    let (status, body) = request(
        &hub,
        "POST",
        "/api/broadcast",
        &[&auth(), "Content-Type: application/json"],
        json!({"rooms": ["news", "", "sports"], "data": [1, 2]})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0], json!({"room":"news","ok":true}));
    assert_eq!(body["results"][1]["ok"], false);
    assert_eq!(body["results"][1]["code"], "invalid_room");
    assert_eq!(body["results"][2], json!({"room":"sports","ok":true}));
    assert_eq!(m.recv().await["data"], json!([1, 2]));
    assert_eq!(other.recv().await["data"], json!([1, 2]));
    m.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_and_the_routes_are_off_without_keys() {
    let hub = hub();
    let body = json!({"data": 1}).to_string();
    let path = "/api/rooms/r/publish";
    let json_type = "Content-Type: application/json";
    for headers in [
        vec![json_type.to_owned()],
        vec![
            json_type.to_owned(),
            "Authorization: Bearer wrong-key-0123456789".to_owned(),
        ],
        vec![json_type.to_owned(), format!("Authorization: Basic {KEY}")],
        vec![
            json_type.to_owned(),
            format!("Authorization: Bearer {KEY}x"),
        ],
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, reply) = request(&hub, "POST", path, &headers, body.as_bytes()).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(reply["error"]["code"], "unauthorized");
    }
    let (status, _) = request(&hub, "POST", path, &[json_type, &auth()], body.as_bytes()).await;
    assert_eq!(status, 200);
    let metrics = hub.admin_as(None, "GET", "/metrics", None).await.body;
    assert!(
        metrics.contains(
            "switchboard_http_rejected_total{reason=\"unauthorized\",route=\"publish\"} 4"
        ),
        "{metrics}"
    );
    let (status, doc) = request(&hub, "GET", "/api/openapi.json", &[&auth()], b"").await;
    assert_eq!(status, 200);
    for method in ["post", "put"] {
        assert!(
            doc["paths"]["/api/rooms/{room}/stream"][method].is_object(),
            "{doc}"
        );
    }

    let off = TestHub::start();
    let (status, reply) = request(&off, "POST", path, &[json_type, &auth()], body.as_bytes()).await;
    assert_eq!(status, 404);
    assert_eq!(reply["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_publishes_each_line_as_its_newline_arrives_and_keeps_order() {
    const LINES: u64 = 100_000;
    let hub = TestHub::builder()
        .set("api_keys", KEY)
        // The member reads as fast as it can; its outbox must not be what the test measures.
        .set("outbox_capacity", 1 << 18)
        .set("outbox_max_bytes", 256 << 20)
        // A room queue of one: the stream keeps waiting for room, and must lose nothing.
        .set("room_queue_capacity", 1)
        .start();
    let mut m = member(&hub, "feed").await;
    let mut body = Chunked::open(
        &hub,
        "/api/rooms/feed/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;

    // The first line reaches the member while the request is still open.
    body.send(b"{\"n\":0}\n{\"n\":").await;
    let got = timeout(STEP, m.recv()).await.unwrap();
    assert_eq!(got["data"], json!({"n": 0}));
    assert_eq!(got["from"], "http");
    body.send(b"1}\n\n").await;
    assert_eq!(m.recv().await["data"], json!({"n": 1}));

    let reader = tokio::spawn(async move {
        for n in 2..=LINES {
            let got = m.recv().await;
            assert_eq!(got["data"]["n"], n, "out of order or lost: {got}");
        }
        m.expect_silence(Duration::from_millis(200)).await;
    });
    let mut n = 2;
    while n <= LINES {
        let mut chunk = String::new();
        for _ in 0..1000 {
            if n > LINES {
                break;
            }
            chunk.push_str(&format!("{{\"n\":{n}}}\r\n"));
            n += 1;
        }
        body.send(chunk.as_bytes()).await;
    }
    let (status, summary) = body.finish().await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["published"], LINES + 1);
    assert_eq!(summary["rejected_count"], 0);
    timeout(STEP * 6, reader).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reports_bad_lines_and_publishes_the_rest() {
    let hub = hub();
    let mut m = member(&hub, "mixed").await;
    let mut body = Chunked::open(
        &hub,
        "/api/rooms/mixed/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;
    let long = format!("\"{}\"\n", "y".repeat(70 * 1024));
    body.send(b"1\nnot json\n").await;
    body.send(long.as_bytes()).await;
    body.send(b"\xff\xfe\n   \n{\"last\":true}").await;
    let (status, summary) = body.finish().await;
    assert_eq!(status, 200);
    assert_eq!(summary["published"], 2, "{summary}");
    assert_eq!(summary["rejected_count"], 3);
    let lines: Vec<(u64, String)> = summary["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (2, "bad_request".to_owned()),
            (3, "too_large".to_owned()),
            (4, "bad_request".to_owned())
        ]
    );
    assert_eq!(m.recv().await["data"], json!(1));
    assert_eq!(m.recv().await["data"], json!({"last": true}));
    m.expect_silence(Duration::from_millis(200)).await;

    // PUT, as `curl -T` sends it, works the same.
    let (status, summary) = request(
        &hub,
        "PUT",
        "/api/rooms/mixed/stream",
        &[&auth(), "Content-Type: application/x-ndjson"],
        b"\"put\"\n",
    )
    .await;
    assert_eq!((status, summary["published"].as_u64()), (200, Some(1)));
    assert_eq!(m.recv().await["data"], "put");

    // Not NDJSON, not a valid room: refused before any line is read.
    let (status, reply) = Chunked::open(&hub, "/api/rooms/mixed/stream", "text/plain", Some(KEY))
        .await
        .finish()
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_ends_after_the_idle_timeout_with_what_it_published() {
    let hub = TestHub::builder()
        .set("api_keys", KEY)
        .set("http_idle_timeout", 0.5)
        .start();
    let mut m = member(&hub, "quiet").await;
    let mut body = Chunked::open(
        &hub,
        "/api/rooms/quiet/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;
    body.send(b"\"one\"\n\"cut").await;
    assert_eq!(m.recv().await["data"], "one");
    let started = Instant::now();
    let (status, summary) = read_response(&mut body.0).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(status, 408);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["published"], 1);
    assert_eq!(summary["ended"], "idle_timeout");
    m.expect_silence(Duration::from_millis(200)).await;
}

/// A multipart body: `(field name, content type, bytes)` per part.
fn form(boundary: &str, parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content_type, bytes) in parts {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// `POST /api/publish` with a form made by [`form`] with `boundary`.
async fn post_form(hub: &TestHub, boundary: &str, body: &[u8]) -> (u16, Value) {
    let content_type = format!("Content-Type: multipart/form-data; boundary={boundary}");
    request(hub, "POST", "/api/publish", &[&auth(), &content_type], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_parts_are_published_one_by_one_with_a_result_each() {
    let hub = hub();
    let mut a = member(&hub, "a").await;
    let mut b = member(&hub, "b").await;
    let big = vec![b'z'; 70 * 1024];
    let body = form(
        "XyZ",
        &[
            ("a", "application/json", br#"{"kind":"json"}"#),
            ("b", "text/plain", b"plain \"text\"\n"),
            ("a", "text/plain", &big),
            ("b", "text/plain", b"\xff\xfe\xfd"),
            ("a", "application/json", b"{broken"),
            ("tab\there", "application/json", b"1"),
            ("b", "application/json", b"[true]"),
        ],
    );
    let (status, reply) = post_form(&hub, "XyZ", &body).await;
    assert_eq!(status, 200, "{reply}");
    let results: Vec<(Value, bool, Value)> = reply["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["room"].clone(),
                p["ok"].as_bool().unwrap(),
                p["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            (json!("a"), true, Value::Null),
            (json!("b"), true, Value::Null),
            (json!("a"), false, json!("too_large")),
            (json!("b"), false, json!("bad_request")),
            (json!("a"), false, json!("bad_request")),
            (json!("tab\there"), false, json!("invalid_room")),
            (json!("b"), true, Value::Null),
        ]
    );
    assert_eq!(a.recv().await["data"], json!({"kind": "json"}));
    assert_eq!(b.recv().await["data"], json!("plain \"text\"\n"));
    assert_eq!(b.recv().await["data"], json!([true]));
    a.expect_silence(Duration::from_millis(200)).await;
    b.expect_silence(Duration::from_millis(100)).await;

    // Not a form.
    let (status, reply) = request(
        &hub,
        "POST",
        "/api/publish",
        &[&auth(), "Content-Type: application/json"],
        b"{}",
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_stops_at_the_part_limit() {
    let hub = TestHub::builder()
        .set("api_keys", KEY)
        .set("http_max_parts", 2)
        .start();
    let mut a = member(&hub, "a").await;
    let body = form(
        "b0",
        &[
            ("a", "application/json", b"1"),
            ("a", "application/json", b"2"),
            ("a", "application/json", b"3"),
        ],
    );
    let (status, reply) = post_form(&hub, "b0", &body).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["ended"], "too_many_parts");
    assert_eq!(reply["parts"].as_array().unwrap().len(), 2);
    assert_eq!(a.recv().await["data"], 1);
    assert_eq!(a.recv().await["data"], 2);
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_line_or_mid_part_publishes_what_ended_and_the_node_keeps_serving() {
    let hub = hub();
    let mut m = member(&hub, "cut").await;

    // Mid-line: two lines ended, the third is cut with the connection.
    let mut body = Chunked::open(
        &hub,
        "/api/rooms/cut/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;
    body.send(b"\"line 1\"\n\"line 2\"\n\"line").await;
    assert_eq!(m.recv().await["data"], "line 1");
    assert_eq!(m.recv().await["data"], "line 2");
    drop(body);
    m.expect_silence(Duration::from_millis(300)).await;

    // Mid-part: the first part ended, the second is cut.
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    let full = form(
        "cutb",
        &[
            ("cut", "application/json", b"\"part 1\""),
            ("cut", "application/json", b"\"part 2\""),
        ],
    );
    let cut_at = full.windows(8).position(|w| w == b"\"part 2\"").unwrap() + 4;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: hub\r\n{}\r\nContent-Type: multipart/form-data; boundary=cutb\r\n\
         Content-Length: {}\r\n\r\n",
        auth(),
        full.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&full[..cut_at]).await.unwrap();
    assert_eq!(m.recv().await["data"], "part 1");
    drop(stream);
    m.expect_silence(Duration::from_millis(300)).await;

    // The node goes on: a publish over HTTP and one over WebSocket both arrive.
    let (status, _) = publish_json(&hub, "cut", json!({"data": "after"})).await;
    assert_eq!(status, 200);
    assert_eq!(m.recv().await["data"], "after");
    let mut p = Client::connect(&hub).await;
    p.publish("cut", json!("ws"), "node").await;
    assert_eq!(m.recv().await["data"], "ws");

    // Counted: the cut line.
    let metrics = hub.admin_as(None, "GET", "/metrics", None).await.body;
    assert!(
        metrics.contains("switchboard_http_rejected_total{reason=\"cut\",route=\"stream\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_http_rejected_total{reason=\"cut\",route=\"multipart\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_messages_published_total{scope=\"cluster\",source=\"http\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_publish_on_one_node_reaches_a_member_on_another() {
    let redis = RedisServer::start();
    let node = |id: &str| {
        TestHub::builder()
            .set("api_keys", KEY)
            .set("redis_url", redis.url())
            .set("node_id", id)
            .start()
    };
    let a = node("a");
    let b = node("b");
    let mut on_b = member(&b, "span").await;
    let (status, reply) = publish_json(&a, "span", json!({"data": {"via": "a"}})).await;
    assert_eq!(status, 200, "{reply}");
    let got = on_b.recv().await;
    assert_eq!(got["data"], json!({"via": "a"}));
    assert_eq!(got["from"], "http");

    // And a stream's lines, in order.
    let mut body = Chunked::open(
        &a,
        "/api/rooms/span/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;
    body.send(b"1\n2\n3\n").await;
    let (status, summary) = body.finish().await;
    assert_eq!((status, summary["published"].as_u64()), (200, Some(3)));
    for n in 1..=3 {
        assert_eq!(on_b.recv().await["data"], n);
    }

    // Redis gone: the publish is answered 503, not silently lost.
    drop(redis);
    let deadline = Instant::now() + STEP;
    loop {
        let (status, reply) = publish_json(&a, "span", json!({"data": 0})).await;
        if status == 503 {
            assert_eq!(reply["error"]["code"], "unavailable");
            break;
        }
        assert!(Instant::now() < deadline, "still {status} without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_stream_is_published_in_bounded_memory() {
    const TOTAL: usize = 1 << 30;
    let hub = hub();
    let line = format!("\"{}\"\n", "m".repeat(32 * 1024 - 3));
    let chunk = line.repeat(8); // 256 KiB per chunk
    let mut body = Chunked::open(
        &hub,
        "/api/rooms/bulk/stream",
        "application/x-ndjson",
        Some(KEY),
    )
    .await;
    body.send(chunk.as_bytes()).await;
    let start = hub.rss_kib();
    let mut peak = start;
    let mut sent = chunk.len();
    let started = Instant::now();
    while sent < TOTAL {
        body.send(chunk.as_bytes()).await;
        sent += chunk.len();
        if sent % (16 << 20) < chunk.len() {
            peak = peak.max(hub.rss_kib());
        }
    }
    let (status, summary) = body.finish().await;
    peak = peak.max(hub.rss_kib());
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["published"].as_u64().unwrap() as usize,
        sent / line.len()
    );
    let growth = peak.saturating_sub(start);
    eprintln!(
        "1 GiB stream: {:.1} s, RSS {start} KiB at its start, peak {peak} KiB (+{growth} KiB)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB during a 1 GiB stream"
    );
}
