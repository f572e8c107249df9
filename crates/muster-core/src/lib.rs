//! muster-core: the backend-independent heart of muster. It owns the cluster
//! spec and its validation, the [`Backend`](backend::Backend) and
//! [`Cluster`](cluster::Cluster) traits with the generic cluster logic, job ids
//! and normalised job states, the registry under `$MUSTER_HOME`, the
//! [`CommandRunner`](runner::CommandRunner) abstraction, and everything
//! Dask-specific (command lines and the scheduler's HTTP API). It knows nothing
//! of any particular cluster manager: no process spawning, ssh, kube or YARN.

pub mod access;
pub mod backend;
pub mod cluster;
pub mod dask;
pub mod error;
pub mod job;
pub mod kinds;
pub mod managed;
pub mod ops;
pub mod policy;
pub mod reconcile;
pub mod registry;
mod rounds;
pub mod runner;
pub mod spec;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod units;
pub mod waits;

pub use access::{Direct, SchedulerAccess};
pub use backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, SchedulerContact,
    Supervisor, Warnings, WorkerName,
};
pub use cluster::{Cluster, ClusterStatus, DownReport, Progress, Quiet, WorkerRow};
pub use error::{Error, Result};
pub use job::{JobId, JobStatus};
pub use kinds::{BackendKind, Kinds};
pub use managed::{LogTimeline, ManagedCluster};
pub use reconcile::{
    AgentControl, Clock, ClusterStore, RoundContext, RoundOutcome, Timeline, round,
};
pub use registry::{ClusterRecord, EndedJob, FileStore, Home, Observed, Phase, PolicyMemory};
pub use runner::{CommandOutput, CommandRunner, CommandSpec, LocalRunner};
pub use spec::{
    AdaptSpec, BackendSpec, ClusterSpec, Placement, SchedulerSpec, SpecError, WorkerSpec,
};
pub use units::{Memory, Seconds};
