//! The `switchboard` command line, built inside the test crate so that its integration tests can
//! start the real server process (`CARGO_BIN_EXE_switchboard-under-test`) without a separate build.

fn main() -> std::process::ExitCode {
    switchboard_hub::cli::main()
}
