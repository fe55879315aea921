//! The label values of the metrics: enums with a bounded set of values, and the cap
//! on tenant text.

/// Longest tenant-text label value (container name, network, Marathon app and task
/// id), in characters: longer values are cut to `LABEL_CAP - 1` characters plus `…`,
/// so a tenant cannot make the scrape arbitrarily large.
pub const LABEL_CAP: usize = 128;

/// Caps tenant text for a label value (on a character boundary).
pub fn cap_label(value: &str) -> String {
    if value.chars().count() <= LABEL_CAP {
        return value.to_string();
    }
    let mut out: String = value.chars().take(LABEL_CAP - 1).collect();
    out.push('…');
    out
}

/// Which path put a new endpoint right: before `start` (pre-start path) or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPath {
    BeforeStart,
    AfterStart,
    /// By `calico-medic hook prestart`, which runc runs before the task starts.
    Hook,
}

impl StartPath {
    pub fn as_str(self) -> &'static str {
        match self {
            StartPath::BeforeStart => "before_start",
            StartPath::AfterStart => "after_start",
            StartPath::Hook => "hook",
        }
    }
}

/// What the pre-start path did with one new endpoint (bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrestartOutcome {
    Repaired,
    Healthy,
    LeftToPostStart,
    NotAllowed,
    Failed,
}

impl PrestartOutcome {
    pub const ALL: [PrestartOutcome; 5] = [
        PrestartOutcome::Repaired,
        PrestartOutcome::Healthy,
        PrestartOutcome::LeftToPostStart,
        PrestartOutcome::NotAllowed,
        PrestartOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrestartOutcome::Repaired => "repaired",
            PrestartOutcome::Healthy => "healthy",
            PrestartOutcome::LeftToPostStart => "left_to_post_start",
            PrestartOutcome::NotAllowed => "not_allowed",
            PrestartOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PrestartOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one escalation (`escalations_total{result}`): `killed` includes a task
/// Marathon says is already gone; `suppressed` counts each time a task is newly held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationResult {
    Killed,
    DryRun,
    Suppressed,
    Failed,
}

impl EscalationResult {
    pub const ALL: [EscalationResult; 4] =
        [EscalationResult::Killed, EscalationResult::DryRun, EscalationResult::Suppressed, EscalationResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            EscalationResult::Killed => "killed",
            EscalationResult::DryRun => "dry_run",
            EscalationResult::Suppressed => "suppressed",
            EscalationResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for EscalationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Docker event types the agent subscribes to (`docker_events_total{type}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerEventType {
    Container,
    Network,
}

impl DockerEventType {
    pub const ALL: [DockerEventType; 2] = [DockerEventType::Container, DockerEventType::Network];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerEventType::Container => "container",
            DockerEventType::Network => "network",
        }
    }

    /// Docker's spelling; `None` for a type the agent does not subscribe to.
    pub fn parse(typ: &str) -> Option<DockerEventType> {
        DockerEventType::ALL.into_iter().find(|t| t.as_str() == typ)
    }
}

/// The Docker event actions the agent subscribes to (`docker_events_total{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerEventAction {
    Start,
    Restart,
    Die,
    Destroy,
    Connect,
    Disconnect,
}

impl DockerEventAction {
    pub const ALL: [DockerEventAction; 6] = [
        DockerEventAction::Start,
        DockerEventAction::Restart,
        DockerEventAction::Die,
        DockerEventAction::Destroy,
        DockerEventAction::Connect,
        DockerEventAction::Disconnect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerEventAction::Start => "start",
            DockerEventAction::Restart => "restart",
            DockerEventAction::Die => "die",
            DockerEventAction::Destroy => "destroy",
            DockerEventAction::Connect => "connect",
            DockerEventAction::Disconnect => "disconnect",
        }
    }

    /// Docker's spelling (the part before any `:`); `None` for an action the agent does
    /// not subscribe to.
    pub fn parse(action: &str) -> Option<DockerEventAction> {
        DockerEventAction::ALL.into_iter().find(|a| a.as_str() == action)
    }
}
