//! The hub process from start to exit: configuration errors, the connection limit, heartbeats,
//! plain HTTP, closes, and the drain on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard_tests::{frame, hub_command, Client, RawClient, TestHub, STEP};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    time::timeout,
};
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

/// A temporary config file, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(contents: &str) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "switchboard-lifecycle-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        ConfigFile(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the hub binary with `args` and `env` to completion (at most [`STEP`]); kills it and
/// fails the test when it does not exit in time.
fn run_hub(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = hub_command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        if child.try_wait().unwrap().is_some() {
            // Exited: the pipes hold all it wrote.
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hub {args:?} did not exit within {STEP:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns one task per client that waits for its close frame and reports the code and when it
/// arrived.
fn watch_closes(clients: Vec<Client>) -> mpsc::UnboundedReceiver<(Option<u16>, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for mut c in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            let code = c.recv_close().await;
            let _ = tx.send((code, Instant::now()));
        });
    }
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_with_1001_and_exits_cleanly() {
    const SESSIONS: usize = 20;
    let mut hub = TestHub::builder().set("shutdown_window", 1).start();
    let clients = switchboard_tests::clients(&hub, SESSIONS).await;
    let mut closes = watch_closes(clients);

    hub.terminate();
    let mut at = Vec::new();
    for _ in 0..SESSIONS {
        let (code, when) = timeout(STEP, closes.recv()).await.unwrap().unwrap();
        assert_eq!(
            code,
            Some(1001),
            "every session closes with 1001 going away"
        );
        at.push(when);
    }
    let status = hub
        .wait_exit(STEP)
        .expect("the hub did not exit after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        hub.logs().join("\n")
    );

    // Spread over the 1 s window (about 0.95 s from first to last), not all at once.
    let span = *at.iter().max().unwrap() - *at.iter().min().unwrap();
    assert!(
        span >= Duration::from_millis(300),
        "closes spanned only {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_are_refused_while_draining() {
    let hub = TestHub::builder().set("shutdown_window", 3).start();
    let clients = switchboard_tests::clients(&hub, 3).await;
    let mut closes = watch_closes(clients);

    hub.terminate();
    let (code, _) = timeout(STEP, closes.recv()).await.unwrap().unwrap();
    assert_eq!(code, Some(1001));
    // The node is draining now, with two sessions left to close over the next ~2 s. A new
    // client must be turned away promptly (TCP refused or a non-101 status), not left waiting
    // for an answer until the process goes away at the end of the drain.
    let attempt = timeout(
        Duration::from_secs(1),
        tokio_tungstenite::connect_async(hub.ws_url()),
    )
    .await;
    match attempt {
        Err(_) => panic!(
            "a connection attempt during the drain got no answer within 1 s \
             (the hub stopped accepting but left it pending)"
        ),
        Ok(Ok((_, response))) => panic!("connected during the drain: {response:?}"),
        Ok(Err(_refused)) => {}
    }
    for _ in 0..2 {
        let (code, _) = timeout(STEP, closes.recv()).await.unwrap().unwrap();
        assert_eq!(code, Some(1001));
    }
}

#[tokio::test]
async fn handshake_beyond_max_connections_gets_503() {
    let hub = TestHub::builder().set("max_connections", 3).start();
    let mut clients = switchboard_tests::clients(&hub, 3).await;

    match timeout(STEP, tokio_tungstenite::connect_async(hub.ws_url()))
        .await
        .unwrap()
    {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(other) => panic!("expected HTTP 503, got {other:?}"),
        Ok((_, response)) => panic!("a 4th session was accepted: {response:?}"),
    }

    // One client leaves with a full close handshake; its slot is released after the session
    // ends, asynchronously, so the next handshake is retried for a while.
    let mut leaving = clients.pop().unwrap();
    leaving
        .send_raw(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await;
    assert_eq!(leaving.recv_close().await, Some(1000));

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut newcomer = loop {
        match timeout(STEP, tokio_tungstenite::connect_async(hub.ws_url()))
            .await
            .unwrap()
        {
            Ok((ws, _)) => break ws,
            Err(tungstenite::Error::Http(response)) if response.status() == 503 => {
                assert!(
                    Instant::now() < deadline,
                    "the closed session's slot was never released"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("unexpected handshake failure: {other:?}"),
        }
    };
    let welcome = timeout(STEP, newcomer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let welcome: Value = serde_json::from_str(welcome.to_text().unwrap()).unwrap();
    assert_eq!(welcome["op"], "welcome");
}

#[tokio::test]
async fn silent_session_is_closed_after_twice_the_heartbeat() {
    let hub = TestHub::builder().set("heartbeat", 0.2).start();

    let silent = async {
        let started = Instant::now();
        let mut raw = RawClient::connect(&hub).await;
        let mut pings = 0;
        let code = loop {
            let f = raw
                .read_frame()
                .await
                .expect("the connection ended without a close frame");
            match f.opcode {
                0x9 => pings += 1,
                0x8 => break f.close_code(),
                other => panic!("unexpected frame with opcode {other}: {f:?}"),
            }
        };
        assert!(pings >= 1, "no ping before the close");
        assert_eq!(code, Some(4003), "heartbeat timeout");
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(2),
            "closed only after {elapsed:?}"
        );
    };

    let answering = async {
        let mut c = Client::connect(&hub).await;
        assert_eq!(c.welcome["heartbeat"].as_f64(), Some(0.2));
        // Reading lets tungstenite answer each ping with a pong.
        c.expect_silence(Duration::from_millis(1500)).await;
        assert_eq!(
            c.request(json!({"op":"ping","id":1})).await,
            json!({"op":"pong","id":1})
        );
    };

    tokio::join!(silent, answering);
}

#[test]
fn bad_config_exits_64_naming_the_key() {
    let listen = ["serve", "--listen", "127.0.0.1:0"];

    let out = run_hub(&listen, &[("SWITCHBOARD_WORKERS", "zero")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "SWITCHBOARD_WORKERS=zero; stderr: {stderr}"
    );
    assert!(
        stderr.contains("workers"),
        "the error does not name the key: {stderr}"
    );

    let file = ConfigFile::new("wrokers = 2\n");
    let path = file.path();
    let out = run_hub(&[&listen[..], &["--config", &path]].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "wrokers = 2; stderr: {stderr}");
    assert!(
        stderr.contains("wrokers"),
        "the error does not name the unknown key: {stderr}"
    );

    let out = run_hub(
        &[&listen[..], &["--config", "/nonexistent/file.toml"]].concat(),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "missing config file; stderr: {stderr}"
    );
}

#[tokio::test]
async fn config_file_and_env_are_both_applied() {
    let file = ConfigFile::new("node_id = \"from-file\"\nheartbeat = 7\n");
    let hub = TestHub::builder()
        .set("heartbeat", 3)
        .arg("--config")
        .arg(file.path())
        .start();
    let c = Client::connect(&hub).await;
    assert_eq!(c.welcome["node"], "from-file", "{}", c.welcome);
    assert_eq!(
        c.welcome["heartbeat"].as_f64(),
        Some(3.0),
        "the environment overrides the file: {}",
        c.welcome
    );
}

#[tokio::test]
async fn plain_http_to_an_unknown_path_gets_404_json() {
    let hub = TestHub::start();
    let mut tcp = timeout(STEP, TcpStream::connect(hub.addr))
        .await
        .unwrap()
        .unwrap();
    let request = format!(
        "GET /no/such/thing HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        head.lines().any(|l| l
            .to_ascii_lowercase()
            .starts_with("content-type: application/json")),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_client_close_is_answered_and_the_tcp_connection_closed() {
    let hub = TestHub::start();
    let mut raw = RawClient::connect(&hub).await;
    raw.write(&frame(true, 0, 0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(raw.read_until_close().await, Some(1000));
    assert!(
        raw.closed_within(Duration::from_secs(2)).await,
        "the TCP connection stayed open"
    );
}

/// `switchboard health` (the container health check) run against `admin`, with the hub's own
/// configuration given as `env`.
fn health(admin: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["health", "--admin-listen", admin, "--timeout", "2"];
    args.extend_from_slice(extra);
    run_hub(&args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_reports_readiness_from_the_admin_listener() {
    let mut hub = TestHub::start();
    let admin = hub.admin_addr.to_string();

    let ready = health(&admin, &[], &[]);
    assert!(ready.status.success(), "{ready:?}");
    let metrics = hub.admin_as(None, "GET", "/metrics", None).await;
    assert!(
        metrics.body.contains("\nswitchboard_ready 1\n"),
        "{}",
        metrics.body
    );
    assert!(String::from_utf8_lossy(&ready.stdout).contains("ready"));
    // A wildcard listen address, as in a container, is reached on loopback.
    let wildcard = format!("0.0.0.0:{}", hub.admin_addr.port());
    let token = [("SWITCHBOARD_ADMIN_TOKEN", "t")];
    assert!(health(&wildcard, &[], &token).status.success());

    // Draining: alive, not ready.
    let clients = switchboard_tests::clients(&hub, 1).await;
    hub.terminate();
    let deadline = Instant::now() + STEP;
    loop {
        let out = health(&admin, &[], &[]);
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(1));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("draining"),
                "{out:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still ready while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(clients);
    hub.wait_exit(STEP).expect("the hub exits");

    // Nothing listening: a failure naming the address, not a hang.
    let gone = health(&admin, &["--live"], &[]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stdout).contains(&admin));
    // A bad configuration is a usage error, as for `serve`.
    let bad = health(&admin, &[], &[("SWITCHBOARD_WORKERS", "none")]);
    assert_eq!(bad.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_is_unhealthy_while_redis_is_unreachable() {
    // A port nothing listens on: the node starts, alive but not ready.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = TestHub::builder()
        .set("redis_url", format!("redis://127.0.0.1:{port}"))
        .start();
    let admin = hub.admin_addr.to_string();
    let out = health(&admin, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unavailable"));
    assert!(health(&admin, &["--live"], &[]).status.success());
    // The same answer in the metrics, for dashboards and alerts.
    let metrics = hub.admin_as(None, "GET", "/metrics", None).await;
    assert!(
        metrics.body.contains("\nswitchboard_ready 0\n"),
        "{}",
        metrics.body
    );
}
