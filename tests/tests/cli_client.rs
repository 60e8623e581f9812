//! The command-line client (`switchboard sub`, `switchboard pub`) as a user runs it: child
//! processes of the real binary with piped stdio, against real hubs (and a real redis-server for
//! failover), checked through what they print and how they exit.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use switchboard_tests::{
    hub_command, metric_value, publish_numbered, sign_token, unix_now, Client, RedisServer,
    TestHub, STEP,
};
use tokio::{
    sync::mpsc,
    time::{sleep, timeout},
};

const ROOMS: &str = "[[rooms]]\npattern = \"chat:*\"\nhistory_size = 1000\n";
const API_KEY: &str = "cli-test-api-key-0123456789";
const SECRET: &str = "cli-test-token-secret-0123456789abcdef";

/// A `switchboard` command run as a child process: its stdout and stderr lines as they come.
/// Killed (and reaped) on drop.
struct Cli {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line so far, for failure messages and final checks.
    stderr_log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Cli {
    /// Runs `switchboard <args>` with stdin closed.
    fn run(args: &[&str]) -> Cli {
        Self::spawn(args, None)
    }

    /// Runs `switchboard <args>` with `input` on stdin (then closed).
    fn with_stdin(args: &[&str], input: Vec<u8>) -> Cli {
        Self::spawn(args, Some(input))
    }

    fn spawn(args: &[&str], input: Option<Vec<u8>>) -> Cli {
        let mut child = hub_command()
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the switchboard binary");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stderr_log = Arc::new(Mutex::new(Vec::new()));
        let (out_tx, stdout) = mpsc::unbounded_channel();
        let (err_tx, stderr) = mpsc::unbounded_channel();
        let readers = vec![
            lines_of(child.stdout.take().unwrap(), out_tx, None),
            lines_of(
                child.stderr.take().unwrap(),
                err_tx,
                Some(stderr_log.clone()),
            ),
        ];
        Cli {
            child,
            stdout,
            stderr,
            stderr_log,
            readers,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_log.lock().unwrap().join("\n")
    }

    /// The next stdout line, within [`STEP`].
    async fn stdout_line(&mut self) -> String {
        match timeout(STEP, self.stdout.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("stdout ended; stderr:\n{}", self.stderr_text()),
            Err(_) => panic!("no stdout line in time; stderr:\n{}", self.stderr_text()),
        }
    }

    /// Waits (within [`STEP`]) for a stderr line containing `needle`; returns it.
    async fn stderr_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!(
                    "no stderr line with {needle:?}; stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Waits for the exit within `within`; returns the status, every stdout line not taken yet
    /// and all of stderr.
    async fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit within {within:?}; stderr:\n{}",
                self.stderr_text()
            );
            sleep(Duration::from_millis(20)).await;
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let mut stdout = Vec::new();
        while let Ok(line) = self.stdout.try_recv() {
            stdout.push(line);
        }
        (status, stdout, self.stderr_text())
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    fn interrupt(&self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(
    pipe: impl Read + Send + 'static,
    tx: mpsc::UnboundedSender<String>,
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                log.lock().unwrap().push(line.clone());
            }
            let _ = tx.send(line);
        }
    })
}

