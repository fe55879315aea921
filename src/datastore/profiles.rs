//! Profiles. The libnetwork plugin gives every endpoint the profile named after its
//! Docker network and writes it on that network's first `CreateEndpoint`:
//! `/calico/v1/policy/profile/<name>/rules`, `tags`, `labels`. Without readable `rules`
//! and `tags` Felix 2.6 installs a drop-all profile ("Profile not known or invalid"):
//! every endpoint of the network loses its traffic to and from other workloads. Felix
//! does not police this host's own traffic to its local workloads, so the reachability
//! probe still succeeds (seen with real Felix 2.6.8 in the lab): only this check tells.
//!
//! Reported as `profile_missing` on each endpoint of the profile; written back only with
//! `[calico] recreate_missing_profiles`, the plugin's default profile, key by key and only
//! where absent (`prevExist=false`): never overwritten.

use std::collections::{BTreeMap, BTreeSet};

use super::etcd::Node;
use super::{Datastore, EndpointRecord};
use crate::diagnose::{Fault, FaultKind};
use crate::error::MedicError;

pub const PROFILE_DIR: &str = "/calico/v1/policy/profile";

/// What the datastore holds for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileState {
    Present,
    /// Absent or unusable to Felix; why, in words.
    Missing(String),
}

/// A profile id this agent will read (and may write): a Docker network name
/// (`[A-Za-z0-9][A-Za-z0-9_.-]*`), at most 253 bytes. Anything else could name another key.
pub fn valid_id(id: &str) -> bool {
    id.len() <= 253
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Judges a profile's keys (a recursive read of its directory) as Felix would use them:
/// `rules` a JSON object, `tags` a JSON array of strings.
pub fn judge(id: &str, nodes: &[Node]) -> ProfileState {
    let value = |leaf: &str| {
        let key = format!("{PROFILE_DIR}/{id}/{leaf}");
        nodes.iter().find(|n| n.key == key).and_then(|n| n.value.clone())
    };
    let rules = value("rules");
    let tags = value("tags");
    if rules.is_none() && tags.is_none() {
        return ProfileState::Missing("is not in the datastore".into());
    }
    match rules.as_deref().map(serde_json::from_str::<serde_json::Value>) {
        None => return ProfileState::Missing("has no rules".into()),
        Some(Ok(serde_json::Value::Object(_))) => {}
        Some(_) => return ProfileState::Missing("has unreadable rules".into()),
    }
    match tags.as_deref().map(serde_json::from_str::<Vec<String>>) {
        None => ProfileState::Missing("has no tags".into()),
        Some(Ok(_)) => ProfileState::Present,
        Some(Err(_)) => ProfileState::Missing("has unreadable tags".into()),
    }
}

/// The profile the libnetwork plugin writes for network `name`: inbound allowed from
/// the network's tag, outbound allowed, tagged with its name, no labels.
pub fn default_profile(name: &str) -> [(String, String); 3] {
    let tag = serde_json::Value::String(name.to_string());
    let rules = serde_json::json!({"inbound_rules": [{"action": "allow", "src_tag": tag}], "outbound_rules": [{"action": "allow"}]});
    [
        (format!("{PROFILE_DIR}/{name}/rules"), rules.to_string()),
        (format!("{PROFILE_DIR}/{name}/tags"), serde_json::json!([tag]).to_string()),
        (format!("{PROFILE_DIR}/{name}/labels"), "{}".to_string()),
    ]
}

/// `profile_missing` for each of an endpoint's profiles known to be missing.
pub fn findings(profile_ids: &[String], state: impl Fn(&str) -> Option<ProfileState>) -> Vec<Fault> {
    profile_ids
        .iter()
        .filter_map(|id| match state(id) {
            Some(ProfileState::Missing(why)) => Some(Fault::new(
                FaultKind::ProfileMissing,
                format!(
                    "profile {id} {why}: Felix drops the traffic of its endpoints (this host's probe still passes)"
                ),
            )),
            _ => None,
        })
        .collect()
}

/// The readable profile ids the endpoints name, once each.
pub fn referenced(endpoints: &BTreeMap<String, EndpointRecord>) -> BTreeSet<String> {
    endpoints.values().flat_map(|r| r.profile_ids.iter()).filter(|id| valid_id(id)).cloned().collect()
}

impl Datastore {
    /// Reads every profile this host's endpoints name; returns the ones whose state
    /// changed (a profile read for the first time included). A failed read leaves the
    /// previous state; ids no endpoint names any more are forgotten.
    pub async fn refresh_profiles(&self) -> Result<Vec<(String, ProfileState)>, MedicError> {
        let Some(ids) = self.with_endpoints(referenced) else { return Ok(Vec::new()) };
        let mut read = Vec::with_capacity(ids.len());
        for id in &ids {
            let dir = self.client.get_dir(&format!("{PROFILE_DIR}/{id}")).await?;
            read.push((id.clone(), judge(id, &dir.nodes)));
        }
        let mut known = self.profiles.write().unwrap_or_else(|p| p.into_inner());
        known.retain(|id, _| ids.contains(id));
        let changed = read.into_iter().filter(|(id, st)| known.insert(id.clone(), st.clone()).as_ref() != Some(st));
        Ok(changed.collect())
    }

    /// The last read state of a profile; `None` when unknown or the datastore is down.
    pub fn profile_state(&self, id: &str) -> Option<ProfileState> {
        if !self.is_up() {
            return None;
        }
        self.profiles.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Every known profile and whether it is missing.
    pub fn profile_states(&self) -> Vec<(String, bool)> {
        let known = self.profiles.read().unwrap_or_else(|p| p.into_inner());
        known.iter().map(|(id, st)| (id.clone(), matches!(st, ProfileState::Missing(_)))).collect()
    }

    /// Writes the plugin's default profile for `id`, each key only where absent;
    /// returns the keys this call wrote.
    pub async fn recreate_profile(&self, id: &str) -> Result<Vec<String>, MedicError> {
        if !valid_id(id) {
            return Err(MedicError::Datastore(format!("profile id {id:?} is not a network name: not written")));
        }
        let mut written = Vec::new();
        for (key, value) in default_profile(id) {
            if self.client.create(&key, &value).await? {
                written.push(key);
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(id: &str, kv: &[(&str, &str)]) -> Vec<Node> {
        kv.iter().map(|(k, v)| Node { key: format!("{PROFILE_DIR}/{id}/{k}"), value: Some(v.to_string()) }).collect()
    }

    #[test]
    fn a_profile_is_present_only_with_readable_rules_and_tags() {
        let written: Vec<(String, String)> = default_profile("net").into();
        let as_nodes: Vec<Node> =
            written.iter().map(|(k, v)| Node { key: k.clone(), value: Some(v.clone()) }).collect();
        assert_eq!(judge("net", &as_nodes), ProfileState::Present);
        assert_eq!(judge("net", &[]), ProfileState::Missing("is not in the datastore".into()));
        assert_eq!(judge("net", &nodes("net", &[("tags", "[\"net\"]")])), ProfileState::Missing("has no rules".into()));
        assert_eq!(judge("net", &nodes("net", &[("rules", "{}")])), ProfileState::Missing("has no tags".into()));
        let bad = nodes("net", &[("rules", "[1]"), ("tags", "[\"net\"]")]);
        assert_eq!(judge("net", &bad), ProfileState::Missing("has unreadable rules".into()));
        let bad = nodes("net", &[("rules", "{}"), ("tags", "\"net\"")]);
        assert_eq!(judge("net", &bad), ProfileState::Missing("has unreadable tags".into()));
        // another profile's keys are not this one's
        assert_eq!(judge("net", &nodes("other", &[("rules", "{}"), ("tags", "[]")])), judge("net", &[]));
    }

    #[test]
    fn the_default_profile_is_the_plugins_byte_for_byte() {
        let [rules, tags, labels] = default_profile("calico-lab-real");
        assert_eq!(rules.0, "/calico/v1/policy/profile/calico-lab-real/rules");
        assert_eq!(
            rules.1,
            r#"{"inbound_rules":[{"action":"allow","src_tag":"calico-lab-real"}],"outbound_rules":[{"action":"allow"}]}"#
        );
        assert_eq!(tags.1, r#"["calico-lab-real"]"#);
        assert_eq!(labels, ("/calico/v1/policy/profile/calico-lab-real/labels".into(), "{}".into()));
    }

    #[test]
    fn only_network_names_are_profile_ids_read_or_written() {
        for ok in ["calico-lab", "a", "net_1.x"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "../host", "a/b", "-x", "a?b", "a b", &"x".repeat(254)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn each_missing_profile_of_an_endpoint_is_a_finding() {
        let ids = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let f = findings(&ids, |id| match id {
            "a" => Some(ProfileState::Missing("has no rules".into())),
            "b" => Some(ProfileState::Present),
            _ => None,
        });
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FaultKind::ProfileMissing);
        assert!(f[0].detail.contains("profile a has no rules"), "{}", f[0].detail);
    }
}
