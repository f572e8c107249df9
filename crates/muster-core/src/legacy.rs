//! The old `Backend` trait, kept only while the backends move to
//! [`crate::backend::Backend`]; it goes once none implements it.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::backend::{Rendered, RenderedItem, Role, SchedulerContact};
use async_trait::async_trait;

use crate::dask::SchedulerEndpoint;
use crate::error::Result;
use crate::job::{JobId, JobStatus};
use crate::spec::ClusterSpec;

/// A request to launch part of a cluster.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// The validated spec of the cluster.
    pub spec: &'a ClusterSpec,
    /// What to launch.
    pub role: Role,
}

/// A cluster manager that can run the Dask scheduler and workers.
///
/// Every job a backend launches carries the cluster's name and a muster marker
/// so [`Backend::discover`] can find it from the manager itself, even when the
/// local registry is lost.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's `kind`, as in specs.
    fn kind(&self) -> &'static str;

    /// Checks what can be checked before launching anything (e.g. that the
    /// worker python can import `distributed`).
    async fn preflight(&self, spec: &ClusterSpec) -> Result<()>;

    /// The exact commands, scripts or manifests a launch would submit. Pure.
    fn render(&self, req: &LaunchRequest<'_>) -> Result<Rendered>;

    /// Launches the scheduler or a batch of workers; returns one id per job.
    async fn launch(&self, req: &LaunchRequest<'_>) -> Result<Vec<JobId>>;

    /// The states of many jobs in one query. Ids the manager does not know map
    /// to [`JobStatus::Unknown`].
    async fn status(&self, cluster: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>>;

    /// Stops the jobs and waits until they are gone. Unknown or finished ids are
    /// not an error.
    async fn cancel(&self, cluster: &str, ids: &[JobId]) -> Result<()>;

    /// Every live job tagged with this cluster, found from the manager itself.
    async fn discover(&self, cluster: &str) -> Result<Vec<(JobId, JobStatus)>>;

    /// The job's output so far.
    async fn logs(&self, cluster: &str, id: &JobId) -> Result<String>;

    /// Where the cluster's scheduler file lives, if the backend can give workers
    /// one (a filesystem shared by scheduler and workers).
    fn scheduler_file(&self, spec: &ClusterSpec) -> Option<PathBuf>;

    /// The scheduler's address and dashboard, once it has published them.
    async fn scheduler_endpoint(
        &self,
        spec: &ClusterSpec,
        scheduler: &JobId,
    ) -> Result<Option<SchedulerEndpoint>>;

    /// How this process reaches the scheduler's HTTP API, published at
    /// `url`: `url` itself for most backends; a tunnel through the login
    /// node for a batch cluster driven from outside.
    async fn http_url(&self, url: &str) -> Result<String> {
        Ok(url.to_string())
    }

    /// Removes whatever the backend keeps for a cluster that is gone (files,
    /// directories). Called by `down` after every job has stopped.
    async fn forget(&self, cluster: &str) -> Result<()>;

    /// Problems the backend worked around since the last call (e.g. a host
    /// that could not be reached, so fewer workers were placed), one line
    /// each, for the user to see. Most backends have none.
    fn take_notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// How often waits check job states (`status`) besides polling the
    /// scheduler. Backends whose status query is costly (a remote round trip
    /// that competes with the starting workers) may ask for less.
    fn status_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
}
