//! The commands for clusters of `kind: kubernetes`, whose supervisor is
//! muster's operator: the same verbs as every backend, through the
//! library's `KubeCluster` (no agent, no local timeline). Events are the
//! Kubernetes Events of the cluster's objects; logs are pod logs.

use anyhow::{Context, Result};
use futures::StreamExt;
pub use muster::kube::backend::KIND;
use muster::kube::backend::client::{self, Target, event_time};
use muster::kube::backend::cluster::down_in;
use muster::kube::backend::{KubeCluster, KubeOptions};
use muster::{Cluster, ClusterRecord, ClusterSpec, DownReport, Error, Home, Phase};

use crate::cli::*;
use crate::interrupt::{Interrupted, Signals};
use crate::output;
use crate::progress::Bar;

/// True for a spec of kind `kubernetes`.
pub fn is_kube(spec: &ClusterSpec) -> bool {
    spec.backend.kind() == KIND
}

fn print_up(c: &KubeCluster, status: &muster::ClusterStatus, verb: &str, out: Output) {
    let tls = c.credentials();
    let item = output::UpItem {
        name: c.name(),
        backend: KIND,
        scheduler_address: c
            .scheduler_address()
            .or(status.scheduler_address.as_deref()),
        dashboard_url: status.dashboard_url.as_deref(),
        workers: status.workers.len(),
        connected_workers: status.connected_workers,
        tls: tls.as_ref(),
    };
    print!("{}", output::up(&item, verb, out));
    if c.port_forwarded() && matches!(out, Output::Table | Output::Wide) {
        println!(
            "  (through a port-forward that lasts while muster runs; from this machine use `muster port-forward {}`)",
            c.name()
        );
    }
}

/// `muster up` of a kubernetes spec.
pub async fn up(home: &Home, spec: ClusterSpec, args: &UpArgs) -> Result<()> {
    let mut c = KubeCluster::new(spec, home.clone())?.with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let mut signals = Signals::install().context("catching SIGINT and SIGTERM")?;
    // Like every backend's `up`: a signal drops it wherever it is and rolls
    // back (the DaskCluster, whose owner references take the rest, and the
    // record).
    let result = tokio::select! {
        r = c.up(&bar) => Ok(r),
        sig = signals.next() => Err(sig),
    };
    bar.finish();
    let result = match result {
        Ok(r) => r,
        Err(sig) => {
            let name = c.name().to_string();
            eprintln!(
                "{}: rolling back cluster {name} (a second signal leaves without it)",
                sig.name()
            );
            signals.leave_on_next(format!("muster down {name}"));
            let message = match c.down().await {
                Ok(r) => format!(
                    "`up` rolled back: cluster {name} stopped ({} objects) and forgotten; nothing of it runs",
                    r.stopped.len()
                ),
                Err(e) => {
                    format!("rolling back cluster {name:?} failed ({e}); run `muster down {name}`")
                }
            };
            return Err(Interrupted {
                signal: sig,
                message,
            }
            .into());
        }
    };
    result.with_context(|| format!("bringing up cluster {:?}", c.name()))?;
    let status = c.status().await?;
    print_up(&c, &status, "up", args.output);
    Ok(())
}

/// `muster scale` of a kubernetes cluster.
pub async fn scale(home: &Home, record: &ClusterRecord, args: &ScaleArgs) -> Result<()> {
    let mut c = KubeCluster::open(record, home.clone())?.with_timeout(args.timeout.duration());
    let bar = Bar::new(matches!(args.output, Output::Table | Output::Wide));
    let group = args.group.as_deref().unwrap_or("default");
    let result = c.scale_group(group, args.workers, &bar).await;
    bar.finish();
    result.with_context(|| format!("scaling cluster {:?} to {}", args.name, args.workers))?;
    let status = c.status().await?;
    print_up(&c, &status, "scaled", args.output);
    Ok(())
}

