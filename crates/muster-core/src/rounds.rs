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
    let before = rec.clone();
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
    if changed_besides_time(&before, &rec) {
        ctx.store.save(&rec).await?;
    }
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

/// Whether a round changed the record in more than the time of its
/// observation. A steady cluster's rounds then write nothing: no churn in the
/// registry every interval, and no file appearing in a cluster directory that
/// another process is removing.
fn changed_besides_time(before: &ClusterRecord, after: &ClusterRecord) -> bool {
    let mut same_time = after.clone();
    if let (Some(b), Some(a)) = (&before.observed, &mut same_time.observed) {
        a.at = b.at;
    }
    &same_time != before
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::job::JobId;
    use crate::reconcile::{Clock, ClusterStore, RoundContext, round};
    use crate::registry::ClusterRecord;
    use crate::spec::ClusterSpec;
    use crate::testkit::{FakeBackend, FakeScheduler, MemoryStore, MemoryTimeline, TestClock};

    async fn setup(yaml: &str) -> (FakeBackend, MemoryStore, FakeScheduler) {
        let sched = FakeScheduler::start().await;
        let spec = ClusterSpec::from_yaml(yaml, None).unwrap();
        spec.validate().unwrap();
        let mut record = ClusterRecord::new(spec);
        record.phase = Phase::Running;
        record.scheduler_address = Some("tcp://127.0.0.1:1".into());
        record.http_url = Some(sched.url.clone());
        (FakeBackend::new("c"), MemoryStore::new(record), sched)
    }

    #[tokio::test]
    async fn a_fixed_size_is_reached_and_kept_in_one_round_each() {
        let (backend, store, sched) = setup("name: c\nworkers: 2").await;
        let (timeline, clock) = (MemoryTimeline::default(), TestClock::default());
        let ctx = RoundContext {
            backend: &backend,
            store: &store,
            timeline: &timeline,
            clock: &clock,
        };
        let out = round(&ctx).await.unwrap();
        assert_eq!(out.decision.unwrap().action, Action::Launch(2));
        assert_eq!(store.get().unwrap().workers, backend.active());
        assert_eq!(timeline.kinds(), ["scale-up", "launched"]);
        // Desired and observed stay apart: the spec still says 2.
        sched.set_workers(&backend.active());
        let out = round(&ctx).await.unwrap();
        assert_eq!((out.jobs, out.connected), (2, 2));
        let rec = store.get().unwrap();
        assert_eq!(
            (rec.spec.workers, rec.observed.as_ref().unwrap().connected),
            (2, 2)
        );

        // A dead job is replaced: one observation, one action.
        let dead = backend.active()[0].clone();
        backend.kill(&dead);
        let out = round(&ctx).await.unwrap();
        assert_eq!(out.decision.unwrap().action, Action::Launch(1));
        let rec = store.get().unwrap();
        assert!(!rec.workers.contains(&dead));
        assert!(timeline.kinds().contains(&"died".to_string()));
        // ...and remembered with how it ended, for `logs --all`.
        assert_eq!(rec.ended.iter().map(|e| &e.id).collect::<Vec<_>>(), [&dead]);
        assert!(!rec.ended[0].status.is_active());

        // Scaled down to 1: the newest job is retired through the
        // scheduler, then cancelled.
        sched.set_workers(&backend.active());
        let mut rec = store.get().unwrap();
        rec.spec.workers = 1;
        store.save(&rec).await.unwrap();
        let out = round(&ctx).await.unwrap();
        assert_eq!(out.decision.unwrap().action, Action::Remove(1));
        assert_eq!(backend.active(), vec![JobId::from("c-w1")]);
        assert_eq!(store.get().unwrap().workers, backend.active());
    }

    #[tokio::test]
    async fn a_pause_survives_a_new_supervisor_and_adapt_resumes_it() {
        let yaml =
            "name: c\nworkers: 0\nadapt: {maximum: 4, interval: 100ms, max_launch_failures: 2}";
        let (backend, store, sched) = setup(yaml).await;
        sched.set_target(4);
        backend.fail_launches(Some("sbatch: error: invalid partition"));
        let (timeline, clock) = (MemoryTimeline::default(), TestClock::default());
        let ctx = RoundContext {
            backend: &backend,
            store: &store,
            timeline: &timeline,
            clock: &clock,
        };
        for _ in 0..6 {
            let out = round(&ctx).await.unwrap();
            clock.sleep(out.next_poll).await;
        }
        assert_eq!(
            backend.launches.load(Ordering::SeqCst),
            2,
            "paused after two failures"
        );
        let rec = store.get().unwrap();
        assert!(
            rec.policy
                .state
                .paused
                .as_deref()
                .unwrap()
                .contains("invalid partition")
        );
        // Another supervisor (a restarted agent, an operator replica) reads
        // the same store: still paused, no launch.
        let clock2 = TestClock::default();
        let ctx2 = RoundContext {
            clock: &clock2,
            ..ctx
        };
        round(&ctx2).await.unwrap();
        assert_eq!(backend.launches.load(Ordering::SeqCst), 2);
        // `adapt` again (same settings) resumes.
        backend.fail_launches(None);
        let mut rec = store.get().unwrap();
        rec.adapt_generation += 1;
        store.save(&rec).await.unwrap();
        let out = round(&ctx2).await.unwrap();
        assert_eq!(out.decision.unwrap().action, Action::Launch(4));
        assert_eq!(backend.active().len(), 4);
        // Adaptive rounds never write the observed size over the desired one.
        assert_eq!(store.get().unwrap().spec.workers, 0);
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_holds_and_a_removed_cluster_finishes() {
        let (backend, store, sched) = setup("name: c\nworkers: 1").await;
        sched.set_up(false);
        let (timeline, clock) = (MemoryTimeline::default(), TestClock::default());
        let ctx = RoundContext {
            backend: &backend,
            store: &store,
            timeline: &timeline,
            clock: &clock,
        };
        let out = round(&ctx).await.unwrap();
        assert_eq!(out.decision.unwrap().kind, "unreachable");
        assert!(
            backend.active().is_empty(),
            "nothing launched without the load signal"
        );
        store.remove().await.unwrap();
        assert!(round(&ctx).await.unwrap().finished);
    }
}
