//! Marathon: the pure escalation core (`escalate`), the REST client that asks
//! Marathon to replace a task (`client`) and the checks of `[marathon]` (`settings`).

pub mod budget;
pub mod client;
pub mod confirm;
pub mod escalate;
pub mod ledger;
pub mod settings;

/// The per-app policy lives with the plain data (`crate::policy`); re-exported here
/// where it was first defined.
pub use crate::policy::{policy_label, Policy};
pub use client::{KillResult, MarathonClient};
pub use escalate::{Decision, EndpointState, Escalator, KillOutcome, Reason, Settings, TaskView};
