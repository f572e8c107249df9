//! Times muster's YARN operations on a real ResourceManager, the way the
//! backend runs them: submit the service until 2 Dask workers are connected,
//! flex 2→4, then 4→1 (retiring through the scheduler first, then
//! decommissioning exactly those instances), then destroy it until no
//! container is left. Prints one JSON line with the seconds of each step and
//! this process's peak RSS. Used by bench/yarn_up.py; `--render` prints the
//! service JSON (with 2 workers) for the peer tool instead.
//!
//! Usage: yarn_flex --rm URL --python PY --name NAME [--port P] [--render]

use std::time::{Duration, Instant};

use muster_core::ClusterSpec;
use muster_core::dask::SchedulerClient;
use muster_yarn::{YarnOps, YarnOptions};

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn until_workers(client: &SchedulerClient, n: usize) {
    loop {
        if client
            .workers()
            .await
            .map(|w| w.len())
            .unwrap_or(usize::MAX)
            == n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rm = arg(&args, "--rm").expect("--rm URL");
    let python = arg(&args, "--python").expect("--python PATH");
    let name = arg(&args, "--name").expect("--name NAME");
    let port: u16 = arg(&args, "--port").map_or(23786, |p| p.parse().expect("--port N"));
    let spec = ClusterSpec::from_yaml(
        &format!(
            "name: {name}\nworkers: 2\nworker: {{python: {python}, memory: 512MiB}}\nscheduler: {{port: {port}, dashboard_port: {}, security: none}}\n",
            port + 1
        ),
        None,
    )
    .expect("spec");
    let opts: YarnOptions = serde_json::from_value(
        serde_json::json!({"resource_manager": rm, "scheduler_memory": "512MiB"}),
    )
    .expect("options");
    let problems = opts.validate("backend", &spec);
    assert!(problems.is_empty(), "{problems:?}");
    if args.iter().any(|a| a == "--render") {
        println!(
            "{}",
            muster_yarn::service::render(&spec, &opts, 2, std::path::Path::new("/nonexistent"))
                .service
                .to_json()
        );
        return;
    }
    let ops = YarnOps::new(&spec, &opts, std::path::Path::new("/nonexistent"));

    let t0 = Instant::now();
    ops.launch_scheduler().await.expect("submit");
    let endpoint = loop {
        if let Some(e) = ops.scheduler_endpoint().await.expect("status") {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let scheduler_ready = t0.elapsed().as_secs_f64();
    let dask = SchedulerClient::new(&endpoint.http_url);
    ops.launch_workers(2).await.expect("flex up");
    until_workers(&dask, 2).await;
    let up = t0.elapsed().as_secs_f64();

    let t = Instant::now();
    ops.launch_workers(2).await.expect("flex 2->4");
    until_workers(&dask, 4).await;
    let flex_2_4 = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let workers = dask.workers().await.expect("workers");
    let mut remove: Vec<_> = workers
        .iter()
        .filter(|w| w.name != "worker-0")
        .cloned()
        .collect();
    remove.sort_by(|a, b| a.name.cmp(&b.name));
    let addresses: Vec<String> = remove.iter().map(|w| w.address.clone()).collect();
    dask.retire_workers(&addresses).await.expect("retire");
    let ids: Vec<_> = remove
        .iter()
        .map(|w| muster_core::JobId(w.name.clone()))
        .collect();
    ops.cancel(&ids).await.expect("decommission");
    until_workers(&dask, 1).await;
    let flex_4_1 = t.elapsed().as_secs_f64();

    let t = Instant::now();
    ops.destroy().await.expect("destroy");
    let down = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "scheduler_ready_s": scheduler_ready, "up_2_connected_s": up,
            "flex_2_4_s": flex_2_4, "flex_4_1_s": flex_4_1, "down_s": down,
            "peak_rss_kib": peak_rss_kib(),
        })
    );
}
