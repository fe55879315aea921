//! Errors that carry their context and keep their source, so each reads as one line
//! in a log or on stderr ("adding default route in …: Nexthop has invalid gateway")
//! and callers can still ask what the kernel or Docker answered.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MedicError {
    #[error("cannot reach Docker at {endpoint}: {source}")]
    DockerUnreachable {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("docker: {context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("no such container: {0}")]
    ContainerNotFound(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} uses the host network namespace; calico-medic never touches it")]
    HostNetwork(String),
    #[error("container {container} shares the network namespace of {mode}; calico-medic only repairs the owner")]
    SharedNetwork { container: String, mode: String },
    #[error("container {container} is not on a calico network (networks: {networks})")]
    NotCalico { container: String, networks: String },
    #[error("container {0} restarted or exited while being checked (PID or start time changed)")]
    Stale(String),
    #[error("refusing to enter {0}: it is the host's network namespace")]
    HostNamespace(String),
    #[error("{context}: {source}")]
    Netns {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A configuration value that is not acceptable (no underlying error).
    #[error("config: {0}")]
    Config(String),
    /// A file the configuration names (the config file itself, a credential, a CA
    /// bundle) could not be read, or its `listen` address could not be bound.
    #[error("config: {context}: {source}")]
    ConfigIo {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML of the expected shape; `detail` names line and key.
    #[error("config: {origin}: {detail}")]
    ConfigSyntax {
        origin: String,
        detail: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An HTTP/TLS client could not be built from what the configuration names
    /// (CA bundle, client certificate and key).
    #[error("config: {context}: {source}")]
    ConfigTls {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// A Docker or netlink call, or a whole pass, overran its deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: std::time::Duration },
    /// Calico's datastore (etcd) could not be read or understood.
    #[error("datastore: {0}")]
    Datastore(String),
    /// BIRD's control socket did not answer, or not as BIRD does.
    #[error("bgp: {0}")]
    Bird(String),
    /// etcd answered with a body that is not an etcd v2 answer.
    #[error("datastore: {context}: {source}")]
    DatastoreAnswer {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// A request to etcd failed; `detail` says how in a few words (with the TLS cause).
    #[error("datastore: {context}: {detail}")]
    DatastoreRequest {
        context: String,
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer of etcd held more than `[limits] datastore_answer_bytes`: the rest
    /// of it was not read. `context` names the endpoint, what was asked and the key.
    #[error("datastore: {context}: answer larger than [limits] datastore_answer_bytes = {cap} bytes")]
    DatastoreTooLarge { context: String, cap: u64 },
    /// No etcd endpoint answered: `tried` says what each one did; the last request
    /// error, when there was one, is kept as the source.
    #[error("datastore: no etcd endpoint answered: {tried}")]
    DatastoreUnreachable {
        tried: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// A dump of a task's namespace held more than its ceiling (`[limits]`): the
    /// endpoint is reported, not repaired; nothing more of it is read.
    #[error("{what}: more than {cap} in the namespace (namespace_too_large; [limits] sets the ceiling)")]
    NamespaceTooLarge { what: String, cap: usize },
    /// A pass panicked (caught; the agent goes on).
    #[error("pass over {0} panicked: {1}")]
    Panic(String, String),
}

impl MedicError {
    pub fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> MedicError {
        MedicError::Netlink { context: context.into(), source }
    }

    pub fn timeout(what: impl Into<String>, after: std::time::Duration) -> MedicError {
        MedicError::Timeout { what: what.into(), after }
    }

    pub fn netns_io(context: impl Into<String>, source: std::io::Error) -> MedicError {
        MedicError::Netns { context: context.into(), source }
    }

    /// A namespace problem that has no OS error behind it.
    pub fn netns(context: impl Into<String>, reason: &str) -> MedicError {
        MedicError::netns_io(context, std::io::Error::other(reason.to_string()))
    }

    /// Every value `code()` can return (metrics pre-create these series at 0).
    pub const CODES: [&'static str; 17] = [
        "docker_unreachable",
        "docker",
        "container_not_found",
        "not_running",
        "host_network",
        "shared_network",
        "not_calico",
        "stale",
        "host_namespace",
        "netns",
        "netlink",
        "config",
        "timeout",
        "panic",
        "datastore",
        "namespace_too_large",
        "bird",
    ];

    /// Bounded label value for metrics and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            MedicError::DockerUnreachable { .. } => "docker_unreachable",
            MedicError::Docker { .. } => "docker",
            MedicError::ContainerNotFound(_) => "container_not_found",
            MedicError::NotRunning(_) => "not_running",
            MedicError::HostNetwork(_) => "host_network",
            MedicError::SharedNetwork { .. } => "shared_network",
            MedicError::NotCalico { .. } => "not_calico",
            MedicError::Stale(_) => "stale",
            MedicError::HostNamespace(_) => "host_namespace",
            MedicError::Netns { .. } => "netns",
            MedicError::Netlink { .. } => "netlink",
            MedicError::Config(_)
            | MedicError::ConfigIo { .. }
            | MedicError::ConfigSyntax { .. }
            | MedicError::ConfigTls { .. } => "config",
            MedicError::Timeout { .. } => "timeout",
            MedicError::Panic(..) => "panic",
            MedicError::NamespaceTooLarge { .. } => "namespace_too_large",
            MedicError::Bird(_) => "bird",
            MedicError::Datastore(_)
            | MedicError::DatastoreAnswer { .. }
            | MedicError::DatastoreRequest { .. }
            | MedicError::DatastoreTooLarge { .. }
            | MedicError::DatastoreUnreachable { .. } => "datastore",
        }
    }

    /// The container went away under us: expected during churn, not an agent fault.
    pub fn is_container_gone(&self) -> bool {
        matches!(self, MedicError::ContainerNotFound(_) | MedicError::NotRunning(_) | MedicError::Stale(_))
    }

    /// The agent's own failure, not the namespace's state: a write the kernel refused
    /// to the agent (EPERM/EACCES after a capability was dropped, a seccomp denial), a
    /// request the kernel does not support or cannot buffer, a deadline, a panic, a
    /// socket that could not be made. Such an endpoint is never called unrepairable.
    pub fn is_agent_fault(&self) -> bool {
        const AGENT_ERRNOS: [i32; 5] = [libc::EPERM, libc::EACCES, libc::EOPNOTSUPP, libc::ENOBUFS, libc::ENOMEM];
        match self {
            MedicError::Netlink { source, .. } => netlink_errno(source).is_none_or(|e| AGENT_ERRNOS.contains(&e)),
            MedicError::Timeout { .. } | MedicError::Panic(..) | MedicError::Netns { .. } => true,
            _ => false,
        }
    }

    /// Not a calico workload (or not one calico-medic may touch): skipped when scanning a host.
    pub fn is_not_ours(&self) -> bool {
        matches!(self, MedicError::NotCalico { .. } | MedicError::HostNetwork(_) | MedicError::SharedNetwork { .. })
    }
}

/// Runs one request under a deadline; a timeout is an error naming the request
/// (`what`, built only when it is needed).
pub async fn within<T>(
    deadline: std::time::Duration,
    what: impl FnOnce() -> String,
    request: impl std::future::Future<Output = Result<T, MedicError>>,
) -> Result<T, MedicError> {
    match tokio::time::timeout(deadline, request).await {
        Ok(answer) => answer,
        Err(_) => Err(MedicError::timeout(what(), deadline)),
    }
}

/// Errno of a netlink error reply, if it is one (e.g. `libc::ENODEV`).
pub fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// One value of every variant: `code()` is in `CODES`, and `CODES` has no code
    /// that no variant returns. A new variant without a code fails to compile in
    /// `code()`; one missing here fails this test's count.
    #[test]
    fn every_variant_has_a_listed_code_and_every_code_a_variant() {
        let bollard = || bollard::errors::Error::RequestTimeoutError;
        let all = [
            MedicError::DockerUnreachable { endpoint: "e".into(), source: bollard() },
            MedicError::Docker { context: "c".into(), source: bollard() },
            MedicError::ContainerNotFound("x".into()),
            MedicError::NotRunning("x".into()),
            MedicError::HostNetwork("x".into()),
            MedicError::SharedNetwork { container: "x".into(), mode: "container:y".into() },
            MedicError::NotCalico { container: "x".into(), networks: "bridge".into() },
            MedicError::Stale("x".into()),
            MedicError::HostNamespace("x".into()),
            MedicError::netns("c", "r"),
            MedicError::netlink("c", crate::kernel::compat::refused()),
            MedicError::Config("x".into()),
            MedicError::timeout("docker inspect x", std::time::Duration::from_secs(1)),
            MedicError::Panic("x".into(), "boom".into()),
            MedicError::Datastore("x".into()),
            MedicError::NamespaceTooLarge { what: "listing routes".into(), cap: 10 },
            MedicError::Bird("x".into()),
        ];
        let codes: Vec<&str> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, MedicError::CODES.to_vec());
        // The variants that keep a source (and the other datastore ones) share their family's code.
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let toml_error = toml::from_str::<toml::Table>("x =").unwrap_err();
        let json_error = serde_json::from_str::<u8>("x").unwrap_err();
        let with_source = [
            MedicError::ConfigIo { context: "reading f".into(), source: io() },
            MedicError::ConfigSyntax { origin: "f".into(), detail: "line 1".into(), source: Box::new(toml_error) },
            MedicError::DatastoreAnswer { context: "e".into(), source: json_error },
            MedicError::DatastoreUnreachable { tried: "e: 503".into(), source: None },
            MedicError::DatastoreTooLarge { context: "e: reading /k".into(), cap: 65_536 },
        ];
        let codes: Vec<&str> = with_source.iter().map(|e| e.code()).collect();
        assert_eq!(codes, ["config", "config", "datastore", "datastore", "datastore"]);
    }

    #[test]
    fn sources_are_kept_and_messages_chain_context() {
        let e = MedicError::netlink("ip route add default via 169.254.1.1 dev cali0", crate::kernel::compat::refused());
        assert!(e.to_string().starts_with("ip route add default via 169.254.1.1 dev cali0: "), "{e}");
        assert!(e.source().is_some());
        let e = MedicError::netns_io("entering net:[4026]", std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).and_then(|e| e.raw_os_error()),
            Some(libc::EPERM)
        );
        let e = MedicError::ConfigIo {
            context: "reading /etc/calico-medic/config.toml".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(e.to_string().starts_with("config: reading /etc/calico-medic/config.toml: "), "{e}");
        assert_eq!(
            e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).and_then(|e| e.raw_os_error()),
            Some(libc::EACCES)
        );
    }

    #[test]
    fn the_agents_own_failures_are_told_from_the_namespaces_state() {
        let errno = |n: i32| {
            let mut msg = rtnetlink::packet_core::ErrorMessage::default();
            msg.code = std::num::NonZeroI32::new(-n);
            MedicError::netlink("ip link set cali0 address ee:ee:ee:ee:ee:ee", rtnetlink::Error::NetlinkError(msg))
        };
        for n in [libc::EPERM, libc::EACCES, libc::EOPNOTSUPP] {
            assert!(errno(n).is_agent_fault(), "errno {n}");
        }
        for n in [libc::ENODEV, libc::EEXIST, libc::ENETUNREACH, libc::EINVAL] {
            assert!(!errno(n).is_agent_fault(), "errno {n} is the namespace's state");
        }
        assert!(MedicError::timeout("netlink: setting the MAC", std::time::Duration::from_secs(2)).is_agent_fault());
        assert!(!MedicError::Stale("c".into()).is_agent_fault());
    }
}
