//! The cluster operations the reconciler and the `Cluster` handle share,
//! written once over any [`Backend`] and a [`ClusterRecord`] the caller
//! loaded under the store's lock: forget jobs that ended (adopting those of
//! an interrupted launch), launch workers, retire workers through the
//! scheduler and then cancel exactly those, and bring a cluster down. They
//! change the record in memory and save it through the [`ClusterStore`] at
//! the points where a crash must find it consistent.

use std::collections::{BTreeMap, BTreeSet};

use crate::access;
use crate::backend::{Backend, Launched, Role, SchedulerContact};
use crate::cluster::{DownReport, group_by_job};
use crate::dask::SchedulerClient;
use crate::error::{Error, Result};
use crate::job::{JobId, JobStatus};
use crate::reconcile::ClusterStore;
use crate::registry::{ClusterRecord, Phase};

/// Who picks the connected worker jobs to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The newest jobs (predictable: what a fixed size does).
    Newest,
    /// The scheduler's cheapest workers: idle first, least data, never one
    /// running a long-running task (what adaptive scaling does).
    SchedulerChooses,
}

/// The scheduler's HTTP client, reached through the backend's access.
pub async fn scheduler_client(
    backend: &dyn Backend,
    record: &ClusterRecord,
) -> Result<SchedulerClient> {
    let url = record.http_url.as_deref().ok_or_else(|| {
        Error::Usage(format!(
            "cluster {:?} has no scheduler address yet (phase {})",
            record.name,
            record.phase.word()
        ))
    })?;
    let ca = record.credentials.as_ref().map(|c| c.ca_file.as_path());
    access::client(backend.scheduler_access().as_ref(), url, ca).await
}

/// Asks the backend for the states of the recorded worker jobs and forgets
/// those that ended on their own. Returns the states of the jobs kept and
/// the jobs that ended (with how). It first adopts the jobs of a launch
/// whose process died before recording them. Saves when the record changed.
pub async fn prune_ended(
    backend: &dyn Backend,
    store: &dyn ClusterStore,
    record: &mut ClusterRecord,
) -> Result<(BTreeMap<JobId, JobStatus>, Vec<(JobId, JobStatus)>)> {
    if record.launching {
        let found = backend.discover().await?;
        let adopted = unrecorded(record, &found.jobs);
        if !adopted.is_empty() {
            tracing::warn!(jobs = ?adopted, "adopted worker jobs started by an interrupted launch");
        }
        record.workers.extend(adopted);
        record.launching = false;
        store.save(record).await?;
    }
    let mut states = backend.status(&record.workers).await?;
    let mut ended = Vec::new();
    record.workers.retain(|id| {
        let s = states.get(id).cloned().unwrap_or(JobStatus::Unknown);
        if s.is_active() {
            true
        } else {
            ended.push((id.clone(), s));
            false
        }
    });
    for (id, _) in &ended {
        states.remove(id);
    }
    if !ended.is_empty() {
        store.save(record).await?;
    }
    Ok((states, ended))
}

