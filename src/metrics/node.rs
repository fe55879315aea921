//! The host's Calico, beside its tasks: whether the Docker plugins answer.

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

use super::registry::{counter_vec, gauge_vec, histogram_vec, Registry};

pub struct NodeMetrics {
    stuck_creating: IntGauge,
    plugin_up: IntGaugeVec,
    plugin_latency: HistogramVec,
    /// Registered once Felix's liveness endpoint has answered (health on).
    felix_up: std::sync::OnceLock<IntGauge>,
    profile_missing: IntGaugeVec,
    profiles_recreated: IntCounterVec,
}

impl NodeMetrics {
    pub fn register(r: &Registry) -> NodeMetrics {
        let plugin_up = gauge_vec(
            r,
            "plugin_up",
            "1 while the Docker plugin answers Plugin.Activate on its socket within the call deadline, 0 when not (a hung or gone plugin stalls every docker run on its networks).",
            &["plugin"],
        );
        let plugin_latency = histogram_vec(
            r,
            "plugin_latency_seconds",
            "How long the Docker plugin took to answer Plugin.Activate.",
            vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            &["plugin"],
        );
        let stuck_creating = super::registry::int_gauge(
            r,
            "containers_stuck_creating",
            "Containers on a calico network still created longer than [calico] stuck_creating_after (a docker run hanging in network setup).",
        );
        let profile_missing = gauge_vec(
            r,
            "profile_missing",
            "1 while the Calico profile that this host's endpoints name is missing or unreadable in the datastore (Felix then drops their traffic), 0 while it is there.",
            &["profile"],
        );
        let profiles_recreated = counter_vec(
            r,
            "profiles_recreated_total",
            "Keys of a missing profile written back ([calico] recreate_missing_profiles), only where absent.",
            &["profile"],
        );
        let felix_up = std::sync::OnceLock::new();
        NodeMetrics { stuck_creating, plugin_up, plugin_latency, felix_up, profile_missing, profiles_recreated }
    }

    /// Every profile this host's endpoints name (true: missing); others are dropped.
    pub fn profiles(&self, states: &[(String, bool)]) {
        self.profile_missing.reset();
        for (id, missing) in states {
            self.profile_missing.with_label_values(&[id.as_str()]).set(i64::from(*missing));
        }
    }

    pub fn profile_recreated(&self, id: &str, keys: usize) {
        self.profiles_recreated.with_label_values(&[id]).inc_by(keys as u64);
    }

    /// Felix's liveness: `Some(true)` answered 2xx, `Some(false)` did not; the series
    /// exists from Felix's first answer on (a Felix with health off is not reported).
    pub fn felix(&self, r: &Registry, up: bool) {
        let gauge = if up {
            Some(self.felix_up.get_or_init(|| {
                super::registry::int_gauge(
                    r,
                    "felix_up",
                    "1 while Felix's liveness endpoint answers (FELIX_HEALTHENABLED), 0 once it stopped answering.",
                )
            }))
        } else {
            self.felix_up.get()
        };
        if let Some(g) = gauge {
            g.set(i64::from(up));
        }
    }

    pub fn stuck_creating(&self, n: usize) {
        self.stuck_creating.set(n as i64);
    }

    /// One answer of a plugin (`None`: it answered not at all, or wrongly).
    pub fn plugin(&self, name: &str, answered_in: Option<f64>) {
        self.plugin_up.with_label_values(&[name]).set(i64::from(answered_in.is_some()));
        if let Some(seconds) = answered_in {
            self.plugin_latency.with_label_values(&[name]).observe(seconds);
        }
    }
}
