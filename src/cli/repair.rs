use clap::Args;

use super::{print_reports, ConfigArg, Status};
use crate::error::MedicError;
use crate::medic::Mode;

#[derive(Debug, Args)]
pub struct RepairCmd {
    /// Container id or name.
    #[arg(long = "container", value_name = "ID|NAME")]
    pub container: String,
    /// Show what would be repaired without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print an array of endpoint reports as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl RepairCmd {
    pub async fn exec(self, docker_host: Option<&str>) -> Result<Status, MedicError> {
        let medic = self.config.medic(docker_host).await?;
        let mode = if self.dry_run { Mode::DryRun } else { Mode::Repair };
        let outcome = medic.run_with_deadline(&self.container, mode).await?;
        Ok(print_reports(&outcome.reports, self.json))
    }
}
