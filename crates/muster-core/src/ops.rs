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
    /// The cheapest of this cluster's own workers, as the scheduler last
    /// heard from them: idle first, then least data (what adaptive scaling
    /// does). Only the record's jobs are candidates, so a worker group that
    /// shares its scheduler with others never retires theirs.
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
        record.remember_ended(ended.iter().map(|(id, status)| crate::registry::EndedJob {
            id: id.clone(),
            status: status.clone(),
        }));
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
    if choice == Removal::SchedulerChooses {
        // Jobs whose workers never connected still go first; the rest are
        // this record's cheapest connected jobs (whole jobs, never a part).
        remove.retain(|id| !by_job.contains_key(id));
        let loads = client.worker_loads().await?;
        remove.extend(cheapest(record, &by_job, &loads, count - remove.len()));
    }
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
    let retired = client.retire_workers(&addresses).await?;
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

/// The `n` cheapest of the record's connected jobs: least busy, then least
/// data (summed over a job's workers), the newest first among equals.
/// Only the record's own jobs are candidates.
fn cheapest(
    record: &ClusterRecord,
    by_job: &BTreeMap<JobId, Vec<crate::dask::WorkerInfo>>,
    loads: &BTreeMap<String, crate::dask::WorkerLoad>,
    n: usize,
) -> Vec<JobId> {
    let mut ranked: Vec<(crate::dask::WorkerLoad, usize, &JobId)> = (record.workers.iter())
        .enumerate()
        .filter_map(|(i, id)| {
            let workers = by_job.get(id)?;
            let load =
                workers
                    .iter()
                    .fold(Default::default(), |acc: crate::dask::WorkerLoad, w| {
                        let l = loads.get(&w.address).copied().unwrap_or_default();
                        crate::dask::WorkerLoad {
                            busy: acc.busy + l.busy,
                            bytes: acc.bytes + l.bytes,
                        }
                    });
            Some((load, usize::MAX - i, id))
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(n)
        .map(|(_, _, id)| id.clone())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ClusterSpec;
    use crate::testkit::{FakeBackend, FakeScheduler, MemoryStore};

    fn ids(names: &[&str]) -> Vec<JobId> {
        names.iter().map(|n| JobId::from(*n)).collect()
    }

    /// Two worker groups share one scheduler, as a DaskCluster's
    /// DaskWorkerGroups do, and each is reconciled with its own record:
    /// shrinking one retires its own cheapest worker, never the other's,
    /// even when the other's are the cheapest of the whole cluster.
    #[tokio::test]
    async fn shrinking_one_group_never_retires_another_groups_workers() {
        let sched = FakeScheduler::start().await;
        sched.set_workers(&ids(&["a-w0", "a-w1", "b-w0", "b-w1"]));
        sched.set_load("a-w0", 3, 10);
        sched.set_load("a-w1", 0, 500);
        let mut record = ClusterRecord::new(ClusterSpec::from_yaml("name: a", None).unwrap());
        record.phase = Phase::Running;
        record.http_url = Some(sched.url.clone());
        record.workers = ids(&["a-w0", "a-w1"]);
        let store = MemoryStore::new(record.clone());
        let backend = FakeBackend::new("a");
        let removed = remove_workers(
            &backend,
            &store,
            &mut record,
            1,
            &BTreeMap::new(),
            Removal::SchedulerChooses,
        )
        .await
        .unwrap();
        // a-w1 is idle (a-w0 runs tasks); b's idle, empty workers stay.
        assert_eq!(removed, ids(&["a-w1"]));
        assert_eq!(sched.workers(), ["a-w0", "b-w0", "b-w1"]);
        assert_eq!(record.workers, ids(&["a-w0"]));
        // Group b shrinks likewise within its own jobs.
        let mut b = ClusterRecord::new(ClusterSpec::from_yaml("name: b", None).unwrap());
        b.phase = Phase::Running;
        b.http_url = Some(sched.url.clone());
        b.workers = ids(&["b-w0", "b-w1"]);
        let removed = remove_workers(
            &backend,
            &MemoryStore::new(b.clone()),
            &mut b,
            2,
            &BTreeMap::new(),
            Removal::SchedulerChooses,
        )
        .await
        .unwrap();
        assert_eq!(removed, ids(&["b-w1", "b-w0"]));
        assert_eq!(sched.workers(), ["a-w0"]);
    }
}
