//! `meta-nca bench`: time meta-epochs of standard configurations.

use anyhow::Result;

/// Arguments of `meta-nca bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meta-nca bench`.
pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("not built yet")
}
