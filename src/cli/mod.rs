//! Command line: global flags, logging, and one struct per subcommand with `exec()`.

mod check;
mod escalations;
mod generate;
mod ipam;
mod ipam_job;
mod repair;
mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, SectionCheck};
use crate::daemon::build_medic;
use crate::error::MedicError;
use crate::medic::Medic;
use crate::report::{render_table, EndpointReport};

pub use check::{CheckCmd, Filter};
pub use escalations::EscalationsCmd;
pub use generate::{documented_command, GenerateCmd};
pub use ipam::IpamCmd;
pub use repair::RepairCmd;
pub use run::RunCmd;

/// Exit codes, like node-problem-detector plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Healthy = 0,
    Faulty = 1,
    CouldNotCheck = 2,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "calico-medic", version, about = "Keeps Calico container networking healthy on Docker/Mesos hosts")]
pub struct Cli {
    /// Docker endpoint (unix:///var/run/docker.sock, tcp://host:port); default: $DOCKER_HOST, else the local socket.
    #[arg(long, global = true)]
    pub docker_host: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch Docker, check and repair every calico container.
    Run(RunCmd),
    /// Read-only diagnosis of named containers, or of every calico container.
    ///
    /// Exit status: 0 every endpoint shown is healthy, 1 faults remain in an endpoint shown, 2 could not
    /// check (Docker unreachable, unknown container, not on a calico network, host or container:<id>
    /// network mode, bad config or flags; one line on stderr). --unhealthy and --app choose what is shown;
    /// the status is about those endpoints.
    Check(CheckCmd),
    /// Repair one container now, then re-check it.
    ///
    /// Exit status: 0 healthy after the repair, 1 faults remain, 2 could not check (as for check).
    Repair(RepairCmd),
    /// Show the kills asked of Marathon (the state file) and the hourly budget they use; --reset forgets them.
    ///
    /// Exit status: 0 shown (or reset), 2 the state file cannot be read (the daemon then asks for no kill for
    /// an hour) or bad config.
    Escalations(EscalationsCmd),
    /// Calico's IPAM across the cluster: leaked and doubly used addresses, and the release of leaks with proof.
    #[command(subcommand)]
    Ipam(IpamCmd),
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(GenerateCmd),
    /// OCI hooks run by runc through `calico-medic runtime` (not for interactive use).
    #[command(hide = true, subcommand)]
    Hook(HookCmd),
}

#[derive(Debug, Subcommand)]
pub enum HookCmd {
    /// The prestart hook: reads the OCI state on stdin; always exits 0.
    Prestart {
        /// Config file (TOML); default /etc/calico-medic/config.toml if present.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Append what the hook saw and did to this file, one JSON line per container (tests).
        #[arg(long)]
        trace: Option<PathBuf>,
    },
}

impl Cli {
    pub fn exec(self) -> ExitCode {
        if let Command::Generate(cmd) = &self.command {
            return cmd.exec();
        }
        if let Command::Hook(HookCmd::Prestart { config, trace }) = self.command {
            let config = load_config(config.as_deref(), None).map_err(|e| e.to_string());
            return crate::hook::run_hook(config, trace);
        }
        init_logging(self.log_format, self.verbose);
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return fail(&format!("cannot start runtime: {e}")),
        };
        let result = runtime.block_on(async {
            match self.command {
                Command::Run(cmd) => cmd.exec(self.docker_host.as_deref()).await,
                Command::Check(cmd) => cmd.exec(self.docker_host.as_deref()).await,
                Command::Repair(cmd) => cmd.exec(self.docker_host.as_deref()).await,
                Command::Escalations(cmd) => cmd.exec(),
                Command::Ipam(cmd) => cmd.exec().await,
                Command::Generate(_) | Command::Hook(_) => unreachable!("handled before the runtime starts"),
            }
        });
        // Do not wait for stray blocking tasks (e.g. a hung Docker request) on exit.
        runtime.shutdown_timeout(std::time::Duration::from_millis(100));
        exit_code(result)
    }
}

/// The one place where results become exit codes: an error is printed on stderr
/// and means "could not check" (2).
pub fn exit_code(result: Result<Status, MedicError>) -> ExitCode {
    match result {
        Ok(status) => status.into(),
        Err(e) => fail(&e.to_string()),
    }
}

/// Logs go to stderr; no timestamps or colours unless it is a terminal (journald
/// adds its own), JSON for log shippers.
fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::new(log_directives(std::env::var("CALICO_MEDIC_LOG").ok(), default));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match (format, tty) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.with_ansi(true).try_init(),
        (LogFormat::Text, false) => builder.with_ansi(false).without_time().try_init(),
    };
}

