//! Tests of [`decide`](super::decide): each rule of the policy, driven by
//! observations and times alone (no clock, no I/O).

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
fn simulate(p: &Policy, mut jobs: u32, target: impl Fn(u64) -> u32, secs: u64) -> (String, u32) {
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
        let at = t(10 * i as u64);
        let d = decide(&p, &state, &o, at);
        state = d.state.clone();
        if matches!(d.action, Action::Launch(_)) {
            state = state.after_launch(&p, at, None);
        }
        actions.push((d.action, d.reason));
        // The replacement connects: a healthy look between deaths.
        state = decide(&p, &state, &obs(Some(0), 3, 3), at + t(1)).state;
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

#[test]
fn a_crash_loop_is_replaced_later_each_time_and_a_healthy_look_resets_it() {
    let spec = ClusterSpec::from_yaml("name: t\nworkers: 1", None).unwrap();
    let p = Policy::from_spec(&spec);
    let dead = Observation {
        target: Some(0),
        died: 1,
        ..Default::default()
    };
    let starting = obs(Some(0), 1, 0);
    let mut state = PolicyState::default();
    let mut now = t(0);
    let mut waits = Vec::new();
    for _ in 0..4 {
        // The job died: replaced at once the first time, then after a wait.
        let d = decide(&p, &state, &dead, now);
        let mut launched_at = now;
        state = d.state.clone();
        if d.action == Action::Hold {
            assert_eq!(d.kind, "backoff");
            assert!(d.reason.contains("died in"), "{}", d.reason);
            let at = state.retry_at.unwrap();
            waits.push(at - now);
            // Held until the wait is over, then replaced.
            let held = decide(
                &p,
                &state,
                &obs(Some(0), 0, 0),
                at - Duration::from_millis(1),
            );
            assert_eq!(held.action, Action::Hold);
            launched_at = at;
            let d = decide(&p, &held.state, &obs(Some(0), 0, 0), at);
            assert_eq!(d.action, Action::Launch(1));
            state = d.state;
        } else {
            assert_eq!(d.action, Action::Launch(1));
            waits.push(Duration::ZERO);
        }
        state = state.after_launch(&p, launched_at, None);
        // Its replacement starts but never connects, then dies too.
        state = decide(&p, &state, &starting, launched_at + t(1)).state;
        now = launched_at + t(2);
    }
    assert_eq!(
        waits[0],
        Duration::ZERO,
        "the first death is replaced at once"
    );
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "each wait longer: {waits:?}"
    );
    // A replacement that connects ends the loop: the next death is
    // replaced at once again.
    state = decide(&p, &state, &obs(Some(0), 1, 1), now).state;
    assert_eq!(state.dying, 0);
    let d = decide(&p, &state, &dead, now + t(1));
    assert_eq!(d.action, Action::Launch(1));
}
