//! The `block-controller` binary: flags, logging and telemetry, then [`block_controller::run::run`].

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let telemetry = block_controller::telemetry::init(block_controller::telemetry::Options {
        identity: &cfg.identity,
        metrics_addr: cfg.metrics_addr,
        runtime: runtime.handle().clone(),
    })?;
    let result = runtime.block_on(block_controller::run::run(cfg));
    // The runtime's workers still run: the last exports go out through them.
    telemetry.shutdown();
    result
}
