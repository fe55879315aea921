//! The escalation series: requests to Marathon to replace a task, tasks held back,
//! and containers by policy.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::labels::EscalationResult;
use super::registry::{counter_vec, gauge_vec, Registry};
use crate::marathon::{Policy, Reason};

pub struct EscalationMetrics {
    pub(super) escalations: IntCounterVec,
    pub(super) escalation_suppressed: IntGaugeVec,
    pub(super) policy_containers: IntGaugeVec,
}

impl EscalationMetrics {
    pub fn register(r: &Registry) -> EscalationMetrics {
        let escalations = counter_vec(
            r,
            "escalations_total",
            "Requests to Marathon to replace an unrepairable task, by result (killed includes already gone; suppressed counts each time a task is newly held back).",
            &["result"],
        );
        for result in EscalationResult::ALL {
            escalations.with_label_values(&[result.as_str()]);
        }
        let escalation_suppressed = gauge_vec(
            r,
            "escalation_suppressed",
            "Tasks that qualify for a kill but are held back now, by reason (host_breaker, rate_limit, ...).",
            &["reason"],
        );
        for reason in Reason::ALL {
            escalation_suppressed.with_label_values(&[reason.as_str()]).set(0);
        }
        let policy_containers = gauge_vec(
            r,
            "policy_containers",
            "Calico containers by policy (the app's CALICO_MEDIC label, or the default).",
            &["policy"],
        );
        for p in Policy::ALL {
            policy_containers.with_label_values(&[p.as_str()]).set(0);
        }
        EscalationMetrics { escalations, escalation_suppressed, policy_containers }
    }
}
