//! The body of [`crate::reconcile::round`]: observe once, decide with the
//! pure policy, act on that one observation, record. Kept apart from the
//! traits so the seams read on their own.

use std::time::Duration;

use tracing::Instrument;

use crate::cluster::group_by_job;
use crate::error::{Error, Result};
use crate::ops::{self, Removal};
use crate::policy::{Action, Mode, Observation, Policy, PolicyState, decide};
use crate::reconcile::{RoundContext, RoundOutcome, StoreGuard};
use crate::registry::{ClusterRecord, Observed, Phase, PolicyMemory, unix_now};

/// Longest wait after an observation failed for a reason retrying will not
/// cure soon (a missing command, a refused login).
const PERMANENT_BACKOFF: Duration = Duration::from_secs(30);

fn finished(next_poll: Duration) -> RoundOutcome {
    RoundOutcome {
        decision: None,
        next_poll,
        finished: true,
        jobs: 0,
        connected: 0,
        failure: None,
    }
}

pub(crate) async fn run(ctx: &RoundContext<'_>) -> Result<RoundOutcome> {
    let span = tracing::info_span!("round", cluster = %ctx.store.name());
    async {
        let guard = ctx.store.lock().await?;
        one(ctx, Some(guard)).await
    }
    .instrument(span)
    .await
}

/// A round by a caller that holds the store's lock already (`scale`).
pub(crate) async fn run_held(ctx: &RoundContext<'_>) -> Result<RoundOutcome> {
    let span = tracing::info_span!("round", cluster = %ctx.store.name());
    one(ctx, None).instrument(span).await
}

async fn one(ctx: &RoundContext<'_>, guard: Option<StoreGuard>) -> Result<RoundOutcome> {
    let Some(mut rec) = ctx.store.load().await? else {
        tracing::info!("the cluster is gone: nothing to reconcile");
        return Ok(finished(Duration::ZERO));
    };
    if rec.phase != Phase::Running {
        tracing::info!(
            phase = rec.phase.word(),
            "the cluster is not running: nothing to reconcile"
        );
        return Ok(finished(Duration::ZERO));
    }
    let policy = Policy::from_spec(&rec.spec);
    let settings = format!("{policy:?}");
    if rec.policy.generation != rec.adapt_generation || rec.policy.settings != settings {
        // New settings, or `muster adapt` again: start afresh, unpaused.
        if !rec.policy.settings.is_empty() {
            tracing::info!(%settings, "settings changed: the policy starts afresh");
        }
        rec.policy = PolicyMemory {
            generation: rec.adapt_generation,
            settings,
            ..PolicyMemory::default()
        };
    }
    let now = ctx.clock.now();
    let seen = match observe(ctx, &mut rec, &policy).await {
        Ok(seen) => seen,
        Err(e) => {
            tracing::warn!("observing the cluster: {e}");
            let transient = e.is_transient();
            if rec.policy.last_kind != "observe-failed" {
                let how = if transient {
                    "holding steady"
                } else {
                    "holding steady; this will not pass by itself"
                };
                ctx.timeline
                    .record(
                        "observe-failed",
                        &format!("cannot observe the cluster, {how}: {e}"),
                    )
                    .await?;
                rec.policy.last_kind = "observe-failed".into();
            }
            rec.policy.state.unreachable += 1;
            ctx.store.save(&rec).await?;
            let next_poll = if transient {
                policy.backoff(rec.policy.state.unreachable)
            } else {
                PERMANENT_BACKOFF
            };
            return Ok(RoundOutcome {
                decision: None,
                next_poll,
                finished: false,
                jobs: rec.workers.len() as u32,
                connected: 0,
                failure: None,
            });
        }
    };
    let d = decide(&policy, &rec.policy.state, &seen.obs, now);
    let mut state = d.state.clone();
    if d.action != Action::Hold || d.kind != rec.policy.last_kind {
        ctx.timeline.record(d.kind, &d.reason).await?;
    }
    rec.policy.last_kind = d.kind.to_string();
    let mut failure = None;
    match d.action {
        Action::Hold => {}
        Action::Launch(n) => {
            let (next, failed) = launch(ctx, &mut rec, &policy, &state, n, now).await?;
            state = next;
            failure = failed;
        }
        Action::Remove(n) => {
            let choice = match policy.mode {
                Mode::Fixed { .. } => Removal::Newest,
                Mode::Adaptive { .. } => Removal::SchedulerChooses,
            };
            match ops::remove_workers(
                ctx.backend,
                ctx.store,
                &mut rec,
                n as usize,
                &seen.states,
                choice,
            )
            .await
            {
                Ok(ids) => {
                    ctx.timeline
                        .record(
                            "retired",
                            &format!(
                                "retired through the scheduler, then cancelled {}",
                                id_list(&ids)
                            ),
                        )
                        .await?
                }
                Err(e) => {
                    ctx.timeline
                        .record("retire-failed", &format!("removing {n} failed: {e}"))
                        .await?;
                    failure = Some(e);
                }
            }
        }
        Action::ShutDown => {
            // Brought down under the lock the round holds (or its caller).
            let _guard = guard;
            let result = ops::bring_down(ctx.backend, ctx.store).await;
            return match result {
                Ok(report) => {
                    for w in report.warnings {
                        tracing::warn!("{w}");
                    }
                    tracing::info!("brought the cluster down after idling");
                    Ok(RoundOutcome {
                        decision: Some(d),
                        ..finished(Duration::ZERO)
                    })
                }
                Err(e) => {
                    ctx.timeline
                        .record("shutdown-failed", &e.to_string())
                        .await?;
                    Err(e)
                }
            };
        }
    }
    rec.policy.state = state;
    rec.policy.last_decision = Some(d.reason.clone());
    rec.observed = Some(Observed {
        jobs: seen.obs.jobs,
        connected: seen.obs.connected,
        target: seen.obs.target,
        at: unix_now(),
    });
    ctx.store.save(&rec).await?;
    Ok(RoundOutcome {
        next_poll: d.next_poll,
        decision: Some(d),
        finished: false,
        jobs: rec.workers.len() as u32,
        connected: seen.obs.connected,
        failure,
    })
}