/// `muster adapt` of a kubernetes cluster.
pub async fn adapt(
    home: &Home,
    record: &ClusterRecord,
    adapt: Option<muster::AdaptSpec>,
    out: Output,
) -> Result<()> {
    let mut c = KubeCluster::open(record, home.clone())?;
    c.adapt(adapt).await?;
    print!(
        "{}",
        output::adapted(
            c.name(),
            c.spec().adapt.as_ref(),
            c.spec().workers,
            None,
            out
        )
    );
    Ok(())
}

/// `muster down` of a kubernetes cluster: from its spec (registry or
/// `-f`), else from the kubeconfig's current context and namespace alone.
pub async fn down(
    home: &Home,
    name: &str,
    spec: Option<&ClusterSpec>,
) -> Result<DownReport, Error> {
    match spec {
        Some(s) => KubeCluster::new(s.clone(), home.clone())?.down().await,
        None => {
            let t = client::connect(&KubeOptions::default()).await?;
            let r = down_in(&t, name, std::time::Duration::from_secs(300)).await?;
            home.remove(name)?;
            Ok(r)
        }
    }
}

/// `get workers` / `describe`: the status from the API server.
pub async fn status(home: &Home, record: &ClusterRecord) -> Result<muster::ClusterStatus> {
    Ok(KubeCluster::open(record, home.clone())?.status().await?)
}

/// `muster events`: the Kubernetes Events of the cluster's objects.
pub async fn events(home: &Home, record: &ClusterRecord, args: &EventsArgs) -> Result<()> {
    let c = KubeCluster::open(record, home.clone())?;
    let evs = c.target().await?.events(c.name()).await?;
    let mut items: Vec<muster::adaptive::events::Event> = evs
        .iter()
        .map(|e| {
            let o = &e.involved_object;
            muster::adaptive::events::Event {
                time: event_time(e) as f64,
                kind: e.reason.clone().unwrap_or_default(),
                message: format!(
                    "{} {}: {}",
                    o.kind.as_deref().unwrap_or(""),
                    o.name.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("")
                ),
            }
        })
        .collect();
    if let Some(n) = args.tail {
        items.drain(..items.len().saturating_sub(n));
    }
    print!("{}", output::events(&items, args.output));
    Ok(())
}

/// `muster logs [-f]`: a pod's log (the scheduler's by default).
pub async fn logs(home: &Home, record: &ClusterRecord, args: &LogsArgs) -> Result<()> {
    let c = KubeCluster::open(record, home.clone())?;
    if args.all {
        let status = c.status().await?;
        let mut jobs = Vec::new();
        if let Some((id, st)) = &status.scheduler {
            jobs.push(("scheduler", id.as_str().to_string(), st.clone()));
        }
        for w in &status.workers {
            jobs.push(("worker", w.name.clone(), w.status.clone()));
        }
        let mut items = Vec::new();
        for (role, job, status) in jobs {
            let (text, error) = match c.target().await?.log(&job).await {
                Ok(t) => (
                    args.tail
                        .map(|n| muster::cluster_api::tail_lines(&t, n))
                        .unwrap_or(t),
                    None,
                ),
                Err(e) => (String::new(), Some(e.to_string())),
            };
            items.push(output::LogItem {
                job,
                role,
                status,
                text,
                error,
            });
        }
        print!("{}", output::logs(&items, args.output));
        return Ok(());
    }
    let pod = match &args.worker {
        None => format!("{}-scheduler", c.name()),
        Some(w) => {
            let status = c.status().await?;
            let known: Vec<muster::JobId> = status
                .workers
                .iter()
                .map(|w| muster::JobId(w.name.clone()))
                .collect();
            let found = known
                .iter()
                .find(|k| k.as_str() == w || k.as_str().ends_with(&format!("-worker-{w}")));
            found
                .map(|k| k.as_str().to_string())
                .unwrap_or_else(|| w.clone())
        }
    };
    if args.follow {
        let mut lines = Box::pin(c.target().await?.follow(&pod, args.tail).await?);
        while let Some(line) = lines.next().await {
            println!("{}", line.context("reading the followed log")?);
        }
        return Ok(());
    }
    let text = c.target().await?.log(&pod).await?;
    match args.tail {
        Some(n) => println!("{}", muster::cluster_api::tail_lines(&text, n)),
        None => print!("{text}"),
    }
    Ok(())
}

