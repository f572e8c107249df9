//! The same library calls as `library.rs`, on Kubernetes: `muster::cluster`
//! hands out an operator-supervised cluster for a `kind: kubernetes` spec.
//! Needs muster's operator in the namespace. Run with
//! `cargo run -p muster --example kubernetes -- NAMESPACE IMAGE`.

use muster::{ClusterSpec, Quiet};

#[tokio::main]
async fn main() -> muster::Result<()> {
    let mut args = std::env::args().skip(1);
    let namespace = args.next().unwrap_or_else(|| "default".into());
    let image = args
        .next()
        .unwrap_or_else(|| "ghcr.io/dask/dask:latest".into());
    let mut spec = ClusterSpec::from_yaml(
        "name: library-kube\nworkers: 2\nworker: {cores: 1}\nbackend: {kind: kubernetes, image_pull_policy: IfNotPresent}",
        None,
    )?;
    for (k, v) in [("namespace", namespace), ("image", image)] {
        spec.backend
            .options
            .insert(k.into(), serde_json::Value::String(v));
    }

    let mut cluster = muster::cluster(spec)?;
    cluster.up(&Quiet).await?;
    println!("scheduler: {}", cluster.scheduler_address().unwrap_or("?"));
    cluster.scale(3, &Quiet).await?;
    let status = cluster.status().await?;
    println!(
        "workers connected after scale(3): {}",
        status.connected_workers
    );
    let report = cluster.down().await?;
    println!("stopped {} pods", report.stopped.len());
    Ok(())
}
