//! The agent's side of escalation: after each pass, the pure `Escalator` decides;
//! this sends the kill (in its own task, never under a lock), counts, logs one line
//! per decision and schedules the next look.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{unix_now, Agent, Trigger};
use crate::diagnose::FaultKind;
use crate::marathon::escalate::parse_docker_time;
use crate::marathon::{Decision, EndpointState, KillOutcome, KillResult, Policy, TaskView};
use crate::medic::{ContainerOutcome, Medic, Mode};
use crate::metrics::EscalationResult;
use crate::report::EndpointReport;
use crate::workload::Escaped;

/// How escalation sees one endpoint after a pass in `mode`.
fn endpoint_state(r: &EndpointReport, mode: Mode) -> EndpointState {
    if r.error.is_some() {
        return EndpointState::Other;
    }
    if r.healthy {
        return EndpointState::Healthy;
    }
    let container_side = r.remaining_faults.iter().any(|f| !f.is_host_side() && *f != FaultKind::WorkloadUnreachable);
    // A fault left after a real repair pass, or one no repair could even plan.
    if container_side && (mode == Mode::Repair || r.actions.is_empty()) {
        return EndpointState::Unrepaired;
    }
    if r.remaining_faults == [FaultKind::WorkloadUnreachable] {
        return EndpointState::Unreachable;
    }
    EndpointState::Other
}

/// The worst endpoint decides for the container.
fn container_state(reports: &[EndpointReport], mode: Mode) -> EndpointState {
    let states: Vec<EndpointState> = reports.iter().map(|r| endpoint_state(r, mode)).collect();
    [EndpointState::Unrepaired, EndpointState::Unreachable, EndpointState::Other]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(EndpointState::Healthy)
}

impl Agent {
    pub(super) fn escalate_after_pass(&self, id: &str, out: &ContainerOutcome, mode: Mode, medic: &Arc<Medic>) {
        let Some(client) = medic.marathon.clone() else { return };
        if mode == Mode::Check {
            return;
        }
        let w = &out.workload;
        let reports = &out.reports;
        let view = TaskView {
            container_id: id,
            container_name: &w.container_name,
            app: w.marathon_app_id.as_deref(),
            task: w.mesos_task_id.as_deref(),
            policy: out.policy,
            started_unix: parse_docker_time(&w.started_at),
            state: container_state(reports, mode),
            endpoints: reports.len(),
            failing: reports.iter().filter(|r| !r.healthy).count(),
            host_side_missing: reports
                .iter()
                .filter(|r| r.remaining_faults.contains(&FaultKind::HostLinkMissing))
                .count(),
        };
        let settings = medic.config.marathon.settings(mode == Mode::DryRun);
        let docker_up = self.health.docker_connected();
        let decision = self.escalator.lock().unwrap().after_pass(unix_now(), &view, docker_up, &settings);
        let who = w.identity();
        match decision {
            Decision::Nothing => {}
            Decision::Wait(delay) => self.schedule(id, delay, Trigger::Probe),
            Decision::Suppressed { reason, newly, again_in } => {
                if newly {
                    // (`reason` first: the text format reads "escalation suppressed: reason=…")
                    warn!(
                        reason = %reason.as_str(),
                        container = %Escaped(&who.container),
                        app = who.app.as_deref().map(Escaped).map(tracing::field::display),
                        task = who.task.as_deref().map(Escaped).map(tracing::field::display),
                        action = %"kill",
                        result = %EscalationResult::Suppressed,
                        "escalation suppressed:"
                    );
                    self.metrics.escalation(EscalationResult::Suppressed);
                }
                self.schedule(id, again_in, Trigger::Probe);
            }
            Decision::Kill { app, task, dry_run: true } => {
                info!(
                    container = %Escaped(&who.container),
                    app = %Escaped(&app),
                    task = %Escaped(&task),
                    action = %"kill",
                    result = %EscalationResult::DryRun,
                    "escalation (dry run): would ask Marathon to replace task {}",
                    Escaped(&task)
                );
                self.metrics.escalation(EscalationResult::DryRun);
            }
            Decision::Kill { app, task, dry_run: false } => {
                let Some(agent) = self.me.upgrade() else { return };
                let id = id.to_string();
                tokio::spawn(async move {
                    let result = client.kill(&app, &task).await;
                    let outcome = match &result {
                        KillResult::Killed { url } => {
                            info!(
                                container = %Escaped(&who.container),
                                app = %Escaped(&app),
                                task = %Escaped(&task),
                                url = %url,
                                action = %"kill",
                                result = %EscalationResult::Killed,
                                "escalation: Marathon at {url} is replacing task {}",
                                Escaped(&task)
                            );
                            agent.metrics.escalation(EscalationResult::Killed);
                            KillOutcome::Done
                        }
                        KillResult::AlreadyGone { url } => {
                            info!(
                                container = %Escaped(&who.container),
                                app = %Escaped(&app),
                                task = %Escaped(&task),
                                url = %url,
                                action = %"kill",
                                result = %EscalationResult::Killed,
                                "escalation: Marathon says task is already gone"
                            );
                            agent.metrics.escalation(EscalationResult::Killed);
                            KillOutcome::Done
                        }
                        KillResult::Failed { why } => {
                            warn!(
                                container = %Escaped(&who.container),
                                app = %Escaped(&app),
                                task = %Escaped(&task),
                                action = %"kill",
                                result = %EscalationResult::Failed,
                                reason = %why,
                                "escalation: killing the task failed"
                            );
                            agent.metrics.escalation(EscalationResult::Failed);
                            KillOutcome::Failed
                        }
                    };
                    let retry = agent.escalator.lock().unwrap().kill_finished(unix_now(), &id, &task, outcome);
                    if let Some(delay) = retry {
                        info!(
                            container = %Escaped(&who.container),
                            app = %Escaped(&app),
                            task = %Escaped(&task),
                            retry_ms = delay.as_millis() as u64,
                            "escalation: next attempt scheduled"
                        );
                        agent.schedule(&id, delay + Duration::from_millis(10), Trigger::Probe);
                    }
                    agent.refresh_policy_gauges();
                });
            }
        }
        self.refresh_policy_gauges();
    }

