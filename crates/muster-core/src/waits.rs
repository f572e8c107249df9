//! Looking at a cluster without changing it: the status report `get` and
//! `describe` show (one backend query, one scheduler query). Read-only: it
//! never starts, stops or restarts anything.

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::cluster::ClusterStatus;
use crate::error::Result;
use crate::job::{JobId, JobStatus};
use crate::ops;
use crate::registry::ClusterRecord;

/// A backend job-state query in flight.
pub(crate) type StatusCheck<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<BTreeMap<JobId, JobStatus>>> + Send + 'a>,
>;

/// The cluster as the backend and the scheduler see it now.
pub async fn status_of(backend: &dyn Backend, record: &ClusterRecord) -> Result<ClusterStatus> {
    let mut ids = record.workers.clone();
    ids.extend(record.scheduler_job.iter().cloned());
    let states = backend.status(&ids).await?;
    let (reachable, connected) = match &record.http_url {
        Some(_) => match async {
            ops::scheduler_client(backend, record)
                .await?
                .workers()
                .await
        }
        .await
        {
            Ok(ws) => (true, ws),
            Err(e) => {
                tracing::debug!("scheduler unreachable: {e}");
                (false, Vec::new())
            }
        },
        None => (false, Vec::new()),
    };
    let (workers, unknown_workers) = crate::managed::rows(record, &states, &connected);
    Ok(ClusterStatus {
        name: record.name.clone(),
        backend: record.backend().to_string(),
        phase: record.phase,
        age_seconds: record.age().as_secs(),
        scheduler: record.scheduler_job.clone().map(|id| {
            let s = states.get(&id).cloned().unwrap_or(JobStatus::Unknown);
            (id, s)
        }),
        scheduler_address: record.scheduler_address.clone(),
        dashboard_url: record.dashboard_link(),
        scheduler_reachable: reachable,
        desired_workers: record.spec.workers,
        processes_per_worker: record.spec.worker.processes,
        connected_workers: connected.len(),
        workers,
        unknown_workers,
    })
}
