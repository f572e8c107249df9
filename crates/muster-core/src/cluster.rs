//! The `Cluster` trait (the handle a user holds: Rust programs, the CLI, the
//! Python package through the CLI) and the pure decisions every
//! implementation shares (which workers to remove, how workers group into
//! jobs). Its generic implementation over any backend is
//! [`crate::managed::ManagedCluster`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::dask::{WorkerInfo, job_of_worker};
use crate::error::Result;
use crate::job::{JobId, JobStatus};
use crate::registry::Phase;
use crate::spec::AdaptSpec;

pub use crate::managed::ManagedCluster;
pub use crate::ops::Removal;

/// Receives progress of long operations (the CLI draws a bar from it).
pub trait Progress: Send + Sync {
    /// A new stage began, e.g. "starting scheduler".
    fn stage(&self, _message: &str) {}
    /// `connected` of `wanted` Dask workers are registered.
    fn workers(&self, _connected: usize, _wanted: usize) {}
    /// Something went wrong but the operation went on (e.g. a host was
    /// unreachable and the cluster is smaller than asked for).
    fn warn(&self, _message: &str) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// A Dask cluster a user holds: bring it up, resize it, look at it, take it down.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The cluster's name.
    fn name(&self) -> &str;
    /// Launches the scheduler and the spec's workers and waits until they are
    /// registered. On failure everything launched is stopped again.
    async fn up(&mut self, progress: &dyn Progress) -> Result<()>;
    /// Sets the desired number of worker jobs and reconciles until it holds
    /// and the scheduler sees them. Removed workers are retired through the
    /// scheduler (their data moves elsewhere) before their jobs are stopped.
    /// Refused while adaptive scaling is on.
    async fn scale(&mut self, workers: u32, progress: &dyn Progress) -> Result<()>;
    /// Turns adaptive scaling on with these bounds and settings (the
    /// cluster's supervisor, an agent or the operator, follows them from its
    /// next round), or off (`None`: it keeps its current size). Setting it
    /// again, even unchanged, resumes a paused policy.
    async fn adapt(&mut self, adapt: Option<AdaptSpec>) -> Result<()>;
    /// The cluster as the backend and the scheduler see it now.
    async fn status(&self) -> Result<ClusterStatus>;
    /// The scheduler's address (`tcp://...`), once up.
    fn scheduler_address(&self) -> Option<&str>;
    /// The dashboard link, once up.
    fn dashboard_link(&self) -> Option<String>;
    /// A job's log; the scheduler's when `job` is `None`.
    async fn logs(&self, job: Option<&JobId>) -> Result<String>;
    /// Stops every job of the cluster, verifies none is left, and forgets it.
    /// Succeeds when there was nothing to stop.
    async fn down(&mut self) -> Result<DownReport>;
}

/// One worker job as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    /// The job id, which is also the Dask worker name.
    pub name: String,
    /// The backend's state of the job.
    pub status: JobStatus,
    /// Dask workers of this job registered with the scheduler.
    pub connected: usize,
    /// Their addresses.
    pub addresses: Vec<String>,
}

/// A cluster's state, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// Its backend kind.
    pub backend: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// Seconds since it was created.
    pub age_seconds: u64,
    /// The scheduler job and its state.
    pub scheduler: Option<(JobId, JobStatus)>,
    /// The scheduler's address.
    pub scheduler_address: Option<String>,
    /// The dashboard link.
    pub dashboard_url: Option<String>,
    /// Whether the scheduler's HTTP API answered.
    pub scheduler_reachable: bool,
    /// Worker jobs wanted.
    pub desired_workers: u32,
    /// Dask workers per job.
    pub processes_per_worker: u32,
    /// Dask workers registered with the scheduler.
    pub connected_workers: usize,
    /// Every worker job.
    pub workers: Vec<WorkerRow>,
    /// Workers the scheduler knows that belong to no recorded job.
    pub unknown_workers: Vec<WorkerInfo>,
}

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// The cluster.
    pub name: String,
    /// Jobs stopped.
    pub stopped: Vec<JobId>,
    /// False when there was nothing of the cluster to stop or forget.
    pub existed: bool,
    /// Problems worked around (e.g. a host that could not be searched).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Groups the scheduler's workers by the job they belong to.
