//! The DaskJob controller: makes the job's DaskCluster (named like the
//! job, owned by it), starts a runner pod once the cluster is Running, and
//! follows it: Running, then Successful when a runner exits 0, or, after a
//! failure, a new runner pod (`<job>-runner-<n>`) until more than
//! `backoffLimit` have failed, then Failed. When the job ends its cluster
//! is deleted; the runner pods stay (owned by the job) so their logs can be
//! read. Every decision comes from what the API server holds ([`step`] is
//! pure), so a restarted operator neither repeats nor loses an attempt.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::events::EventTimeline;
use super::{Context, Error};
use crate::children::{self, MANAGER};
use crate::resources::{ClusterPhase, DaskCluster, DaskJob, DaskJobStatus, JobPhase};

const KIND: &str = "DaskJob";

/// A runner pod as the API server shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// The pod's name.
    pub name: String,
    /// Its phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub phase: String,
    /// Being deleted.
    pub deleting: bool,
}

/// What to do for a job, from what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The job's phase now.
    pub phase: JobPhase,
    /// Start the runner pod of this attempt.
    pub start: Option<i32>,
    /// The runner pod the status names.
    pub runner: Option<String>,
    /// Runner pods that failed.
    pub failed: i32,
}

/// The pure rule: given the cluster's phase (`None`: no cluster), the
/// runner pods and the backoff limit, the job's phase and what to start.
pub fn step(cluster: Option<ClusterPhase>, runners: &[Runner], backoff_limit: i32) -> Step {
    let failed = runners.iter().filter(|r| r.phase == "Failed").count() as i32;
    let last = runners
        .iter()
        .max_by_key(|r| attempt_of(&r.name))
        .map(|r| r.name.clone());
    let done = |phase| Step {
        phase,
        start: None,
        runner: last.clone(),
        failed,
    };
    if runners.iter().any(|r| r.phase == "Succeeded") {
        return done(JobPhase::Successful);
    }
    if failed > backoff_limit {
        return done(JobPhase::Failed);
    }
    if let Some(live) = runners
        .iter()
        .find(|r| !r.deleting && (r.phase == "Pending" || r.phase == "Running"))
    {
        let phase = if live.phase == "Running" {
            JobPhase::Running
        } else {
            JobPhase::ClusterCreated
        };
        return Step {
            phase,
            start: None,
            runner: Some(live.name.clone()),
            failed,
        };
    }
    match cluster {
        None => Step {
            phase: JobPhase::JobCreated,
            start: None,
            runner: last,
            failed,
        },
        // The next attempt is numbered after every runner made so far.
        Some(ClusterPhase::Running) => Step {
            phase: JobPhase::ClusterCreated,
            start: Some(
                runners
                    .iter()
                    .map(|r| attempt_of(&r.name) + 1)
                    .max()
                    .unwrap_or(0),
            ),
            runner: last,
            failed,
        },
        Some(_) => Step {
            phase: JobPhase::ClusterCreated,
            start: None,
            runner: last,
            failed,
        },
    }
}

