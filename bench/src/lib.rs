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
mod history;
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
    /// History rooms (Switchboard only): memory per retained message, and clients recovering
    /// what they missed all at once.
    History(HistoryArgs),
}

/// `history` options.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// WebSocket URL of a Switchboard whose rooms `--room-prefix*` keep at least `--messages`;
    /// several, comma-separated, for the nodes of a cluster (client i connects to URL i mod n,
    /// the publisher to the first).
    #[arg(long, value_name = "URL[,URL...]")]
    pub url: String,
    /// The server's process ids (one per URL, comma-separated), for their RSS and CPU time,
    /// summed.
    #[arg(long, value_name = "PID[,PID...]", value_parser = parse_pids)]
    pub server_pid: Option<Pids>,
    /// Clients recovering at once.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Messages each client recovers.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Payload bytes of every message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// History rooms to fill before the recovery, to measure memory per retained message.
    #[arg(long, default_value_t = 0)]
    pub fill_rooms: usize,
    /// Messages published to each filled room.
    #[arg(long, default_value_t = 0)]
    pub fill_messages: usize,
    /// What the rooms' names start with.
    #[arg(long, default_value = "history:")]
    pub room_prefix: String,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Runs the `history` scenario and prints its JSON.
fn history_main(args: &HistoryArgs) -> ExitCode {
    if let Err(e) = sys::ensure_open_files(args.clients + 16) {
        eprintln!("switchboard bench: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("bench")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard bench: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(history::run(args)) {
        Ok(result) => {
            println!("{result}");
            if result["recovery"]["failed"] == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            eprintln!("switchboard bench: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
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

/// Process ids, comma-separated (`--server-pid 4101,4102,4103`: one per `--url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pids(pub Vec<u32>);

/// Parses `--server-pid`: one process id, or several separated by commas.
fn parse_pids(s: &str) -> std::result::Result<Pids, String> {
    s.split(',')
        .map(|item| match item.trim() {
            "" => Err(format!(
                "`{s}` has an empty item: give PID, or PID,PID,... (one per --url)"
            )),
            item => item
                .parse::<u32>()
                .map_err(|_| format!("`{item}` is not a process id")),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Pids)
}

/// The items of a comma-separated `--url`, trimmed (one item: the URL as given).
fn split_urls(s: &str) -> Vec<&str> {
    s.split(',').map(str::trim).collect()
}

/// Options shared by every scenario.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// WebSocket URL of the server (for Socket.IO: its base URL, e.g. ws://127.0.0.1:3000);
    /// `fanout`: several, comma-separated, for the nodes of a cluster (subscriber i connects to
    /// URL i mod n).
    #[arg(long, value_name = "URL[,URL...]")]
    pub url: String,
    /// The server's protocol.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: Target,
    /// Server process id, to report its memory (RSS) per connection and (`fanout`) its CPU time
    /// per delivery; with several --url, one pid per URL, comma-separated, in the same order.
    #[arg(long, value_name = "PID[,PID...]", value_parser = parse_pids)]
    pub server_pid: Option<Pids>,
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
    /// Subscribers offer permessage-deflate and inflate what comes compressed (publishers do
    /// not offer it).
    #[arg(long)]
    pub deflate: bool,
}

impl Common {
    /// The `--server-pid` list (empty without one).
    pub(crate) fn server_pids(&self) -> &[u32] {
        self.server_pid.as_ref().map_or(&[], |p| &p.0)
    }

    /// The one `--server-pid` of a single-server run (`validate` refuses several elsewhere).
    pub(crate) fn server_pid(&self) -> Option<u32> {
        self.server_pids().first().copied()
    }
}

/// `fanout` options.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket URL the publishers connect to, e.g. the second node of a cluster (subscribers
    /// connect to --url); same rules as --url. Default: --url (its first URL).
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// Process id of the Redis (or other broker) between the nodes, to report its CPU time per
    /// published message.
    #[arg(long, value_name = "PID")]
    pub redis_pid: Option<u32>,
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
        Scenario::History(a) => return history_main(a),
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
    for &pid in common.server_pids() {
        if let Err(e) = sys::rss_kib(pid) {
            eprintln!("switchboard bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Scenario::Fanout(FanoutArgs {
        redis_pid: Some(pid),
        ..
    }) = &args.scenario
    {
        if let Err(e) = sys::cpu_ns("--redis-pid", *pid) {
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
        Scenario::History(a) => a.clients,
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

/// Where the connections go: `--url` (one or, for `fanout`, several), and for `fanout` the
/// publishers' `--publish-url`.
#[derive(Debug)]
pub(crate) struct Endpoints {
    /// `--url`, one per URL in the order given: where the subscribers (subscriber i: node
    /// i mod n) and every `connect` connection go. Never empty; `connect` has exactly one.
    pub(crate) nodes: Vec<net::Endpoint>,
    /// The URLs of `nodes` as given (trimmed).
    pub(crate) urls: Vec<String>,
    /// Where the publishers connect.
    pub(crate) publish: PublishTo,
}

impl Endpoints {
    /// The first (for `connect`: the only) `--url`.
    pub(crate) fn main(&self) -> &net::Endpoint {
        &self.nodes[0]
    }
}

/// Where `fanout`'s publishers connect.
#[derive(Debug)]
pub(crate) enum PublishTo {
    /// To node `k` of [`Endpoints::nodes`]: no `--publish-url`, or one naming that node's server
    /// and URL (however the host is spelled).
    Node(usize),
    /// To a server that is none of the nodes (`--publish-url`).
    Elsewhere(net::Endpoint),
}

/// Parses and checks `--url` (each of its URLs) and `--publish-url` (all loopback `ws://`
/// URLs).
fn endpoints(args: &BenchArgs) -> Result<Endpoints, Error> {
    let (common, publish_url) = match &args.scenario {
        Scenario::Fanout(a) => (&a.common, a.publish_url.as_deref()),
        Scenario::Connect(a) => (&a.common, None),
        Scenario::History(_) => return Err(Error("history has no endpoints of this kind".into())),
    };
    let urls = split_urls(&common.url);
    if urls.len() > 1 {
        if let Scenario::Connect(_) = args.scenario {
            return Err(Error(format!(
                "--url `{}`: connect takes one URL (several are for fanout)",
                common.url
            )));
        }
        if urls.iter().any(|u| u.is_empty()) {
            return Err(Error(format!(
                "--url `{}` has an empty item: give URL or URL,URL,...",
                common.url
            )));
        }
    }
    let mut nodes: Vec<net::Endpoint> = Vec::with_capacity(urls.len());
    for url in &urls {
        let mut ep = net::Endpoint::parse("--url", url, common.source_ips)?;
        ep.deflate = common.deflate;
        if let Some(k) = nodes.iter().position(|n| n.same_server(&ep)) {
            return Err(Error(format!(
                "--url lists the same server twice: `{}` and `{url}`",
                urls[k]
            )));
        }
        nodes.push(ep);
    }
    let publish = match publish_url {
        Some(url) => {
            let p = net::Endpoint::parse("--publish-url", url, common.source_ips)?;
            match nodes.iter().position(|n| n.same_server(&p)) {
                Some(k) => PublishTo::Node(k),
                None => PublishTo::Elsewhere(p),
            }
        }
        None => PublishTo::Node(0),
    };
    Ok(Endpoints {
        nodes,
        urls: urls.into_iter().map(str::to_owned).collect(),
        publish,
    })
}

/// Checks `--server-pid` against `--url`: none, or one per URL, each listed once.
fn check_pids(urls: usize, pids: &[u32]) -> Result<(), Error> {
    if !pids.is_empty() && pids.len() != urls {
        return Err(Error(if urls == 1 {
            format!(
                "--server-pid lists {} pids for one --url: give the pid of its server",
                pids.len()
            )
        } else {
            format!(
                "--server-pid lists {} pid(s) for {urls} URLs in --url: give one per URL, in the same order",
                pids.len()
            )
        }));
    }
    for (i, p) in pids.iter().enumerate() {
        if pids[..i].contains(p) {
            return Err(Error(format!("--server-pid lists pid {p} twice")));
        }
    }
    Ok(())
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
                Target::Switchboard => {
                    connect::run::<adapters::Switchboard>(a, eps.main().clone()).await
                }
                Target::Nats => connect::run::<adapters::Nats>(a, eps.main().clone()).await,
                Target::Socketio => connect::run::<adapters::SocketIo>(a, eps.main().clone()).await,
                Target::Ws => connect::run::<adapters::PlainWs>(a, eps.main().clone()).await,
            },
            Scenario::History(_) => Outcome::failed(Error("history runs on its own".into())),
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
        Scenario::History(_) => return Ok(()),
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
    check_pids(split_urls(&common.url).len(), common.server_pids())?;
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
        Scenario::History(_) => {}
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
        assert_eq!(eps.main().addr, "127.0.0.1:3000".parse().expect("addr"));
        assert!(matches!(eps.publish, PublishTo::Node(0)));
        // The same server and URL, spelled differently: nothing to report either.
        for same in ["ws://127.0.0.1:3000/ws", "ws://localhost:3000/ws/"] {
            let eps = fanout_endpoints(&["--publish-url", same]).expect("ok");
            assert!(matches!(eps.publish, PublishTo::Node(0)), "{same}");
        }
    }

    #[test]
    fn publish_url_to_another_node() {
        let eps = fanout_endpoints(&["--publish-url", "ws://127.0.0.1:3001/ws"]).expect("ok");
        assert_eq!(eps.main().addr, "127.0.0.1:3000".parse().expect("addr"));
        let PublishTo::Elsewhere(publish) = eps.publish else {
            panic!("a second endpoint");
        };
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

    fn fanout_at(urls: &str, extra: &[&str]) -> Result<Endpoints, Error> {
        let mut args = vec!["fanout", "--url", urls];
        args.extend_from_slice(extra);
        endpoints(&parse(&args).expect("valid arguments"))
    }

    const THREE: &str = "ws://127.0.0.1:3000/ws,ws://127.0.0.1:3001/ws,ws://127.0.0.1:3002/ws";

    #[test]
    fn several_urls() {
        let eps = fanout_at(THREE, &[]).expect("ok");
        let ports: Vec<u16> = eps.nodes.iter().map(|n| n.addr.port()).collect();
        assert_eq!(ports, [3000, 3001, 3002]);
        assert_eq!(eps.urls[2], "ws://127.0.0.1:3002/ws");
        assert_eq!(eps.main().addr.port(), 3000);
        // The publishers default to the first URL.
        assert!(matches!(eps.publish, PublishTo::Node(0)));
        // Spaces around the commas are tolerated; the URLs are kept trimmed.
        let eps = fanout_at(" ws://127.0.0.1:3000/ws , ws://localhost:3001/ws", &[]).expect("ok");
        assert_eq!(
            eps.urls,
            ["ws://127.0.0.1:3000/ws", "ws://localhost:3001/ws"]
        );
        assert_eq!(eps.nodes[1].url("", None), "ws://localhost:3001/ws");
    }

    #[test]
    fn publish_url_among_several() {
        // One of the nodes (however spelled): the publishers share that node.
        let eps = fanout_at(THREE, &["--publish-url", "ws://localhost:3001/ws/"]).expect("ok");
        assert!(matches!(eps.publish, PublishTo::Node(1)));
        // None of them: a server of its own.
        let eps = fanout_at(THREE, &["--publish-url", "ws://127.0.0.1:3009/ws"]).expect("ok");
        let PublishTo::Elsewhere(p) = eps.publish else {
            panic!("elsewhere");
        };
        assert_eq!(p.addr.port(), 3009);
    }

    #[test]
    fn every_url_is_checked() {
        for (urls, bad) in [
            ("ws://127.0.0.1:3000/ws,ws://10.0.0.1:3001/ws", "10.0.0.1"),
            ("ws://127.0.0.1:3000/ws,wss://127.0.0.1:3001/ws", "wss://"),
            ("ws://127.0.0.1:3000/ws,http://127.0.0.1:3001/ws", "http://"),
            ("ws://example.com/ws,ws://127.0.0.1:3001/ws", "example.com"),
        ] {
            let e = fanout_at(urls, &[]).expect_err(urls);
            assert!(e.0.starts_with("--url "), "{urls}: {e}");
            assert!(e.0.contains(bad), "{urls}: {e}");
        }
        for urls in [
            "ws://127.0.0.1:3000/ws,",
            ",ws://127.0.0.1:3000/ws",
            "ws://127.0.0.1:3000/ws,,ws://127.0.0.1:3001/ws",
        ] {
            let e = fanout_at(urls, &[]).expect_err(urls);
            assert!(e.0.contains("empty item"), "{urls}: {e}");
        }
        // The same server twice (spelled differently) would mix two nodes' figures.
        let e =
            fanout_at("ws://127.0.0.1:3000/ws,ws://localhost:3000/ws/", &[]).expect_err("twice");
        assert!(e.0.contains("twice"), "{e}");
        // --source-ips above 1 needs every URL IPv4.
        let e = fanout_at(
            "ws://127.0.0.1:3000/ws,ws://[::1]:3001",
            &["--source-ips", "2"],
        )
        .expect_err("IPv6");
        assert!(e.0.contains("IPv4"), "{e}");
    }

    #[test]
    fn connect_takes_one_url() {
        let args = parse(&[
            "connect",
            "--url",
            "ws://127.0.0.1:3000/ws,ws://127.0.0.1:3001/ws",
        ])
        .expect("valid arguments");
        let e = endpoints(&args).expect_err("two URLs");
        assert!(e.0.contains("connect takes one URL"), "{e}");
        let args = parse(&[
            "connect",
            "--url",
            "ws://127.0.0.1:3000/ws",
            "--server-pid",
            "7,8",
        ])
        .expect("valid arguments");
        assert!(validate(&args).is_err());
    }

    #[test]
    fn pid_lists() {
        assert_eq!(parse_pids("42"), Ok(Pids(vec![42])));
        assert_eq!(parse_pids("1,2, 3"), Ok(Pids(vec![1, 2, 3])));
        for bad in [
            "",
            "1,",
            ",1",
            "1,,2",
            "x",
            "1,x",
            "-1",
            "1;2",
            "99999999999",
        ] {
            assert!(parse_pids(bad).is_err(), "{bad:?}");
        }
        // Through clap: one pid as before, several separated by commas.
        let one = parse(&[
            "fanout",
            "--url",
            "ws://127.0.0.1:3000/ws",
            "--server-pid",
            "42",
        ])
        .expect("one pid");
        let Scenario::Fanout(a) = &one.scenario else {
            panic!("fanout")
        };
        assert_eq!(a.common.server_pids(), [42]);
        assert_eq!(a.common.server_pid(), Some(42));
        assert!(validate(&one).is_ok());
        let three = parse(&[
            "fanout",
            "--url",
            THREE,
            "--server-pid",
            "7,8,9",
            "--redis-pid",
            "6",
        ])
        .expect("three pids");
        let Scenario::Fanout(a) = &three.scenario else {
            panic!("fanout")
        };
        assert_eq!(a.common.server_pids(), [7, 8, 9]);
        assert_eq!(a.redis_pid, Some(6));
        assert!(validate(&three).is_ok());
        assert!(parse(&["fanout", "--url", THREE, "--server-pid", "7,,9"]).is_err());
        let none = parse(&["fanout", "--url", THREE]).expect("no pid");
        let Scenario::Fanout(a) = &none.scenario else {
            panic!("fanout")
        };
        assert!(a.common.server_pids().is_empty());
        assert!(validate(&none).is_ok());
    }

    #[test]
    fn one_pid_per_url() {
        assert!(check_pids(1, &[]).is_ok());
        assert!(check_pids(1, &[5]).is_ok());
        assert!(check_pids(3, &[]).is_ok());
        assert!(check_pids(3, &[5, 6, 7]).is_ok());
        for (urls, pids) in [
            (1, &[5, 6][..]),
            (3, &[5][..]),
            (3, &[5, 6][..]),
            (2, &[5, 6, 7][..]),
        ] {
            let e = check_pids(urls, pids).expect_err("count");
            assert!(e.0.starts_with("--server-pid lists "), "{e}");
        }
        let e = check_pids(3, &[5, 6, 5]).expect_err("twice");
        assert!(e.0.contains("pid 5 twice"), "{e}");
        // validate applies it.
        let args = parse(&["fanout", "--url", THREE, "--server-pid", "7,8"]).expect("parses");
        assert!(validate(&args).is_err());
    }

    #[test]
    fn redis_pid_is_a_fanout_option() {
        assert!(parse(&[
            "connect",
            "--url",
            "ws://127.0.0.1:3000/ws",
            "--redis-pid",
            "6"
        ])
        .is_err());
    }
}
