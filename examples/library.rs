//! Bring a Dask cluster up from Rust, print where it is, resize it and take it
//! down again. Run with `cargo run -p muster --example library -- [PYTHON]`,
//! where PYTHON has `dask[distributed]` installed (default `python3`).

use muster::{ClusterSpec, Quiet};

#[tokio::main]
async fn main() -> muster::Result<()> {
    let python = std::env::args().nth(1).unwrap_or_else(|| "python3".into());
    let mut spec = ClusterSpec::from_yaml(
        "name: library-example\nworkers: 2\nworker: {cores: 1}",
        None,
    )?;
    spec.worker.python = python;

    let mut cluster = muster::cluster(spec)?;
    cluster.up(&Quiet).await?;
    println!("scheduler: {}", cluster.scheduler_address().unwrap_or("?"));
    println!(
        "dashboard: {}",
        cluster.dashboard_link().unwrap_or_default()
    );

    cluster.scale(3, &Quiet).await?;
    let status = cluster.status().await?;
    println!(
        "workers connected after scale(3): {}",
        status.connected_workers
    );

    let report = cluster.down().await?;
    println!("stopped {} jobs", report.stopped.len());
    Ok(())
}
