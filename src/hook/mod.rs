//! Repair before start by construction (issue 23): `calico-medic runtime`, a runc
//! wrapper Docker is told about in daemon.json, adds `calico-medic hook prestart` to
//! every container's OCI prestart hooks after Docker's own; runc runs it once the
//! network is configured and before the task's first instruction, which therefore
//! never sees a wrong MAC. The follower (`prestart`) stays for hosts without it.

pub mod prestart;
pub mod runtime;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;

/// Runs the hook: never fails the start (always 0), ends by `prestart.hook_deadline`.
pub fn run_hook(config: Result<Config, String>, trace: Option<PathBuf>) -> std::process::ExitCode {
    let started = Instant::now();
    let deadline = config.as_ref().map_or(Duration::from_millis(500), |c| c.prestart.hook_deadline);
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_sub(started.elapsed()));
        crate::kernel::syslog::log_line(&format!("deadline of {deadline:?} reached; the task starts as it is"), true);
        std::process::exit(0);
    });
    let line = match (config, prestart::read_state(std::io::stdin().lock())) {
        (Err(e), _) => format!("config: {e}; nothing done"),
        (_, Err(e)) => format!("{e}; nothing done"),
        (Ok(config), Ok(state)) => one_container(&config, &state, started, trace.as_deref()),
    };
    let warning = ["error=", "outcome=failed", "nothing done", "cannot"].iter().any(|w| line.contains(w));
    crate::kernel::syslog::log_line(&line, warning);
    std::process::ExitCode::SUCCESS
}

fn one_container(
    config: &Config,
    state: &prestart::State,
    started: Instant,
    trace: Option<&std::path::Path>,
) -> String {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return format!("container={} cannot start a runtime: {e}", state.id),
    };
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    match rt.block_on(prestart::run(state, config, started)) {
        Err(e) => format!("container={} error={e}; left to the pass after start", state.id),
        Ok((done, policy)) => {
            if let Some(path) = trace {
                let seen: Vec<_> = done
                    .iter()
                    .map(|d| serde_json::json!({"host_interface": d.host_interface, "outcome": d.outcome, "seen": d.seen}))
                    .collect();
                let line = serde_json::json!({"container": state.id, "ms": ms(), "endpoints": seen});
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
            }
            let each: Vec<String> =
                done.iter().map(|d| format!("{}:outcome={}", d.host_interface, d.outcome)).collect();
            format!("container={} policy={} endpoints=[{}] ms={:.1}", state.id, policy.as_str(), each.join(" "), ms())
        }
    }
}
