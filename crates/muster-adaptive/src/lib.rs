//! muster-adaptive: what keeps a cluster of a process-style backend at its
//! desired size between commands. [`agent`] is the per-cluster process (its
//! liveness lock, start, stop and state file) that loops muster-core's
//! reconciler round; [`events`] is the file timeline (`events.jsonl`) the
//! round writes to. The pure policy the round decides with lives in
//! muster-core (`muster_core::policy`, re-exported here as [`policy`]),
//! because `Cluster::scale` runs the same round. It depends on core only and
//! knows no particular cluster manager.

pub mod agent;
pub mod events;
pub use muster_core::policy;

pub use agent::{AgentHealth, AgentState, ProcessAgent};
pub use events::{Event, FileTimeline};
pub use policy::{Action, Decision, Mode, Observation, Policy, PolicyState, decide};
