//! The YARN operations against the real ResourceManager + NodeManager of
//! tests/services/yarn (started by scripts/test.sh, which exports
//! MUSTER_YARN_RM and MUSTER_REQUIRE_YARN=1) with real Dask processes.
//! Without a YARN these tests say so and pass, unless MUSTER_REQUIRE_YARN=1
//! makes its absence a failure.
//!
//! It also pins down what Hadoop 3.4.2 does on a flex-down (the README's
//! finding): a lower `number_of_containers` removes the highest-numbered
//! instance and the next flex-up reuses its name; `decommissioned_instances`
//! removes exactly the named ones, and their names are never reused; and a
//! read of the service while a flex rewrites its definition can fail (500),
//! which the client reads through.

use futures::FutureExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster_core::dask::SchedulerClient;
use muster_core::{ClusterSpec, JobId, JobStatus};
use muster_yarn::{YarnOps, YarnOptions};

fn rm() -> Option<String> {
    if let Ok(url) = std::env::var("MUSTER_YARN_RM") {
        return Some(url);
    }
    if std::env::var("MUSTER_REQUIRE_YARN").as_deref() == Ok("1") {
        panic!("test YARN missing: run tests/services/yarn/start.sh and export MUSTER_YARN_RM");
    }
    eprintln!("skipped: no test YARN (run tests/services/yarn/start.sh, export MUSTER_YARN_RM)");
    None
}

/// The tests share one YARN and one of them restarts its ResourceManager:
/// they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> String {
    std::env::var("MUSTER_PYTHON").expect("MUSTER_PYTHON (scripts/setup.sh exports it)")
}

