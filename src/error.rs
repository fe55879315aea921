//! Errors that carry enough context to read as one line in a log or on stderr.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MedicError {
    #[error("cannot reach Docker at {endpoint}: {reason}")]
    DockerUnreachable { endpoint: String, reason: String },
    #[error("docker: {0}")]
    Docker(String),
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
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("config: {0}")]
    Config(String),
}

impl MedicError {
    pub fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> MedicError {
        MedicError::Netlink { context: context.into(), source }
    }

    /// Every value `code()` can return (metrics pre-create these series at 0).
    pub const CODES: [&'static str; 12] = [
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
    ];

    /// Bounded label value for metrics and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            MedicError::DockerUnreachable { .. } => "docker_unreachable",
            MedicError::Docker(_) => "docker",
            MedicError::ContainerNotFound(_) => "container_not_found",
            MedicError::NotRunning(_) => "not_running",
            MedicError::HostNetwork(_) => "host_network",
            MedicError::SharedNetwork { .. } => "shared_network",
            MedicError::NotCalico { .. } => "not_calico",
            MedicError::Stale(_) => "stale",
            MedicError::HostNamespace(_) => "host_namespace",
            MedicError::Netns(_) => "netns",
            MedicError::Netlink { .. } => "netlink",
            MedicError::Config(_) => "config",
        }
    }

    /// The container went away under us: expected during churn, not an agent fault.
    pub fn is_container_gone(&self) -> bool {
        matches!(self, MedicError::ContainerNotFound(_) | MedicError::NotRunning(_) | MedicError::Stale(_))
    }
}

/// Errno of a netlink error reply, if it is one (e.g. `libc::ENODEV`).
pub fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}
