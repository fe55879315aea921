//! How escalation sees a finished pass, pure: each endpoint's state, the worst one
//! for the container, and the `TaskView` the escalation policy (`marathon::escalate`)
//! decides on. The executor sends the kill it decides and reports back.

use crate::diagnose::FaultKind;
use crate::marathon::escalate::parse_docker_time;
use crate::marathon::{EndpointState, TaskView};
use crate::medic::{ContainerOutcome, Mode};
use crate::report::EndpointReport;

/// How escalation sees one endpoint after a pass in `mode`.
fn endpoint_state(r: &EndpointReport, mode: Mode) -> EndpointState {
    if r.agent_error.is_some() {
        return EndpointState::AgentError;
    }
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
    [EndpointState::AgentError, EndpointState::Unrepaired, EndpointState::Unreachable, EndpointState::Other]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(EndpointState::Healthy)
}

/// What the escalation policy is told about one pass over container `id`.
pub fn task_view<'a>(id: &'a str, out: &'a ContainerOutcome, mode: Mode) -> TaskView<'a> {
    let w = &out.workload;
    let reports = &out.reports;
    TaskView {
        container_id: id,
        container_name: &w.container_name,
        app: w.marathon_app_id.as_deref(),
        task: w.mesos_task_id.as_deref(),
        policy: out.policy,
        started_unix: parse_docker_time(&w.started_at),
        state: container_state(reports, mode),
        endpoints: reports.len(),
        failing: reports.iter().filter(|r| !r.healthy).count(),
        host_side_missing: reports.iter().filter(|r| r.remaining_faults.contains(&FaultKind::HostLinkMissing)).count(),
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
                agent_error: false,
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
        let both = [report(&[], 0), gone.clone()];
        assert_eq!(container_state(&both, Mode::Repair), EndpointState::Unrepaired);
        // A write the kernel refused to the agent: the agent's fault, never the task's.
        let mut refused = report(&[MacMismatch], 1);
        refused.agent_error = Some("Operation not permitted (os error 1)".into());
        assert_eq!(endpoint_state(&refused, Mode::Repair), EndpointState::AgentError);
        assert_eq!(container_state(&[gone, refused], Mode::Repair), EndpointState::AgentError);
    }
}
