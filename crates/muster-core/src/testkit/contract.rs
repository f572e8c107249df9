//! The contract every backend passes, whatever manager it drives: pure
//! rendering, one launch per batch with distinct ids that carry the
//! cluster's name, one status query for many jobs (unknown ids are
//! `Unknown`), discovery from the manager itself, cancel that is exact and
//! idempotent, and a clean `forget`. A backend's own tests call [`run`] with
//! a backend built for cluster `cluster` whose workers can start (their
//! scheduler need not exist).

use std::time::{Duration, Instant};

use crate::backend::{Backend, Role, SchedulerContact};
use crate::job::{JobId, JobStatus};

/// Checks the contract; panics naming the first broken clause.
pub async fn run(backend: &dyn Backend, cluster: &str) {
    let caps = backend.capabilities();
    assert!(!backend.kind().is_empty(), "a backend names its kind");
    assert!(
        caps.status_interval > Duration::ZERO,
        "a status interval above zero"
    );

    let role = Role::Workers {
        first_index: 10,
        count: 2,
        contact: SchedulerContact::Address("tcp://127.0.0.1:9".into()),
    };
    let once = backend.render(&role).expect("render");
    assert!(!once.items.is_empty(), "render shows what a launch submits");
    assert_eq!(
        once,
        backend.render(&role).expect("render"),
        "render is pure"
    );
    assert!(
        backend.render(&Role::Scheduler).is_ok(),
        "the scheduler renders"
    );

    let launched = backend.launch(&role).await.expect("launch");
    let jobs = launched.jobs.clone();
    assert_eq!(jobs.len(), 2, "one job per worker asked for: {jobs:?}");
    assert_ne!(jobs[0], jobs[1], "distinct ids");
    for id in &jobs {
        assert!(
            id.as_str().contains(cluster),
            "{id} carries the cluster's name"
        );
    }
    assert!(
        launched.contact.is_none(),
        "only a scheduler launch hands out a contact"
    );

    let unknown = JobId(format!("{cluster}-never-launched"));
    let mut ask = jobs.clone();
    ask.push(unknown.clone());
    let states = wait_for(backend, &ask, |s| {
        s[&jobs[0]].is_active() && s[&jobs[1]].is_active()
    })
    .await;
    assert_eq!(states.len(), 3, "one state per id asked: {states:?}");
    assert_eq!(
        states[&unknown],
        JobStatus::Unknown,
        "an id never launched is Unknown"
    );

    let found = backend.discover().await.expect("discover").jobs;
    for id in &jobs {
        assert!(
            found.iter().any(|(f, s)| f == id && s.is_active()),
            "discover finds {id}: {found:?}"
        );
    }

    backend
        .cancel(std::slice::from_ref(&jobs[0]))
        .await
        .expect("cancel");
    let states = backend.status(&jobs).await.expect("status");
    assert!(
        !states[&jobs[0]].is_active(),
        "a cancelled job is gone when cancel returns: {states:?}"
    );
    assert!(
        states[&jobs[1]].is_active(),
        "cancel stops exactly what it was given: {states:?}"
    );
    let found = backend.discover().await.expect("discover").jobs;
    assert!(
        !found.iter().any(|(f, _)| f == &jobs[0]),
        "discover no longer finds {}",
        jobs[0]
    );

    backend
        .cancel(&[jobs[0].clone(), unknown.clone()])
        .await
        .expect("cancelling an ended or unknown job is not an error");
    backend.cancel(&jobs).await.expect("cancel");
    let left = backend.discover().await.expect("discover").jobs;
    assert!(
        left.iter().all(|(f, _)| !jobs.contains(f)),
        "nothing left: {left:?}"
    );
    backend.forget().await.expect("forget");
}

async fn wait_for(
    backend: &dyn Backend,
    ids: &[JobId],
    ok: impl Fn(&std::collections::BTreeMap<JobId, JobStatus>) -> bool,
) -> std::collections::BTreeMap<JobId, JobStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = backend.status(ids).await.expect("status");
        if ok(&states) || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_fake_backend_keeps_the_contract() {
        super::run(&crate::testkit::FakeBackend::new("c"), "c").await;
    }
}
