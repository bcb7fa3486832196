//! The `chainctl` binary: clap definitions and one thin handler per subcommand; the work
//! happens in the workspace's crates. Errors reach the user as plain sentences naming
//! the file, field, port or flag and the fix.

mod cli;
mod compose_init;
mod doctor;
mod systemd;

fn main() -> std::process::ExitCode {
    cli::main()
}
