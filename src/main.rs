//! The `block-controller` binary: flags, logging, then [`block_controller::run::run`].

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    // `block-controller crd` prints the CustomResourceDefinition generated from the Rust types.
    if std::env::args().nth(1).as_deref() == Some("crd") {
        print!(
            "{}",
            block_controller::api::crd_yaml().context("rendering the CRD")?
        );
        return Ok(());
    }
    let flags = block_controller::config::Flags::parse();
    let cfg = block_controller::config::Config::from_flags(flags)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(block_controller::run::run(cfg))
}
