//! The `Backend` trait: the only thing that differs between cluster managers.
//! It is object safe, async and batched; the generic cluster logic in
//! [`crate::cluster`] drives any implementation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

use crate::dask::SchedulerEndpoint;
use crate::error::Result;
use crate::job::{JobId, JobStatus};
use crate::spec::ClusterSpec;

/// How a worker finds its scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerContact {
    /// A known address such as `tcp://10.0.0.5:8786`.
    Address(String),
    /// A scheduler file the worker waits for and reads (on a filesystem the
    /// scheduler and the worker share), which lets workers start in parallel
    /// with the scheduler.
    File(PathBuf),
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// The cluster's Dask scheduler.
    Scheduler,
    /// `count` worker jobs, numbered from `first_index` (indices are never reused
    /// within a cluster, so worker names stay unique).
    Workers {
        /// Number of the first new worker.
        first_index: u64,
        /// How many worker jobs.
        count: u32,
        /// Where the workers find the scheduler.
        contact: SchedulerContact,
    },
}

/// A request to launch part of a cluster.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// The validated spec of the cluster.
    pub spec: &'a ClusterSpec,
    /// What to launch.
    pub role: Role,
}

/// One thing a backend would submit: a command line, a job script, a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedItem {
    /// A short title, e.g. `scheduler` or `worker demo-w0`.
    pub title: String,
    /// The exact text that would be executed or submitted.
    pub text: String,
}

/// Everything a launch would submit, for `muster render` and snapshot tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The items in submission order.
    pub items: Vec<RenderedItem>,
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