pub fn group_by_job(workers: &[WorkerInfo], processes: u32) -> BTreeMap<JobId, Vec<WorkerInfo>> {
    let mut out: BTreeMap<JobId, Vec<WorkerInfo>> = BTreeMap::new();
    for w in workers {
        out.entry(JobId::from(job_of_worker(&w.name, processes)))
            .or_default()
            .push(w.clone());
    }
    out
}

/// Chooses `k` worker jobs to remove: jobs whose workers never connected go
/// first (pending before running: they hold no data), then connected jobs,
/// newest first. `jobs` is in launch order.
pub fn choose_removals(
    jobs: &[JobId],
    states: &BTreeMap<JobId, JobStatus>,
    connected: &BTreeMap<JobId, Vec<WorkerInfo>>,
    k: usize,
) -> Vec<JobId> {
    let rank = |id: &JobId| -> u8 {
        match (connected.contains_key(id), states.get(id)) {
            (false, Some(JobStatus::Pending)) => 0,
            (false, _) => 1,
            (true, _) => 2,
        }
    };
    let mut order: Vec<(u8, usize, &JobId)> = jobs
        .iter()
        .enumerate()
        .map(|(i, id)| (rank(id), usize::MAX - i, id))
        .collect();
    order.sort();
    order
        .into_iter()
        .take(k)
        .map(|(_, _, id)| id.clone())
        .collect()
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<JobId> {
        names.iter().map(|n| JobId::from(*n)).collect()
    }

    fn worker(name: &str) -> WorkerInfo {
        WorkerInfo {
            name: name.into(),
            address: format!("tcp://h:{}", name.len()),
        }
    }

    #[test]
    fn removal_prefers_unconnected_then_newest() {
        let jobs = ids(&["w0", "w1", "w2", "w3", "w4"]);
        let states: BTreeMap<_, _> = [
            ("w0", JobStatus::Running),
            ("w1", JobStatus::Running),
            ("w2", JobStatus::Pending),
            ("w3", JobStatus::Running),
            ("w4", JobStatus::Running),
        ]
        .into_iter()
        .map(|(k, v)| (JobId::from(k), v))
        .collect();
        let connected = group_by_job(&[worker("w0"), worker("w1"), worker("w4")], 1);
        assert_eq!(choose_removals(&jobs, &states, &connected, 1), ids(&["w2"]));
        assert_eq!(
            choose_removals(&jobs, &states, &connected, 2),
            ids(&["w2", "w3"])
        );
        assert_eq!(
            choose_removals(&jobs, &states, &connected, 4),
            ids(&["w2", "w3", "w4", "w1"])
        );
        assert_eq!(choose_removals(&jobs, &states, &connected, 9).len(), 5);
        assert!(choose_removals(&jobs, &states, &connected, 0).is_empty());
    }

    #[test]
    fn multi_process_workers_group_under_their_job() {
        let g = group_by_job(&[worker("c-w0-0"), worker("c-w0-1"), worker("c-w1-0")], 2);
        assert_eq!(g.len(), 2);
        assert_eq!(g[&JobId::from("c-w0")].len(), 2);
    }

    #[test]
    fn only_live_unrecorded_jobs_are_adopted() {
        use crate::ops::unrecorded;
        use crate::registry::ClusterRecord;
        use crate::spec::ClusterSpec;
        let spec = ClusterSpec::from_yaml("name: c", None).unwrap();
        let mut record = ClusterRecord::new(spec);
        record.scheduler_job = Some(JobId::from("c-scheduler"));
        record.workers = ids(&["c-w0"]);
        let found: Vec<(JobId, JobStatus)> = [
            ("c-scheduler", JobStatus::Running),
            ("c-w0", JobStatus::Running),
            ("c-w1", JobStatus::Running),
            ("c-w2", JobStatus::Pending),
            ("c-w3", JobStatus::Finished),
        ]
        .into_iter()
        .map(|(k, v)| (JobId::from(k), v))
        .collect();
        assert_eq!(unrecorded(&record, &found), ids(&["c-w1", "c-w2"]));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }
}
