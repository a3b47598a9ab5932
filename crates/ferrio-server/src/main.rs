//! `ferrio`: the standalone Socket.IO v4 server (see the `ferrio_server` library).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Logging starts once the configuration (which names the log format) is loaded.
    ferrio_server::cli::run().await
}
