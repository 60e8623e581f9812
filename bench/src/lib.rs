//! The load generator behind `switchboard bench`.
//!
//! Real WebSocket clients (tokio-tungstenite) that drive a hub, Switchboard or one of its peers,
//! and measure what it delivers: throughput, latency, loss, duplication, memory per connection.
//!
//! Layout: [`fanout`] and [`connect`] are the scenarios; [`adapters`] speak each target's
//! protocol; [`net`] opens the sockets (loopback only, spread over source addresses) and does
//! the handshakes; [`wire`] is the subscribers' own frame reader, cheaper than tungstenite's;
//! [`payload`] stamps and recognises messages; [`stats`] holds the latency histogram and the
//! loss/duplicate accounting; [`report`] prints the result; [`control`], [`progress`] and
//! [`sys`] are the plumbing.
//!
//! Exit codes: 0 when the run completed (losses included: they are reported), 1 when it could
//! not (a connection failed, a publisher failed, the run timed out), 64 for invalid options.

mod adapters;
mod connect;
mod control;
mod error;
mod fanout;
mod net;
mod payload;
mod progress;
mod report;
mod stats;
mod sys;
mod wire;

use std::{process::ExitCode, time::Duration};

use error::Error;
use report::Report;

/// Exit code for invalid options (sysexits `EX_USAGE`, as `switchboard serve` uses).
const EXIT_USAGE: u8 = 64;
/// Exit code for a run that could not complete.
const EXIT_FAILURE: u8 = 1;

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

/// The `scope` of Switchboard publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishScope {
    /// Members on the publisher's own worker thread only.
    Worker,
    /// Every member on the node.
    Node,
    /// Every member on every node.
    Cluster,
}

impl PublishScope {
    fn name(self) -> &'static str {
        match self {
            PublishScope::Worker => "worker",
            PublishScope::Node => "node",
            PublishScope::Cluster => "cluster",
        }
    }
}

/// Which rooms each publisher publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublisherRooms {
    /// Every publisher publishes each message to every room in turn.
    All,
    /// Publisher p publishes only to room p mod R: chat-shaped load, where each room has its own
    /// publishers (500 rooms, 500 publishers: one publisher per room).
    Own,
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
    /// Tokio worker threads of the bench (pin the bench with `taskset` to match).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// WebSocket handshakes in flight at once, so the server's accept backlog is not overrun.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// `fanout` options.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket URL the publishers connect to, e.g. the second node of a cluster (subscribers
    /// connect to --url); same rules as --url. Default: --url.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Rooms; subscribers are spread evenly over them.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishers; each publishes to every room in turn (or to its own, `--publisher-rooms own`).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per publisher to each of its rooms (each publisher sends messages × its rooms
    /// publishes).
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Payload size in bytes (the `data` a publisher sends, padded; at least ~30 bytes).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publishes per second per publisher, all rooms together; 0 = as fast as the server takes
    /// them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Switchboard only: the `scope` of each publish.
    #[arg(long, value_enum, default_value = "node")]
    pub scope: PublishScope,
    /// Which rooms each publisher publishes to.
    #[arg(long, value_enum, default_value = "all")]
    pub publisher_rooms: PublisherRooms,
    /// Switchboard only: publishes a publisher may have sent but not yet seen acked; 0: publish
    /// fire and forget (no `id`, no ack, no window), as the peers' publishers do.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Seconds without any delivery, once the publishers are done, after which the missing
    /// messages are counted as lost.
    #[arg(long, default_value_t = 2.0)]
    pub drain_idle: f64,
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

/// What a scenario produced: a report (if it got far enough) and why it failed (if it did).
#[derive(Debug)]
pub(crate) struct Outcome {
    report: Option<Report>,
    failure: Option<Error>,
}

impl Outcome {
    fn failed(e: Error) -> Self {
        Self {
            report: None,
            failure: Some(e),
        }
    }
}

