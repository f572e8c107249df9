//! The `Backend` trait: the only thing that differs between cluster managers.
//!
//! A backend is built once per cluster from the cluster's full, validated
//! spec (see [`crate::kinds::BackendKind::build`]), so no method takes the
//! cluster's name or spec again: every method is on the same footing. It is
//! object safe, async and batched. What a backend can do differently is
//! declared as data ([`Capabilities`]), never found by matching its kind.
//! Problems a backend works around (a host that could not be reached) come
//! back in the result of the call that met them, as warnings; there is no
//! side channel and no call-order contract. This module knows no particular
//! cluster manager.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::access::SchedulerAccess;
use crate::dask::SchedulerEndpoint;
use crate::error::Result;
use crate::job::{JobId, JobStatus};

/// How a worker finds its scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerContact {
    /// A known address such as `tcp://10.0.0.5:8786`.
    Address(String),
    /// A scheduler file the worker waits for and reads (on a filesystem the
    /// scheduler and the worker share), which lets workers start in parallel
    /// with the scheduler.
    File(PathBuf),
}

/// A worker's Dask name: known at launch, or filled in by the job when it
/// starts from an environment variable of its own (an array task id, a pod
/// name, a container id), so a backend whose manager names its jobs needs
/// no second round trip to learn them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerName {
    /// This name.
    Fixed(String),
    /// The value of this environment variable inside the job.
    FromEnv(String),
}

impl From<&str> for WorkerName {
    fn from(name: &str) -> Self {
        WorkerName::Fixed(name.to_string())
    }
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

/// Warnings: problems a backend worked around, one line each, for the user.
pub type Warnings = Vec<String>;

/// What a launch started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launched {
    /// One id per job started; for workers also their Dask names (with
    /// several processes per job, the prefix of them).
    pub jobs: Vec<JobId>,
    /// For a scheduler launch: how workers reach this scheduler from now on,
    /// when the backend knows it at launch (a scheduler file the workers
    /// wait for, or an address it chose). `None`: wait for
    /// [`Backend::scheduler_endpoint`] and give workers its address.
    pub contact: Option<SchedulerContact>,
    /// Problems worked around (e.g. fewer workers placed than asked).
    pub warnings: Warnings,
}

/// What a search of the cluster manager found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Every live job tagged with the cluster, and its state.
    pub jobs: Vec<(JobId, JobStatus)>,
    /// Places that could not be searched (an unreachable host).
    pub warnings: Warnings,
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
    /// For the scheduler: the contact its launch would hand to workers (as
    /// [`Launched::contact`]), so a dry run can render them too.
    #[serde(skip)]
    pub contact: Option<SchedulerContact>,
}

/// Who keeps a cluster of this backend at its desired size between commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervisor {
    /// A per-cluster agent process started by muster (local, SSH, batch,
    /// YARN): it loops [`crate::reconcile::round`].
    Agent,
    /// An operator running elsewhere (the Kubernetes controller) calls
    /// `round` itself; muster starts no agent.
    Operator,
}

/// What a backend declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Who supervises its clusters.
    pub supervisor: Supervisor,
    /// How often waits may ask for job states ([`Backend::status`]) besides
    /// polling the scheduler; a costly query (a remote round trip competing
    /// with starting workers) asks for less.
    pub status_interval: Duration,
    /// True when the backend carries the cluster's TLS credentials to its
    /// processes and starts them with [`crate::dask::secure`]; `up` makes
    /// credentials only then, and otherwise warns that the cluster runs in
    /// plain TCP.
    pub tls: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            supervisor: Supervisor::Agent,
            status_interval: Duration::from_secs(1),
            tls: false,
        }
    }
}

/// A cluster manager running one cluster's Dask scheduler and workers.
///
/// Every job a backend launches carries the cluster's name and a muster
/// marker, so [`Backend::discover`] finds it from the manager itself, even
/// when the local registry is lost.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's `kind`, as in specs.
    fn kind(&self) -> &'static str;

    /// What it declares about itself.
    fn capabilities(&self) -> Capabilities;

    /// How this process reaches the scheduler's HTTP API (directly, through
    /// an SSH tunnel via a login node, a Kubernetes port-forward).
    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess>;

    /// Checks what can be checked before launching anything (e.g. that the
    /// worker python can import `distributed`).
    async fn preflight(&self) -> Result<Warnings>;

    /// The exact commands, scripts or manifests a launch would submit. Pure.
    fn render(&self, role: &Role) -> Result<Rendered>;

    /// Launches the scheduler or a batch of workers (one submission: one job
    /// array where the manager has arrays).
    async fn launch(&self, role: &Role) -> Result<Launched>;

    /// The states of many jobs in one query. Ids the manager does not know map
    /// to [`JobStatus::Unknown`].
    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>>;

    /// Stops the jobs and waits until they are gone. Unknown or finished ids are
    /// not an error.
    async fn cancel(&self, ids: &[JobId]) -> Result<()>;

    /// Every live job tagged with this cluster, found from the manager itself.
    async fn discover(&self) -> Result<Discovered>;

    /// The job's output so far.
    async fn logs(&self, id: &JobId) -> Result<String>;

    /// The scheduler's address and dashboard, once it has published them.
    async fn scheduler_endpoint(&self, scheduler: &JobId) -> Result<Option<SchedulerEndpoint>>;

    /// Removes whatever the backend keeps for the cluster once it is gone
    /// (files, directories). Called by `down` after every job has stopped.
    async fn forget(&self) -> Result<Warnings>;
}
