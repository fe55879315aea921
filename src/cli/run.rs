use clap::Args;

use super::{load_config, ConfigArg, Status};
use crate::daemon::Daemon;
use crate::error::MedicError;

#[derive(Debug, Args)]
pub struct RunCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Report what would be repaired without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Override `listen` (address:port for /metrics, /healthz, /readyz).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

impl RunCmd {
    pub async fn exec(self, docker_host: Option<&str>) -> Result<Status, MedicError> {
        let load = || {
            let mut c = load_config(self.config.config.as_deref(), docker_host)?;
            if let Some(l) = self.listen {
                c.listen = l;
            }
            Ok::<_, MedicError>(c)
        };
        let config = load()?;
        let Some(mut daemon) = Daemon::start(config.clone(), self.dry_run, config.listen).await? else {
            return Ok(Status::Healthy);
        };
        daemon.run(load).await;
        daemon.shutdown().await;
        Ok(Status::Healthy)
    }
}
