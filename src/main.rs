//! The `chainctl` binary: all the work happens in the library; errors reach the user as
//! plain sentences naming the file, field, port or flag and the fix.

/// mimalloc for every role (supervisor, consensus node, execution engine): glibc's
/// allocator cost ~8 % of the machine under transaction load; see docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chainctl::cli::main()
}
