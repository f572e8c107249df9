//! The reconciler: one [`round`] that observes a cluster once, decides with
//! the pure [`crate::policy`], acts (launch; retire through the scheduler,
//! then cancel exactly those; replace the dead) and records what it saw and
//! did. The per-cluster agent loops it; the Kubernetes operator calls it per
//! resource; [`crate::cluster::ManagedCluster::scale`] sets the desired size
//! and runs rounds until it holds.
//!
//! What differs between those callers sits behind small traits:
//! [`ClusterStore`] (desired, observed and policy state: the file registry,
//! later a custom resource's status), [`Timeline`] (`events.jsonl`, later
//! Kubernetes Events) and [`Clock`] (real time, or a test clock that drives
//! rounds without sleeping). Nothing here knows a particular backend or
//! where its state is kept.

use std::time::Duration;

use async_trait::async_trait;

use crate::backend::Backend;
use crate::error::Result;
use crate::policy::Decision;
use crate::registry::ClusterRecord;

/// Holds a cluster exclusively while it is changed; released on drop.
pub struct StoreGuard(pub Box<dyn Send + Sync>);

impl std::fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreGuard")
    }
}

/// Where one cluster's state lives: what is desired (the spec: its worker
/// count and adapt bounds), what was observed and launched (the jobs, the
/// scheduler's address, the last observation) and what the policy remembers
/// (a pause, a backoff, the scale-down window), all in one
/// [`ClusterRecord`], whose sections stay apart.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// The cluster's name.
    fn name(&self) -> &str;
    /// Exclusive hold on the cluster (every round, `scale`, `adapt` and
    /// `down` take it, so their changes never interleave).
    async fn lock(&self) -> Result<StoreGuard>;
    /// The cluster's state; `None` once it is gone.
    async fn load(&self) -> Result<Option<ClusterRecord>>;
    /// Writes the cluster's state.
    async fn save(&self, record: &ClusterRecord) -> Result<()>;
    /// Forgets the cluster (after `down`).
    async fn remove(&self) -> Result<()>;
}

/// Where a cluster's events go: one entry per decision that changes
/// something or changes the situation, with its reason.
#[async_trait]
pub trait Timeline: Send + Sync {
    /// Appends an event of a stable `kind` (`scale-up`, `launched`, `died`).
    async fn record(&self, kind: &str, message: &str) -> Result<()>;
}

/// Time, for the policy and for waiting between rounds.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Wall-clock time since the Unix epoch. The policy's remembered times
    /// are on this scale, so a restarted agent resumes its timers.
    fn now(&self) -> Duration;
    /// Waits this long (a test clock just advances).
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

/// Starts and stops a cluster's supervising agent (process-style backends,
/// [`crate::backend::Supervisor::Agent`]); implemented by muster-adaptive.
pub trait AgentControl: Send + Sync {
    /// Starts the agent unless it runs; the new pid when one was started.
    fn ensure(&self, cluster: &str) -> Result<Option<u32>>;
    /// Stops the agent if it runs; true when one was stopped.
    fn stop(&self, cluster: &str) -> Result<bool>;
}

/// What one round needs.
#[derive(Clone, Copy)]
pub struct RoundContext<'a> {
    /// The cluster's backend.
    pub backend: &'a dyn Backend,
    /// Its state.
    pub store: &'a dyn ClusterStore,
    /// Its events.
    pub timeline: &'a dyn Timeline,
    /// The time.
    pub clock: &'a dyn Clock,
}

/// What a round did.
#[derive(Debug)]
pub struct RoundOutcome {
    /// The policy's decision; `None` when the cluster could not be observed
    /// (the error is in the timeline) or is gone.
    pub decision: Option<Decision>,
    /// When to run the next round.
    pub next_poll: Duration,
    /// True when there is nothing more to reconcile: the cluster is gone,
    /// stopping, or was just brought down (idle timeout).
    pub finished: bool,
    /// Worker jobs launched and not ended, after acting.
    pub jobs: u32,
    /// Of those, jobs with a Dask worker registered (as observed).
    pub connected: u32,
    /// The action that failed, if one did (it is in the timeline, and the
    /// policy backs off; `scale` reports it to its caller).
    pub failure: Option<crate::error::Error>,
}

/// One round: observe once, decide, act, record. Holds the store's lock
/// throughout, so a concurrent `down` either comes before (the round sees
/// the cluster gone and finishes) or after.
pub async fn round(ctx: &RoundContext<'_>) -> Result<RoundOutcome> {
    crate::rounds::run(ctx).await
}

/// The operator awaits rounds on its multi-threaded runtime: a round's
/// future must stay `Send` (this fails to compile otherwise).
#[cfg(test)]
#[allow(dead_code)]
fn round_is_send(ctx: &RoundContext<'_>) {
    fn is_send<T: Send>(_: T) {}
    is_send(round(ctx));
}
