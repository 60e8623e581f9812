//! Test harness: a real `switchboard` process on port 0, real WebSocket clients, and a raw
//! client for writing frames no well-behaved library would send.
//!
//! Every hub is its own process, killed on drop, so tests run in parallel without sharing state,
//! and process-level facts (RSS, CPU time, signals, exit codes) are measured for real.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};
use tokio_tungstenite::{
    tungstenite::{protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

pub mod redis;

pub use redis::RedisServer;

/// The admin token every test hub is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// How long any single expected event may take before a test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A hub that tests connect to: a process ([`TestHub`]) or one in the test's own process
/// ([`InProcessHub`]).
pub trait Target {
    /// The WebSocket listener's address.
    fn addr(&self) -> SocketAddr;
    /// The default endpoint's URL.
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr())
    }
}

impl Target for TestHub {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A hub running in the test's own process, on its own thread and actix system, for tests that
/// need to hold its [`switchboard_hub::Node`] (its policy, its membership events). Stopped (and
/// its thread joined) on drop.
#[derive(Debug)]
pub struct InProcessHub {
    /// The running node.
    pub node: Arc<switchboard_hub::Node>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target for InProcessHub {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl InProcessHub {
    /// Starts a hub with 2 workers, the settings of `toml` and these membership observers.
    pub fn start(
        toml: &str,
        observers: Vec<Arc<dyn switchboard_hub::MembershipObserver>>,
    ) -> InProcessHub {
        use switchboard_hub::config::{Config, Overrides};
        let overrides = Overrides {
            workers: Some(2),
            ..Overrides::default()
        };
        let config = Config::from_sources(toml, Vec::new(), &overrides).unwrap();
        let node = switchboard_hub::Node::with_observers(config, observers);
        let listener = switchboard_hub::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_node = node.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new()
                .block_on(switchboard_hub::serve_node(server_node, listener, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        InProcessHub {
            node,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts the hub down as a signal would (the drain: 1001 to every session) and waits until
    /// it has stopped.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for InProcessHub {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shut_down();
        } else if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running hub process.
#[derive(Debug)]
pub struct TestHub {
    child: Child,
    /// The WebSocket listener's address.
    pub addr: SocketAddr,
    /// The admin API listener's address.
    pub admin_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The config file written for this hub, removed on drop.
    config_file: Option<std::path::PathBuf>,
}

/// Builds a hub process: settings become `SWITCHBOARD_*` variables, the config scheme operators use.
#[derive(Debug, Default)]
pub struct HubBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    config: Option<String>,
}

impl HubBuilder {
    /// Sets config key `key` (e.g. `workers`) through its environment variable.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((
            format!("SWITCHBOARD_{}", key.to_ascii_uppercase()),
            value.to_string(),
        ));
        self
    }

    /// Adds a command-line argument after `serve`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Gives the hub a config file with this TOML text (for settings such as `[[endpoints]]`
    /// that environment variables do not carry).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Starts the process and waits until it listens.
    pub fn start(mut self) -> TestHub {
        let config_file = self.config.take().map(|text| {
            let path = temp_path("hub.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        if let Some(path) = &config_file {
            self.args.push("--config".into());
            self.args.push(path.display().to_string());
        }
        let mut cmd = hub_command();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(&self.args)
            .env("SWITCHBOARD_WORKERS", "2")
            .env("SWITCHBOARD_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the hub binary");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let which = match v["message"].as_str() {
                        Some("listening") => Some(false),
                        Some("admin listening") => Some(true),
                        _ => None,
                    };
                    if let (Some(admin), Some(addr)) =
                        (which, v["addr"].as_str().and_then(|a| a.parse().ok()))
                    {
                        let _ = tx.send((admin, addr));
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        let mut admin_addr = None;
        while addr.is_none() || admin_addr.is_none() {
            match rx.recv_timeout(STEP) {
                Ok((true, a)) => admin_addr = Some(a),
                Ok((false, a)) => addr = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "hub did not start; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
        TestHub {
            child,
            addr: addr.unwrap(),
            admin_addr: admin_addr.unwrap(),
            logs,
            config_file,
        }
    }
}

/// A fresh path in the system temp dir, unique to this process and call.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "switchboard-test-{}-{n}-{name}",
        std::process::id()
    ))
}

/// The path of the hub binary. Cargo builds this crate's binaries before its integration tests,
/// next to the `deps/` folder that holds the test executables.
pub fn hub_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("switchboard-under-test");
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// The hub binary as a command, for tests that run it with their own arguments.
pub fn hub_command() -> Command {
    let mut cmd = Command::new(hub_binary());
    // The test's own environment must not leak settings into the hub.
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl TestHub {
    /// A hub with the defaults and 2 workers.
    pub fn start() -> TestHub {
        HubBuilder::default().start()
    }

    /// A builder to set config keys first.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// `ws://addr/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines so far (JSON).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// CPU time (user + system) of the process, in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Number of established TCP connections on the hub's WebSocket port.
    pub fn open_connections(&self) -> usize {
        self.server_sockets(None)
    }

    /// True while the hub holds an established connection from the client port `peer_port`.
    pub fn has_connection_from(&self, peer_port: u16) -> bool {
        self.server_sockets(Some(peer_port)) > 0
    }

    fn server_sockets(&self, peer_port: Option<u16>) -> usize {
        let port = format!(":{:04X}", self.addr.port());
        let peer = peer_port.map(|p| format!(":{p:04X}"));
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // Established (01) sockets whose local end is the hub's port.
        tcp.lines()
            .skip(1)
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[1].ends_with(&port)
                    && cols[3] == "01"
                    && peer.as_ref().is_none_or(|p| cols[2].ends_with(p.as_str()))
            })
            .count()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (up to the connection's end or `content-length`).
    pub body: String,
    /// True when the server closed the connection after the response.
    pub closed: bool,
}

impl HttpReply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `request` (raw bytes, head and all) to the hub and reads one response: the status,
/// headers, body, and whether the server then closed the connection. A 101 answer is returned
/// as soon as its head is read.
pub async fn http_exchange(hub: &impl Target, request: &[u8]) -> HttpReply {
    http_exchange_at(hub.addr(), request).await
}

/// [`http_exchange`] with a server at `addr`.
pub async fn http_exchange_at(addr: SocketAddr, request: &[u8]) -> HttpReply {
    let mut stream = timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    // The server may refuse before reading all of a large request; that is not an error here.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        let n = match timeout(STEP, stream.read(&mut chunk))
            .await
            .expect("no response")
        {
            Ok(n) => n,
            Err(e) => panic!("connection failed before a response: {e}"),
        };
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    if status == 101 {
        return HttpReply {
            status,
            headers,
            body: String::new(),
            closed: false,
        };
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    while length.is_none_or(|l| body.len() < l) {
        let mut chunk = [0u8; 8192];
        match timeout(STEP, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("response body did not arrive"),
        }
    }
    // Closed: the next read sees the end of the stream (or a reset) promptly.
    let mut rest = [0u8; 1024];
    let closed = matches!(
        timeout(Duration::from_secs(3), stream.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        closed,
    }
}

/// A WebSocket upgrade request for `path` with extra header lines (each `Name: value`).
pub fn upgrade_request(hub: &impl Target, path: &str, extra: &[&str]) -> Vec<u8> {
    upgrade_request_to(hub.addr(), path, extra)
}

/// [`upgrade_request`] for a server at `addr`.
pub fn upgrade_request_to(addr: SocketAddr, path: &str, extra: &[&str]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Signs an HS256 JWT over `claims` with `secret`, independently of the hub's own token code.
pub fn sign_token(secret: &[u8], claims: &Value) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use hmac::{Mac, SimpleHmac};
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = SimpleHmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A well-behaved WebSocket client (tokio-tungstenite).
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    /// The `welcome` frame.
    pub welcome: Value,
    /// The subprotocol the hub chose (`Sec-WebSocket-Protocol` of its 101), if any.
    pub protocol: Option<String>,
    /// Messages [`Client::publish`] read while waiting for its ack, handed out first by
    /// [`Client::recv`]: a member publisher may get its own message before or after the ack.
    pending: std::collections::VecDeque<Value>,
}

impl Client {
    /// Opens a WebSocket to `url` with extra request headers, without reading anything.
    /// `Err((status, body))` when the hub answers the handshake with an HTTP error.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Error};
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        match timeout(STEP, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")
        {
            Ok((ws, response)) => Ok(Client {
                ws,
                welcome: Value::Null,
                pending: Default::default(),
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(Error::Http(response)) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((response.status().as_u16(), body))
            }
            Err(e) => panic!("connect to {url}: {e}"),
        }
    }

    /// Like [`Client::open`] for a `switchboard.v1` endpoint: reads the welcome frame.
    pub async fn open_json(url: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
        let mut client = Client::open(url, headers).await?;
        client.read_welcome().await;
        Ok(client)
    }

    /// The next data message (text or binary), skipping pings and pongs.
    pub async fn recv_message(&mut self) -> Message {
        loop {
            let m = timeout(STEP, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("stream ended")
                .expect("websocket error");
            match m {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    /// Connects and reads the welcome frame.
    pub async fn connect(hub: &impl Target) -> Client {
        let (ws, _) = timeout(STEP, tokio_tungstenite::connect_async(Target::ws_url(hub)))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut client = Client {
            ws,
            welcome: Value::Null,
            protocol: None,
            pending: Default::default(),
        };
        client.read_welcome().await;
        client
    }

    async fn read_welcome(&mut self) {
        let welcome = self.recv().await;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        self.welcome = welcome;
    }

    /// The session id from the welcome frame.
    pub fn session(&self) -> &str {
        self.welcome["session"].as_str().unwrap()
    }

    /// The worker index from the welcome frame.
    pub fn worker(&self) -> u64 {
        self.welcome["worker"].as_u64().unwrap()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.unwrap();
    }

    /// Sends any frame.
    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text frame, parsed. Panics on close, timeout or non-JSON.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        match self.recv_message().await {
            Message::Text(t) => serde_json::from_str(&t).expect("JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends a request and returns the next frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Subscribes and checks the ack.
    pub async fn subscribe(&mut self, room: &str) {
        let r = self
            .request(json!({"op":"subscribe","room":room,"id":1}))
            .await;
        assert_eq!(r, json!({"op":"ack","id":1}));
    }

    /// Publishes and checks the ack; deliveries that arrive first are kept for [`Client::recv`].
    pub async fn publish(&mut self, room: &str, data: Value, scope: &str) {
        self.send(json!({"op":"publish","room":room,"data":data,"scope":scope,"id":77}))
            .await;
        loop {
            let r = match self.recv_message().await {
                Message::Text(t) => serde_json::from_str::<Value>(&t).expect("JSON"),
                other => panic!("expected a text frame, got {other:?}"),
            };
            if r["op"] == "message" {
                self.pending.push_back(r);
                continue;
            }
            assert_eq!(r, json!({"op":"ack","id":77}));
            return;
        }
    }

    /// Waits for the close frame and returns its code; `None` if the stream ended without one.
    pub async fn recv_close(&mut self) -> Option<u16> {
        loop {
            match timeout(STEP, self.ws.next())
                .await
                .expect("no close in time")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f: CloseFrame<'_>| u16::from(f.code))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Asserts nothing but control frames arrives for `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// A raw WebSocket client over TCP: writes arbitrary (even invalid) frames, reads server frames.
#[derive(Debug)]
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The `welcome` frame, on a `switchboard.v1` endpoint.
    pub welcome: Option<Value>,
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    /// The reserved bits (RSV1 is 4: a compressed message, with permessage-deflate).
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code, for a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawClient {
    /// Connects and completes the handshake; reads the welcome frame.
    pub async fn connect(hub: &impl Target) -> RawClient {
        Self::connect_with_rcvbuf(hub, None).await
    }

    /// Like [`RawClient::connect`] with a small receive buffer, to stall quickly when not reading.
    pub async fn connect_with_rcvbuf(hub: &impl Target, rcvbuf: Option<u32>) -> RawClient {
        match Self::try_connect(hub, rcvbuf).await {
            Ok(c) => c,
            Err(head) => panic!("handshake refused: {head}"),
        }
    }

    /// Connects to `path` (a relay or echo endpoint) and completes the handshake; reads nothing.
    pub async fn connect_path(hub: &impl Target, path: &str) -> RawClient {
        Self::connect_path_with_rcvbuf(hub, path, None).await
    }

    /// Like [`RawClient::connect_path`] with a small receive buffer.
    pub async fn connect_path_with_rcvbuf(
        hub: &impl Target,
        path: &str,
        rcvbuf: Option<u32>,
    ) -> RawClient {
        match Self::handshake(hub, rcvbuf, path).await {
            Ok(c) => c,
            Err(head) => panic!("handshake refused: {head}"),
        }
    }

    /// Connects; `Err` with the response head when the hub does not answer 101.
    pub async fn try_connect(hub: &impl Target, rcvbuf: Option<u32>) -> Result<RawClient, String> {
        let mut c = Self::handshake(hub, rcvbuf, "/ws").await?;
        let welcome = c.read_frame().await.expect("welcome");
        assert_eq!(welcome.opcode, 0x1);
        c.welcome = Some(serde_json::from_slice(&welcome.payload).unwrap());
        Ok(c)
    }

    /// Connects to `path` with `extra` request header lines; the client and the 101 response
    /// head, or `Err` with the head when the hub does not answer 101.
    pub async fn connect_with(
        hub: &impl Target,
        path: &str,
        extra: &[&str],
    ) -> Result<(RawClient, String), String> {
        Self::handshake_with(hub, None, path, extra).await
    }

    async fn handshake(
        hub: &impl Target,
        rcvbuf: Option<u32>,
        path: &str,
    ) -> Result<RawClient, String> {
        Self::handshake_with(hub, rcvbuf, path, &[])
            .await
            .map(|(c, _)| c)
    }

    async fn handshake_with(
        hub: &impl Target,
        rcvbuf: Option<u32>,
        path: &str,
        extra: &[&str],
    ) -> Result<(RawClient, String), String> {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = timeout(STEP, socket.connect(hub.addr()))
            .await
            .unwrap()
            .unwrap();
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
            welcome: None,
        };
        c.stream
            .write_all(&upgrade_request(hub, path, extra))
            .await
            .unwrap();
        let head = c.read_http_head().await;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        Ok((c, head))
    }

    async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(STEP, self.stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed during handshake");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The session id from the welcome frame.
    pub fn session(&self) -> &str {
        self.welcome.as_ref().unwrap()["session"].as_str().unwrap()
    }

    /// Writes bytes as they are.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Writes a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&frame(true, 0, 0x1, text.as_bytes()))
            .await
            .unwrap();
    }

    /// Reads one server frame; `None` when the connection ends first.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = match timeout(STEP, self.stream.read(&mut chunk))
                .await
                .expect("no frame in time")
            {
                Ok(n) => n,
                Err(_) => return None,
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next text frame as JSON, skipping pings.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            let f = self.read_frame().await.expect("connection ended");
            match f.opcode {
                0x1 => return serde_json::from_slice(&f.payload).unwrap(),
                0x9 | 0xA => continue,
                other => panic!("unexpected opcode {other}: {f:?}"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (`None`: no code, or the stream ended).
    pub async fn read_until_close(&mut self) -> Option<u16> {
        loop {
            let f = self.read_frame().await?;
            if f.opcode == 0x8 {
                return f.close_code();
            }
        }
    }

    /// True once the server has closed the TCP connection (EOF or reset) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// A client frame: masked with a fixed key. `rsv` is the three reserved bits (0..=7).
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(fin, rsv, opcode, payload.len() as u64);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The header of a masked client frame announcing `len` payload bytes (mask key included).
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xf)];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    out
}

fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let len7 = (buf[1] & 0x7f) as usize;
    let (len, mut idx) = match len7 {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n, 2),
    };
    if buf[1] & 0x80 != 0 {
        idx += 4; // servers do not mask, but parse it anyway
    }
    if buf.len() < idx + len {
        return None;
    }
    Some((
        RawFrame {
            fin,
            rsv: (buf[0] >> 4) & 7,
            opcode,
            payload: buf[idx..idx + len].to_vec(),
        },
        idx + len,
    ))
}

/// Most clients a test connects while waiting for actix to use both workers.
const MAX_SPREAD: usize = 40;

/// Connects at least `min` clients, and more (up to [`MAX_SPREAD`]) until both workers 0 and 1
/// serve at least one of them.
pub async fn spread_clients(hub: &impl Target, min: usize) -> Vec<Client> {
    let mut out = Vec::new();
    while out.len() < min || !covers_both_workers(&out) {
        assert!(
            out.len() < MAX_SPREAD,
            "{MAX_SPREAD} connections all landed on one worker: {:?}",
            workers_of(&out)
        );
        out.push(Client::connect(hub).await);
    }
    out
}

pub fn workers_of(clients: &[Client]) -> HashSet<u64> {
    clients.iter().map(Client::worker).collect()
}

pub fn covers_both_workers(clients: &[Client]) -> bool {
    let workers = workers_of(clients);
    workers.contains(&0) && workers.contains(&1)
}

/// Connects `n` clients.
pub async fn clients(hub: &impl Target, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Client::connect(hub).await);
    }
    out
}

/// The value of the first sample in a Prometheus exposition whose line starts with `needle`
/// (a metric name with its labels); panics with the exposition when there is none.
pub fn metric_value(exposition: &str, needle: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{needle} missing:\n{exposition}"))
}

/// `json!` re-exported for tests.
pub use serde_json::json as j;

impl TestHub {
    /// Sends an admin API request with the test token and reads the reply.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> HttpReply {
        self.admin_as(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// Sends an admin API request with `token` (none: no `Authorization` header).
    pub async fn admin_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> HttpReply {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.admin_addr
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.map(Value::to_string).unwrap_or_default();
        if !body.is_empty() || method == "POST" || method == "PUT" {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        http_exchange_at(self.admin_addr, request.as_bytes()).await
    }
}

/// Subscribes to `room` (request id 1), with `"recover":{"epoch":..,"offset":..}` when given, and
/// returns the answer.
pub async fn subscribe_recovering(
    c: &mut Client,
    room: &str,
    recover: Option<(&str, u64)>,
) -> Value {
    let mut frame = json!({"op":"subscribe","room":room,"id":1});
    if let Some((epoch, offset)) = recover {
        frame["recover"] = json!({"epoch":epoch,"offset":offset});
    }
    c.request(frame).await
}

/// Publishes `{"n":i}` to `room` for `i` from `first` on, `n` of them, pipelined (request id
/// `i`), and waits for every ack; returns the messages that arrived meanwhile (a publisher that
/// is a member gets its own) and the last ack.
pub async fn publish_numbered(
    c: &mut Client,
    room: &str,
    first: u64,
    n: u64,
) -> (Vec<Value>, Value) {
    for i in first..first + n {
        c.send(json!({"op":"publish","room":room,"data":{"n":i},"id":i}))
            .await;
    }
    let mut messages = Vec::new();
    let mut last = Value::Null;
    let mut i = first;
    while i < first + n {
        let frame = c.recv().await;
        if frame["op"] == "message" {
            messages.push(frame);
            continue;
        }
        assert_eq!(frame["op"], "ack", "{frame}");
        assert_eq!(frame["id"], i, "{frame}");
        last = frame;
        i += 1;
    }
    (messages, last)
}

/// The next `n` frames, which must be messages of `room` with data `{"n":..}`, as
/// `(offset, n)`; each within 10 s.
pub async fn recv_numbered(c: &mut Client, room: &str, n: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("a message in time");
        assert_eq!(m["op"], "message", "{m}");
        assert_eq!(m["room"], room, "{m}");
        got.push((
            m["offset"].as_u64().unwrap(),
            m["data"]["n"].as_u64().unwrap(),
        ));
    }
    got
}
