//! The `shoal-producer` binary: parses arguments and hands over to [`shoal_producer::cli`].

use clap::Parser;
use shoal_producer::cli::{self, Cli, Io};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    {
        use shoal_common::logging::{env_filter, wire_cap};
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::fmt()
            .with_env_filter(env_filter("warn"))
            .with_writer(std::io::stderr)
            .finish()
            .with(wire_cap())
            .init();
    }
    let sdk = shoal_common::aws::load_sdk_config().await;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let progress = !cli.json && cli::stderr_is_terminal();
    let code = cli::run(
        cli,
        &sdk,
        &mut Io {
            out: &mut out,
            err: &mut err,
            progress,
        },
    )
    .await;
    std::process::exit(code);
}
