//! muster-adaptive: sizing a Dask cluster from the scheduler's own load
//! signal, the same way on every backend. [`policy`] is the pure decision
//! (`decide(policy, state, observation, now) -> Decision`), tested over
//! tables of observations; [`events`] is the timeline of decisions kept in the
//! cluster's state directory; [`agent`] is the per-cluster process that
//! observes, decides and acts through muster-core's generic
//! [`ManagedCluster`](muster_core::ManagedCluster) building blocks. Nothing
//! here knows a particular cluster manager: it only speaks the `Backend` trait
//! and the scheduler's HTTP API.

pub mod agent;
pub mod events;
pub use muster_core::policy;

pub use agent::{AgentHealth, AgentState};
pub use events::Event;
pub use policy::{Action, Decision, Mode, Observation, Policy, PolicyState, decide};

/// True when clusters of this backend kind get a per-cluster agent process.
/// Process-style backends (local, SSH, batch schedulers) do; on Kubernetes
/// the operator reconciles instead.
pub fn runs_agent(backend_kind: &str) -> bool {
    !matches!(backend_kind, "kube" | "kubernetes")
}
