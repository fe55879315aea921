//! The registry the metrics are registered in, and the helpers that make and register
//! one family each (all under the `calico_medic` namespace).

use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

pub const NS: &str = "calico_medic";

/// A `prometheus::Registry` that also keeps the name and label names of every
/// family registered through it (`Metrics::families`: docs/metrics.md is checked
/// against them). Same `register` and `gather` as the prometheus one.
pub struct Registry {
    inner: prometheus::Registry,
    families: Mutex<Vec<(String, Vec<String>)>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry { inner: prometheus::Registry::new(), families: Mutex::new(Vec::new()) }
    }

    pub fn register(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        let descs: Vec<_> = c.desc().iter().map(|d| (d.fq_name.clone(), d.variable_labels.clone())).collect();
        self.inner.register(c)?;
        self.families.lock().unwrap().extend(descs);
        Ok(())
    }

    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.inner.gather()
    }

    /// Every family registered so far, as (name, label names), sorted and deduplicated;
    /// the process collector's `process_*` families are left out.
    pub fn families(&self) -> Vec<(String, Vec<String>)> {
        let families = self.families.lock().unwrap();
        let mut out: Vec<_> = families.iter().filter(|(name, _)| !name.starts_with("process_")).cloned().collect();
        out.sort();
        out.dedup();
        out
    }
}

pub fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace(NS), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(NS), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

pub fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace(NS)).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

pub fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace(NS)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::with_opts(Opts::new(name, help).namespace(NS)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).namespace(NS).buckets(buckets)).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

pub fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let h =
        HistogramVec::new(HistogramOpts::new(name, help).namespace(NS).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}
