//! The operator: controllers for the Dask resources, run by `muster
//! operator` in a pod from the chart or anywhere with a kubeconfig. It
//! elects a leader through a Lease ([`lease`]), so two replicas never act at
//! once; serves `/metrics`, `/healthz` and `/readyz` ([`http`]); and
//! reconciles each DaskCluster ([`cluster`]: its scheduler pod and Service,
//! its default worker group, `idleTimeout`), each DaskWorkerGroup
//! ([`group`]: muster-core's round over the group's pods), each
//! DaskAutoscaler ([`autoscaler`]: the shared policy, per group) and each
//! DaskJob ([`job`]: a runner pod against a fresh cluster). Statuses are
//! written by server-side apply; decisions are Kubernetes Events
//! ([`events`]).
//! Watches carry a server-side timeout, so they are renewed rather than
//! going quiet. It knows the Kubernetes API; the Dask-side decisions are
//! muster-core's.

pub mod autoscaler;
pub mod backend;
pub mod cluster;
pub mod events;
pub mod group;
pub mod http;
pub mod job;
pub mod lease;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::children::MANAGER;
use crate::resources::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup, LABEL_MANAGED_BY};

/// What can go wrong while operating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration (set KUBECONFIG or run in a pod)")]
    Config(#[source] kube::Error),
    /// The HTTP endpoint could not listen.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Leadership was lost: the process stops so that it never acts beside
    /// the new leader (its pod is restarted and waits its turn).
    #[error("lost the leader Lease {0}")]
    LostLease(String),
    /// The reconciler's round failed.
    #[error("reconciler round: {0}")]
    Round(String),
}

impl Error {
    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// Watch this namespace only.
    pub namespace: Option<String>,
    /// Elect a leader through a Lease in this namespace (`None`: no election).
    pub leader_election: Option<String>,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Counters for `/metrics`.
    pub metrics: http::Metrics,
    /// One lock per worker group, so that its rounds never overlap.
    locks: tokio::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    /// The lock of one worker group.
    pub async fn group_lock(&self, namespace: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().await;
        locks
            .entry(format!("{namespace}/{name}"))
            .or_default()
            .clone()
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A server-side watch timeout well under the API server's own, so that a
/// watch that silently died is noticed and reopened (dask-kubernetes#620).
const WATCH_TIMEOUT_SECS: u32 = 120;

/// How long any answer from the API server may keep the operator waiting:
/// longer than a watch lasts on the server ([`WATCH_TIMEOUT_SECS`]), so that
/// it only ever ends a request that went unanswered.
const API_READ_TIMEOUT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECS as u64 + 30);

/// Runs until a signal (or a lost Lease).
pub async fn run(config: Config) -> Result<(), Error> {
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(kube::Error::InferConfig(e)))?;
    // kube sets no read timeout: a request the API server never answers
    // (one sent into its restart) would hold its resource's reconciles
    // forever, since a resource is never reconciled twice at once.
    kube_config.read_timeout = Some(API_READ_TIMEOUT);
    kube_config.reset_reader_on_write = true;
    let client = Client::try_from(kube_config).map_err(Error::Config)?;
    let metrics = http::Metrics::default();
    let health = http::serve(config.listen, metrics.clone()).await?;
    if let Some(ns) = &config.leader_election {
        lease::acquire(&client, ns, &config.identity).await?;
        tokio::spawn(lease::hold(
            client.clone(),
            ns.clone(),
            config.identity.clone(),
        ));
    }
    health.set_ready(true);
    metrics.set_leader(true);
    tracing::info!(namespace = ?config.namespace, "operator running");
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from(MANAGER)),
        client: client.clone(),
        metrics,
        locks: Default::default(),
    });
    let owned = watcher::Config::default()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let main = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
    let clusters = Controller::new(api::<DaskCluster>(&client, &config.namespace), main.clone())
        .owns(api::<Pod>(&client, &config.namespace), owned.clone())
        .owns(api::<Service>(&client, &config.namespace), owned.clone())
        .owns(
            api::<DaskWorkerGroup>(&client, &config.namespace),
            owned.clone(),
        )
        .shutdown_on_signal()
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("reconcile: {e}");
            }
        });
    let groups = Controller::new(
        api::<DaskWorkerGroup>(&client, &config.namespace),
        main.clone(),
    )
    .owns(api::<Pod>(&client, &config.namespace), owned.clone())
    .shutdown_on_signal()
    .run(group::reconcile, group::error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!("reconcile: {e}");
        }
    });
    // An autoscaler's own status changes while the policy waits out a
    // window: debounced, so that write does not wake it at once.
    let autoscalers = Controller::new(
        api::<DaskAutoscaler>(&client, &config.namespace),
        main.clone(),
    )
    .with_config(ControllerConfig::default().debounce(Duration::from_secs(1)))
    .shutdown_on_signal()
    .run(autoscaler::reconcile, autoscaler::error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!("reconcile: {e}");
        }
    });
    let jobs = Controller::new(api::<DaskJob>(&client, &config.namespace), main)
        .owns(api::<Pod>(&client, &config.namespace), owned.clone())
        .owns(api::<DaskCluster>(&client, &config.namespace), owned)
        .shutdown_on_signal()
        .run(job::reconcile, job::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("reconcile: {e}");
            }
        });
    futures::join!(clusters, groups, autoscalers, jobs);
    tracing::info!("operator stopped");
    Ok(())
}

/// The scheduler's HTTP API of `cluster`, at its Service's cluster IP
/// (reachable from a pod and from a node); `None` until the Service has one.
pub async fn scheduler_http_url(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<String>, Error> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let name = format!("{cluster}-scheduler");
    let ip = services
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading Service {name}")))?
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None");
    Ok(ip.map(|ip| {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        format!("http://{host}:{}", crate::children::HTTP_PORT)
    }))
}

/// Makes the DaskCluster `cluster` an owner of `obj` (a worker group or an
/// autoscaler written by hand, as dask-kubernetes does), so that deleting
/// the cluster deletes it too. Nothing when it is owned already or the
/// cluster does not exist (yet). Returns the cluster as read, if it exists.
pub async fn adopt<K>(ctx: &Context, obj: &K, cluster: &str) -> Result<Option<DaskCluster>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(dc) = clusters
        .get_opt(cluster)
        .await
        .map_err(Error::kube(format!("reading DaskCluster {cluster}")))?
    else {
        return Ok(None);
    };
    let owners = meta.owner_references.clone().unwrap_or_default();
    let Some(mut owner) = kube::Resource::controller_owner_ref(&dc, &()) else {
        return Ok(Some(dc));
    };
    if owners.iter().any(|o| o.uid == owner.uid) {
        return Ok(Some(dc));
    }
    owner.controller = Some(!owners.iter().any(|o| o.controller == Some(true)));
    let mut all = owners;
    all.push(owner);
    let name = meta.name.clone().unwrap_or_default();
    Api::<K>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": all}})),
        )
        .await
        .map_err(Error::kube(format!(
            "adopting {name} under DaskCluster {cluster}"
        )))?;
    tracing::info!(%name, %cluster, "adopted by its DaskCluster");
    Ok(Some(dc))
}

/// How long to wait before looking at a resource again when nothing changes.
pub const RESYNC: Duration = Duration::from_secs(60);
