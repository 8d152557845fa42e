//! PLACEHOLDER: replaced by the issue that builds this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("this subcommand is not built yet")
}