/// Runs `switchboard bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    let common = match &args.scenario {
        Scenario::Fanout(a) => &a.common,
        Scenario::Connect(a) => &a.common,
    };
    if let Err(e) = validate(&args) {
        eprintln!("switchboard bench: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let eps = match endpoints(&args) {
        Ok(eps) => eps,
        Err(e) => {
            eprintln!("switchboard bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(pid) = common.server_pid {
        if let Err(e) = sys::rss_kib(pid) {
            eprintln!("switchboard bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let connections = match &args.scenario {
        Scenario::Fanout(a) => {
            // A plain ws publisher opens a connection per room it publishes to.
            let per_publisher =
                if a.common.target == Target::Ws && a.publisher_rooms == PublisherRooms::All {
                    a.rooms
                } else {
                    1
                };
            a.subscribers
                .saturating_add(a.publishers.saturating_mul(per_publisher))
        }
        Scenario::Connect(a) => a.connections,
    };
    if let Err(e) = sys::ensure_open_files(connections) {
        eprintln!("switchboard bench: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let outcome = run(&args, eps, common.threads);
    let json = common.json;
    if let Some(report) = &outcome.report {
        if json {
            println!("{}", report.json());
        } else {
            print!("{}", report.table());
        }
    }
    match outcome.failure {
        Some(e) => {
            eprintln!("switchboard bench: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
        None => ExitCode::SUCCESS,
    }
}

/// Where the connections go: `--url`, and for `fanout` the publishers' `--publish-url`.
#[derive(Debug)]
pub(crate) struct Endpoints {
    /// `--url`: every connection but `fanout`'s publishers.
    pub(crate) main: net::Endpoint,
    /// `--publish-url`, when given and not the same server and URL as `--url`.
    pub(crate) publish: Option<net::Endpoint>,
}

/// Parses and checks `--url` and `--publish-url` (both loopback `ws://` URLs).
fn endpoints(args: &BenchArgs) -> Result<Endpoints, Error> {
    let (common, publish_url) = match &args.scenario {
        Scenario::Fanout(a) => (&a.common, a.publish_url.as_deref()),
        Scenario::Connect(a) => (&a.common, None),
    };
    let main = net::Endpoint::parse("--url", &common.url, common.source_ips)?;
    let publish = match publish_url {
        Some(url) => Some(net::Endpoint::parse(
            "--publish-url",
            url,
            common.source_ips,
        )?)
        .filter(|p| !p.same_server(&main)),
        None => None,
    };
    Ok(Endpoints { main, publish })
}

/// Runs the scenario on a runtime of `threads` workers; merges the latencies once the workers
/// have stopped and handed their histograms over.
fn run(args: &BenchArgs, eps: Endpoints, threads: usize) -> Outcome {
    // Start the clock before any payload is stamped.
    let _ = payload::epoch();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bench")
        .enable_all()
        .on_thread_stop(stats::flush_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Outcome::failed(Error(format!("cannot start the runtime: {e}"))),
    };
    let mut outcome = rt.block_on(async {
        match &args.scenario {
            Scenario::Fanout(a) => match a.common.target {
                Target::Switchboard => fanout::run::<adapters::Switchboard>(a, eps).await,
                Target::Nats => fanout::run::<adapters::Nats>(a, eps).await,
                Target::Socketio => fanout::run::<adapters::SocketIo>(a, eps).await,
                Target::Ws => fanout::run::<adapters::PlainWs>(a, eps).await,
            },
            Scenario::Connect(a) => match a.common.target {
                Target::Switchboard => connect::run::<adapters::Switchboard>(a, eps.main).await,
                Target::Nats => connect::run::<adapters::Nats>(a, eps.main).await,
                Target::Socketio => connect::run::<adapters::SocketIo>(a, eps.main).await,
                Target::Ws => connect::run::<adapters::PlainWs>(a, eps.main).await,
            },
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    let latencies = stats::take_latencies();
    if let (Scenario::Fanout(_), Some(report)) = (&args.scenario, &mut outcome.report) {
        report.latency_us = stats::percentiles(&latencies);
    }
    outcome
}

/// Checks the options that clap's types do not.
fn validate(args: &BenchArgs) -> Result<(), Error> {
    let common = match &args.scenario {
        Scenario::Fanout(a) => &a.common,
        Scenario::Connect(a) => &a.common,
    };
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(Error(format!(
                "{name} must be a positive number of seconds"
            )))
        }
    };
    positive("--timeout", common.timeout)?;
    if common.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if common.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    match &args.scenario {
        Scenario::Fanout(a) => {
            for (name, v) in [
                ("--subscribers", a.subscribers),
                ("--rooms", a.rooms),
                ("--publishers", a.publishers),
            ] {
                if v == 0 {
                    return Err(Error(format!("{name} must be at least 1")));
                }
            }
            if a.messages == 0 {
                return Err("--messages must be at least 1".into());
            }
            if u32::try_from(a.publishers).is_err() {
                return Err("--publishers is too large".into());
            }
            if !(a.rate.is_finite() && a.rate >= 0.0) {
                return Err("--rate must be 0 (unlimited) or a positive number".into());
            }
            positive("--drain-idle", a.drain_idle)?;
        }
        Scenario::Connect(a) => {
            if a.connections == 0 {
                return Err("--connections must be at least 1".into());
            }
            if !(a.hold.is_finite() && a.hold >= 0.0) {
                return Err("--hold must be 0 or a positive number of seconds".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    fn fanout_endpoints(extra: &[&str]) -> Result<Endpoints, Error> {
        let mut args = vec!["fanout", "--url", "ws://127.0.0.1:3000/ws"];
        args.extend_from_slice(extra);
        endpoints(&parse(&args).expect("valid arguments"))
    }

    #[test]
    fn publish_url_defaults_to_url() {
        let eps = fanout_endpoints(&[]).expect("ok");
        assert_eq!(eps.main.addr, "127.0.0.1:3000".parse().expect("addr"));
        assert!(eps.publish.is_none());
        // The same server and URL, spelled differently: nothing to report either.
        for same in ["ws://127.0.0.1:3000/ws", "ws://localhost:3000/ws/"] {
            let eps = fanout_endpoints(&["--publish-url", same]).expect("ok");
            assert!(eps.publish.is_none(), "{same}");
        }
    }

    #[test]
    fn publish_url_to_another_node() {
        let eps = fanout_endpoints(&["--publish-url", "ws://127.0.0.1:3001/ws"]).expect("ok");
        assert_eq!(eps.main.addr, "127.0.0.1:3000".parse().expect("addr"));
        let publish = eps.publish.expect("a second endpoint");
        assert_eq!(publish.addr, "127.0.0.1:3001".parse().expect("addr"));
        assert_eq!(publish.url("", None), "ws://127.0.0.1:3001/ws");
    }

    #[test]
    fn publish_url_is_checked_like_url() {
        for url in [
            "ws://10.0.0.1:3001/ws",
            "ws://example.com/ws",
            "wss://127.0.0.1:3001/ws",
            "http://127.0.0.1:3001/ws",
            "127.0.0.1:3001",
        ] {
            let e = fanout_endpoints(&["--publish-url", url]).expect_err(url);
            assert!(e.0.starts_with("--publish-url "), "{url}: {e}");
        }
        // --source-ips applies to the publishers too, so both URLs must be IPv4.
        let e = fanout_endpoints(&["--publish-url", "ws://[::1]:3001", "--source-ips", "2"])
            .expect_err("IPv6 with --source-ips 2");
        assert!(e.0.contains("IPv4"), "{e}");
        // --url is still checked, and first.
        let args = parse(&[
            "fanout",
            "--url",
            "ws://10.0.0.1/ws",
            "--publish-url",
            "ws://127.0.0.1:3001/ws",
        ])
        .expect("valid arguments");
        let e = endpoints(&args).expect_err("refused");
        assert!(e.0.starts_with("--url "), "{e}");
    }

    #[test]
    fn publish_url_is_a_fanout_option() {
        let connect = ["connect", "--url", "ws://127.0.0.1:3000/ws"];
        assert!(parse(&connect).is_ok());
        let mut with = connect.to_vec();
        with.extend(["--publish-url", "ws://127.0.0.1:3001/ws"]);
        assert!(parse(&with).is_err());
    }
}
