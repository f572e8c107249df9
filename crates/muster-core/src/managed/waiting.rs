//! Waiting for a [`ManagedCluster`] to become what a command asked for: the
//! scheduler's endpoint to appear, then enough workers to connect, polling
//! the backend and the scheduler until a deadline. A job that ends while
//! waited for fails the command with its log's tail; a wait the registry
//! shows was superseded by another command ends quietly. It changes
//! nothing itself: launching and retiring are the reconciler's.

use std::time::{Duration, Instant};

use crate::cluster::{Progress, tail_lines};
use crate::dask::SchedulerEndpoint;
use crate::error::{Error, Result};
use crate::job::{JobId, JobStatus};
use crate::ops;

use super::{ManagedCluster, POLL};

impl ManagedCluster {
    pub(crate) async fn failure(&self, what: String, id: &JobId, reason: String) -> Error {
        let log_tail = self
            .backend
            .logs(id)
            .await
            .ok()
            .map(|text| tail_lines(&text, 15))
            .filter(|t| !t.is_empty());
        Error::JobFailed {
            what,
            reason,
            log_tail,
        }
    }

    pub(crate) async fn wait_for_endpoint(
        &self,
        scheduler: &JobId,
        deadline: Instant,
    ) -> Result<SchedulerEndpoint> {
        let mut last_status = Instant::now();
        loop {
            if let Some(ep) = self.backend.scheduler_endpoint(scheduler).await? {
                return Ok(ep);
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                let st = self.backend.status(std::slice::from_ref(scheduler)).await?;
                if let Some(other) = st.get(scheduler).filter(|s| !s.is_active()) {
                    let reason = match other {
                        JobStatus::Failed { reason } => reason.clone(),
                        s => format!("it is {s} before publishing its address"),
                    };
                    return Err(self
                        .failure(format!("scheduler job {scheduler}"), scheduler, reason)
                        .await);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the scheduler ({scheduler}) to publish its address"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the scheduler reports exactly `wanted` Dask workers, failing
    /// early when a worker job of the cluster has ended, and returns how many
    /// the scheduler last reported (other than `wanted` only when another
    /// command changed the cluster meanwhile: a concurrent `scale` to another
    /// size means `wanted` may never hold again).
    pub(crate) async fn wait_for_workers(
        &self,
        wanted: usize,
        deadline: Instant,
        progress: &dyn Progress,
    ) -> Result<usize> {
        let client = ops::scheduler_client(self.backend.as_ref(), &self.record).await?;
        let every = self.backend.capabilities().status_interval;
        let mut last_status = Instant::now();
        let mut connected = 0;
        // The job-state check runs alongside the scheduler polls: on remote
        // backends one check can take longer than a worker takes to register.
        let mut check: Option<crate::waits::StatusCheck<'_>> = None;
        loop {
            match client.workers().await {
                Ok(ws) => {
                    connected = ws.len();
                    progress.workers(connected, wanted);
                    if connected == wanted {
                        return Ok(connected);
                    }
                }
                Err(e) if e.is_transient() => tracing::debug!("scheduler not answering yet: {e}"),
                Err(e) => return Err(e),
            }
            if check.is_none() && last_status.elapsed() >= every {
                if self.resized()? {
                    tracing::info!(
                        "the cluster was resized by another command: not waiting any longer"
                    );
                    return Ok(connected);
                }
                check = Some(self.backend.status(&self.record.workers));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{wanted} workers to register ({connected} did)"),
                    after: self.timeout,
                });
            }
            let Some(pending) = check.as_mut() else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            tokio::select! {
                st = pending => {
                    check = None;
                    last_status = Instant::now();
                    if let Some((id, s)) = st?.iter().find(|(_, s)| !s.is_active()) {
                        let died = matches!(s, JobStatus::Failed { .. });
                        if self.superseded(id, died)? {
                            // Another command (a later `scale`, `down`) changed
                            // the cluster under its lock and removed this job:
                            // this wait is over, and that is not a failure.
                            tracing::info!(%id, "the cluster was changed by another command: not waiting any longer");
                            return Ok(connected);
                        }
                        let reason = match s {
                            JobStatus::Failed { reason } => reason.clone(),
                            other => format!("it is {other}"),
                        };
                        return Err(self.failure(format!("worker job {id}"), id, reason).await);
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// True when the registry no longer wants what this handle waits for:
    /// the cluster is gone, its desired size changed, or the job `id` was
    /// removed from it by another command. A job that `died` (failed on its
    /// own) and was then removed by the cluster's agent, which replaces dead
    /// jobs, is not superseded: the size is unchanged and the failure is the
    /// command's to report (a prologue that exits, a worker that cannot
    /// start), not something to hide behind the replacement.
    pub(crate) fn superseded(&self, id: &JobId, died: bool) -> Result<bool> {
        Ok(match self.home.load(&self.record.name)? {
            None => true,
            Some(now) => {
                now.spec.workers != self.record.spec.workers || (!died && !now.workers.contains(id))
            }
        })
    }

    /// True when the cluster is gone from the registry or another command
    /// set another desired size since this handle's record was read.
    fn resized(&self) -> Result<bool> {
        Ok(match self.home.load(&self.record.name)? {
            None => true,
            Some(now) => now.spec.workers != self.record.spec.workers,
        })
    }
}
