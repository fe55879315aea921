//! Who a calico container is (Docker + Marathon identity), where its network
//! namespace is, and what its Calico endpoints should look like.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// The MAC Calico's libnetwork plugin asks Docker to put on every `cali0`.
pub const CALICO_MAC: MacAddr = MacAddr([0xee; 6]);

impl MacAddr {
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address (want six hex pairs like ee:ee:ee:ee:ee:ee)"));
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!("{s:?} is not a MAC address (bad byte {part:?})"));
            }
            *slot =
                u8::from_str_radix(part, 16).map_err(|_| format!("{s:?} is not a MAC address (bad byte {part:?})"))?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A running container attached to at least one calico network.
#[derive(Debug, Clone)]
pub struct Workload {
    pub container_id: String,
    pub container_name: String,
    pub marathon_app_id: Option<String>,
    pub mesos_task_id: Option<String>,
    /// The app's `CALICO_MEDIC` label as Marathon exported it to the task's env.
    pub policy_label: Option<String>,
    /// Init PID and start time: together they name one start of the container,
    /// so a stale or reused PID can be detected before its namespace is touched.
    pub pid: u32,
    pub started_at: String,
    pub endpoints: Vec<Endpoint>,
}

impl Workload {
    pub fn identity(&self) -> Identity {
        Identity {
            container: self.container_name.clone(),
            app: self.marathon_app_id.clone(),
            task: self.mesos_task_id.clone(),
        }
    }
}

/// Who a log line is about: container name, Marathon app and task. All three are
/// tenant text; `Display` escapes control characters so none can forge a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub container: String,
    pub app: Option<String>,
    pub task: Option<String>,
}

impl Identity {
    pub fn named(container: &str) -> Identity {
        Identity { container: container.to_string(), ..Identity::default() }
    }
}

/// `container=x app=/y task=z`, escaped.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container={}", Escaped(&self.container))?;
        if let Some(app) = &self.app {
            write!(f, " app={}", Escaped(app))?;
        }
        if let Some(task) = &self.task {
            write!(f, " task={}", Escaped(task))?;
        }
        Ok(())
    }
}

/// Tenant text for logs and terminals: control characters (newline, ESC, …) are
/// shown escaped (`\n`, `\u{1b}`); everything else as is.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        Ok(())
    }
}

/// One attachment of a container to a calico network (one Calico workload endpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub network: String,
    pub endpoint_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// `MacAddress` from `docker inspect`; `None` when Docker reports it empty
    /// (the symptom of Docker dropping the plugin's MAC).
    pub docker_mac: Option<MacAddr>,
    /// Whether this endpoint's network holds the task's default route.
    pub default_route: DefaultRoute,
}

/// Who owns the task's default route. Docker gives it to one network of a
/// multi-network container (endpoint priority, then network name); calico-medic
/// never takes it over from another network and never fights Docker for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultRoute {
    /// This calico endpoint is the gateway: `default via 169.254.1.1 dev cali…`.
    Owned,
    /// Another network (named) is the gateway: the default route is not ours to check.
    OtherNetwork(String),
    /// Not known yet: before start, which of a sandbox's networks gets the default
    /// route is Docker's choice, made after each endpoint is configured (the
    /// pre-start path never judges it; the post-start pass does).
    Undecided,
}

impl Endpoint {
    /// Host side veth name, as the libnetwork plugin derives it.
    pub fn host_interface(&self, prefix: &str) -> String {
        let id: String = self.endpoint_id.chars().take(11).collect();
        format!("{prefix}{id}")
    }
}

/// Where the expected MAC came from. The declaration order is the order of trust,
/// most trusted first: explicit configuration, Calico's datastore (the origin), the
/// host's PERMANENT ARP entry (Felix's copy of it), `docker inspect`, Calico's fixed MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacSource {
    Config,
    Datastore,
    HostNeighbour,
    DockerInspect,
    CalicoDefault,
}

impl MacSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MacSource::Config => "config",
            MacSource::Datastore => "datastore",
            MacSource::HostNeighbour => "host_neighbour",
            MacSource::DockerInspect => "docker_inspect",
            MacSource::CalicoDefault => "calico_default",
        }
    }
}

/// Candidate MACs for one endpoint without a datastore, in order of trust.
pub fn mac_candidates(
    configured: Option<MacAddr>,
    host_neighbour: Option<MacAddr>,
    docker: Option<MacAddr>,
) -> Vec<(MacSource, MacAddr)> {
    ordered_candidates(&[
        (MacSource::Config, configured),
        (MacSource::HostNeighbour, host_neighbour),
        (MacSource::DockerInspect, docker),
    ])
}

