//! The per-endpoint series: health, faults, repairs, check and probe figures. The
//! per-container series are tracked so they can be removed when the container goes.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};

use super::labels::cap_label;
use super::registry::{counter, counter_vec, gauge_vec, histogram, histogram_vec, Registry};
use crate::diagnose::FaultKind;
use crate::report::EndpointReport;

const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct EndpointMetrics {
    endpoint_healthy: IntGaugeVec,
    endpoint_fault: IntGaugeVec,
    pub(super) endpoints: IntGaugeVec,
    faults_detected: IntCounterVec,
    pub(super) repairs: IntCounterVec,
    /// Repair writes that failed for a reason of the agent's own.
    agent_errors: IntCounter,
    pub(super) repair_latency: Histogram,
    check_duration: Histogram,
    probe_success: IntGaugeVec,
    probe_rtt: HistogramVec,
    /// container_id → label sets of its per-container series.
    series: Mutex<HashMap<String, ContainerSeries>>,
}

#[derive(Default)]
struct ContainerSeries {
    /// Faults seen by the last pass (before repair): a fault is "detected" once per appearance.
    detected: Vec<String>,
    healthy: Vec<Vec<String>>,
    faults: Vec<String>,
    probes: Vec<String>,
}

/// Remembers a probe label of a container so its series can be removed later.
fn series_probe(entry: &mut ContainerSeries, probe: &str) {
    if !entry.probes.iter().any(|p| p == probe) {
        entry.probes.push(probe.to_string());
    }
}

