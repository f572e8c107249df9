//! The read-only commands that look at clusters: `get` (once or watching),
//! `logs` (once, following, or every job's). They never start, stop or
//! restart anything; what they print comes from [`crate::output`].
//! Kubernetes clusters are asked of the API server (through
//! [`crate::kubernetes`]), which also lists muster's DaskClusters.

use std::time::Duration;

use anyhow::Result;
use muster::{Cluster, ClusterStatus, Home, JobId, ManagedCluster};

use crate::cli::*;
use crate::commands::{kube_record, open};
use crate::kubernetes as kube;
use crate::output;

/// How often `-w` and `-f` look again.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long `get clusters` waits for one cluster's manager and scheduler
/// before showing it without a live view (`?/N` ready).
const LOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The live status of every recorded cluster (`None` where it could not be
/// had in time), in the records' order.
async fn live(home: &Home, records: &[muster::ClusterRecord]) -> Vec<Option<ClusterStatus>> {
    let mut out = Vec::new();
    for r in records {
        let status = if kube::is_kube(&r.spec) {
            look(&r.name, kube::status(home, r)).await
        } else {
            match open(home, &r.name) {
                Ok(c) => look(&r.name, c.status()).await,
                Err(e) => {
                    tracing::warn!("cannot open cluster {:?}: {e}", r.name);
                    None
                }
            }
        };
        out.push(status);
    }
    out
}

/// One cluster's status within [`LOOK_TIMEOUT`], or `None` with a warning
/// saying why not.
async fn look<E: std::fmt::Display>(
    name: &str,
    status: impl std::future::Future<Output = std::result::Result<ClusterStatus, E>>,
) -> Option<ClusterStatus> {
    match tokio::time::timeout(LOOK_TIMEOUT, status).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!("cannot look at cluster {name:?}: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("cluster {name:?} did not answer within {LOOK_TIMEOUT:?}");
            None
        }
    }
}

async fn clusters_text(home: &Home, all_namespaces: bool, out: Output) -> Result<String> {
    let registry = home.list()?;
    let mut records = registry.clone();
    // Muster's DaskClusters come from the API server, the truth; the
    // registry's copies are shown only when it cannot be asked.
    match kube::list(all_namespaces, &registry).await {
        Some(Ok(found)) => {
            records.retain(|r| !kube::is_kube(&r.spec));
            records.extend(found);
        }
        Some(Err(e)) => eprintln!("warning: cannot list DaskClusters: {e}"),
        None => {}
    }
    let statuses = live(home, &records).await;
    let rows: Vec<output::ClusterRow> = records
        .iter()
        .zip(&statuses)
        .map(|(record, status)| output::ClusterRow {
            record,
            status: status.as_ref(),
        })
        .collect();
    let names: Vec<String> = registry.iter().map(|r| r.name.clone()).collect();
    let (unrecorded, warnings) = crate::unrecorded::find(home, &names).await;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(output::clusters(
        &rows,
        &unrecorded,
        muster::registry::unix_now(),
        out,
    ))
}

async fn workers_text(home: &Home, name: &str, out: Output) -> Result<String> {
    if let Some(r) = kube_record(home, name)? {
        return Ok(output::workers(&kube::status(home, &r).await?, out));
    }
    let status = open(home, name)?.status().await?;
    Ok(output::workers(&status, out))
}

pub async fn get(home: &Home, args: GetArgs) -> Result<()> {
    let (watch, text) = match &args.what {
        GetWhat::Clusters {
            all_namespaces,
            output: out,
            watch,
        } => (*watch, clusters_text(home, *all_namespaces, *out).await?),
        GetWhat::Workers {
            name,
            output: out,
            watch,
        } => (*watch, workers_text(home, name, *out).await?),
    };
    print!("{text}");
    if !watch {
        return Ok(());
    }
    // Like `kubectl get -w`: print again on every change, until Ctrl-C.
    let mut last = text;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let now = match &args.what {
            GetWhat::Clusters {
                all_namespaces,
                output: out,
                ..
            } => clusters_text(home, *all_namespaces, *out).await?,
            GetWhat::Workers {
                name, output: out, ..
            } => workers_text(home, name, *out).await?,
        };
        if now != last {
            println!();
            print!("{now}");
            last = now;
        }
    }
}

