//! The load generator (placeholder; filled in by the loadtest issue).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("loadtest is not implemented yet: see the loadtest issue")
}