/// `job-runner` → 0, `job-runner-3` → 3.
fn attempt_of(pod: &str) -> i32 {
    pod.rsplit_once("-runner-")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

fn condition(type_: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: type_.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Reconciles one DaskJob.
pub async fn reconcile(job: Arc<DaskJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("job", job = %job.name_any(), namespace = ?job.namespace());
    let result = reconcile_inner(&job, &ctx).instrument(span).await;
    ctx.metrics.reconciled(KIND, result.is_ok());
    result
}

async fn reconcile_inner(job: &DaskJob, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let timeline = EventTimeline {
        ctx,
        object: job.object_ref(&()),
        action: "Run",
    };
    let previous = job.status.clone();
    let ended = previous
        .as_ref()
        .is_some_and(|s| matches!(s.job_status, JobPhase::Successful | JobPhase::Failed));
    let cluster = clusters
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading DaskCluster {name}")))?;
    if ended {
        // Finished: only make sure the cluster is gone.
        if cluster.is_some_and(|c| c.metadata.deletion_timestamp.is_none()) {
            delete_cluster(&clusters, &name).await?;
        }
        return Ok(Action::await_change());
    }
    let mut cluster_phase = cluster.as_ref().map(|c| {
        c.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(ClusterPhase::Created)
    });
    if cluster.is_none() {
        let problems = children::validate_cluster(&children::job_cluster(job));
        if !problems.is_empty() {
            let why = problems
                .iter()
                .map(|p| format!("spec.cluster.{p}").replace("spec.cluster.metadata.", "metadata."))
                .collect::<Vec<_>>()
                .join("; ");
            timeline.publish_as("Invalid", true, &why).await;
            let mut status = status_from(previous.as_ref(), JobPhase::Failed);
            status.end_time = Some(Time(Timestamp::now()));
            status.conditions = vec![condition("Failed", &why, job.metadata.generation)];
            write_status(ctx, job, &status).await?;
            return Ok(Action::await_change());
        }
        match clusters
            .create(&PostParams::default(), &children::job_cluster(job))
            .await
        {
            Ok(_) => {
                timeline
                    .publish("cluster-created", &format!("DaskCluster {name} created"))
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating DaskCluster {name}"))(e)),
        }
        cluster_phase = Some(ClusterPhase::Created);
    }
    let runners: Vec<Runner> = pods
        .list(&ListParams::default().labels(&children::runner_selector(&name)))
        .await
        .map_err(Error::kube("listing runner pods"))?
        .items
        .iter()
        .map(|p| Runner {
            name: p.name_any(),
            phase: p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into()),
            deleting: p.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    let s = step(cluster_phase, &runners, job.spec.backoff_limit);
    let mut status = status_from(previous.as_ref(), s.phase);
    status.cluster_name = Some(name.clone());
    status.failed = s.failed;
    status.job_runner_pod_name = s.runner.clone();
    if let Some(attempt) = s.start {
        let pod = children::runner_pod(job, attempt);
        let pod_name = pod.name_any();
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                let note = if attempt == 0 {
                    format!("runner pod {pod_name} started")
                } else {
                    format!(
                        "runner pod {pod_name} started after {} failed (backoffLimit {})",
                        s.failed, job.spec.backoff_limit
                    )
                };
                timeline.publish("runner-started", &note).await;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating pod {pod_name}"))(e)),
        }
        status.job_runner_pod_name = Some(pod_name);
    }
    if s.phase == JobPhase::Running && status.start_time.is_none() {
        status.start_time = Some(Time(Timestamp::now()));
    }
    let before = previous.as_ref().map(|p| p.job_status);
    match s.phase {
        JobPhase::Successful | JobPhase::Failed => {
            let (type_, note) = if s.phase == JobPhase::Successful {
                (
                    "Complete",
                    format!("runner {} succeeded", s.runner.clone().unwrap_or_default()),
                )
            } else {
                (
                    "Failed",
                    format!(
                        "{} runner pods failed (backoffLimit {})",
                        s.failed, job.spec.backoff_limit
                    ),
                )
            };
            status.end_time = Some(Time(Timestamp::now()));
            status.conditions = vec![condition(type_, &note, job.metadata.generation)];
            write_status(ctx, job, &status).await?;
            if s.phase == JobPhase::Failed {
                timeline.publish_as("Failed", true, &note).await;
            } else {
                timeline.publish("successful", &note).await;
            }
            delete_cluster(&clusters, &name).await?;
            timeline
                .publish(
                    "cluster-deleted",
                    &format!("DaskCluster {name} deleted: the job ended"),
                )
                .await;
            Ok(Action::await_change())
        }
        phase => {
            if before != Some(phase) || previous.as_ref() != Some(&status) {
                write_status(ctx, job, &status).await?;
            }
            if before != Some(phase) && phase == JobPhase::Running {
                timeline.publish("running", "the runner pod runs").await;
            }
            Ok(Action::requeue(Duration::from_secs(
                if phase == JobPhase::Running { 30 } else { 3 },
            )))
        }
    }
}

fn status_from(previous: Option<&DaskJobStatus>, phase: JobPhase) -> DaskJobStatus {
    let mut s = previous.cloned().unwrap_or(DaskJobStatus {
        job_status: phase,
        cluster_name: None,
        job_runner_pod_name: None,
        start_time: None,
        end_time: None,
        failed: 0,
        conditions: Vec::new(),
    });
    s.job_status = phase;
    s
}

async fn delete_cluster(clusters: &Api<DaskCluster>, name: &str) -> Result<(), Error> {
    match clusters.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting DaskCluster {name}"))(e)),
    }
}

async fn write_status(ctx: &Context, job: &DaskJob, status: &DaskJobStatus) -> Result<(), Error> {
    let api: Api<DaskJob> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": DaskJob::api_version(&()),
        "kind": KIND,
        "status": status,
    });
    api.patch_status(
        &job.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "writing the status of DaskJob {}",
        job.name_any()
    )))?;
    Ok(())
}

