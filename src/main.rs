use std::process::ExitCode;

/// jemalloc rather than the system allocator: its background thread gives freed memory back
/// to the system within about a second (after a burst of large prompts, after a reload of a
/// large config), where glibc keeps it in per-thread arenas; the decay is set in
/// `.cargo/config.toml`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // Diagnostics go to stderr; stdout is the request log.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    tollgate::cli::run(tollgate::cli::Cli::parse()).await
}
