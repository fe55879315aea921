//! Task-to-task probes across hosts. Each round probes a bounded number of other
//! hosts (`[bgp] remote_hosts_per_round`, rotating through them in name order), one
//! workload each (rotating through its endpoints), from inside a local task of the
//! same network: Calico's default profile admits only traffic from the network's own
//! tag, so a probe from the host itself would be dropped by Felix on the far side.
//! What is kept is the last result per host; only failing hosts get a label of their
//! own (a series per host pair would be ~10⁶ at 1,000 hosts). Pure: no I/O here.
//!
//! A task decides what its own namespace sends: one that drops its outbound traffic
//! (a blackhole route, its own firewall) must not make another host look unreachable.
//! So the local source rotates through the network's running tasks, and a failure is
//! tried again from a second one before the host counts as unreachable. With a single
//! local task on that network there is no second opinion: the warning names it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The next `n` of `hosts` (sorted) from `cursor`, and the cursor after them.
pub fn pick(hosts: &[String], cursor: usize, n: usize) -> (Vec<String>, usize) {
    if hosts.is_empty() || n == 0 {
        return (Vec::new(), 0);
    }
    let n = n.min(hosts.len());
    let start = cursor % hosts.len();
    let chosen = (0..n).map(|i| hosts[(start + i) % hosts.len()].clone()).collect();
    (chosen, (start + n) % hosts.len())
}

/// The last probe of one remote host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostResult {
    pub target: Ipv4Addr,
    /// `Some(rtt)`: it answered.
    pub rtt: Option<f64>,
    /// The local tasks (short ids) that probed it and got no answer.
    pub silent_sources: Vec<String>,
}

/// Results by remote host; hosts gone from the datastore are forgotten.
#[derive(Debug, Default)]
pub struct RemoteState {
    pub last: BTreeMap<String, HostResult>,
    pub cursor: usize,
    /// Per host, which of its endpoints is next.
    pub endpoint_turn: BTreeMap<String, usize>,
    /// Per network, which of its local tasks is the first source next.
    pub source_turn: BTreeMap<String, usize>,
}

impl RemoteState {
    pub fn record(&mut self, host: &str, result: HostResult) {
        self.last.insert(host.to_string(), result);
    }

    /// Drops hosts that are no longer in `hosts`.
    pub fn retain(&mut self, hosts: &[String]) {
        self.last.retain(|h, _| hosts.contains(h));
        self.endpoint_turn.retain(|h, _| hosts.contains(h));
    }

    /// (reachable, unreachable) hosts by their last probe.
    pub fn counts(&self) -> (usize, usize) {
        let up = self.last.values().filter(|r| r.rtt.is_some()).count();
        (up, self.last.len() - up)
    }

    /// Hosts whose last probe failed.
    pub fn failing(&self) -> Vec<&str> {
        self.last.iter().filter(|(_, r)| r.rtt.is_none()).map(|(h, _)| h.as_str()).collect()
    }

    /// Which of `count` endpoints of `host` to probe now.
    pub fn next_endpoint(&mut self, host: &str, count: usize) -> usize {
        let turn = self.endpoint_turn.entry(host.to_string()).or_insert(0);
        let i = *turn % count.max(1);
        *turn = turn.wrapping_add(1);
        i
    }

    /// Up to two distinct local sources (of `candidates`, running tasks of `network`
    /// sorted by id) for one probe: the first rotates round by round, the second is
    /// the one after it, asked only when the first gets no answer.
    pub fn sources(&mut self, network: &str, candidates: &[String]) -> Vec<String> {
        let mut sorted: Vec<&String> = candidates.iter().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Vec::new();
        }
        let turn = self.source_turn.entry(network.to_string()).or_insert(0);
        let first = *turn % sorted.len();
        *turn = turn.wrapping_add(1);
        (0..sorted.len().min(2)).map(|i| sorted[(first + i) % sorted.len()].clone()).collect()
    }
}

/// Probes per second one agent sends: `per_round` hosts every `interval_s`, one echo
/// each (the answer is the far host's; a failing host gets a second echo from a
/// second local task, so at most twice this while hosts fail). At 1,000 hosts with
/// 16 per 10 s round: 1.6/s, and each host is probed by each other host every
/// 10 × 1000/16 s ≈ 10.4 min.
pub fn probes_per_second(per_round: usize, remote_hosts: usize, interval_s: f64) -> f64 {
    per_round.min(remote_hosts) as f64 / interval_s.max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("h{i:02}")).collect()
    }

    #[test]
    fn rounds_rotate_through_every_host() {
        let h = hosts(5);
        let (a, c) = pick(&h, 0, 2);
        let (b, c) = pick(&h, c, 2);
        let (d, c) = pick(&h, c, 2);
        assert_eq!([a, b, d].concat(), vec!["h00", "h01", "h02", "h03", "h04", "h00"]);
        assert_eq!(c, 1);
        assert_eq!(pick(&h, 3, 9).0.len(), 5, "never one host twice in a round");
        assert_eq!(pick(&[], 3, 2), (vec![], 0));
        assert_eq!(pick(&hosts(3), 7, 1).0, vec!["h01"], "a cursor past a shrunk list wraps");
    }

    #[test]
    fn the_last_result_per_host_is_counted_and_gone_hosts_forgotten() {
        let mut s = RemoteState::default();
        s.record("a", HostResult { target: Ipv4Addr::new(10, 0, 0, 1), rtt: Some(0.001), silent_sources: vec![] });
        s.record("b", HostResult { target: Ipv4Addr::new(10, 0, 0, 2), rtt: None, silent_sources: vec!["s".into()] });
        assert_eq!(s.counts(), (1, 1));
        assert_eq!(s.failing(), vec!["b"]);
        s.record("b", HostResult { target: Ipv4Addr::new(10, 0, 0, 2), rtt: Some(0.002), silent_sources: vec![] });
        assert_eq!(s.counts(), (2, 0));
        s.retain(&["a".to_string()]);
        assert_eq!(s.counts(), (1, 0));
        assert_eq!(
            [s.next_endpoint("a", 3), s.next_endpoint("a", 3), s.next_endpoint("a", 3), s.next_endpoint("a", 3)],
            [0, 1, 2, 0]
        );
    }

    #[test]
    fn a_failure_is_asked_again_from_another_task_and_the_first_source_rotates() {
        let mut s = RemoteState::default();
        let tasks = vec!["c".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(s.sources("net", &tasks), ["a", "b"]);
        assert_eq!(s.sources("net", &tasks), ["b", "c"]);
        assert_eq!(s.sources("net", &tasks), ["c", "a"]);
        assert_eq!(s.sources("other", &tasks), ["a", "b"], "each network has its own turn");
        assert_eq!(s.sources("net", &["only".to_string()]), ["only"], "one task: no second opinion");
        assert!(s.sources("net", &[]).is_empty());
    }

    #[test]
    fn probe_rate_at_a_thousand_hosts() {
        assert!((probes_per_second(16, 999, 10.0) - 1.6).abs() < 1e-9);
        assert!((probes_per_second(16, 3, 10.0) - 0.3).abs() < 1e-9);
    }
}
