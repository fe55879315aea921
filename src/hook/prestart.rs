//! `calico-medic hook prestart`: the OCI prestart hook `calico-medic runtime` adds
//! after Docker's own. runc runs it once Docker has configured the network and before
//! the task's first instruction, with the OCI state on stdin (`id`, `pid`, `bundle`).
//! It sees each calico endpoint as the task will, and when the MAC is its only fault
//! it repairs it through the one pipeline (`endpoint_pass_from`), under the same rule
//! as the follower (`may_write_before_start`).
//!
//! It can never fail a start: whatever happens it exits 0, and within its deadline
//! (`prestart.hook_deadline`; a watchdog ends the process). It writes only into the
//! namespace of the process runc names, never the host's (`TargetNetns` refuses it).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::diagnose::diagnose_container;
use crate::error::MedicError;
use crate::marathon::Policy;
use crate::medic::{endpoint_pass_from, Mode};
use crate::netlink::{LinkState, Netlink};
use crate::netns::{NsIdentity, TargetNetns};
use crate::observe::observe_container;
use crate::prestart::hooks::HookReport;
use crate::prestart::{is_calico_host_veth, may_write_before_start, sandbox_state, SandboxFacts, SandboxState};
use crate::workload::{DefaultRoute, EndpointFacts, Expected, Identity, MacEvidence};

/// The OCI state runc writes on the hook's stdin (only what is used).
#[derive(Debug, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: u32,
    pub bundle: PathBuf,
}

const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What the hook did with one endpoint (the one log line, the trace, the report).
#[derive(Debug)]
pub struct Done {
    pub host_interface: String,
    pub outcome: &'static str,
    pub seen: serde_json::Value,
}

/// Reads the OCI state from stdin.
pub fn read_state(input: impl Read) -> Result<State, String> {
    let mut raw = Vec::new();
    input.take(MAX_STATE_BYTES + 1).read_to_end(&mut raw).map_err(|e| format!("reading the OCI state: {e}"))?;
    if raw.len() as u64 > MAX_STATE_BYTES {
        return Err(format!("OCI state larger than {MAX_STATE_BYTES} bytes"));
    }
    serde_json::from_slice(&raw).map_err(|e| format!("not an OCI state: {e}"))
}

/// The task's environment from its bundle's `config.json` (`process.env`).
fn bundle_env(bundle: &Path, cap: u64) -> Result<Vec<String>, String> {
    let path = bundle.join("config.json");
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut raw = Vec::new();
    file.take(cap + 1).read_to_end(&mut raw).map_err(|e| format!("{}: {e}", path.display()))?;
    if raw.len() as u64 > cap {
        return Err(format!("{} is larger than {cap} bytes", path.display()));
    }
    #[derive(Deserialize)]
    struct Spec {
        process: Option<Process>,
    }
    #[derive(Deserialize)]
    struct Process {
        env: Option<Vec<String>>,
    }
    let spec: Spec = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(spec.process.and_then(|p| p.env).unwrap_or_default())
}

/// The calico endpoints of the container's namespace: each `cali…` link holding an
/// IPv4 /32, with the host veth it pairs with and Felix's neighbour entry there.
async fn endpoints(
    nl: &Netlink,
    host: &Netlink,
    config: &Config,
) -> Result<Vec<(LinkState, EndpointFacts, MacEvidence)>, MedicError> {
    let stem = config.container_interface.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let links = nl.links().await?;
    let addrs = nl.ipv4_addresses().await?;
    let mut out = Vec::new();
    for l in links.iter().filter(|l| l.name.starts_with(&stem)) {
        let Some(&(_, ip, _)) = addrs.iter().find(|&&(i, _, len)| i == l.index && len == 32) else { continue };
        let Some((host_link, mac)) = host_side(host, l, ip, &config.host_interface_prefix).await? else { continue };
        let facts = EndpointFacts {
            host_interface: host_link.name.clone(),
            ip,
            peer_index: Some(l.index),
            only_endpoint: false,
            default_route: DefaultRoute::Undecided,
        };
        let evidence =
            MacEvidence { config: config.expected_mac, datastore: None, host_neighbour: mac, docker_inspect: None };
        out.push((l.clone(), facts, evidence));
    }
    Ok(out)
}

