//! The agent's loop against a fake backend whose launches fail and a fake
//! scheduler API (a tiny HTTP server on loopback): the loop must back off,
//! pause after `max_launch_failures`, say so in its state file and timeline,
//! hold steady while the scheduler is gone, resume paused after a restart
//! (the policy's memory is in the record), and exit once the cluster's record
//! is removed. The real-service tier (tests/e2e/test_adaptive.py) covers the
//! working path with real Dask.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_adaptive::{agent, events};
use muster_core::backend::{Backend, Capabilities, Discovered, Launched, Rendered, Role, Warnings};
use muster_core::dask::SchedulerEndpoint;
use muster_core::{ClusterRecord, ClusterSpec, Error, Home, JobId, JobStatus, Phase, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend whose worker launches always fail.
#[derive(Default)]
struct FailingBackend {
    launches: AtomicU32,
}

#[async_trait]
impl Backend for FailingBackend {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn scheduler_access(&self) -> Arc<dyn muster_core::SchedulerAccess> {
        Arc::new(muster_core::Direct)
    }
    async fn preflight(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
    fn render(&self, _: &Role) -> Result<Rendered> {
        Ok(Rendered::default())
    }
    async fn launch(&self, role: &Role) -> Result<Launched> {
        assert!(matches!(role, Role::Workers { .. }));
        self.launches.fetch_add(1, Ordering::SeqCst);
        Err(Error::CommandFailed {
            program: "sbatch".into(),
            code: 1,
            stderr: "sbatch: error: invalid partition specified: nope".into(),
        })
    }
    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        Ok(ids
            .iter()
            .map(|i| (i.clone(), JobStatus::Unknown))
            .collect())
    }
    async fn cancel(&self, _: &[JobId]) -> Result<()> {
        Ok(())
    }
    async fn discover(&self) -> Result<Discovered> {
        Ok(Discovered::default())
    }
    async fn logs(&self, _: &JobId) -> Result<String> {
        Ok(String::new())
    }
    async fn scheduler_endpoint(&self, _: &JobId) -> Result<Option<SchedulerEndpoint>> {
        Ok(None)
    }
    async fn forget(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
}

/// Serves the scheduler's API routes the agent reads, with a fixed target,
/// until `up` is cleared (then it refuses connections by dropping them).
async fn fake_scheduler(target: u32, up: Arc<Mutex<bool>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if !*up.lock().unwrap() {
                    return;
                }
                let req = String::from_utf8_lossy(&buf[..n]);
                let body = if req.starts_with("GET /api/v1/adaptive_target") {
                    format!("{{\"workers\": {target}}}")
                } else if req.starts_with("GET /api/v1/get_workers") {
                    "{\"num_workers\": 0, \"workers\": []}".to_string()
                } else if req.starts_with("GET /api/v1/check_idle") {
                    "{\"idle_since\": null}".to_string()
                } else {
                    String::new()
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_launches_back_off_then_pause_visibly_and_the_agent_exits_with_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let up = Arc::new(Mutex::new(true));
    let url = fake_scheduler(4, up.clone()).await;
    let spec = ClusterSpec::from_yaml(
        "name: fake\nworkers: 0\nadapt: {maximum: 4, interval: 100ms, max_launch_failures: 3}",
        None,
    )
    .unwrap();
    spec.validate().unwrap();
    let mut record = ClusterRecord::new(spec);
    record.phase = Phase::Running;
    record.scheduler_address = Some("tcp://127.0.0.1:1".into());
    record.http_url = Some(url);
    home.create(&record).unwrap();

    let backend = Arc::new(FailingBackend::default());
    let task = tokio::spawn(agent::run(home.clone(), "fake", backend.clone()));
    // Paused after 3 failures (100 ms, then 200 ms and 400 ms of backoff).
    let paused = wait_for("the pause", || {
        agent::read_state(&home, "fake").and_then(|s| s.paused)
    })
    .await;
    assert!(
        paused.starts_with("3 launches failed in a row (max_launch_failures 3)"),
        "{paused}"
    );
    assert!(paused.contains("invalid partition"), "{paused}");
    assert!(agent::is_alive(&home, "fake").unwrap());
    // A restarted agent resumes paused: its policy's memory is in the record.
    task.abort();
    wait_for("the old agent to let go", || {
        (!agent::is_alive(&home, "fake").unwrap()).then_some(())
    })
    .await;
    let task = tokio::spawn(agent::run(home.clone(), "fake", backend.clone()));
    wait_for("the restarted agent", || {
        agent::read_state(&home, "fake")
            .and_then(|s| s.paused)
            .filter(|_| agent::is_alive(&home, "fake").unwrap())
    })
    .await;
    assert_eq!(
        home.load("fake")
            .unwrap()
            .unwrap()
            .policy
            .state
            .launch_failures,
        3
    );
    // A second agent for the same cluster gives way at once.
    agent::run(home.clone(), "fake", backend.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        backend.launches.load(Ordering::SeqCst),
        3,
        "no launch while paused"
    );
    let kinds: Vec<String> = events::read(&home, "fake")
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "launch-failed").count(),
        3,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"backoff".to_string()) && kinds.contains(&"paused".to_string()),
        "{kinds:?}"
    );

    // The scheduler goes away: the agent holds steady and says why.
    *up.lock().unwrap() = false;
    let decision = wait_for("the unreachable hold", || {
        agent::read_state(&home, "fake")
            .and_then(|s| s.last_decision)
            .filter(|d| d.starts_with("scheduler unreachable"))
    })
    .await;
    assert!(decision.contains("holding at 0 workers"), "{decision}");

    // `muster adapt` again, even with the same settings, resumes: launches
    // are tried anew.
    *up.lock().unwrap() = true;
    {
        // What `Cluster::adapt` does with the same settings.
        let _lock = home.lock("fake").unwrap();
        let mut r = home.load("fake").unwrap().unwrap();
        r.adapt_generation += 1;
        home.save(&r).unwrap();
    }
    wait_for("a new launch attempt", || {
        (backend.launches.load(Ordering::SeqCst) > 3).then_some(())
    })
    .await;
    // So does a change of settings after the next pause.
    wait_for("the next pause", || {
        agent::read_state(&home, "fake")
            .and_then(|s| s.paused)
            .filter(|_| backend.launches.load(Ordering::SeqCst) == 6)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.launches.load(Ordering::SeqCst), 6);
    {
        let _lock = home.lock("fake").unwrap();
        let mut r = home.load("fake").unwrap().unwrap();
        r.spec.adapt.as_mut().unwrap().maximum = 3;
        home.save(&r).unwrap();
    }
    wait_for("a launch after the change", || {
        (backend.launches.load(Ordering::SeqCst) > 6).then_some(())
    })
    .await;

    // The cluster is brought down (under its lock, as `down` does): the
    // agent exits and drops its lock.
    {
        let _lock = home.lock("fake").unwrap();
        home.remove("fake").unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!agent::is_alive(&home, "fake").unwrap());
}
