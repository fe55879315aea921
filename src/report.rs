//! What one pass over one endpoint found and did, for JSON, tables, logs and metrics.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::diagnose::{Fault, FaultKind};
use crate::policy::Policy;
use crate::repair::ActionResult;
use crate::workload::{Escaped, MacAddr, MacSource, Workload};

#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub container_id: String,
    pub container_name: String,
    pub marathon_app_id: Option<String>,
    pub mesos_task_id: Option<String>,
    /// What calico-medic may do to this task (its app's `CALICO_MEDIC` label, or the default).
    pub policy: Policy,
    /// Why the label was not used (a value that is not a policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_note: Option<String>,
    pub network: String,
    pub endpoint_id: String,
    pub interface: String,
    pub host_interface: String,
    #[serde(skip)]
    pub host_ifindex: Option<u32>,
    pub ip: Ipv4Addr,
    pub expected_mac: Option<MacAddr>,
    pub expected_mac_source: Option<MacSource>,
    /// Lower-trust MAC sources that disagree with the expected MAC.
    pub mac_disagreements: Vec<String>,
    pub observed_mac: Option<MacAddr>,
    /// Faults found before any repair.
    pub faults: Vec<FaultKind>,
    pub fault_details: Vec<String>,
    pub actions: Vec<ActionResult>,
    /// Faults still present at the end (after repair and re-check).
    pub remaining_faults: Vec<FaultKind>,
    /// Host→workload ICMP probe after the check/repair, when probing is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// Every probe run for this endpoint in this pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeResult>,
    pub healthy: bool,
    /// The daemon's pre-start path repaired this endpoint before the task started
    /// (its first instruction already saw the right MAC).
    pub repaired_before_start: bool,
    /// Set when the endpoint could not be observed at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's code (`namespace_too_large`, `netlink`, `timeout`…), as in
    /// `calico_medic_check_errors_total{reason}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    /// Set when a repair failed for a reason of the agent's own (a refused write, a
    /// timeout): the agent's fault, never the task's (no escalation counts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// Set when the host side could not be read: host facts are unknown (no host
    /// faults reported) and the expected MAC came from the next source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_error: Option<String>,
    /// Seconds spent observing and diagnosing (first pass).
    #[serde(skip)]
    pub check_seconds: f64,
}

impl EndpointReport {
    pub fn new(workload: &Workload, network: &str, endpoint_id: &str, ip: Ipv4Addr) -> EndpointReport {
        EndpointReport {
            container_id: workload.container_id.clone(),
            container_name: workload.container_name.clone(),
            marathon_app_id: workload.marathon_app_id.clone(),
            mesos_task_id: workload.mesos_task_id.clone(),
            policy: Policy::default(),
            policy_note: None,
            network: network.to_string(),
            endpoint_id: endpoint_id.to_string(),
            interface: String::new(),
            host_interface: String::new(),
            host_ifindex: None,
            ip,
            expected_mac: None,
            expected_mac_source: None,
            mac_disagreements: Vec::new(),
            observed_mac: None,
            faults: Vec::new(),
            fault_details: Vec::new(),
            actions: Vec::new(),
            remaining_faults: Vec::new(),
            reachable: None,
            probes: Vec::new(),
            healthy: false,
            repaired_before_start: false,
            error: None,
            error_code: None,
            agent_error: None,
            host_error: None,
            check_seconds: 0.0,
        }
    }

