use clap::Args;

use super::{print_reports, ConfigArg, Status};
use crate::error::MedicError;
use crate::medic::Mode;

#[derive(Debug, Args)]
pub struct CheckCmd {
    /// Container id or name (repeatable); default: every calico container on the host.
    #[arg(long = "container", value_name = "ID|NAME")]
    pub containers: Vec<String>,
    /// Print an array of endpoint reports as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl CheckCmd {
    pub async fn exec(self, docker_host: Option<&str>) -> Result<Status, MedicError> {
        let medic = self.config.medic(docker_host).await?;
        let all = self.containers.is_empty();
        let targets = if all { medic.docker.running_container_ids().await? } else { self.containers.clone() };
        let mut reports = Vec::new();
        let mut failed = false;
        for target in &targets {
            match medic.run_with_deadline(target, Mode::Check).await {
                Ok(outcome) => reports.extend(outcome.reports),
                // Scanning the whole host: non-calico and vanished containers are not ours.
                Err(e)
                    if all
                        && (e.is_not_ours()
                            || matches!(e, MedicError::ContainerNotFound(_) | MedicError::NotRunning(_))) => {}
                Err(e) => {
                    eprintln!("calico-medic: {e}");
                    failed = true;
                }
            }
        }
        let status = print_reports(&reports, self.json);
        Ok(if failed { Status::CouldNotCheck } else { status })
    }
}