/// The live jobs a discovery found that the record has neither as a worker
/// nor as the scheduler.
pub fn unrecorded(record: &ClusterRecord, found: &[(JobId, JobStatus)]) -> Vec<JobId> {
    found
        .iter()
        .filter(|(id, s)| {
            s.is_active()
                && record.scheduler_job.as_ref() != Some(id)
                && !record.workers.contains(id)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// How new workers reach the scheduler: what its launch said, else its
/// address.
pub fn contact(record: &ClusterRecord) -> Option<SchedulerContact> {
    record.contact.clone().or_else(|| {
        record
            .scheduler_address
            .clone()
            .map(SchedulerContact::Address)
    })
}

/// Launches `count` worker jobs as one batch and records them. The indices
/// are reserved (and a `launching` mark saved) first, so names are never
/// reused and a process dying mid-launch leaves its jobs to be adopted.
pub async fn launch_workers(
    backend: &dyn Backend,
    store: &dyn ClusterStore,
    record: &mut ClusterRecord,
    count: u32,
) -> Result<Launched> {
    if count == 0 {
        return Ok(Launched::default());
    }
    let contact =
        contact(record).ok_or_else(|| Error::Usage("no scheduler address recorded".into()))?;
    let first_index = record.next_worker_index;
    record.next_worker_index += u64::from(count);
    record.launching = true;
    store.save(record).await?;
    let launched = backend
        .launch(&Role::Workers {
            first_index,
            count,
            contact,
        })
        .await;
    record.launching = false;
    if let Ok(l) = &launched {
        record.workers.extend(l.jobs.iter().cloned());
    }
    store.save(record).await?;
    launched
}

/// Removes `count` worker jobs safely: the scheduler retires their Dask
/// workers (moving their data), and only then are the jobs cancelled. Jobs
/// whose workers never connected go first. Returns the jobs removed (fewer
/// than `count` when the scheduler declines some).
pub async fn remove_workers(
    backend: &dyn Backend,
    store: &dyn ClusterStore,
    record: &mut ClusterRecord,
    count: usize,
    states: &BTreeMap<JobId, JobStatus>,
    choice: Removal,
) -> Result<Vec<JobId>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let client = scheduler_client(backend, record).await?;
    let connected = client.workers().await?;
    let processes = record.spec.worker.processes;
    let by_job = group_by_job(&connected, processes);
    let mut remove = crate::cluster::choose_removals(&record.workers, states, &by_job, count);
    // With one Dask worker per job the scheduler can pick jobs itself; with
    // several it could split a job, so muster picks whole jobs.
    let retired = if choice == Removal::SchedulerChooses && processes == 1 {
        remove.retain(|id| !by_job.contains_key(id));
        let names = client.retire_cheapest(count - remove.len()).await?;
        let known: BTreeSet<&JobId> = record.workers.iter().collect();
        remove.extend(
            names
                .iter()
                .map(|n| JobId::from(n.as_str()))
                .filter(|id| known.contains(id)),
        );
        names
    } else {
        let addresses: Vec<String> = remove
            .iter()
            .flat_map(|id| {
                by_job
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|w| w.address.clone())
            })
            .collect();
        client.retire_workers(&addresses).await?
    };
    tracing::debug!(
        ?remove,
        ?retired,
        "retired through the scheduler; cancelling"
    );
    backend.cancel(&remove).await?;
    record.workers.retain(|id| !remove.contains(id));
    store.save(record).await?;
    Ok(remove)
}

/// Brings down whatever of the cluster the backend finds, with or without a
/// record: marks it Stopping (so no round acts again), cancels the workers
/// and then the scheduler, checks nothing is left, and forgets it. Call it
/// holding the store's lock. The report carries the backend's warnings.
pub async fn bring_down(backend: &dyn Backend, store: &dyn ClusterStore) -> Result<DownReport> {
    let mut warnings = Vec::new();
    let name = store.name().to_string();
    let mut record = store.load().await?;
    if let Some(r) = record.as_mut() {
        r.phase = Phase::Stopping;
        store.save(r).await?;
    }
    let live = backend.discover().await?;
    warnings.extend(live.warnings);
    let existed = record.is_some() || !live.jobs.is_empty();
    // Workers first, while the scheduler is there to see them leave cleanly.
    let scheduler = record.as_ref().and_then(|r| r.scheduler_job.clone());
    let mut ids: BTreeSet<JobId> = live.jobs.into_iter().map(|(id, _)| id).collect();
    if let Some(r) = &record {
        ids.extend(r.workers.iter().cloned());
        ids.extend(r.scheduler_job.iter().cloned());
    }
    let (sched_ids, worker_ids): (Vec<JobId>, Vec<JobId>) = ids
        .iter()
        .cloned()
        .partition(|id| Some(id) == scheduler.as_ref());
    backend.cancel(&worker_ids).await?;
    backend.cancel(&sched_ids).await?;
    // With nothing cancelled (and the lock held) there is nothing to check.
    if !ids.is_empty() {
        let left = backend.discover().await?;
        warnings.extend(left.warnings);
        if !left.jobs.is_empty() {
            return Err(Error::LeftBehind {
                cluster: name,
                jobs: left.jobs.into_iter().map(|(id, _)| id.0).collect(),
            });
        }
    }
    warnings.extend(backend.forget().await?);
    store.remove().await?;
    Ok(DownReport {
        name,
        stopped: ids.into_iter().collect(),
        existed,
        warnings,
    })
}