impl EndpointMetrics {
    pub fn register(r: &Registry) -> EndpointMetrics {
        let endpoint_healthy = gauge_vec(
            r,
            "endpoint_healthy",
            "1 when the Calico endpoint passed its last check (no faults), 0 otherwise.",
            &["container_id", "container_name", "network", "ip", "marathon_app_id", "mesos_task_id"],
        );
        let endpoint_fault = gauge_vec(
            r,
            "endpoint_fault",
            "1 while the fault is present on the container's endpoint.",
            &["container_id", "fault"],
        );
        let endpoints = gauge_vec(r, "endpoints", "Calico endpoints on this host by state.", &["state"]);
        for s in ["healthy", "unhealthy", "unknown"] {
            endpoints.with_label_values(&[s]).set(0);
        }
        let (faults_detected, repairs) = register_fault_counters(r);
        let agent_errors = counter(
            r,
            "agent_errors_total",
            "Repair writes that failed for a reason of the agent's own (EPERM/EACCES, an unsupported request, a timeout): the agent is broken, not the task; no escalation counts them.",
        );
        let repair_latency = histogram(
            r,
            "repair_latency_seconds",
            "From the container start event (Docker's own timestamp) or the netlink notification of a break to the verified repair.",
            LATENCY_BUCKETS.to_vec(),
        );
        let check_duration = histogram(
            r,
            "check_duration_seconds",
            "Time to observe and diagnose one endpoint.",
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
        );
        let probe_success = gauge_vec(
            r,
            "probe_success",
            "1 when the last reachability probe of the endpoint succeeded.",
            &["container_id", "probe"],
        );
        let probe_rtt = histogram_vec(
            r,
            "probe_rtt_seconds",
            "Round-trip time of successful probes.",
            vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0],
            &["probe"],
        );
        EndpointMetrics {
            endpoint_healthy,
            endpoint_fault,
            endpoints,
            faults_detected,
            repairs,
            agent_errors,
            repair_latency,
            check_duration,
            probe_success,
            probe_rtt,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Records one finished pass over a container's endpoints, replacing its
    /// per-container series with the current state.
    pub fn record(&self, container_id: &str, reports: &[EndpointReport]) {
        let mut series = self.series.lock().unwrap();
        let entry = series.entry(container_id.to_string()).or_default();
        let mut present_faults: Vec<String> = Vec::new();
        let mut healthy_labels = Vec::new();
        let mut detected: Vec<String> = Vec::new();
        for r in reports {
            for f in &r.faults {
                if !entry.detected.iter().any(|d| d == f.as_str()) && !detected.iter().any(|d| d == f.as_str()) {
                    self.faults_detected.with_label_values(&[f.as_str()]).inc();
                }
                detected.push(f.as_str().to_string());
            }
            for a in &r.actions {
                self.repairs.with_label_values(&[a.fault.as_str(), a.result.as_str()]).inc();
                if a.agent_error {
                    self.agent_errors.inc();
                }
            }
            if r.error.is_none() {
                self.check_duration.observe(r.check_seconds);
            }
            let labels = vec![
                r.container_id.clone(),
                cap_label(&r.container_name),
                cap_label(&r.network),
                r.ip.to_string(),
                cap_label(r.marathon_app_id.as_deref().unwrap_or_default()),
                cap_label(r.mesos_task_id.as_deref().unwrap_or_default()),
            ];
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.endpoint_healthy.with_label_values(&refs).set(i64::from(r.healthy));
            healthy_labels.push(labels);
            for p in &r.probes {
                series_probe(entry, &p.probe);
                self.probe_success.with_label_values(&[&r.container_id, &p.probe]).set(i64::from(p.success));
                if let Some(rtt) = p.rtt_seconds {
                    self.probe_rtt.with_label_values(&[&p.probe]).observe(rtt);
                }
            }
            for f in &r.remaining_faults {
                if !present_faults.iter().any(|p| p == f.as_str()) {
                    present_faults.push(f.as_str().to_string());
                }
            }
        }
        for old in &entry.healthy {
            if !healthy_labels.contains(old) {
                let refs: Vec<&str> = old.iter().map(String::as_str).collect();
                let _ = self.endpoint_healthy.remove_label_values(&refs);
            }
        }
        for old in &entry.faults {
            if !present_faults.contains(old) {
                let _ = self.endpoint_fault.remove_label_values(&[container_id, old]);
            }
        }
        for f in &present_faults {
            self.endpoint_fault.with_label_values(&[container_id, f]).set(1);
        }
        entry.healthy = healthy_labels;
        entry.faults = present_faults;
        entry.detected = detected;
    }

    /// Drops every per-container series (container destroyed).
    pub fn forget(&self, container_id: &str) {
        let Some(entry) = self.series.lock().unwrap().remove(container_id) else {
            return;
        };
        for labels in &entry.healthy {
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            let _ = self.endpoint_healthy.remove_label_values(&refs);
        }
        for f in &entry.faults {
            let _ = self.endpoint_fault.remove_label_values(&[container_id, f]);
        }
        for p in &entry.probes {
            let _ = self.probe_success.remove_label_values(&[container_id, p]);
        }
    }
}

/// `faults_detected_total{fault}` and `repairs_total{fault,result}`, every label set
/// the agent can produce created at zero.
fn register_fault_counters(r: &Registry) -> (IntCounterVec, IntCounterVec) {
    let faults_detected = counter_vec(
        r,
        "faults_detected_total",
        "Faults newly found on an endpoint (counted once per appearance), by fault code.",
        &["fault"],
    );
    let repairs = counter_vec(
        r,
        "repairs_total",
        "Repair actions by the fault they address and result (skipped = dry run or backed off).",
        &["fault", "result"],
    );
    let report_only = |f: &FaultKind| f.is_host_side() || f.is_datastore() || *f == FaultKind::WorkloadUnreachable;
    for f in FaultKind::ALL.iter().filter(|f| !report_only(f)) {
        for res in ["success", "failure", "skipped"] {
            repairs.with_label_values(&[f.as_str(), res]);
        }
    }
    for f in FaultKind::ALL {
        faults_detected.with_label_values(&[f.as_str()]);
    }
    (faults_detected, repairs)
}
