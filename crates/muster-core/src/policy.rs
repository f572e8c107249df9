//! The scaling policy, as one pure function: given the settings, what the
//! policy remembers, what was just observed and the time, say what to do and
//! why. No I/O, no clock: every backend and every test drives the same code.
//!
//! The rules:
//! - stay within `minimum..=maximum` worker jobs;
//! - grow at once to the scheduler's target, counting jobs that are launched
//!   but not yet connected as already there (so a slow start is never paid
//!   twice), and never with more than `max_pending` jobs unconnected;
//! - shrink only after the wanted size has stayed below the current size for
//!   `scale_down_wait`, and then only to the highest size wanted within the
//!   last `scale_down_wait` (a sliding window, so a brief dip never shrinks
//!   and a long quiet spell shrinks promptly), and never within `cooldown`
//!   of growing;
//! - hold steady while the scheduler cannot be reached, polling less often;
//! - after a failed launch, back off exponentially; after
//!   `max_launch_failures` in a row, pause growing (visible in `describe`);
//! - replace worker jobs that die on their own, up to `max_replacements`;
//! - bring the whole cluster down after `idle_timeout` of idleness.

use std::time::Duration;

use crate::spec::{AdaptSpec, ClusterSpec};
use serde::{Deserialize, Serialize};

/// What the policy aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Mode {
    /// Follow the scheduler's target within these bounds (worker jobs).
    Adaptive {
        /// Fewest jobs.
        minimum: u32,
        /// Most jobs.
        maximum: u32,
    },
    /// Keep this many worker jobs (replacing dead ones).
    Fixed {
        /// Jobs wanted.
        workers: u32,
    },
}

/// The policy's settings, from a cluster's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What to aim for.
    pub mode: Mode,
    /// Dask worker processes per job (the scheduler's target counts processes).
    pub processes: u32,
    /// Time between observations.
    pub interval: Duration,
    /// How long the wanted size must stay lower before shrinking.
    pub scale_down_wait: Duration,
    /// Least time between growing and the next removal.
    pub cooldown: Duration,
    /// Most jobs launched but not yet connected.
    pub max_pending: u32,
    /// Bring the cluster down after this long idle.
    pub idle_timeout: Option<Duration>,
    /// Failed launches in a row before pausing.
    pub max_launch_failures: u32,
    /// Dead jobs replaced before pausing.
    pub max_replacements: u32,
}

/// Longest pause between observations while backing off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Policy {
    /// The policy a spec asks for: adaptive when it has an `adapt` section,
    /// else a fixed size of `workers` (with the default limits).
    pub fn from_spec(spec: &ClusterSpec) -> Policy {
        let (mode, a) = match &spec.adapt {
            Some(a) => (
                Mode::Adaptive {
                    minimum: a.minimum,
                    maximum: a.maximum,
                },
                a.clone(),
            ),
            None => (
                Mode::Fixed {
                    workers: spec.workers,
                },
                AdaptSpec::new(0, spec.workers.max(1)),
            ),
        };
        Policy {
            mode,
            processes: spec.worker.processes.max(1),
            interval: a.interval.duration(),
            scale_down_wait: a.scale_down_wait.duration(),
            cooldown: a.cooldown.duration(),
            max_pending: a.max_pending,
            idle_timeout: a.idle_timeout.map(|s| s.duration()),
            max_launch_failures: a.max_launch_failures,
            max_replacements: a.max_replacements,
        }
    }

    /// The number of jobs wanted for a scheduler target (in Dask workers).
    pub fn wanted(&self, target: u32) -> u32 {
        match self.mode {
            Mode::Adaptive { minimum, maximum } => {
                target.div_ceil(self.processes).clamp(minimum, maximum)
            }
            Mode::Fixed { workers } => workers,
        }
    }

    /// How long to wait before the next attempt after `n` failures in a row.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.min(6);
        (self.interval * factor).min(MAX_BACKOFF)
    }
}

/// One look at the cluster, taken by the agent just before deciding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The scheduler's adaptive target in Dask workers; `None` when the
    /// scheduler could not be reached.
    pub target: Option<u32>,
    /// Worker jobs launched and not ended (pending or running).
    pub jobs: u32,
    /// Of those, jobs with at least one Dask worker registered.
    pub connected: u32,
    /// Worker jobs that ended on their own since the last observation.
    pub died: u32,
    /// How long the scheduler has been idle, when it is.
    pub idle_for: Option<Duration>,
}

