//! Marathon: per-app policy from app labels (`policy`), the pure escalation core
//! (`escalate`) and the REST client that asks Marathon to replace a task (`client`).

pub mod client;
pub mod escalate;
pub mod policy;

pub use client::{KillResult, MarathonClient};
pub use escalate::{Decision, EndpointState, Escalator, KillOutcome, Reason, Settings, TaskView};
pub use policy::{policy_label, Policy};
