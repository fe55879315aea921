//! Escalation, as the scheduler carries it out: the pure core decides after each
//! pass (`marathon::escalate`); a kill is sent only once Marathon has confirmed the
//! task (`MarathonClient::confirm`, in its own task) and the kill is written to the
//! state file (`marathon::ledger`), so the budget and "asked once" survive restarts.
//! Times given to the core come from `Clock`: monotonic within the run (an NTP step
//! cannot empty the hourly budget), anchored at the wall clock when the run began.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::budget::Pending;
use super::escalation::task_view;
use super::scheduler::{Internal, Scheduler};
use super::state::Trigger;
use crate::marathon::confirm::{NotConfirmed, ThisHost};
use crate::marathon::escalate::{HostView, NOT_SENT_RECHECK};
use crate::marathon::ledger;
use crate::marathon::{Decision, KillOutcome, KillResult, MarathonClient, Reason};
use crate::medic::{ContainerOutcome, Mode};
use crate::metrics::{EscalationResult, Metrics};
use crate::netlink::Netlink;
use crate::workload::Escaped;

impl Scheduler {
    /// The whole host is known: the first full resync is done and every calico
    /// container it listed has had a pass (so the host breaker sees all of them).
    pub(super) fn host_known(&self) -> bool {
        self.listed_once && self.containers.values().all(|st| !(st.calico_hint && st.endpoints.is_none()))
    }

    /// After a pass: the pure escalation core decides; a kill is confirmed with
    /// Marathon in its own task, which reports back (`Internal::Confirmed`).
    pub(super) fn escalate(&mut self, id: &str, out: &ContainerOutcome, mode: Mode) {
        let medic = self.ctx.current.medic();
        let Some(client) = medic.marathon.clone() else { return };
        let settings = medic.config.marathon.settings(mode == Mode::DryRun);
        let host = HostView { docker_up: self.ctx.health.docker_connected(), known: self.host_known() };
        let now = self.clock.now();
        let decision = self.escalator.after_pass(now, &task_view(id, out, mode), host, &settings);
        let who = out.workload.identity();
        let container = Escaped(&who.container);
        let app = who.app.as_deref().map(Escaped).map(tracing::field::display);
        let task = who.task.as_deref().map(Escaped).map(tracing::field::display);
        let probe_again =
            |s: &Scheduler, delay| s.after(delay, Internal::Due { id: id.to_string(), trigger: Trigger::Probe });
        match decision {
            Decision::Nothing => {}
            Decision::Wait(delay) => probe_again(self, delay),
            Decision::Suppressed { reason, newly, again_in } => {
                if newly {
                    // (`reason` first: the text format reads "escalation suppressed: reason=…")
                    let result = EscalationResult::Suppressed;
                    warn!(reason = %reason.as_str(), container = %container, app, task, action = "kill", result = %result, "escalation suppressed:");
                    self.ctx.metrics.escalation(result);
                }
                probe_again(self, again_in);
            }
            Decision::Kill { task: t, dry_run: true, .. } => {
                let result = EscalationResult::DryRun;
                info!(container = %container, app, task, action = "kill", result = %result, "escalation (dry run): would ask Marathon to replace task {}", Escaped(&t));
                self.ctx.metrics.escalation(result);
            }
            Decision::Kill { app: a, task: t, dry_run: false } => {
                let ips: Vec<Ipv4Addr> = out.reports.iter().map(|r| r.ip).collect();
                let pending = Pending { id: id.to_string(), container: who.container.clone(), app: a, task: t };
                let (internal, m) = (self.internal.clone(), &medic.config.marathon);
                let (agent_host, require_unhealthy) = (m.agent_host.clone(), m.require_unhealthy);
                tokio::spawn(async move {
                    let host = this_host(&agent_host).await;
                    let result = client.confirm(&pending.app, &pending.task, &host, &ips, require_unhealthy).await;
                    let _ = internal.send(Internal::Confirmed { pending, result, client });
                });
            }
        }
        // (The gauges are refreshed by the pass's `Effect::Gauges`, which follows.)
    }

