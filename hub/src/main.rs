//! The `switchboard` binary: the command line. Everything else lives in the library; the load
//! generator (`switchboard bench`, feature `bench`) is the one part only the binary carries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard_hub::cli::HubCommand;

/// Switchboard: a realtime pub/sub hub over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Hub(HubCommand),
    /// Load-test a hub (Switchboard or a peer) with real WebSocket clients.
    #[cfg(feature = "bench")]
    Bench(switchboard_bench::BenchArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Hub(command) => switchboard_hub::cli::run(command),
        #[cfg(feature = "bench")]
        Command::Bench(args) => switchboard_bench::main(args),
    }
}