    /// The per-policy and per-suppression-reason gauges.
    pub(super) fn refresh_policy_gauges(&self) {
        let counts: Vec<(Policy, usize)> = {
            let c = self.containers();
            let known: Vec<Policy> =
                c.by_id.values().filter(|s| s.endpoints.is_some()).filter_map(|s| s.policy).collect();
            Policy::ALL.iter().map(|p| (*p, known.iter().filter(|k| *k == p).count())).collect()
        };
        self.metrics.set_policy_counts(&counts);
        let suppressed = self.escalator.lock().unwrap().suppressed_counts();
        self.metrics.set_escalation_suppressed(&suppressed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::{ActionOutcome, ActionResult};
    use crate::workload::Workload;

    fn report(remaining: &[FaultKind], actions: usize) -> EndpointReport {
        let w = Workload {
            container_id: "c".into(),
            container_name: "mesos-1".into(),
            marathon_app_id: None,
            mesos_task_id: None,
            policy_label: None,
            pid: 1,
            started_at: String::new(),
            endpoints: Vec::new(),
        };
        let mut r = EndpointReport::new(&w, "calico", "e", std::net::Ipv4Addr::new(10, 0, 0, 1));
        r.remaining_faults = remaining.to_vec();
        r.healthy = remaining.is_empty();
        r.actions = (0..actions)
            .map(|_| ActionResult {
                action: "set_mac".into(),
                command: String::new(),
                fault: FaultKind::MacMismatch,
                result: ActionOutcome::Skipped,
                error: None,
            })
            .collect();
        r
    }

    #[test]
    fn what_counts_as_unrepaired() {
        use FaultKind::*;
        // cali0 deleted: nothing can be planned, in any mode.
        let gone = report(&[LinkMissing, HostLinkMissing], 0);
        assert_eq!(endpoint_state(&gone, Mode::Repair), EndpointState::Unrepaired);
        assert_eq!(endpoint_state(&gone, Mode::DryRun), EndpointState::Unrepaired);
        // A repairable fault in a dry run or backed off is not "unrepaired".
        let mac = report(&[MacMismatch], 1);
        assert_eq!(endpoint_state(&mac, Mode::DryRun), EndpointState::Other);
        assert_eq!(endpoint_state(&mac, Mode::BackedOff), EndpointState::Other);
        assert_eq!(endpoint_state(&mac, Mode::Repair), EndpointState::Unrepaired);
        assert_eq!(endpoint_state(&report(&[WorkloadUnreachable], 0), Mode::Repair), EndpointState::Unreachable);
        assert_eq!(endpoint_state(&report(&[HostRouteMissing], 0), Mode::Repair), EndpointState::Other);
        assert_eq!(endpoint_state(&report(&[], 0), Mode::Repair), EndpointState::Healthy);
        let both = [report(&[], 0), gone];
        assert_eq!(container_state(&both, Mode::Repair), EndpointState::Unrepaired);
    }
}
