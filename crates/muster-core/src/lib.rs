//! muster-core: the backend-independent heart of muster. It owns the cluster
//! spec and its validation, the [`Backend`](backend::Backend) and
//! [`Cluster`](cluster::Cluster) traits with the generic cluster logic, job ids
//! and normalised job states, the registry under `$MUSTER_HOME`, the
//! [`CommandRunner`](runner::CommandRunner) abstraction, and everything
//! Dask-specific (command lines and the scheduler's HTTP API). It knows nothing
//! of any particular cluster manager: no process spawning, ssh, kube or YARN.

pub mod backend;
pub mod cluster;
pub mod dask;
pub mod error;
pub mod hpcspec;
pub mod job;
pub mod registry;
pub mod runner;
pub mod spec;
pub mod ssh_spec;
pub mod units;

pub use backend::{Backend, LaunchRequest, Rendered, RenderedItem, Role, SchedulerContact};
pub use cluster::{Cluster, ClusterStatus, DownReport, ManagedCluster, Progress, Quiet, WorkerRow};
pub use error::{Error, Result};
pub use hpcspec::{HpcSpec, PbsFlavor};
pub use job::{JobId, JobStatus};
pub use registry::{ClusterRecord, Home, Phase};
pub use runner::{CommandOutput, CommandRunner, CommandSpec, LocalRunner};
pub use spec::{
    AdaptSpec, BackendSpec, ClusterSpec, Placement, SchedulerSpec, SpecError, WorkerSpec,
};
pub use ssh_spec::{SshHost, SshHostMap, SshSpec};
pub use units::{Memory, Seconds};
