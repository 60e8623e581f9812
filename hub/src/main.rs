//! The `switchboard` binary. Everything lives in the library; see `switchboard_hub::cli`.

fn main() -> std::process::ExitCode {
    switchboard_hub::cli::main()
}