async fn wait<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn dask_names(client: &SchedulerClient) -> BTreeSet<String> {
    client
        .workers()
        .await
        .map(|ws| ws.into_iter().map(|w| w.name).collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Processes whose environment names this cluster (the containers' Dask
/// processes carry MUSTER_CLUSTER), read from /proc, not from YARN.
fn cluster_pids(cluster: &str) -> Vec<u32> {
    let needle = format!("MUSTER_CLUSTER={cluster}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    let mut env = env;
                    env.push(0);
                    env.windows(needle.len()).any(|w| w == needle.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flex_decommission_discover_logs_and_destroy_on_a_real_yarn() {
    let Some(rm) = rm() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let name = format!("rt{}", std::process::id());
    let spec = ClusterSpec::from_yaml(
        &format!(
            "name: {name}\nworker: {{python: {py}, memory: 512MiB, nanny: false}}\nscheduler: {{port: 23790, dashboard_port: 23791, security: none}}\n",
            py = python()
        ),
        None,
    )
    .unwrap();
    let opts: YarnOptions = serde_json::from_value(serde_json::json!({
        "resource_manager": ["http://127.0.0.1:1", rm],
        "tags": ["it's a test"],
        "scheduler_memory": "512MiB",
    }))
    .unwrap();
    assert!(opts.validate("backend", &spec).is_empty());
    let ops = YarnOps::new(&spec, &opts, std::path::Path::new("/nonexistent"));
    assert_eq!(ops.preflight().await.unwrap(), "3.4.2");

    assert_eq!(
        ops.launch_scheduler().await.unwrap(),
        JobId::from("scheduler-0")
    );
    // A second submission of the same cluster is refused, naming the field.
    let err = ops.launch_scheduler().await.unwrap_err();
    assert!(err.to_string().contains("(name)"), "{err}");
    let endpoint = wait("the scheduler READY", 180, || async {
        ops.scheduler_endpoint().await.unwrap()
    })
    .await;
    assert!(endpoint.address.starts_with("tcp://"), "{endpoint:?}");
    assert!(endpoint.address.ends_with(":23790"), "{endpoint:?}");
    let dask = SchedulerClient::new(&endpoint.http_url);

    let ids = ops.launch_workers(3).await.unwrap();
    assert_eq!(ids, ["worker-0", "worker-1", "worker-2"].map(JobId::from));
    wait("3 Dask workers named as their instances", 120, || async {
        (dask_names(&dask).await == set(&["worker-0", "worker-1", "worker-2"])).then_some(())
    })
    .await;

    // Finding 1: a plain flex-down removes the highest-numbered instance.
    ops.client()
        .flex(ops.service_name(), "worker", 2)
        .await
        .unwrap();
    wait("worker-2 gone after flexing to 2", 60, || async {
        (dask_names(&dask).await == set(&["worker-0", "worker-1"])).then_some(())
    })
    .await;

    // Finding 2: decommissioning removes exactly the instance muster names.
    ops.cancel(&[JobId::from("worker-0")]).await.unwrap();
    let st = ops
        .status(&["worker-0", "worker-1", "worker-9"].map(JobId::from))
        .await
        .unwrap();
    assert_eq!(st[&JobId::from("worker-0")], JobStatus::Finished);
    assert_eq!(st[&JobId::from("worker-1")], JobStatus::Running);
    assert_eq!(st[&JobId::from("worker-9")], JobStatus::Unknown);
    wait("only worker-1 left", 60, || async {
        (dask_names(&dask).await == set(&["worker-1"])).then_some(())
    })
    .await;

    // The next name skips the decommissioned one and reuses the flexed-away
    // one, as muster predicts.
    let ids = ops.launch_workers(1).await.unwrap();
    assert_eq!(ids, [JobId::from("worker-2")]);
    wait("worker-2 back", 120, || async {
        (dask_names(&dask).await == set(&["worker-1", "worker-2"])).then_some(())
    })
    .await;

    let found = ops.discover().await.unwrap();
    let found: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(found, ["scheduler-0", "worker-1", "worker-2"]);
    let listed = muster_yarn::ops::list_clusters(ops.client()).await.unwrap();
    assert!(listed.contains(&name), "{listed:?}");

    let log = ops.logs(&JobId::from("worker-1")).await.unwrap();
    assert!(log.contains("Registered to"), "{log}");
    assert!(!log.contains("LogType:"), "banner left in: {log}");

    // Reads while flexes rewrite the service's definition: Hadoop answers
    // some of them 500 "end-of-input" (it read the file mid-rewrite); the
    // client reads again, so none of them fails.
    let flexing = async {
        for i in 0..10u64 {
            ops.client()
                .flex(ops.service_name(), "worker", 2 + i % 2)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let until = Instant::now() + Duration::from_secs(3);
    let reading = futures::future::join_all((0..4).map(|_| async {
        let mut reads = 0;
        while Instant::now() < until {
            let svc = ops.client().service(ops.service_name()).await;
            assert!(matches!(svc, Ok(Some(_))), "read during a flex: {svc:?}");
            reads += 1;
        }
        reads
    }));
    let ((), reads) = tokio::join!(flexing, reading);
    assert!(reads.iter().all(|&n| n > 0), "{reads:?}");

    assert!(!cluster_pids(&name).is_empty());
    ops.cancel(&[JobId::from("scheduler-0")]).await.unwrap();
    // `destroy` waited for the NodeManager: nothing may be left in /proc.
    assert_eq!(cluster_pids(&name), Vec::<u32>::new());
    assert!(ops.discover().await.unwrap().is_empty());
    assert!(
        ops.client()
            .service(ops.service_name())
            .await
            .unwrap()
            .is_none()
    );
    // Destroying what is gone is not an error.
    ops.cancel(&[JobId::from("scheduler-0")]).await.unwrap();
}

#[tokio::test]
async fn refusals_name_the_field_and_leave_nothing() {
    let Some(rm) = rm() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let name = format!("rf{}", std::process::id());
    let spec = ClusterSpec::from_yaml(
        &format!("name: {name}\nscheduler: {{security: none}}\n"),
        None,
    )
    .unwrap();
    for (opts, field) in [
        (
            serde_json::json!({"resource_manager": rm, "queue": "closed"}),
            "backend.queue",
        ),
        (
            serde_json::json!({"resource_manager": rm, "scheduler_memory": "900GiB"}),
            "backend.scheduler_memory",
        ),
    ] {
        let opts: YarnOptions = serde_json::from_value(opts).unwrap();
        let ops = YarnOps::new(&spec, &opts, std::path::Path::new("/nonexistent"));
        let err = ops.launch_scheduler().await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains(field), "{err}");
        assert!(ops.discover().await.unwrap().is_empty());
        ops.destroy().await.unwrap();
    }
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs examples/compute.py (a real Dask computation) and checks its answer.
fn compute(address: &str, n: u64) {
    let out = std::process::Command::new(python())
        .arg(repo().join("examples/compute.py"))
        .arg(address)
        .arg(n.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = (n - 1) * n * (2 * n - 1) / 6;
    assert!(
        text.contains(&format!("sum of squares below {n} = {expected} (correct)")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn up_with_two_workers(
    rm: &str,
    name: &str,
    port: u16,
) -> (YarnOps, String, SchedulerClient) {
    let spec = ClusterSpec::from_yaml(
        &format!(
            "name: {name}\nworker: {{python: {py}, memory: 512MiB}}\nscheduler: {{port: {port}, dashboard_port: {}, security: none}}\n",
            port + 1,
            py = python()
        ),
        None,
    )
    .unwrap();
    let opts: YarnOptions = serde_json::from_value(
        serde_json::json!({"resource_manager": rm, "scheduler_memory": "512MiB"}),
    )
    .unwrap();
    let ops = YarnOps::new(&spec, &opts, std::path::Path::new("/nonexistent"));
    ops.launch_scheduler().await.unwrap();
    let endpoint = wait("the scheduler READY", 180, || async {
        ops.scheduler_endpoint().await.unwrap()
    })
    .await;
    let dask = SchedulerClient::new(&endpoint.http_url);
    ops.launch_workers(2).await.unwrap();
    wait("2 workers", 120, || async {
        (dask_names(&dask).await == set(&["worker-0", "worker-1"])).then_some(())
    })
    .await;
    (ops, endpoint.address, dask)
}

/// Work-preserving recovery: with the ResourceManager gone, the Dask cluster
/// keeps computing and muster's calls fail as transient; once it is back,
/// the same processes are still there and muster can flex again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_manager_restart_mid_run() {
    let Some(rm) = rm() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let name = format!("rr{}", std::process::id());
    let (ops, address, dask) = up_with_two_workers(&rm, &name, 23792).await;
    let before = cluster_pids(&name);
    assert!(before.len() >= 2, "{before:?}");

    let state = std::env::var("MUSTER_YARN_STATE").unwrap_or_else(|_| "/tmp/muster-yarn".into());
    let rm_pid: u32 = std::fs::read_to_string(format!("{state}/pids/rm.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix_kill(rm_pid);
    wait("the RM to exit", 60, || async {
        (!pid_alive(rm_pid)).then_some(())
    })
    .await;

    let err = ops.status(&[JobId::from("worker-0")]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    compute(&address, 300);

    let start = std::process::Command::new(repo().join("tests/services/yarn/start.sh"))
        .output()
        .unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let st = wait("the service's status after the restart", 180, || async {
        let st = ops
            .status(&["scheduler-0", "worker-0", "worker-1"].map(JobId::from))
            .await
            .ok()?;
        st.values().all(|s| *s == JobStatus::Running).then_some(st)
    })
    .await;
    assert_eq!(st.len(), 3);
    for pid in &before {
        assert!(
            pid_alive(*pid),
            "process {pid} did not survive the RM restart"
        );
    }
    let added = wait("a flex after the restart", 120, || async {
        ops.launch_workers(1).await.ok()
    })
    .await;
    assert_eq!(added, [JobId::from("worker-2")]);
    wait("3 workers", 120, || async {
        (dask_names(&dask).await.len() == 3).then_some(())
    })
    .await;
    compute(&address, 300);
    ops.destroy().await.unwrap();
    assert_eq!(cluster_pids(&name), Vec::<u32>::new());
}

/// The scheduler's container killed: YARN relaunches it at the same
/// instance name and address, and the workers come back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_killed_is_relaunched_and_workers_return() {
    let Some(rm) = rm() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let name = format!("sk{}", std::process::id());
    let (ops, address, dask) = up_with_two_workers(&rm, &name, 23794).await;
    // Whatever the checks do, the service goes: a leaked scheduler would hold
    // port 23794 and answer the next run's workers instead of its own.
    let checks = std::panic::AssertUnwindSafe(async {
        let scheduler_pid = cluster_pids(&name)
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("dask_scheduler"))
                    .unwrap_or(false)
            })
            .expect("the scheduler's process");
        nix_kill(scheduler_pid);
        wait("a new scheduler process", 120, || async {
            cluster_pids(&name).into_iter().find(|pid| {
                *pid != scheduler_pid
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains("dask_scheduler"))
                        .unwrap_or(false)
            })
        })
        .await;
        wait("both workers back at the new scheduler", 180, || async {
            (dask_names(&dask).await == set(&["worker-0", "worker-1"])).then_some(())
        })
        .await;
        // YARN reports the relaunched instance's endpoint once its readiness
        // check passes, which may come after the workers have reconnected.
        let endpoint = wait(
            "the relaunched scheduler's endpoint from YARN",
            60,
            || async { ops.scheduler_endpoint().await.ok().flatten() },
        )
        .await;
        assert_eq!(endpoint.address, address);
        compute(&address, 300);
    })
    .catch_unwind()
    .await;
    ops.destroy().await.unwrap();
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(cluster_pids(&name), Vec::<u32>::new());
}

fn nix_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
