use std::path::Path;

use clap::Args;
use serde::Serialize;

use super::{load_config, ConfigArg, Status};
use crate::error::MedicError;
use crate::marathon::budget::{Budget, Kill, HOUR};
use crate::marathon::ledger::{self, Loaded};
use crate::report::unix_now;

/// What `calico-medic escalations --json` prints.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    state_file: &'a str,
    max_kills_per_hour: u32,
    kills_last_hour: usize,
    /// Unix seconds when the next kill is allowed (now, when the budget is not spent).
    next_kill_allowed: f64,
    kills: &'a [Kill],
}

#[derive(Debug, Args)]
pub struct EscalationsCmd {
    /// Forget every kill (after an incident): the hourly budget starts afresh and
    /// tasks asked before may be asked again. A running daemon reads the file again
    /// on SIGHUP (`systemctl reload calico-medic`).
    #[arg(long)]
    pub reset: bool,
    /// Print the budget and the kills as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl EscalationsCmd {
    /// Shows the kills the state file holds and the hourly budget they use (exit 2
    /// when the file cannot be read: the daemon then kills nothing for an hour).
    pub fn exec(self) -> Result<Status, MedicError> {
        let config = load_config(self.config.config.as_deref(), None)?;
        let m = &config.marathon;
        let path = Path::new(&m.state_file);
        if self.reset {
            ledger::reset(path).map_err(|e| MedicError::ConfigIo {
                context: format!("marathon.state_file: removing {}", path.display()),
                source: e,
            })?;
            println!("escalations: {} reset; reload the daemon (SIGHUP) to apply it now", path.display());
            return Ok(Status::Healthy);
        }
        let kills = match ledger::load(path) {
            Loaded::Missing => Vec::new(),
            Loaded::Kills(kills) => kills,
            Loaded::Unreadable(why) => {
                eprintln!("calico-medic: escalations: {why}; the daemon asks for no kill for an hour after reading it");
                return Ok(Status::CouldNotCheck);
            }
        };
        let now = unix_now();
        let budget = Budget::restore(kills.clone(), now);
        let used = budget.used(now);
        let next = if used < m.max_kills_per_hour as usize { now } else { budget.free_at(now) };
        let shown = Shown {
            state_file: &m.state_file,
            max_kills_per_hour: m.max_kills_per_hour,
            kills_last_hour: used,
            next_kill_allowed: next,
            kills: &kills,
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
        } else {
            print!("{}", render(&shown, now));
        }
        Ok(Status::Healthy)
    }
}

fn render(s: &Shown, now: f64) -> String {
    let mut out = format!(
        "state file: {}\nkills in the last hour: {} of {}\n",
        s.state_file, s.kills_last_hour, s.max_kills_per_hour
    );
    if s.next_kill_allowed > now {
        out.push_str(&format!("next kill allowed in {:.0} s\n", s.next_kill_allowed - now));
    }
    out.push_str(&format!("kills asked ({}, never asked again):\n", s.kills.len()));
    for k in s.kills {
        let ago = (now - k.at).max(0.0);
        let mark = if ago < HOUR { " (this hour)" } else { "" };
        out.push_str(&format!(
            "  {:.0} s ago{mark}  app {}  task {}\n",
            ago,
            crate::workload::Escaped(&k.app),
            crate::workload::Escaped(&k.task)
        ));
    }
    out
}