    /// Marathon answered the confirmation: record the kill and send it, or hold the
    /// task back (one line naming the check that failed).
    pub(super) fn confirmed(&mut self, p: Pending, result: Result<(), NotConfirmed>, client: Arc<MarathonClient>) {
        let now = self.clock.now();
        let held = match result {
            Err(nc) => Some((Reason::NotConfirmed, Some(nc))),
            Ok(()) => {
                self.escalator.confirmed(now, &p.app, &p.task);
                let path = self.ctx.current.medic().config.marathon.state_file.clone();
                match ledger::save(Path::new(&path), &self.escalator.budget().persisted()) {
                    Ok(()) => None,
                    Err(e) => {
                        let (container, task) = (Escaped(&p.container), Escaped(&p.task));
                        warn!(reason = %Reason::StateFile.as_str(), container = %container, task = %task, action = "kill", path = %path, error = %e, "escalation suppressed: the kill cannot be recorded, so it is not sent");
                        Some((Reason::StateFile, None))
                    }
                }
            }
        };
        if let Some((reason, why)) = held {
            if self.escalator.not_sent(now, &p.id, &p.task, reason) {
                if let Some(nc) = why {
                    let (container, app, task) = (Escaped(&p.container), Escaped(&p.app), Escaped(&p.task));
                    let said = Escaped(&nc.marathon_value()).to_string();
                    warn!(reason = %reason.as_str(), container = %container, app = %app, task = %task, action = "kill", check = %nc.check(), marathon = %said, "escalation suppressed: Marathon does not confirm the task");
                }
                self.ctx.metrics.escalation(EscalationResult::Suppressed);
            }
            self.after(NOT_SENT_RECHECK, Internal::Due { id: p.id, trigger: Trigger::Probe });
            self.refresh_gauges();
            return;
        }
        let (metrics, internal) = (self.ctx.metrics.clone(), self.internal.clone());
        tokio::spawn(async move {
            let outcome = send_kill(&client, &metrics, &p).await;
            let _ = internal.send(Internal::KillFinished { id: p.id, task: p.task, outcome });
        });
    }

    pub(super) fn kill_finished(&mut self, id: &str, task: &str, outcome: KillOutcome) {
        if let Some(delay) = self.escalator.kill_finished(self.clock.now(), id, task, outcome) {
            let retry_ms = delay.as_millis() as u64;
            info!(container_id = id, task = %Escaped(task), retry_ms, "escalation: next attempt scheduled");
            let due = Internal::Due { id: id.to_string(), trigger: Trigger::Probe };
            self.after(delay + Duration::from_millis(10), due);
        }
        self.refresh_gauges();
    }
}

/// How Marathon may name this host: its host name, `agent_host`, its IPv4 addresses.
async fn this_host(agent_host: &str) -> ThisHost {
    let mut names: Vec<String> = crate::kernel::procfs::kernel_hostname().ok().into_iter().collect();
    if !agent_host.is_empty() {
        names.push(agent_host.to_string());
    }
    let ips = match Netlink::host() {
        Ok(nl) => nl.ipv4_addresses().await.map(|a| a.into_iter().map(|(_, ip, _)| ip).collect()).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    ThisHost { names, ips }
}

/// Asks Marathon to replace the task; one log line and one count per answer.
async fn send_kill(client: &MarathonClient, metrics: &Metrics, p: &Pending) -> KillOutcome {
    let (container, app, task) = (Escaped(&p.container), Escaped(&p.app), Escaped(&p.task));
    let (result, outcome) = match client.kill(&p.app, &p.task).await {
        KillResult::Killed { url } => {
            info!(container = %container, app = %app, task = %task, url = %url, action = "kill", result = "killed", "escalation: Marathon at {url} is replacing task {task}");
            (EscalationResult::Killed, KillOutcome::Done)
        }
        KillResult::AlreadyGone { url } => {
            info!(container = %container, app = %app, task = %task, url = %url, action = "kill", result = "already_gone", "escalation: Marathon says task {task} is already gone");
            (EscalationResult::Killed, KillOutcome::Done)
        }
        KillResult::Failed { why } => {
            warn!(container = %container, app = %app, task = %task, action = "kill", result = "failed", reason = %why, "escalation: killing the task failed");
            (EscalationResult::Failed, KillOutcome::Failed)
        }
    };
    metrics.escalation(result);
    outcome
}
