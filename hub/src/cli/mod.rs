//! The hub's commands (`switchboard serve`, `switchboard health`): configuration, logging,
//! listeners and the hub until a signal; the health probe of a running hub. The binary (`main.rs`) adds the load generator's `bench` beside them; [`main`] is
//! the command line without it. `switchboard sub` and `switchboard pub` are the command-line
//! client (`client.rs`: the session and reconnection they share).

mod client;
mod health;
mod http;
mod publish;
mod sub;

pub use publish::PubArgs;
pub use sub::SubArgs;

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use crate::config::{Config, LogFormat, Overrides};

/// Exit code for a configuration error (sysexits `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure to start or to run.
const EXIT_FAILURE: u8 = 1;

/// The hub's own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Run the hub.
    Serve(ServeArgs),
    /// Ask a running hub whether it is ready (`/readyz` of its admin listener); exit 0 if so.
    /// Reads the same configuration as `serve`, so it finds the admin listener the hub uses.
    Health(HealthArgs),
    /// Subscribe to rooms of a running hub and print their messages, one JSON line each.
    #[command(after_help = sub::HELP)]
    Sub(SubArgs),
    /// Publish a message, or one per line of stdin, to a room of a running hub.
    #[command(name = "pub", after_help = publish::HELP)]
    Pub(PubArgs),
}

/// Switchboard: a realtime pub/sub hub over WebSocket.
#[derive(Debug, clap::Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: HubCommand,
}

/// Runs the command line of the hub's own subcommands; returns the process's exit code.
pub fn main() -> ExitCode {
    run(<Cli as clap::Parser>::parse().command)
}

/// Runs one of the hub's subcommands; returns the process's exit code.
pub fn run(command: HubCommand) -> ExitCode {
    match command {
        HubCommand::Serve(args) => serve(args),
        HubCommand::Health(args) => health(args),
        HubCommand::Sub(args) => sub::main(args),
        HubCommand::Pub(args) => publish::main(args),
    }
}

/// `switchboard serve`: run the hub.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; without it the built-in defaults apply.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// WebSocket listen address (key `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Admin API listen address (key `admin_listen`).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Worker threads (key `workers`).
    #[arg(long)]
    workers: Option<usize>,
    /// This node's id (key `node_id`).
    #[arg(long)]
    node_id: Option<String>,
    /// Redis URL(s) of the cluster, comma-separated (key `redis_url`); unset: standalone.
    #[arg(long)]
    redis_url: Option<String>,
    /// Log format: text or json (key `log_format`).
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or debug (key `log_level`).
    #[arg(long)]
    log_level: Option<String>,
}

/// `switchboard health`: probe a running hub.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// TOML config file of the hub to check (the one `serve` was given).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Admin listen address of the hub to check (key `admin_listen`); a wildcard address is
    /// reached on loopback.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Check liveness (`/healthz`: the process answers) instead of readiness (`/readyz`: it
    /// accepts sessions and, in cluster mode, its Redis link works).
    #[arg(long)]
    live: bool,
    /// Seconds to wait for the connection and for the answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

fn health(args: HealthArgs) -> ExitCode {
    let overrides = Overrides {
        admin_listen: args.admin_listen,
        ..Overrides::default()
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let timeout = match Duration::try_from_secs_f64(args.timeout) {
        Ok(t) if !t.is_zero() => t,
        _ => {
            eprintln!("switchboard: --timeout must be a positive number of seconds");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let addr = health::reachable(config.admin_listen);
    let path = if args.live { "/healthz" } else { "/readyz" };
    match health::get(addr, path, timeout) {
        Ok(answer) if answer.status == 200 => {
            println!("{}", answer.body);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            println!("{} {}", answer.status, answer.body);
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            println!("http://{addr}{path}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        workers: args.workers,
        node_id: args.node_id,
        redis_url: args.redis_url,
        log_format: args.log_format,
        log_level: args.log_level,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(&config);
    raise_open_files_limit(config.max_connections);
    let listener = match crate::bind_listener(config.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.listen, error = %e, "cannot listen");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let admin = match crate::bind_listener(config.admin_listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.admin_listen, error = %e, "cannot listen (admin)");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let system = actix_rt::System::new();
    match system.block_on(crate::serve_with_admin(
        config,
        listener,
        admin,
        shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hub failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Every session holds a socket: raise the soft open-files limit to the hard one, and say so when
/// even that is below `max_connections` (sessions beyond it would be refused at accept).
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // A few descriptors go to listeners, the event loop and logs.
            if (limit as usize) < max_connections.saturating_add(64) {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "the open-files limit caps sessions below max_connections"
                );
            } else {
                tracing::debug!(open_files = limit, "open-files limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGTERM or SIGINT: the only place the hub listens for signals.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