pub async fn logs(home: &Home, args: LogsArgs) -> Result<()> {
    if let Some(r) = kube_record(home, &args.name)? {
        // `-f` follows the pod's log through the API server until it ends.
        return kube::logs(home, &r, &args).await;
    }
    let cluster = open(home, &args.name)?;
    if args.all {
        return all_logs(&cluster, args.tail, args.output).await;
    }
    let job = args.worker.as_deref().map(|w| {
        let r = cluster.record();
        let known: Vec<JobId> = r
            .workers
            .iter()
            .chain(r.ended.iter().map(|e| &e.id))
            .cloned()
            .collect();
        resolve_worker(&args.name, &known, w)
    });
    let text = cluster.logs(job.as_ref()).await?;
    match args.tail {
        Some(n) => println!("{}", muster::cluster_api::tail_lines(&text, n)),
        None => print!("{text}"),
    }
    if args.follow {
        follow(&cluster, job, text).await?;
    }
    Ok(())
}

/// `logs -f`: prints what is appended to the job's log until the job ends
/// (or Ctrl-C). A log that shrank (restarted) is printed again whole.
async fn follow(cluster: &ManagedCluster, job: Option<JobId>, mut seen: String) -> Result<()> {
    use std::io::Write;
    let id =
        match &job {
            Some(j) => j.clone(),
            None => cluster.record().scheduler_job.clone().ok_or_else(|| {
                anyhow::anyhow!("cluster {:?} has no scheduler job", cluster.name())
            })?,
        };
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let ended = cluster
            .backend()
            .status(std::slice::from_ref(&id))
            .await
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .is_some_and(|s| !s.is_active());
        let text = cluster.logs(Some(&id)).await?;
        match text.strip_prefix(seen.as_str()) {
            Some(new) => print!("{new}"),
            None => print!("{text}"),
        }
        std::io::stdout().flush().ok();
        seen = text;
        if ended {
            eprintln!("job {id} has ended: no more log to follow");
            return Ok(());
        }
    }
}

/// Finds a worker job from what a user typed: the full id, or the id without
/// the cluster prefix (`w3`), or just the index (`3`).
pub fn resolve_worker(cluster: &str, known: &[JobId], typed: &str) -> JobId {
    let candidates = [
        typed.to_string(),
        format!("{cluster}-{typed}"),
        format!("{cluster}-w{typed}"),
    ];
    candidates
        .iter()
        .find(|c| known.iter().any(|k| k.as_str() == c.as_str()))
        .map(|c| JobId(c.clone()))
        // Ids that name a host after a dot (`demo-w3.h2`) resolve from `w3`.
        .or_else(|| {
            candidates.iter().find_map(|c| {
                let prefix = format!("{c}.");
                let mut hits = known.iter().filter(|k| k.as_str().starts_with(&prefix));
                match (hits.next(), hits.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            })
        })
        .unwrap_or_else(|| JobId(typed.to_string()))
}

/// `logs --all`: the scheduler's log and every worker job's, each with the
/// job's state; a log that cannot be read is reported in place of its text.
async fn all_logs(cluster: &ManagedCluster, tail: Option<usize>, out: Output) -> Result<()> {
    let status = cluster.status().await?;
    let mut jobs: Vec<(&'static str, JobId, muster::JobStatus)> = Vec::new();
    if let Some((id, st)) = &status.scheduler {
        jobs.push(("scheduler", id.clone(), st.clone()));
    }
    for w in &status.workers {
        jobs.push(("worker", JobId(w.name.clone()), w.status.clone()));
    }
    // Jobs that ended on their own and were replaced: their logs say why.
    for e in &cluster.record().ended {
        if !jobs.iter().any(|(_, id, _)| *id == e.id) {
            jobs.push(("worker", e.id.clone(), e.status.clone()));
        }
    }
    let mut items = Vec::new();
    for (role, job, st) in jobs {
        let (text, error) = match cluster.logs(Some(&job)).await {
            Ok(t) => (
                match tail {
                    Some(n) => muster::cluster_api::tail_lines(&t, n),
                    None => t,
                },
                None,
            ),
            Err(e) => (String::new(), Some(e.to_string())),
        };
        items.push(output::LogItem {
            job: job.as_str().to_string(),
            role,
            status: st,
            text,
            error,
        });
    }
    print!("{}", output::logs(&items, out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_resolve_from_short_forms() {
        let known = vec![JobId::from("demo-w3"), JobId::from("demo-w10")];
        assert_eq!(
            resolve_worker("demo", &known, "demo-w3").as_str(),
            "demo-w3"
        );
        assert_eq!(resolve_worker("demo", &known, "w10").as_str(), "demo-w10");
        assert_eq!(resolve_worker("demo", &known, "3").as_str(), "demo-w3");
        assert_eq!(
            resolve_worker("demo", &known, "demo-w99").as_str(),
            "demo-w99"
        );
        let ssh = vec![JobId::from("demo-w3.h2"), JobId::from("demo-w13.h3")];
        assert_eq!(resolve_worker("demo", &ssh, "w3").as_str(), "demo-w3.h2");
        assert_eq!(resolve_worker("demo", &ssh, "13").as_str(), "demo-w13.h3");
    }
}
