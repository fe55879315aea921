//! The pre-start path's pure decisions: which host links are the plugin's, when a
//! sandbox is Docker's no longer, and whether the agent may write into it.

use crate::diagnose::FaultKind;
use crate::marathon::Policy;
use crate::medic::Mode;
use crate::workload::MacSource;

/// `cali` + the first 11 characters of the endpoint id, as the libnetwork plugin names it.
pub fn is_calico_host_veth(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|id| id.len() == 11 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// What the sandbox's state means for the pre-start path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxState {
    /// Docker is still configuring it (link not renamed yet, no address, a route missing…).
    Configuring,
    /// Configured and healthy: nothing to do.
    Healthy,
    /// Configured; the MAC is the only fault.
    MacOnly,
}

/// Configured means: the link carries the plugin's name and every fault Docker would
/// still fix itself is gone. Only then is the MAC the last word, and ours to fix.
pub fn sandbox_state(link_name: Option<&str>, stem: &str, faults: &[FaultKind]) -> SandboxState {
    let named = link_name.is_some_and(|n| n.starts_with(stem));
    if !named || faults.iter().any(|f| *f != FaultKind::MacMismatch) {
        SandboxState::Configuring
    } else if faults.is_empty() {
        SandboxState::Healthy
    } else {
        SandboxState::MacOnly
    }
}

/// What `may_write_before_start` is asked about.
#[derive(Debug, Clone)]
pub struct SandboxFacts<'a> {
    /// The container, when its `runc init` could be found in the sandbox.
    pub container: Option<&'a str>,
    pub host_interface: &'a str,
    pub mac_source: MacSource,
    /// Its per-app policy (Marathon label), when Docker's record of it could be read.
    pub policy: Option<Policy>,
    /// The scheduler has already checked the container after its start.
    pub checked_after_start: bool,
}

/// THE decision whether the agent may write into a sandbox before its task starts.
/// Every pre-start write goes through here.
pub fn may_write_before_start(facts: &SandboxFacts, dry_run: bool, enabled: bool) -> Result<(), &'static str> {
    if dry_run {
        return Err("dry run");
    }
    if !enabled {
        return Err("prestart.enabled is off");
    }
    // Only a source that speaks for this endpoint: a user's --mac-address is what
    // Felix programs (and what the datastore holds); the Calico default is a guess.
    if !matches!(facts.mac_source, MacSource::Config | MacSource::Datastore | MacSource::HostNeighbour) {
        return Err("no endpoint-specific source for the expected MAC");
    }
    // An app labelled `off` or `report` is never written; without its record the
    // label is unknown, so the task is left to the post-start pass.
    match facts.policy {
        None => return Err("its per-app policy is unknown before start (no record of the container)"),
        Some(p) if p.limit(Mode::Repair) != Some(Mode::Repair) => return Err("its per-app policy is not repair"),
        Some(_) => {}
    }
    if facts.checked_after_start {
        return Err("already checked after start");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use FaultKind::*;

    #[test]
    fn only_the_plugins_host_veths_are_followed() {
        assert!(is_calico_host_veth("cali0c7897dea75", "cali"));
        assert!(!is_calico_host_veth("cali0", "cali"), "a container-side name");
        assert!(!is_calico_host_veth("veth1a2b3c4", "cali"), "a bridge task's veth");
        assert!(!is_calico_host_veth("cali0c7897dea75x", "cali"));
        assert!(!is_calico_host_veth("calico-lab0", "cali"));
    }

    /// The MAC is written only after Docker's last write: while any other fault is
    /// left (Docker still renaming, addressing, routing), the sandbox is Configuring.
    #[test]
    fn the_mac_is_ours_only_once_docker_is_done() {
        let s = |name: Option<&str>, f: &[FaultKind]| sandbox_state(name, "cali", f);
        assert_eq!(s(Some("temp0c7897dea75"), &[MacMismatch, AddressMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("temp0c7897dea75"), &[MacMismatch]), SandboxState::Configuring, "not renamed yet");
        assert_eq!(
            s(Some("cali0"), &[MacMismatch, GatewayRouteMissing, DefaultRouteMissing]),
            SandboxState::Configuring
        );
        assert_eq!(s(Some("cali0"), &[MacMismatch, DefaultRouteMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("cali0"), &[MacMismatch, LinkDown]), SandboxState::Configuring);
        assert_eq!(s(None, &[LinkMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("cali0"), &[MacMismatch]), SandboxState::MacOnly);
        assert_eq!(s(Some("cali0"), &[]), SandboxState::Healthy);
    }

    #[test]
    fn writes_before_start_need_a_specific_mac_a_repair_policy_and_no_check_yet() {
        let facts = |src, policy, checked| SandboxFacts {
            container: Some("c"),
            host_interface: "cali0c7897dea75",
            mac_source: src,
            policy,
            checked_after_start: checked,
        };
        let ok = facts(MacSource::Datastore, Some(Policy::Repair), false);
        assert_eq!(may_write_before_start(&ok, false, true), Ok(()));
        assert!(may_write_before_start(&ok, true, true).is_err(), "dry run");
        assert!(may_write_before_start(&ok, false, false).is_err(), "disabled");
        assert!(
            may_write_before_start(&facts(MacSource::CalicoDefault, Some(Policy::Repair), false), false, true).is_err()
        );
        assert!(may_write_before_start(&facts(MacSource::Datastore, None, false), false, true).is_err());
        assert!(may_write_before_start(&facts(MacSource::Datastore, Some(Policy::Report), false), false, true).is_err());
        assert!(may_write_before_start(&facts(MacSource::Datastore, Some(Policy::Repair), true), false, true).is_err());
    }
}