/// The host veth of a container link (by its peer index; on kernels that do not
/// report it, the calico host veth whose PERMANENT neighbour is the workload IP) and
/// that neighbour's MAC.
async fn host_side(
    host: &Netlink,
    link: &LinkState,
    ip: Ipv4Addr,
    prefix: &str,
) -> Result<Option<(LinkState, Option<crate::workload::MacAddr>)>, MedicError> {
    let candidates: Vec<LinkState> = match link.peer_index {
        Some(peer) if crate::kernel::compat::emulated_kernel().is_none_or(|v| v >= (4, 1)) => {
            host.link_by_index(peer).await?.into_iter().collect()
        }
        _ => host.links().await?,
    };
    for h in candidates.into_iter().filter(|h| is_calico_host_veth(&h.name, prefix)) {
        let neighbours = host.neighbours_on(h.index).await?;
        let mac = neighbours.iter().find(|(dst, n)| *dst == ip && n.permanent).map(|(_, n)| n.mac);
        if mac.is_some() || link.peer_index == Some(h.index) {
            return Ok(Some((h, mac)));
        }
    }
    Ok(None)
}

/// The hook's work for one container; every endpoint is looked at, none written
/// unless the MAC is its only fault and the rule allows it.
pub async fn run(state: &State, config: &Config, started: Instant) -> Result<(Vec<Done>, Policy), MedicError> {
    let env =
        bundle_env(&state.bundle, config.limits.docker_record_bytes).map_err(|e| MedicError::netns(&state.id, &e))?;
    let (policy, _) = Policy::of_task(&env, &config.marathon);
    if policy == Policy::Off {
        return Ok((Vec::new(), policy));
    }
    let host_ns = NsIdentity::current_thread().map_err(|e| MedicError::netns_io("reading own namespace", e))?;
    let ns = TargetNetns::open_pid(state.pid, host_ns)?;
    let deadline = config.call_deadline();
    let nl = Netlink::in_netns(&ns)?.with_timeout(deadline).with_limits(config.dump_limits());
    let host = Netlink::host()?.with_timeout(deadline);
    let stem = config.container_interface.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let mut done = Vec::new();
    for (link, facts, evidence) in endpoints(&nl, &host, config).await? {
        let expected = Expected::build(&link.name, config.gateway, facts, &evidence);
        let side = observe_container(&nl, &expected).await?;
        let faults = diagnose_container(&expected, &side);
        let kinds: Vec<_> = faults.iter().map(|f| f.kind).collect();
        let seen = json!({
            "interface": side.link.as_ref().map(|l| l.name.clone()),
            "mac": side.link.as_ref().and_then(|l| l.mac).map(|m| m.to_string()),
            "up": side.link.as_ref().map(|l| l.admin_up),
            "addresses": side.addresses.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>(),
            "routes": side.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "faults": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        });
        let host_interface = expected.host_interface.clone();
        let outcome = match sandbox_state(side.link.as_ref().map(|l| l.name.as_str()), &stem, &kinds) {
            SandboxState::Healthy => "healthy",
            SandboxState::Configuring => "not_configured",
            SandboxState::MacOnly => {
                let facts = SandboxFacts {
                    container: Some(&state.id),
                    host_interface: &host_interface,
                    mac_source: expected.mac_source,
                    policy: Some(policy),
                    checked_after_start: false,
                };
                if may_write_before_start(&facts, false, true).is_err() {
                    "not_allowed"
                } else {
                    let who = Identity::named(&state.id);
                    let pass = endpoint_pass_from(&nl, &expected, &[], Mode::Repair, &who, side, faults).await?;
                    if pass.remaining.is_empty() {
                        report(config, &state.id, &host_interface, started);
                        "repaired"
                    } else {
                        "failed"
                    }
                }
            }
        };
        done.push(Done { host_interface, outcome, seen });
    }
    Ok((done, policy))
}

/// Tells the daemon (if it listens) what was repaired, so the post-start pass
/// confirms it and counts it as `path="hook"`.
fn report(config: &Config, container: &str, host_interface: &str, started: Instant) {
    let r = HookReport {
        container: container.to_string(),
        host_interface: host_interface.to_string(),
        repaired_at: crate::report::unix_now(),
        latency: started.elapsed().as_secs_f64(),
    };
    let _ = crate::prestart::hooks::send(&config.prestart.hook_socket, &r);
}
