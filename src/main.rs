//! The `block-controller` binary.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("crd") => {
            print!(
                "{}",
                block_controller::api::crd_yaml().context("rendering the CRD")?
            );
            Ok(())
        }
        _ => anyhow::bail!("usage: block-controller crd"),
    }
}