impl Observation {
    /// Jobs launched but not yet connected.
    pub fn pending(&self) -> u32 {
        self.jobs.saturating_sub(self.connected)
    }
}

/// What the policy remembers between decisions. Times are offsets from an
/// arbitrary origin (the agent's start), like `now`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyState {
    /// Since when the wanted size has been below the current size.
    pub below_since: Option<Duration>,
    /// The sizes wanted since then (time, jobs), trimmed to the last
    /// `scale_down_wait` plus the sample just before it.
    pub below: Vec<(Duration, u32)>,
    /// When the cluster last grew.
    pub last_growth: Option<Duration>,
    /// Launches failed in a row.
    pub launch_failures: u32,
    /// No launch before this time (backing off).
    pub retry_at: Option<Duration>,
    /// Observations in a row without the scheduler.
    pub unreachable: u32,
    /// Dead jobs counted against `max_replacements`.
    pub replaced: u32,
    /// Why growing is paused, if it is.
    pub paused: Option<String>,
}

impl PolicyState {
    /// The state after a launch attempt at `now`.
    pub fn after_launch(&self, policy: &Policy, now: Duration, error: Option<&str>) -> Self {
        let mut s = self.clone();
        match error {
            None => {
                s.launch_failures = 0;
                s.retry_at = None;
                s.last_growth = Some(now);
            }
            Some(err) => {
                s.launch_failures += 1;
                s.retry_at = Some(now + policy.backoff(s.launch_failures));
                if s.launch_failures >= policy.max_launch_failures {
                    s.paused = Some(format!(
                        "{} launches failed in a row (max_launch_failures {}); last: {err}",
                        s.launch_failures, policy.max_launch_failures
                    ));
                }
            }
        }
        s
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "jobs")]
pub enum Action {
    /// Nothing.
    Hold,
    /// Launch this many worker jobs (one batch).
    Launch(u32),
    /// Retire and then cancel this many worker jobs.
    Remove(u32),
    /// Bring the whole cluster down.
    ShutDown,
}

/// A decision: the action, a short kind (for the timeline: a new event is
/// written when the kind changes or something is done), a sentence saying
/// why, the state to remember, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// A stable word for the situation, e.g. `scale-up`, `waiting`, `unreachable`.
    pub kind: &'static str,
    /// Why, for people.
    pub reason: String,
    /// The policy's memory after this decision.
    pub state: PolicyState,
    /// Time until the next observation.
    pub next_poll: Duration,
}

fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Decides what to do. Pure: the same inputs always give the same decision.
pub fn decide(policy: &Policy, state: &PolicyState, obs: &Observation, now: Duration) -> Decision {
    let mut s = state.clone();
    let hold = |kind: &'static str, reason: String, s: PolicyState, poll: Duration| Decision {
        action: Action::Hold,
        kind,
        reason,
        state: s,
        next_poll: poll,
    };
    let jobs = obs.jobs;

    // The scheduler is the load signal: without it, change nothing.
    let Some(target) = obs.target else {
        s.unreachable += 1;
        let poll = policy.backoff(s.unreachable);
        return hold(
            "unreachable",
            format!(
                "scheduler unreachable ({} in a row): holding at {jobs} workers, retrying in {}",
                s.unreachable,
                secs(poll)
            ),
            s,
            poll,
        );
    };
    s.unreachable = 0;

    if obs.died > 0 {
        s.replaced += obs.died;
        if s.replaced > policy.max_replacements && s.paused.is_none() {
            s.paused = Some(format!(
                "{} worker jobs died on their own (max_replacements {})",
                s.replaced, policy.max_replacements
            ));
        }
    }

    if let (Some(limit), Some(idle)) = (policy.idle_timeout, obs.idle_for)
        && idle >= limit
    {
        return Decision {
            action: Action::ShutDown,
            kind: "idle",
            reason: format!(
                "idle for {} (idle_timeout {}): bringing the cluster down",
                secs(idle),
                secs(limit)
            ),
            state: s,
            next_poll: policy.interval,
        };
    }

    let wanted = policy.wanted(target);
    let describe_target = match policy.mode {
        Mode::Adaptive { .. } => format!("target {target}"),
        Mode::Fixed { workers } => format!("fixed size {workers}"),
    };

    if wanted > jobs {
        s.below_since = None;
        s.below.clear();
        if let Some(why) = &s.paused {
            let reason = format!("paused: {why}; holding at {jobs} workers");
            return hold("paused", reason, s, policy.interval);
        }
        if let Some(at) = s.retry_at
            && at > now
        {
            let reason = format!(
                "{} launch(es) failed in a row: retrying in {}",
                s.launch_failures,
                secs(at - now)
            );
            return hold("backoff", reason, s, (at - now).min(policy.interval));
        }
        let pending = obs.pending();
        let room = policy.max_pending.saturating_sub(pending);
        if room == 0 {
            let reason = format!(
                "{describe_target} > {jobs} workers, but {pending} are still starting \
                 (max_pending {}): waiting for them",
                policy.max_pending
            );
            return hold("pending-cap", reason, s, policy.interval);
        }
        let n = (wanted - jobs).min(room);
        let mut reason = format!("{describe_target} > {jobs} workers: launching {n}");
        if pending > 0 {
            reason.push_str(&format!(" ({pending} already starting count as there)"));
        }
        if n < wanted - jobs {
            reason.push_str(&format!(" (max_pending {})", policy.max_pending));
        }
        if obs.died > 0 {
            reason.push_str(&format!(" after {} died", obs.died));
        }
        return Decision {
            action: Action::Launch(n),
            kind: "scale-up",
            reason,
            state: s,
            next_poll: policy.interval,
        };
    }

    if wanted < jobs && matches!(policy.mode, Mode::Fixed { .. }) {
        // A fixed size is what the user asked for: no window to wait out.
        s.below_since = None;
        s.below.clear();
        let n = jobs - wanted;
        return Decision {
            action: Action::Remove(n),
            kind: "scale-down",
            reason: format!("{describe_target} < {jobs} workers: retiring {n}"),
            state: s,
            next_poll: policy.interval,
        };
    }

    if wanted < jobs && matches!(policy.mode, Mode::Adaptive { .. }) {
        let since = *s.below_since.get_or_insert(now);
        s.below.push((now, wanted));
        // Keep the window, plus the last sample before it (its value held at
        // the window's start).
        let start = now.saturating_sub(policy.scale_down_wait);
        let first_inside = s.below.iter().position(|(t, _)| *t >= start).unwrap_or(0);
        let keep_before = usize::from(s.below[first_inside].0 > start);
        s.below.drain(..first_inside.saturating_sub(keep_before));
        let peak = s.below.iter().map(|(_, w)| *w).max().unwrap_or(wanted);
        let waited = now.saturating_sub(since);
        if waited < policy.scale_down_wait {
            let reason = format!(
                "{describe_target} < {jobs} workers: removing {} if it stays lower for {}",
                jobs - peak,
                secs(policy.scale_down_wait)
            );
            return hold("waiting", reason, s, policy.interval);
        }
        if let Some(grew) = s.last_growth
            && now.saturating_sub(grew) < policy.cooldown
        {
            let left = policy.cooldown - now.saturating_sub(grew);
            let reason = format!("cooling down after growing: {} left", secs(left));
            return hold("cooldown", reason, s, policy.interval);
        }
        if peak >= jobs {
            let reason = format!(
                "{describe_target} < {jobs} workers, but {peak} were wanted within the last {}",
                secs(policy.scale_down_wait)
            );
            return hold("waiting", reason, s, policy.interval);
        }
        let n = jobs - peak;
        let reason = format!(
            "wanted at most {peak} < {jobs} workers for the last {}: retiring {n}",
            secs(policy.scale_down_wait.min(waited))
        );
        return Decision {
            action: Action::Remove(n),
            kind: "scale-down",
            reason,
            state: s,
            next_poll: policy.interval,
        };
    }

    s.below_since = None;
    s.below.clear();
    let reason = format!("{describe_target}: {jobs} workers is right");
    hold("steady", reason, s, policy.interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive(minimum: u32, maximum: u32) -> Policy {
        let mut spec = ClusterSpec::from_yaml("name: t", None).unwrap();
        spec.adapt = Some(AdaptSpec {
            interval: crate::units::Seconds::from_secs(1),
            scale_down_wait: crate::units::Seconds::from_secs(5),
            cooldown: crate::units::Seconds::from_secs(10),
            max_pending: 4,
            ..AdaptSpec::new(minimum, maximum)
        });
        Policy::from_spec(&spec)
    }

    fn obs(target: Option<u32>, jobs: u32, connected: u32) -> Observation {
        Observation {
            target,
            jobs,
            connected,
            ..Default::default()
        }
    }

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs a table of (time, observation) through the policy, carrying the
    /// state, and returns the actions.
    fn run(policy: &Policy, table: &[(u64, Observation)]) -> Vec<(u64, Action, &'static str)> {
        let mut state = PolicyState::default();
        table
            .iter()
            .map(|(at, o)| {
                let d = decide(policy, &state, o, t(*at));
                state = match d.action {
                    Action::Launch(_) => d.state.after_launch(policy, t(*at), None),
                    _ => d.state.clone(),
                };
                (*at, d.action, d.kind)
            })
            .collect()
    }

    #[test]
    fn grows_at_once_within_the_bounds_and_the_pending_cap() {
        let p = adaptive(0, 6);
        // Target 20 with nothing: 6 wanted, but at most 4 unconnected at a time.
        let d = decide(&p, &PolicyState::default(), &obs(Some(20), 0, 0), t(0));
        assert_eq!(d.action, Action::Launch(4));
        assert!(
            d.reason.contains("target 20 > 0 workers: launching 4"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("max_pending 4"), "{}", d.reason);
        // Below the minimum even with no work.
        let p2 = adaptive(2, 6);
        let d = decide(&p2, &PolicyState::default(), &obs(Some(0), 0, 0), t(0));
        assert_eq!(d.action, Action::Launch(2));
        // Never above the maximum.
        let d = decide(&p, &PolicyState::default(), &obs(Some(50), 6, 6), t(0));
        assert_eq!((d.action, d.kind), (Action::Hold, "steady"));
    }

    #[test]
    fn slow_starting_workers_are_not_counted_twice() {
        let p = adaptive(0, 6);
        let table = [
            (0, obs(Some(20), 0, 0)), // launch 4 (cap)
            (1, obs(Some(20), 4, 0)), // 4 pending = cap: wait
            (2, obs(Some(20), 4, 1)), // one connected: room for 1 more... but only 2 wanted
            (3, obs(Some(20), 6, 1)), // 6 jobs: nothing more, however slow they are
            (4, obs(Some(20), 6, 2)),
            (9, obs(Some(20), 6, 6)),
        ];
        assert_eq!(
            run(&p, &table),
            vec![
                (0, Action::Launch(4), "scale-up"),
                (1, Action::Hold, "pending-cap"),
                (2, Action::Launch(1), "scale-up"),
                (3, Action::Hold, "steady"),
                (4, Action::Hold, "steady"),
                (9, Action::Hold, "steady"),
            ]
        );
    }

    #[test]
    fn shrinks_only_after_the_wait_to_the_peak_of_the_window() {
        let p = adaptive(0, 6);
        let table = [
            (0, obs(Some(0), 6, 6)), // below: start waiting
            (2, obs(Some(3), 6, 6)), // still below; 3 wanted
            (4, obs(Some(1), 6, 6)), // still below
            (5, obs(Some(1), 6, 6)), // below for 5s; 3 wanted within it: remove 3
            (6, obs(Some(0), 3, 3)), // 3 was wanted 4s ago: keep
            (7, obs(Some(0), 3, 3)),
            (8, obs(Some(0), 3, 3)), // the window [3, 8] starts with 3 still held
            (9, obs(Some(0), 3, 3)), // now only 1 and 0: remove 2
            (10, obs(Some(0), 1, 1)),
            (14, obs(Some(0), 1, 1)), // 1 held until 5, window [9, 14]: all 0
            (15, obs(Some(0), 0, 0)),
        ];
        assert_eq!(
            run(&p, &table),
            vec![
                (0, Action::Hold, "waiting"),
                (2, Action::Hold, "waiting"),
                (4, Action::Hold, "waiting"),
                (5, Action::Remove(3), "scale-down"),
                (6, Action::Hold, "waiting"),
                (7, Action::Hold, "waiting"),
                (8, Action::Hold, "waiting"),
                (9, Action::Remove(2), "scale-down"),
                (10, Action::Hold, "waiting"),
                (14, Action::Remove(1), "scale-down"),
                (15, Action::Hold, "steady"),
            ]
        );
    }

    #[test]
    fn no_removal_within_the_cooldown_after_growing() {
        let p = adaptive(0, 6);
        let table = [
            (0, obs(Some(6), 0, 0)),  // grow at 0
            (1, obs(Some(0), 4, 4)),  // work vanished at once: waiting
            (6, obs(Some(0), 4, 4)),  // waited 5s, but grew 6s ago < cooldown 10s
            (10, obs(Some(0), 4, 4)), // now
        ];
        assert_eq!(
            run(&p, &table),
            vec![
                (0, Action::Launch(4), "scale-up"),
                (1, Action::Hold, "waiting"),
                (6, Action::Hold, "cooldown"),
                (10, Action::Remove(4), "scale-down"),
            ]
        );
    }

    #[test]
    fn an_oscillating_target_never_shrinks_and_regrows() {
        let p = adaptive(0, 6);
        // The target flaps between 6 and 1 every second for a minute.
        let table: Vec<_> = (0..60)
            .map(|i: u64| (i, obs(Some(if i.is_multiple_of(2) { 6 } else { 1 }), 6, 6)))
            .collect();
        let actions = run(&p, &table);
        assert!(
            actions.iter().all(|(_, a, _)| *a == Action::Hold),
            "{actions:?}"
        );
        // A target that is lower most of the time but spikes shrinks only to
        // the spike, once.
        let (removals, jobs) = simulate(&p, 6, |i| if i.is_multiple_of(4) { 4 } else { 1 }, 30);
        assert_eq!(removals, "-");
        assert_eq!(jobs, 4);
    }

    /// Runs the policy for `secs` seconds over a target that depends on the
    /// time, with every launched job connecting at once. Returns the
    /// direction changes (`+`/`-`, repeats merged) and the final size.
    fn simulate(
        p: &Policy,
        mut jobs: u32,
        target: impl Fn(u64) -> u32,
        secs: u64,
    ) -> (String, u32) {
        let mut state = PolicyState::default();
        let mut changes = String::new();
        for i in 0..secs {
            let d = decide(p, &state, &obs(Some(target(i)), jobs, jobs), t(i));
            state = d.state.clone();
            let c = match d.action {
                Action::Launch(n) => {
                    jobs += n;
                    state = state.after_launch(p, t(i), None);
                    '+'
                }
                Action::Remove(n) => {
                    jobs -= n;
                    '-'
                }
                _ => continue,
            };
            if !changes.ends_with(c) {
                changes.push(c);
            }
        }
        (changes, jobs)
    }

    #[test]
    fn direction_changes_in_a_burst_are_one_up_and_one_down() {
        let p = adaptive(0, 6);
        // Work for 20 s with a noisy target, then none.
        let noisy = |i: u64| if i < 20 { 8 + (i % 3) as u32 } else { 0 };
        assert_eq!(simulate(&p, 0, noisy, 60), ("+-".to_string(), 0));
        // Work that pauses briefly (shorter than the wait) does not shrink.
        let gappy = |i: u64| if i < 30 && !i.is_multiple_of(7) { 6 } else { 0 };
        assert_eq!(simulate(&p, 0, gappy, 60), ("+-".to_string(), 0));
    }

    #[test]
    fn processes_per_job_divide_the_target() {
        let mut p = adaptive(0, 10);
        p.processes = 4;
        assert_eq!(p.wanted(9), 3);
        assert_eq!(p.wanted(8), 2);
        assert_eq!(p.wanted(0), 0);
        assert_eq!(p.wanted(100), 10);
    }

    #[test]
    fn an_unreachable_scheduler_holds_steady_with_growing_backoff() {
        let p = adaptive(0, 6);
        let mut state = PolicyState::default();
        let mut polls = Vec::new();
        for i in 0..8 {
            let d = decide(&p, &state, &obs(None, 3, 3), t(i));
            assert_eq!((d.action, d.kind), (Action::Hold, "unreachable"));
            polls.push(d.next_poll.as_secs());
            state = d.state;
        }
        assert_eq!(polls, [2, 4, 8, 16, 30, 30, 30, 30]);
        // It comes back: the count resets and the policy acts again.
        let d = decide(&p, &state, &obs(Some(6), 3, 3), t(9));
        assert_eq!(d.action, Action::Launch(3));
        assert_eq!(d.state.unreachable, 0);
        // Unreachable never shrinks, even past the wait.
        let mut state = PolicyState::default();
        for i in 0..20 {
            let d = decide(
                &p,
                &state,
                &obs(if i < 2 { Some(0) } else { None }, 3, 3),
                t(i),
            );
            assert_ne!(d.action, Action::Remove(3));
            state = d.state;
        }
    }

    #[test]
    fn failed_launches_back_off_then_pause() {
        let p = adaptive(0, 6);
        let mut state = PolicyState::default();
        let mut log = Vec::new();
        for i in 0..20u64 {
            let d = decide(&p, &state, &obs(Some(6), 0, 0), t(i));
            state = d.state.clone();
            if let Action::Launch(_) = d.action {
                state = state.after_launch(&p, t(i), Some("sbatch: error: invalid partition"));
            }
            log.push(d.kind);
        }
        // Launch at 0 (fail, retry after 2s), at 2 (fail, 4s), at 6 (fail: paused).
        assert_eq!(
            &log[..8],
            [
                "scale-up", "backoff", "scale-up", "backoff", "backoff", "backoff", "scale-up",
                "paused"
            ]
        );
        assert!(log[8..].iter().all(|k| *k == "paused"));
        let why = state.paused.clone().unwrap();
        assert!(
            why.contains("3 launches failed in a row") && why.contains("invalid partition"),
            "{why}"
        );
        // Paused growth still lets the cluster shrink.
        let d = decide(&p, &state, &obs(Some(0), 2, 2), t(30));
        assert_eq!(d.kind, "waiting");
        // A success clears the count.
        let ok = PolicyState::default()
            .after_launch(&p, t(0), Some("x"))
            .after_launch(&p, t(3), None);
        assert_eq!((ok.launch_failures, ok.retry_at), (0, None));
    }

    #[test]
    fn dead_workers_are_replaced_up_to_the_limit() {
        let spec = ClusterSpec::from_yaml("name: t\nworkers: 3", None).unwrap();
        spec.validate().unwrap();
        let mut p = Policy::from_spec(&spec);
        assert_eq!(p.mode, Mode::Fixed { workers: 3 });
        p.max_replacements = 2;
        let mut state = PolicyState::default();
        let mut actions = Vec::new();
        for (i, died) in [1u32, 1, 1].into_iter().enumerate() {
            let o = Observation {
                target: Some(0),
                jobs: 3 - died,
                connected: 3 - died,
                died,
                idle_for: None,
            };
            let d = decide(&p, &state, &o, t(i as u64));
            state = d.state.clone();
            if matches!(d.action, Action::Launch(_)) {
                state = state.after_launch(&p, t(i as u64), None);
            }
            actions.push((d.action, d.reason));
        }
        assert_eq!(actions[0].0, Action::Launch(1));
        assert!(
            actions[0]
                .1
                .contains("fixed size 3 > 2 workers: launching 1 after 1 died"),
            "{}",
            actions[0].1
        );
        assert_eq!(actions[1].0, Action::Launch(1));
        assert_eq!(actions[2].0, Action::Hold);
        assert!(
            actions[2]
                .1
                .contains("3 worker jobs died on their own (max_replacements 2)"),
            "{}",
            actions[2].1
        );
        // Above a fixed size (what `scale` down asks for), the surplus is
        // retired at once: no window to wait out, no cooldown.
        let d = decide(&p, &PolicyState::default(), &obs(Some(0), 5, 5), t(100));
        assert_eq!(d.action, Action::Remove(2));
        assert_eq!(d.reason, "fixed size 3 < 5 workers: retiring 2");
        let d = decide(&p, &PolicyState::default(), &obs(Some(0), 3, 3), t(100));
        assert_eq!((d.action, d.kind), (Action::Hold, "steady"));
    }

    #[test]
    fn idleness_past_the_timeout_brings_the_cluster_down() {
        let mut p = adaptive(1, 6);
        let mut o = obs(Some(0), 1, 1);
        o.idle_for = Some(t(100));
        assert_eq!(decide(&p, &PolicyState::default(), &o, t(0)).kind, "steady");
        p.idle_timeout = Some(t(60));
        let d = decide(&p, &PolicyState::default(), &o, t(0));
        assert_eq!(d.action, Action::ShutDown);
        assert_eq!(
            d.reason,
            "idle for 100s (idle_timeout 60s): bringing the cluster down"
        );
        o.idle_for = Some(t(59));
        assert_eq!(
            decide(&p, &PolicyState::default(), &o, t(0)).action,
            Action::Hold
        );
    }
}