/// Muster's DaskClusters as registry-like rows for `get clusters`: those
/// in the current context's namespace and in the namespaces of the
/// registry's kubernetes clusters, or in every namespace. `None` when no
/// Kubernetes is configured or its API has no DaskClusters.
pub async fn list(
    all_namespaces: bool,
    registry: &[ClusterRecord],
) -> Option<Result<Vec<ClusterRecord>, Error>> {
    let has_config = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists())
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !has_config {
        return None;
    }
    let t: Target = match client::connect(&KubeOptions::default()).await {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    if t.require_operator().await.is_err() {
        return None;
    }
    let found = if all_namespaces {
        t.list_clusters(true).await
    } else {
        let mut namespaces = std::collections::BTreeSet::from([t.namespace.clone()]);
        for r in registry.iter().filter(|r| is_kube(&r.spec)) {
            if let Some(serde_json::Value::String(ns)) = r.spec.backend.options.get("namespace") {
                namespaces.insert(ns.clone());
            }
        }
        let mut all = Vec::new();
        for ns in namespaces {
            let there = Target {
                client: t.client.clone(),
                namespace: ns,
            };
            match there.list_clusters(false).await {
                Ok(items) => all.extend(items),
                Err(e) => return Some(Err(e)),
            }
        }
        Ok(all)
    };
    Some(found.map(|items| {
        items
            .iter()
            .map(|dc| {
                let name = dc.metadata.name.clone().unwrap_or_default();
                let mut spec = ClusterSpec::from_yaml("{}", None).expect("empty spec");
                spec.name = name.clone();
                spec.backend = muster::BackendSpec::of_kind(KIND);
                if let Some(ns) = &dc.metadata.namespace {
                    spec.backend
                        .options
                        .insert("namespace".into(), serde_json::Value::String(ns.clone()));
                }
                spec.workers = dc.spec.worker.replicas.max(0) as u32;
                let mut r = ClusterRecord::new(spec);
                r.phase = match dc.status.as_ref().and_then(|s| s.phase) {
                    _ if dc.metadata.deletion_timestamp.is_some() => Phase::Stopping,
                    Some(muster::kube::resources::ClusterPhase::Running) => Phase::Running,
                    Some(muster::kube::resources::ClusterPhase::Error) => Phase::Failed,
                    _ => Phase::Starting,
                };
                // The operator's, with the scheme its scheduler listens with.
                r.scheduler_address = dc.status.as_ref().and_then(|s| s.scheduler_address.clone());
                if let Some(t) = &dc.metadata.creation_timestamp {
                    r.created_at = t.0.as_second().max(0) as u64;
                }
                // The client's files, when this machine's registry made it.
                r.credentials = registry
                    .iter()
                    .find(|x| {
                        is_kube(&x.spec)
                            && x.name == name
                            && match x.spec.backend.options.get("namespace") {
                                Some(serde_json::Value::String(ns)) => {
                                    dc.metadata.namespace.as_ref() == Some(ns)
                                }
                                _ => true,
                            }
                    })
                    .and_then(|x| x.credentials.clone());
                r.name = match (&dc.metadata.namespace, all_namespaces) {
                    (Some(ns), true) => format!("{ns}/{name}"),
                    _ => name,
                };
                r
            })
            .collect()
    }))
}

/// `muster port-forward NAME`: loopback ports to the scheduler, printed,
/// open until interrupted.
pub async fn port_forward(home: &Home, record: &ClusterRecord) -> Result<()> {
    let c = KubeCluster::open(record, home.clone())?;
    let (comm, http) = c.forward_addresses().await?;
    // Caught before printing, so that a signal right after closes the
    // forward cleanly: ending a port-forward is its normal end (exit 0).
    let mut signals = Signals::install().context("catching SIGINT and SIGTERM")?;
    println!("scheduler: {comm}\ndashboard: {http}/status");
    use std::io::Write;
    std::io::stdout().flush().ok();
    let sig = signals.next().await;
    eprintln!("{}: port-forward closed", sig.name());
    Ok(())
}