    pub fn set_faults(&mut self, faults: &[Fault]) {
        self.faults = faults.iter().map(|f| f.kind).collect();
        self.fault_details = faults.iter().map(|f| format!("{}: {}", f.kind, f.detail)).collect();
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub probe: String,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_seconds: Option<f64>,
}

impl ProbeResult {
    pub fn new(probe: &str, rtt: Option<std::time::Duration>) -> ProbeResult {
        ProbeResult { probe: probe.to_string(), success: rtt.is_some(), rtt_seconds: rtt.map(|d| d.as_secs_f64()) }
    }
}

/// A readable table for terminals: one line per endpoint.
pub fn render_table(reports: &[EndpointReport]) -> String {
    let mut rows = vec![[
        "CONTAINER".to_string(),
        "APP".to_string(),
        "IP".to_string(),
        "MAC (expected/source)".to_string(),
        "FAULTS".to_string(),
        "ACTIONS".to_string(),
        "STATE".to_string(),
    ]];
    for r in reports {
        let faults = if r.faults.is_empty() {
            "-".to_string()
        } else {
            r.faults.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",")
        };
        let actions = if r.actions.is_empty() {
            "-".to_string()
        } else {
            r.actions.iter().map(|a| format!("{}:{}", a.action, a.result.as_str())).collect::<Vec<_>>().join(",")
        };
        let mac = match (r.observed_mac, r.expected_mac, r.expected_mac_source) {
            (o, Some(e), Some(s)) => {
                format!("{} ({e}/{})", o.map(|m| m.to_string()).unwrap_or_else(|| "-".into()), s.as_str())
            }
            _ => "-".into(),
        };
        let state = if r.policy == Policy::Off {
            "not checked (policy off)".to_string()
        } else if let Some(e) = &r.error {
            format!("error: {e}")
        } else if let Some(e) = &r.agent_error {
            format!("AGENT_ERROR ({e})")
        } else if r.healthy {
            "healthy".into()
        } else {
            let rest: Vec<&str> = r.remaining_faults.iter().map(|f| f.as_str()).collect();
            format!("UNHEALTHY ({})", rest.join(","))
        };
        let state = match r.policy {
            Policy::Report | Policy::Escalate => format!("{state} [{}]", r.policy),
            _ => state,
        };
        // Tenant text: control characters escaped, so no ESC sequence reaches the terminal.
        rows.push([
            Escaped(&r.container_name).to_string(),
            r.marathon_app_id.as_deref().map(|a| Escaped(a).to_string()).unwrap_or_else(|| "-".into()),
            r.ip.to_string(),
            mac,
            faults,
            actions,
            state,
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Wall-clock now, in unix seconds (Docker's event times are on this clock).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// What one pass over one endpoint's container side found and did.
pub struct EndpointPass {
    pub before: crate::observe::ContainerSide,
    pub faults: Vec<Fault>,
    pub actions: Vec<ActionResult>,
    pub after: Option<crate::observe::ContainerSide>,
    pub remaining: Vec<Fault>,
    /// Time spent applying and re-checking (excluded from check duration).
    pub repair_seconds: f64,
}

impl EndpointPass {
    pub fn fill(self, report: &mut EndpointReport) {
        if let Some(link) = &self.before.link {
            report.interface = link.name.clone();
            report.observed_mac = link.mac;
        }
        if let Some(after) = &self.after {
            report.observed_mac = after.link.as_ref().and_then(|l| l.mac);
        }
        report.set_faults(&self.faults);
        report.agent_error = self.actions.iter().find(|a| a.agent_error).and_then(|a| a.error.clone());
        report.actions = self.actions;
        report.remaining_faults = self.remaining.iter().map(|f| f.kind).collect();
        report.healthy = self.remaining.is_empty();
    }
}

impl EndpointReport {
    pub fn failed(mut self, e: crate::error::MedicError) -> EndpointReport {
        self.error = Some(e.to_string());
        self.error_code = Some(e.code());
        self.healthy = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_is_escaped_in_the_table_and_exact_in_json() {
        let app = "/evil\nINFO repair result=success\x1b[2J";
        let w = Workload {
            container_id: "c1".into(),
            container_name: "mesos-\x1b]0;pwned\x07".into(),
            marathon_app_id: Some(app.into()),
            mesos_task_id: Some("t\r1".into()),
            policy_label: None,
            pid: 1,
            started_at: String::new(),
            endpoints: Vec::new(),
        };
        let r = EndpointReport::new(&w, "calico", "ep", Ipv4Addr::new(10, 0, 0, 1));
        let table = render_table(std::slice::from_ref(&r));
        assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{table:?}");
        assert_eq!(table.lines().count(), 2, "header + one row: {table}");
        assert!(table.contains("/evil\\nINFO repair result=success\\u{1b}[2J"), "{table}");
        assert!(table.contains("mesos-\\u{1b}]0;pwned\\u{7}"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&[r]).unwrap()).unwrap();
        assert_eq!(json[0]["marathon_app_id"], app, "JSON carries the exact text");
        assert_eq!(json[0]["mesos_task_id"], "t\r1");
    }
}
