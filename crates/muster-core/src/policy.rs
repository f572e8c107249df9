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
//! - replace worker jobs that die on their own, up to `max_replacements`:
//!   the first death at once, and while jobs keep dying with no healthy look
//!   in between (a crash loop), each replacement later than the last;
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
    /// Observations that found a job dead since the last one where every
    /// wanted job was there and connected: a crash loop, replaced with backoff.
    #[serde(default)]
    pub dying: u32,
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
        s.dying += 1;
        if s.dying > 1 {
            // Not the first death in a row: wait before replacing, longer each time.
            let at = now + policy.backoff(s.dying - 1);
            s.retry_at = Some(s.retry_at.map_or(at, |r| r.max(at)));
        }
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
    if obs.died == 0 && obs.pending() == 0 && jobs >= wanted {
        // Every job wanted is there and connected: any crash loop is over.
        s.dying = 0;
    }
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
            let reason = if s.launch_failures > 0 {
                format!(
                    "{} launch(es) failed in a row: retrying in {}",
                    s.launch_failures,
                    secs(at - now)
                )
            } else {
                format!(
                    "worker jobs died in {} looks in a row: replacing them in {}",
                    s.dying,
                    secs(at - now)
                )
            };
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
mod tests;
