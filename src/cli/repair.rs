use clap::Args;

use super::{fail_status, print_reports, ConfigArg, Status};
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
    pub async fn exec(self, docker_host: Option<&str>) -> Status {
        let medic = match self.config.medic(docker_host).await {
            Ok(m) => m,
            Err(e) => return fail_status(&e.to_string()),
        };
        let mode = if self.dry_run { Mode::DryRun } else { Mode::Repair };
        match medic.run(&self.container, mode).await {
            Ok(outcome) => print_reports(&outcome.reports, self.json),
            Err(e) => fail_status(&e.to_string()),
        }
    }
}