/// The sources that know a MAC, in order of trust (whatever order they are given
/// in), with Calico's fixed MAC as the last resort.
pub fn ordered_candidates(sources: &[(MacSource, Option<MacAddr>)]) -> Vec<(MacSource, MacAddr)> {
    let mut out: Vec<(MacSource, MacAddr)> = sources
        .iter()
        .filter(|(src, _)| *src != MacSource::CalicoDefault)
        .filter_map(|(src, mac)| mac.map(|m| (*src, m)))
        .collect();
    out.sort_by_key(|(src, _)| *src);
    out.push((MacSource::CalicoDefault, CALICO_MAC));
    out
}

/// The state an endpoint must have inside the container, and the facts that
/// identify its link there.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The plugin's interface name (`cali0`); its stem (`cali`) names every calico link.
    pub interface: String,
    pub host_interface: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mac: MacAddr,
    pub mac_source: MacSource,
    /// Sources that disagree with the chosen MAC, e.g. `docker_inspect=02:42:..`.
    pub mac_disagreements: Vec<String>,
    /// Index (in the container) of the host veth's peer, where the kernel reports it.
    pub peer_index: Option<u32>,
    /// The container's only calico endpoint: its link may be found by name alone.
    pub only_endpoint: bool,
    pub default_route: DefaultRoute,
    /// The largest MTU the host's path carries (host veth, uplink), where known.
    pub max_mtu: Option<u32>,
}

/// What each source says an endpoint's MAC should be (`None`: it does not know).
/// The one place both repair paths (after start and before start) get it from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacEvidence {
    pub config: Option<MacAddr>,
    pub datastore: Option<MacAddr>,
    pub host_neighbour: Option<MacAddr>,
    /// Docker's `MacAddress` (unknown before start: `docker inspect` blocks until then).
    pub docker_inspect: Option<MacAddr>,
}

impl MacEvidence {
    pub fn sources(&self) -> [(MacSource, Option<MacAddr>); 4] {
        [
            (MacSource::Config, self.config),
            (MacSource::Datastore, self.datastore),
            (MacSource::HostNeighbour, self.host_neighbour),
            (MacSource::DockerInspect, self.docker_inspect),
        ]
    }
}

/// Where an endpoint sits, as far as its expected state is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointFacts {
    pub host_interface: String,
    pub ip: Ipv4Addr,
    pub peer_index: Option<u32>,
    pub only_endpoint: bool,
    pub default_route: DefaultRoute,
}

impl Expected {
    /// THE builder of an endpoint's expected state: the plugin's interface name and
    /// gateway, the endpoint's facts, and the most trusted MAC of `evidence` (with
    /// every source that disagrees). The post-start pass and the pre-start path both
    /// call it, so one place decides the expected MAC and its source.
    pub fn build(interface: &str, gateway: Ipv4Addr, facts: EndpointFacts, evidence: &MacEvidence) -> Expected {
        let (mac, mac_source, mac_disagreements) = resolve_mac(&ordered_candidates(&evidence.sources()));
        Expected {
            interface: interface.to_string(),
            host_interface: facts.host_interface,
            ip: facts.ip,
            gateway,
            mac,
            mac_source,
            mac_disagreements,
            peer_index: facts.peer_index,
            only_endpoint: facts.only_endpoint,
            default_route: facts.default_route,
            max_mtu: None,
        }
    }

    /// The expected state of a container's only calico endpoint, which holds the
    /// default route; the MAC is the most trusted of `candidates`.
    pub fn resolve(
        interface: &str,
        host_interface: String,
        ip: Ipv4Addr,
        gateway: Ipv4Addr,
        candidates: &[(MacSource, MacAddr)],
    ) -> Expected {
        let (mac, mac_source, mac_disagreements) = resolve_mac(candidates);
        Expected {
            interface: interface.to_string(),
            host_interface,
            ip,
            gateway,
            mac,
            mac_source,
            mac_disagreements,
            peer_index: None,
            only_endpoint: true,
            default_route: DefaultRoute::Owned,
            max_mtu: None,
        }
    }
}

/// Picks the most trusted MAC; returns it, its source, and every explicit source
/// that disagrees (the Calico default is a fallback, not evidence, so it never does).
pub fn resolve_mac(candidates: &[(MacSource, MacAddr)]) -> (MacAddr, MacSource, Vec<String>) {
    let (source, mac) = candidates.first().copied().unwrap_or((MacSource::CalicoDefault, CALICO_MAC));
    let disagreements = candidates
        .iter()
        .skip(1)
        .filter(|(src, m)| *src != MacSource::CalicoDefault && *m != mac)
        .map(|(src, m)| format!("{}={m}", src.as_str()))
        .collect();
    (mac, source, disagreements)
}