/// The log filter: `CALICO_MEDIC_LOG` or the default. bollard logs every response
/// body at debug — `docker inspect` carries each task's environment, apps' secrets
/// included — so bollard stays at info unless the operator names it explicitly.
fn log_directives(env: Option<String>, default: &str) -> String {
    match env.filter(|s| !s.trim().is_empty()) {
        Some(s) if s.contains("bollard") => s,
        Some(s) => format!("{s},bollard=info"),
        // netlink-proto warns once per message of a dump nobody reads any more.
        None => format!("calico_medic={default},netlink_proto=error,warn"),
    }
}

pub(crate) fn fail(reason: &str) -> ExitCode {
    eprintln!("calico-medic: {reason}");
    ExitCode::from(Status::CouldNotCheck as u8)
}

/// The sections that other modules own, each checked by its owner whenever the
/// config is loaded (daemon start, SIGHUP reload, `check`, `repair`), in this order.
pub const SECTIONS: [SectionCheck; 4] = [
    crate::datastore::settings::check_section,
    crate::ipam::settings::check_section,
    crate::prestart::settings::check_section,
    crate::marathon::settings::check_section,
];

/// Loads config (explicit path or the default location), checks every section and
/// applies flags.
pub(crate) fn load_config(path: Option<&Path>, docker_host: Option<&str>) -> Result<Config, MedicError> {
    let mut config = Config::load_checked(path, &SECTIONS)?;
    if let Some(h) = docker_host {
        config.docker_host = Some(h.to_string());
    }
    Ok(config)
}

/// Prints reports as JSON (stdout) or a table, and returns the exit status.
pub(crate) fn print_reports(reports: &[EndpointReport], json: bool) -> Status {
    if json {
        println!("{}", serde_json::to_string_pretty(reports).expect("reports serialize"));
    } else {
        print!("{}", render_table(reports));
    }
    if reports.iter().any(|r| r.error.is_some()) {
        Status::CouldNotCheck
    } else if reports.iter().all(|r| r.healthy) {
        Status::Healthy
    } else {
        Status::Faulty
    }
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file (TOML); default /etc/calico-medic/config.toml if present.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// Config (file + flags) and a connected pipeline, for the one-off commands.
    /// With a datastore configured, it is read once here; unreadable, the error is
    /// printed and the pipeline works from the host's view (`datastore().is_up()` false).
    pub(crate) async fn medic(&self, docker_host: Option<&str>) -> Result<Medic, MedicError> {
        let config = load_config(self.config.as_deref(), docker_host)?;
        let datastore = crate::daemon::configured_datastore(&config)?;
        let medic = build_medic(config).await?;
        if let Err(e) = medic.refresh_local_ips().await {
            eprintln!("calico-medic: {e}; duplicate addresses not looked for");
        }
        if let Some(ds) = &datastore {
            if let Err(e) = ds.full_read().await {
                eprintln!("calico-medic: {e}; checking from the host's view only");
                ds.set_up(false);
            } else if let Err(e) = ds.refresh_profiles().await {
                eprintln!("calico-medic: {e}; profiles not checked");
            }
        }
        Ok(medic.with_datastore(datastore))
    }
}

#[cfg(test)]
mod tests {
    use super::{load_config, log_directives};

    /// Every path loads through `load_config`: each owned section is checked there,
    /// with the key and its line named.
    #[test]
    fn every_section_is_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, want) in [
            ("[calico]\netcd_endpoints = [\"etcd://x:1\"]\n", "line 2: key `calico.etcd_endpoints`"),
            ("\n[prestart]\nsandbox_dirs = [\"netns\"]\n", "line 3: key `prestart.sandbox_dirs`"),
            ("[marathon]\nenabled = true\n", "line 2: key `marathon.enabled`"),
            ("[backoff]\nmax_repairs = 0\n", "line 2: key `backoff.max_repairs`"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load_config(Some(&path), None).unwrap_err();
            assert_eq!(e.code(), "config");
            assert!(e.to_string().starts_with(&format!("config: {}: {want}", path.display())), "{text:?} → {e}");
        }
        std::fs::write(&path, "[marathon]\nurls = [\"http://m:8080\"]\n").unwrap();
        assert_eq!(
            load_config(Some(&path), Some("tcp://d:2375")).unwrap().docker_host.as_deref(),
            Some("tcp://d:2375")
        );
    }

    #[test]
    fn bollard_never_logs_bodies_unless_named() {
        assert_eq!(log_directives(None, "info"), "calico_medic=info,netlink_proto=error,warn");
        assert_eq!(log_directives(Some(" ".into()), "debug"), "calico_medic=debug,netlink_proto=error,warn");
        assert_eq!(log_directives(Some("debug".into()), "info"), "debug,bollard=info");
        assert_eq!(log_directives(Some("debug,bollard=trace".into()), "info"), "debug,bollard=trace");
    }
}
