//! The load generator behind `switchboard bench`.
//!
//! Real WebSocket clients (tokio-tungstenite) that drive a hub, Switchboard or one of its peers,
//! and measure what it delivers: throughput, latency, loss, duplication, memory per connection.

use std::process::ExitCode;

/// `switchboard bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// N subscribers in R rooms, P publishers, M messages of S bytes: throughput and latency.
    Fanout(FanoutArgs),
    /// N idle connections: handshakes per second and server memory per connection.
    Connect(ConnectArgs),
}

/// Which server the clients talk to, and so which wire protocol they speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Switchboard, protocol `switchboard.v1`.
    Switchboard,
    /// nats-server's WebSocket listener (NATS text protocol in WebSocket frames).
    Nats,
    /// Socket.IO 4 (Engine.IO v4, websocket transport only) with `join`/`publish` events.
    Socketio,
    /// A plain broadcast server: every message a client sends goes to every other client.
    Ws,
}

/// Options shared by every scenario.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// WebSocket URL of the server (for Socket.IO: its base URL, e.g. ws://127.0.0.1:3000).
    #[arg(long)]
    pub url: String,
    /// The server's protocol.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,
    /// Server process id, to report its memory (RSS) per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Spread client sockets over this many source addresses 127.0.0.1, 127.0.0.2, ...
    #[arg(long, default_value_t = 1)]
    pub source_ips: u16,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

/// `fanout` options.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Rooms; subscribers are spread evenly over them.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers; each publishes to every room in turn.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per second per publisher; 0 = as fast as the server takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

/// `connect` options.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold the connections open after the last one is up.
    #[arg(long, default_value_t = 1.0)]
    pub hold: f64,
}

/// Runs `switchboard bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    let _ = args;
    eprintln!("switchboard bench: not built yet");
    ExitCode::from(1)
}