/// After a failed reconcile: log it and look again soon.
pub fn error_policy(_j: Arc<DaskJob>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("job reconcile failed: {err}");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, phase: &str) -> Runner {
        Runner {
            name: name.into(),
            phase: phase.into(),
            deleting: false,
        }
    }

    #[test]
    fn a_job_waits_for_its_cluster_then_starts_one_runner() {
        let s = step(None, &[], 6);
        assert_eq!((s.phase, s.start), (JobPhase::JobCreated, None));
        let s = step(Some(ClusterPhase::Pending), &[], 6);
        assert_eq!((s.phase, s.start), (JobPhase::ClusterCreated, None));
        let s = step(Some(ClusterPhase::Running), &[], 6);
        assert_eq!((s.phase, s.start), (JobPhase::ClusterCreated, Some(0)));
        let s = step(Some(ClusterPhase::Running), &[r("j-runner", "Pending")], 6);
        assert_eq!((s.phase, s.start), (JobPhase::ClusterCreated, None));
        let s = step(Some(ClusterPhase::Running), &[r("j-runner", "Running")], 6);
        assert_eq!(s.phase, JobPhase::Running);
        let s = step(
            Some(ClusterPhase::Running),
            &[r("j-runner", "Succeeded")],
            6,
        );
        assert_eq!(
            (s.phase, s.runner.as_deref()),
            (JobPhase::Successful, Some("j-runner"))
        );
    }

    #[test]
    fn failures_are_retried_up_to_the_backoff_limit() {
        let one = [r("j-runner", "Failed")];
        let s = step(Some(ClusterPhase::Running), &one, 1);
        assert_eq!(
            (s.phase, s.start, s.failed),
            (JobPhase::ClusterCreated, Some(1), 1)
        );
        let two = [r("j-runner", "Failed"), r("j-runner-1", "Failed")];
        let s = step(Some(ClusterPhase::Running), &two, 1);
        assert_eq!((s.phase, s.start, s.failed), (JobPhase::Failed, None, 2));
        assert_eq!(s.runner.as_deref(), Some("j-runner-1"));
        // backoffLimit 0: the first failure ends it.
        assert_eq!(
            step(Some(ClusterPhase::Running), &one, 0).phase,
            JobPhase::Failed
        );
        // A retry that succeeded ends it well.
        let ok = [r("j-runner", "Failed"), r("j-runner-1", "Succeeded")];
        assert_eq!(
            step(Some(ClusterPhase::Running), &ok, 1).phase,
            JobPhase::Successful
        );
        // Attempts are never reused, even with a gap.
        let gap = [r("j-runner", "Failed"), r("j-runner-3", "Failed")];
        assert_eq!(step(Some(ClusterPhase::Running), &gap, 6).start, Some(4));
    }
}
