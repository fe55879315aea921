//! What calico-medic may do to a task (its `Policy`) and what one pass may do
//! (`Mode`): plain data that every layer shares (config, Docker's workload, reports,
//! metrics, the pass). `Policy::of_task` sits with `[marathon]` in `config`.
//!
//! Per-app policy from Marathon app labels. Marathon exports an app's labels to
//! each of its tasks as environment: `MARATHON_APP_LABELS` lists the exported
//! names (space-separated) and `MARATHON_APP_LABEL_<NAME>` holds each value. A
//! name is exported upper-cased with every run of characters other than
//! `[A-Za-z0-9_]` replaced by `_` (so `calico-medic` and `calico.medic` both
//! arrive as `CALICO_MEDIC`); labels with very long names or values (≥ 512
//! characters) are not exported at all.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The label (as exported to the task) that carries an app's policy.
pub const POLICY_LABEL: &str = "CALICO_MEDIC";

/// What a pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only diagnosis.
    Check,
    /// Diagnose, repair, re-check.
    Repair,
    /// Plan repairs but write nothing (reported as skipped).
    DryRun,
    /// The endpoint keeps breaking: report, do not write (reported as skipped).
    BackedOff,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Repair => "repair",
            Mode::DryRun => "dry_run",
            Mode::BackedOff => "backed_off",
        }
    }
}

/// What calico-medic may do to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Never touched, not even checked (the task manages its own interfaces).
    Off,
    /// Checked and reported; nothing is written.
    Report,
    /// Checked and repaired (the default).
    #[default]
    Repair,
    /// Repaired; when it cannot be repaired, Marathon is asked to replace the
    /// task. Only where escalation is enabled (`[marathon] enabled`); elsewhere
    /// it acts as `repair`.
    Escalate,
}

impl Policy {
    pub const ALL: [Policy; 4] = [Policy::Off, Policy::Report, Policy::Repair, Policy::Escalate];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Off => "off",
            Policy::Report => "report",
            Policy::Repair => "repair",
            Policy::Escalate => "escalate",
        }
    }

    /// The task's policy: its label when it holds a known value, else `default`.
    /// `escalate` where escalation is disabled is `repair`. Returns the policy and,
    /// for a label value that is not a policy, a note saying so.
    pub fn resolve(label: Option<&str>, default: Policy, escalation_enabled: bool) -> (Policy, Option<String>) {
        let (policy, note) = match label.map(str::trim) {
            None => (default, None),
            Some(raw) => match raw.parse::<Policy>() {
                Ok(p) => (p, None),
                Err(e) => (default, Some(e)),
            },
        };
        match policy {
            Policy::Escalate if !escalation_enabled => (Policy::Repair, note),
            p => (p, note),
        }
    }

    /// The one place that decides what a pass may do under this policy: `off`
    /// runs no pass at all (`None`), `report` never writes.
    pub fn limit(self, mode: Mode) -> Option<Mode> {
        match self {
            Policy::Off => None,
            Policy::Report => Some(Mode::Check),
            Policy::Repair | Policy::Escalate => Some(mode),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{POLICY_LABEL} label {s:?} is not a policy (off, report, repair, escalate)"))
    }
}

/// The policy label's value from a task's environment (`KEY=VALUE` entries), as
/// Marathon exports it: the name must be listed in `MARATHON_APP_LABELS`.
pub fn policy_label(env: &[String]) -> Option<String> {
    let lookup = |key: &str| env.iter().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')));
    let listed = lookup("MARATHON_APP_LABELS")?;
    if !listed.split_whitespace().any(|n| n == POLICY_LABEL) {
        return None;
    }
    lookup(&format!("MARATHON_APP_LABEL_{POLICY_LABEL}")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[&str]) -> Vec<String> {
        pairs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_read_as_marathon_exports_it() {
        let e = env(&["MARATHON_APP_LABELS=HAPROXY_GROUP CALICO_MEDIC", "MARATHON_APP_LABEL_CALICO_MEDIC=off"]);
        assert_eq!(policy_label(&e).as_deref(), Some("off"));
        // A value without its name in MARATHON_APP_LABELS is not an exported label.
        let e = env(&["MARATHON_APP_LABELS=OTHER", "MARATHON_APP_LABEL_CALICO_MEDIC=off"]);
        assert_eq!(policy_label(&e), None);
        let e = env(&["MARATHON_APP_LABEL_CALICO_MEDIC=off"]);
        assert_eq!(policy_label(&e), None);
        // A prefix of the name is not the name.
        let e = env(&["MARATHON_APP_LABELS=CALICO_MEDIC_X", "MARATHON_APP_LABEL_CALICO_MEDIC_X=off"]);
        assert_eq!(policy_label(&e), None);
        assert_eq!(policy_label(&[]), None);
    }

    #[test]
    fn resolve_label_default_and_escalation_switch() {
        assert_eq!(Policy::resolve(None, Policy::Repair, false), (Policy::Repair, None));
        assert_eq!(Policy::resolve(Some("OFF"), Policy::Repair, false), (Policy::Off, None));
        assert_eq!(Policy::resolve(Some(" report "), Policy::Repair, true), (Policy::Report, None));
        assert_eq!(Policy::resolve(Some("escalate"), Policy::Repair, true), (Policy::Escalate, None));
        assert_eq!(Policy::resolve(Some("escalate"), Policy::Repair, false).0, Policy::Repair);
        assert_eq!(Policy::resolve(None, Policy::Escalate, false).0, Policy::Repair);
        let (p, note) = Policy::resolve(Some("nope\x1b"), Policy::Report, true);
        assert_eq!(p, Policy::Report);
        let note = note.unwrap();
        assert!(note.contains("\"nope\\u{1b}\" is not a policy"), "{note}");
    }

    #[test]
    fn off_runs_nothing_report_never_writes() {
        assert_eq!(Policy::Off.limit(Mode::Repair), None);
        assert_eq!(Policy::Off.limit(Mode::Check), None);
        assert_eq!(Policy::Report.limit(Mode::Repair), Some(Mode::Check));
        assert_eq!(Policy::Report.limit(Mode::DryRun), Some(Mode::Check));
        assert_eq!(Policy::Repair.limit(Mode::Repair), Some(Mode::Repair));
        assert_eq!(Policy::Escalate.limit(Mode::BackedOff), Some(Mode::BackedOff));
    }
}