/// Kills a hub process with SIGKILL, as a crash would.
fn crash(hub: &TestHub) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &hub.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until every node is ready (its Redis link and canary are up).
async fn ready(nodes: &[&TestHub]) {
    let deadline = Instant::now() + STEP;
    for n in nodes {
        while n.admin("GET", "/readyz", None).await.status != 200 {
            assert!(Instant::now() < deadline, "a node did not become ready");
            sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn member(hub: &TestHub, room: &str) -> Client {
    let mut c = Client::connect(hub).await;
    c.subscribe(room).await;
    c
}

/// Sends `frame` (a raw publish frame with an id) and waits for its ack.
async fn publish_raw(c: &mut Client, frame: &str) -> Value {
    c.send_text(frame).await;
    loop {
        let answer = c.recv().await;
        if answer["op"] != "message" {
            assert_eq!(answer["op"], "ack", "{answer}");
            return answer;
        }
    }
}

fn code(status: ExitStatus) -> Option<i32> {
    status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_prints_messages_as_json_lines_or_their_data_and_exits_after_count() {
    let hub = TestHub::start();
    let url = hub.ws_url();
    let mut frames = Cli::run(&["sub", &url, "news", "other", "--count", "3"]);
    let mut data = Cli::run(&["sub", "--data", &url, "news", "--count", "3"]);
    let mut endless = Cli::run(&["sub", "-q", &url, "news"]);
    frames.stderr_line("subscribed to 2 rooms").await;
    data.stderr_line("subscribed to 1 room").await;
    // Quiet: no notice; wait until the hub has its three sessions' subscriptions instead.
    let deadline = Instant::now() + STEP;
    loop {
        let room = hub.admin("GET", "/admin/rooms/news", None).await;
        if room.status == 200 && room.json()["members"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "the subscribers did not join");
        sleep(Duration::from_millis(20)).await;
    }

    let mut publisher = Client::connect(&hub).await;
    let sent = [r#"{"a": [1, 2]}"#, r#""text""#, "3.50"];
    for (i, d) in sent.iter().enumerate() {
        let room = if i == 1 { "other" } else { "news" };
        publish_raw(
            &mut publisher,
            &format!(r#"{{"op":"publish","room":"{room}","data":{d},"id":9}}"#),
        )
        .await;
    }
    // The third room of `frames` is `other`: one more message to `news` for `data`.
    publish_raw(
        &mut publisher,
        r#"{"op":"publish","room":"news","data":null,"id":9}"#,
    )
    .await;

    let (status, lines, _) = frames.finish(STEP).await;
    assert_eq!(code(status), Some(0));
    assert_eq!(lines.len(), 3, "{lines:?}");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (frame, (room, data)) in parsed.iter().zip([
        ("news", json!({"a":[1,2]})),
        ("other", json!("text")),
        ("news", json!(3.5)),
    ]) {
        assert_eq!(frame["op"], "message", "{frame}");
        assert_eq!(frame["room"], room, "{frame}");
        assert_eq!(frame["data"], data, "{frame}");
        assert_eq!(frame["from"], publisher.session(), "{frame}");
    }
    // The frame as the hub sent it: the data byte for byte.
    assert!(lines[0].contains(r#""data":{"a": [1, 2]}"#), "{}", lines[0]);

    let (status, lines, _) = data.finish(STEP).await;
    assert_eq!(code(status), Some(0));
    assert_eq!(lines, [r#"{"a": [1, 2]}"#, "3.50", "null"]);

    // Without --count it runs until Ctrl-C, which ends it with 0.
    assert!(endless
        .stdout_line()
        .await
        .contains(r#""data":{"a": [1, 2]}"#));
    endless.interrupt();
    let (status, _, stderr) = endless.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "quiet, yet: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_publishes_one_message_or_every_stdin_line_in_order() {
    let hub = TestHub::builder().set("outbox_capacity", 4096).start();
    let url = hub.ws_url();
    let mut m = member(&hub, "feed").await;

    let (status, out, err) = Cli::run(&["pub", &url, "feed", r#"{"x": 1}"#])
        .finish(STEP)
        .await;
    assert_eq!(code(status), Some(0), "{err}");
    assert!(out.is_empty() && err.is_empty(), "{out:?} {err}");
    let got = m.recv().await;
    assert_eq!(
        (&got["op"], &got["data"]),
        (&json!("message"), &json!({"x":1}))
    );

    for (args, data) in [
        (vec!["42"], json!(42)),
        (vec!["42", "--string"], json!("42")),
        (vec!["hello world"], json!("hello world")),
        (vec!["-1", "--scope", "node"], json!(-1)),
    ] {
        let mut argv = vec!["pub", url.as_str(), "feed"];
        argv.extend(args.iter().copied());
        let (status, _, err) = Cli::run(&argv).finish(STEP).await;
        assert_eq!(code(status), Some(0), "{argv:?}: {err}");
        assert_eq!(m.recv().await["data"], data, "{argv:?}");
    }

    // 2,000 lines, one of them not JSON, with an empty line between: complete and in order.
    let mut input = String::new();
    for i in 1..=2000u64 {
        if i == 1000 {
            input.push_str("line one thousand\n\n");
        } else {
            input.push_str(&format!("{{\"n\":{i}}}\n"));
        }
    }
    let started = Instant::now();
    let publisher = Cli::with_stdin(&["pub", &url, "feed"], input.into_bytes());
    for i in 1..=2000u64 {
        let got = m.recv().await;
        assert_eq!(got["op"], "message", "{got}");
        let expected = if i == 1000 {
            json!("line one thousand")
        } else {
            json!({ "n": i })
        };
        assert_eq!(got["data"], expected, "message {i}");
    }
    let (status, out, err) = publisher.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{err}");
    assert!(out.is_empty(), "{out:?}");
    let summary = err.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("switchboard pub: published 2000, errors 0 in "),
        "{err}"
    );
    assert!(started.elapsed() < STEP);
    m.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_stdin_counts_refused_lines_and_exits_1() {
    let hub = TestHub::builder()
        .set("token_secret", SECRET)
        .set("max_message_bytes", 1024)
        .start();
    let token = sign_token(
        SECRET.as_bytes(),
        &json!({"sub":"publisher-with-a-longer-name","exp":unix_now() + 300,
                "subscribe":["*"],"publish":["ok"]}),
    );
    let mut m = Client::open_json(
        &hub.ws_url(),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    m.subscribe("ok").await;
    // Under the limit as a publish, over it as the message (with `from` and `user`).
    let big = format!("\"{}\"\n", "x".repeat(960));
    let input = format!("1\n{big}3\n");
    let (status, _, err) = Cli::with_stdin(
        &["pub", "--token", &token, &hub.ws_url(), "ok"],
        input.into_bytes(),
    )
    .finish(STEP)
    .await;
    assert_eq!(code(status), Some(1), "{err}");
    assert!(err.contains("line 2: too_large"), "{err}");
    assert!(err.contains("published 2, errors 1"), "{err}");
    assert_eq!(m.recv().await["data"], 1);
    assert_eq!(m.recv().await["data"], 3);

    // A single publish the token does not grant: refused, 2, naming the code.
    let (status, _, err) = Cli::run(&["pub", "--token", &token, &hub.ws_url(), "other", "1"])
        .finish(STEP)
        .await;
    assert_eq!(code(status), Some(2), "{err}");
    assert!(err.contains("forbidden"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_http_publishes_one_message_or_a_stream_and_a_wrong_key_is_refused() {
    let hub = TestHub::builder().set("api_keys", API_KEY).start();
    let base = format!("http://{}", hub.addr);
    let room = "feeds:a b/c";
    let mut m = member(&hub, room).await;

    let (status, out, err) = Cli::run(&[
        "pub",
        "--http",
        "--api-key",
        API_KEY,
        &base,
        room,
        r#"{"t": 1}"#,
    ])
    .finish(STEP)
    .await;
    assert_eq!(code(status), Some(0), "{err}");
    assert!(out.is_empty(), "{out:?}");
    let got = m.recv().await;
    assert_eq!(
        (&got["data"], &got["from"]),
        (&json!({"t":1}), &json!("http"))
    );

    let mut input = String::new();
    for i in 1..=500 {
        input.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    input.push_str("plain words\n");
    let streaming = Cli::with_stdin(
        &[
            "pub",
            "--http",
            "--api-key",
            API_KEY,
            "--scope",
            "node",
            &base,
            room,
        ],
        input.into_bytes(),
    );
    for i in 1..=500 {
        assert_eq!(m.recv().await["data"], json!({ "n": i }));
    }
    assert_eq!(m.recv().await["data"], "plain words");
    let (status, out, err) = streaming.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{err}");
    let summary: Value = serde_json::from_str(&out.concat()).unwrap();
    assert_eq!(summary["published"], 501, "{summary}");
    assert_eq!(summary["rejected_count"], 0, "{summary}");
    assert!(err.contains("published 501, errors 0"), "{err}");

    // A wrong key: 401 with the hub's code, for one message and for a stream.
    let (status, _, err) = Cli::run(&[
        "pub",
        "--http",
        "--api-key",
        "wrong-key-0123456789",
        &base,
        room,
        "1",
    ])
    .finish(STEP)
    .await;
    assert_eq!(code(status), Some(2), "{err}");
    assert!(err.contains("401 unauthorized"), "{err}");
    let (status, _, err) = Cli::with_stdin(
        &[
            "pub",
            "--http",
            "--api-key",
            "wrong-key-0123456789",
            &base,
            room,
        ],
        b"1\n2\n".to_vec(),
    )
    .finish(STEP)
    .await;
    assert_eq!(code(status), Some(2), "{err}");
    assert!(err.contains("401 unauthorized"), "{err}");

    // No key at all, and https: refused before any connection.
    let (status, _, err) = Cli::run(&["pub", "--http", &base, room, "1"])
        .finish(STEP)
        .await;
    assert_eq!(code(status), Some(2), "{err}");
    assert!(err.contains("--api-key"), "{err}");
    m.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_2_naming_the_status_or_the_error_code() {
    let hub = TestHub::builder().set("token_secret", SECRET).start();
    let url = hub.ws_url();
    let token = sign_token(
        SECRET.as_bytes(),
        &json!({"sub":"u","exp":unix_now() + 300,"subscribe":["a:*"]}),
    );
    // A port where nothing listens (bound, then released).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing = format!("ws://{}/ws", free.local_addr().unwrap());
    drop(free);
    let no_endpoint = format!("ws://{}/nope", hub.addr);
    let started = Instant::now();
    let cases: Vec<(Cli, i32, &str)> = vec![
        (Cli::run(&["sub", &url, "a:1"]), 2, "401 unauthorized"),
        (
            Cli::run(&["sub", "--token", &token, &url, "a:1", "b"]),
            2,
            "subscribe \"b\": forbidden",
        ),
        (Cli::run(&["sub", &no_endpoint, "a:1"]), 2, "404"),
        (Cli::run(&["pub", &url, "a:1", "1"]), 2, "401 unauthorized"),
        (
            Cli::run(&["sub", "wss://example.com/ws", "a:1"]),
            2,
            "not supported by the CLI",
        ),
        (
            Cli::run(&["sub", &nothing, "a:1"]),
            1,
            "gave up after 5 attempts",
        ),
    ];
    for (cli, expected, needle) in cases {
        let (status, out, err) = cli.finish(STEP).await;
        assert_eq!(code(status), Some(expected), "{needle}: {err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_exits_2_when_an_operator_closes_its_session() {
    let hub = TestHub::start();
    let mut sub = Cli::run(&["sub", &hub.ws_url(), "r"]);
    sub.stderr_line("subscribed to 1 room").await;
    let sessions = hub.admin("GET", "/admin/sessions", None).await.json();
    let id = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    let kicked = hub
        .admin("DELETE", &format!("/admin/sessions/{id}"), None)
        .await;
    assert_eq!(kicked.status, 200, "{kicked:?}");
    let (status, _, err) = sub.finish(STEP).await;
    assert_eq!(code(status), Some(2), "{err}");
    assert!(err.contains("4001"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_fails_over_to_another_node_and_prints_every_message_once_in_order() {
    let redis = RedisServer::start();
    let node = |id: &str| {
        TestHub::builder()
            .set("redis_url", redis.url())
            .set("node_id", id)
            .config(ROOMS)
            .start()
    };
    let (a, b) = (node("a"), node("b"));
    ready(&[&a, &b]).await;
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let mut sub = Cli::run(&["sub", &urls, "chat:x", "--count", "60"]);
    let line = sub.stderr_line("subscribed to 1 room").await;
    assert!(line.contains(&a.ws_url()), "{line}");

    let mut publisher = Client::connect(&b).await;
    let publish = |first: u64, last: u64| {
        (first..=last)
            .map(|i| format!(r#"{{"op":"publish","room":"chat:x","data":{{"n":{i}}},"id":{i}}}"#))
            .collect::<Vec<_>>()
    };
    for frame in publish(1, 10) {
        publish_raw(&mut publisher, &frame).await;
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(sub.stdout_line().await);
    }
    // Node a dies; what is published meanwhile (pipelined: done well within the first
    // reconnect's backoff) is recovered from the history on node b.
    crash(&a);
    publish_numbered(&mut publisher, "chat:x", 11, 30).await;
    let line = sub.stderr_line("reconnected to").await;
    assert!(line.contains(&b.ws_url()), "{line}");
    for frame in publish(41, 60) {
        publish_raw(&mut publisher, &frame).await;
    }
    let (status, rest, err) = sub.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{err}");
    got.extend(rest);
    let seen: Vec<(u64, u64)> = got
        .iter()
        .map(|l| {
            let m: Value = serde_json::from_str(l).unwrap();
            assert_eq!(m["op"], "message", "{m}");
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, (1..=60).map(|i| (i, i)).collect::<Vec<_>>());
    assert!(!err.contains("gap"), "{err}");
    let metrics = b.admin_as(None, "GET", "/metrics", None).await.body;
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_recoveries_total{result=\"recovered\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_reported_when_what_was_missed_cannot_be_recovered() {
    // Two standalone nodes: node b has its own history (another epoch), and `plain` keeps none.
    let node = || TestHub::builder().config(ROOMS).start();
    let (a, b) = (node(), node());
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let mut sub = Cli::run(&["sub", "--data", &urls, "chat:g", "plain", "--count", "2"]);
    sub.stderr_line("subscribed to 2 rooms").await;
    let publish = r#"{"op":"publish","room":"chat:g","data":"one","id":1}"#;
    publish_raw(&mut Client::connect(&a).await, publish).await;
    assert_eq!(sub.stdout_line().await, r#""one""#);

    crash(&a);
    let line = sub.stderr_line("gap in room \"chat:g\"").await;
    assert!(line.contains("new epoch"), "{line}");
    sub.stderr_line("gap in room \"plain\"").await;
    sub.stderr_line("reconnected to").await;
    let publish = r#"{"op":"publish","room":"chat:g","data":"two","id":1}"#;
    publish_raw(&mut Client::connect(&b).await, publish).await;
    let (status, rest, err) = sub.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{err}");
    assert_eq!(rest, [r#""two""#]);
    assert_eq!(err.matches("gap in room").count(), 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hub_is_retried_until_it_has_room() {
    let hub = TestHub::builder().set("max_connections", 1).start();
    let holder = Client::connect(&hub).await;
    let mut sub = Cli::run(&["sub", &hub.ws_url(), "r", "--count", "1"]);
    let line = sub.stderr_line("retrying in").await;
    assert!(line.contains("503 limit_exceeded"), "{line}");
    drop(holder);
    sub.stderr_line("subscribed to 1 room").await;
    let reply = hub
        .admin(
            "POST",
            "/admin/rooms/r/publish",
            Some(&json!({"data":"after the wait"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, out, err) = sub.finish(STEP).await;
    assert_eq!(code(status), Some(0), "{err}");
    let m: Value = serde_json::from_str(&out.concat()).unwrap();
    assert_eq!(
        (&m["data"], &m["from"]),
        (&json!("after the wait"), &json!("admin"))
    );
}