/// Marathon/Mesos identity from a container's env and labels (Marathon ≥ 1.4
/// also sets the `MESOS_TASK_ID` label, which wins over the env).
pub fn marathon_identity(env: &[String], labels: &HashMap<String, String>) -> (Option<String>, Option<String>) {
    let lookup = |key: &str| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let app = lookup("MARATHON_APP_ID");
    let task = labels.get("MESOS_TASK_ID").filter(|v| !v.is_empty()).cloned().or_else(|| lookup("MESOS_TASK_ID"));
    (app, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "EE:ee:EE:ee:EE:ee".parse().unwrap();
        assert_eq!(m, CALICO_MAC);
        assert_eq!(m.to_string(), "ee:ee:ee:ee:ee:ee");
        assert!("ee:ee:ee".parse::<MacAddr>().is_err());
        assert!("zz:ee:ee:ee:ee:ee".parse::<MacAddr>().is_err());
    }

    #[test]
    fn expected_mac_prefers_config_then_host_then_docker() {
        let host: MacAddr = "ee:ee:ee:ee:ee:ee".parse().unwrap();
        let docker: MacAddr = "02:42:0a:00:00:05".parse().unwrap();
        let (mac, source, disagreements) = resolve_mac(&mac_candidates(None, Some(host), Some(docker)));
        assert_eq!((mac, source), (host, MacSource::HostNeighbour));
        assert_eq!(disagreements, vec!["docker_inspect=02:42:0a:00:00:05".to_string()]);

        let (mac, source, disagreements) = resolve_mac(&mac_candidates(None, None, None));
        assert_eq!((mac, source), (CALICO_MAC, MacSource::CalicoDefault));
        assert!(disagreements.is_empty());
    }

    #[test]
    fn datastore_comes_after_config_and_before_the_host() {
        let ds: MacAddr = "02:aa:bb:00:11:22".parse().unwrap();
        let docker: MacAddr = "02:42:0a:00:00:05".parse().unwrap();
        let given = [
            (MacSource::DockerInspect, Some(docker)),
            (MacSource::HostNeighbour, Some(CALICO_MAC)),
            (MacSource::Datastore, Some(ds)),
            (MacSource::Config, None),
        ];
        let (mac, source, disagreements) = resolve_mac(&ordered_candidates(&given));
        assert_eq!((mac, source), (ds, MacSource::Datastore));
        assert_eq!(
            disagreements,
            vec!["host_neighbour=ee:ee:ee:ee:ee:ee".to_string(), "docker_inspect=02:42:0a:00:00:05".to_string()]
        );
        let mut with_config = given;
        with_config[3].1 = Some(CALICO_MAC);
        let (mac, source, disagreements) = resolve_mac(&ordered_candidates(&with_config));
        assert_eq!((mac, source), (CALICO_MAC, MacSource::Config), "explicit configuration wins");
        assert!(disagreements.contains(&"datastore=02:aa:bb:00:11:22".to_string()), "{disagreements:?}");
    }

    #[test]
    fn host_interface_uses_first_eleven_chars() {
        let ep = Endpoint {
            network: "n".into(),
            endpoint_id: "0123456789abcdef".into(),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 32,
            docker_mac: None,
            default_route: DefaultRoute::Owned,
        };
        assert_eq!(ep.host_interface("cali"), "cali0123456789a");
    }

    #[test]
    fn tenant_text_is_escaped_for_logs() {
        let id = Identity {
            container: "mesos-1".into(),
            app: Some("/evil\nINFO repair result=success\x1b[2J".into()),
            task: None,
        };
        let line = id.to_string();
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line}");
        assert_eq!(line, "container=mesos-1 app=/evil\\nINFO repair result=success\\u{1b}[2J");
    }

    #[test]
    fn marathon_identity_prefers_label() {
        let env = vec!["MARATHON_APP_ID=/web".to_string(), "MESOS_TASK_ID=web.env".to_string()];
        let mut labels = HashMap::new();
        assert_eq!(marathon_identity(&env, &labels), (Some("/web".into()), Some("web.env".into())));
        labels.insert("MESOS_TASK_ID".to_string(), "web.label".to_string());
        assert_eq!(marathon_identity(&env, &labels).1, Some("web.label".into()));
        assert_eq!(marathon_identity(&[], &HashMap::new()), (None, None));
    }
}