async fn launch(
    ctx: &RoundContext<'_>,
    rec: &mut ClusterRecord,
    policy: &Policy,
    state: &PolicyState,
    n: u32,
    now: Duration,
) -> Result<(PolicyState, Option<Error>)> {
    match ops::launch_workers(ctx.backend, ctx.store, rec, n).await {
        Ok(l) => {
            ctx.timeline
                .record("launched", &format!("launched {}", id_list(&l.jobs)))
                .await?;
            for w in &l.warnings {
                ctx.timeline.record("warning", w).await?;
            }
            Ok((state.after_launch(policy, now, None), None))
        }
        Err(e) => {
            let next = state.after_launch(policy, now, Some(&e.to_string()));
            ctx.timeline
                .record("launch-failed", &format!("launching {n} failed: {e}"))
                .await?;
            if e.is_usage() || !e.is_transient() {
                tracing::debug!("launch failed for a reason retrying may not cure: {e}");
            }
            if let Some(why) = &next.paused
                && state.paused.is_none()
            {
                ctx.timeline.record("paused", why).await?;
            }
            Ok((next, Some(e)))
        }
    }
}

/// One observation and the job states it was made from.
struct Seen {
    obs: Observation,
    states: std::collections::BTreeMap<crate::job::JobId, crate::job::JobStatus>,
}

async fn observe(ctx: &RoundContext<'_>, rec: &mut ClusterRecord, policy: &Policy) -> Result<Seen> {
    let (states, ended) = ops::prune_ended(ctx.backend, ctx.store, rec).await?;
    for (id, status) in &ended {
        ctx.timeline
            .record(
                "died",
                &format!("worker job {id} ended on its own: {status}"),
            )
            .await?;
    }
    let mut obs = Observation {
        target: None,
        jobs: rec.workers.len() as u32,
        connected: 0,
        died: ended.len() as u32,
        idle_for: None,
    };
    let client = ops::scheduler_client(ctx.backend, rec).await?;
    let workers = match client.workers().await {
        Ok(w) => w,
        Err(e) if e.is_transient() => {
            tracing::debug!("scheduler unreachable: {e}");
            return Ok(Seen { obs, states });
        }
        Err(e) => return Err(e),
    };
    let by_job = group_by_job(&workers, rec.spec.worker.processes);
    obs.connected = rec
        .workers
        .iter()
        .filter(|id| by_job.contains_key(*id))
        .count() as u32;
    let target = match policy.mode {
        Mode::Adaptive { .. } => match client.adaptive_target().await {
            Ok(t) => t,
            Err(e) if e.is_transient() => return Ok(Seen { obs, states }),
            Err(e) => return Err(e),
        },
        Mode::Fixed { .. } => 0,
    };
    obs.target = Some(target);
    if policy.idle_timeout.is_some()
        && let Ok(Some(since)) = client.idle_since().await
    {
        let now = ctx.clock.now().as_secs_f64();
        obs.idle_for = Some(Duration::from_secs_f64((now - since).max(0.0)));
    }
    Ok(Seen { obs, states })
}

/// A short list of job ids for an event.
pub fn id_list(ids: &[crate::job::JobId]) -> String {
    let names: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
    match names.len() {
        0 => "nothing".into(),
        1 => names[0].to_string(),
        n if n > 6 => format!("{n} jobs ({} … {})", names[0], names[n - 1]),
        _ => names.join(", "),
    }
}
