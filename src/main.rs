//! The `chainctl` binary: all the work happens in the library; errors reach the user as
//! plain sentences naming the file, field, port or flag and the fix.

fn main() -> std::process::ExitCode {
    chainctl::cli::main()
}
