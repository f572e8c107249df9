//! The thin I/O of the `kubernetes` backend: connecting as kubectl does
//! (kubeconfig, context, namespace), checking that muster's operator is
//! installed, applying the objects of [`super::render`] by server-side apply,
//! patching replicas, and reading back what the API server says: the
//! DaskCluster's status, the pods, their logs, the Events; creating and
//! deleting the cluster's credentials Secret. Every error names
//! what was being done; nothing here decides anything.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{AsyncBufReadExt, Stream};
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use muster_core::Error;
use serde::Serialize;
use serde_json::json;

use super::options::KubeOptions;
use super::render::{CREATED_BY, FIELD_MANAGER, LABEL_CREATED_BY, Manifests};
use crate::resources::{
    DaskAutoscaler, DaskCluster, DaskWorkerGroup, GROUP, LABEL_CLUSTER, LABEL_COMPONENT, VERSION,
};

/// The backend's name in errors.
pub const KIND: &str = "kubernetes";

/// How to install the operator, for the error of a cluster without it.
pub const INSTALL_HINT: &str = "install muster's operator first: helm install muster-operator charts/muster-operator --namespace muster-system --create-namespace (or kubectl apply --server-side -f manifests/)";

/// A kube error as core's, saying what was being done.
pub fn kube_error(doing: impl Into<String>, e: kube::Error) -> Error {
    let transient = match &e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    };
    Error::Backend {
        backend: KIND.into(),
        message: format!("{}: {e}", doing.into()),
        transient,
        source: Some(Box::new(e)),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A connection to one namespace of one Kubernetes cluster.
#[derive(Clone)]
pub struct Target {
    /// The client.
    pub client: Client,
    /// The namespace (the spec's, else the context's, else `default`).
    pub namespace: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Connects as kubectl would: `$KUBECONFIG` (else `~/.kube/config`) with the
/// spec's context or the current one, else the in-cluster service account.
pub async fn connect(opts: &KubeOptions) -> Result<Target, Error> {
    let config = match &opts.context {
        Some(ctx) => {
            let kc = Kubeconfig::read().map_err(|e| {
                Error::Usage(format!(
                    "backend.context: {ctx:?}: cannot read the kubeconfig: {e}"
                ))
            })?;
            if !kc.contexts.iter().any(|c| &c.name == ctx) {
                let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "backend.context: {ctx:?}: no such context in the kubeconfig (it has: {})",
                    known.join(", ")
                )));
            }
            let options = KubeConfigOptions {
                context: Some(ctx.clone()),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::backend(KIND, format!("context {ctx:?}: {e}"), false))?
        }
        None => Config::infer()
            .await
            .map_err(|e| Error::backend(KIND, format!("no usable kubeconfig: {e}"), false))?,
    };
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client =
        Client::try_from(config).map_err(|e| kube_error("building the Kubernetes client", e))?;
    Ok(Target { client, namespace })
}

impl Target {
    /// The namespaced API of `K`.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Fails unless the API server serves muster's resources (the operator's
    /// CRDs are installed), saying how to install them.
    pub async fn require_operator(&self) -> Result<(), Error> {
        self.require_api(&format!("{GROUP}/{VERSION}")).await
    }

    /// As [`Target::require_operator`], for API group/version `gv`.
    pub async fn require_api(&self, gv: &str) -> Result<(), Error> {
        match self.client.list_api_group_resources(gv).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "daskclusters") => Ok(()),
            Ok(_) => Err(Error::backend(
                KIND,
                format!("the API server serves {gv} but not daskclusters; {INSTALL_HINT}"),
                false,
            )),
            Err(e) if is_not_found(&e) => Err(Error::backend(
                KIND,
                format!(
                    "muster's operator is not installed in this Kubernetes (no {gv} API, so no DaskCluster resource); {INSTALL_HINT}"
                ),
                false,
            )),
            Err(e) => Err(kube_error(
                "asking the API server for kubernetes.dask.org",
                e,
            )),
        }
    }

    /// Creates the credentials Secret (first, so the pods never wait for
    /// it), then server-side applies every object, in order, and makes the
    /// Secret the DaskCluster's (deleting the cluster deletes it).
    pub async fn apply(&self, m: &Manifests) -> Result<(), Error> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        if let Some(s) = &m.secret {
            self.create_secret(s).await?;
        }
        let name = m.cluster.metadata.name.clone().unwrap_or_default();
        let dc = self
            .api::<DaskCluster>()
            .patch(&name, &pp, &Patch::Apply(&m.cluster))
            .await
            .map_err(|e| kube_error(format!("applying {name}"), e))?;
        if let Some(s) = &m.secret {
            self.own_secret(s, &dc).await?;
        }
        for g in &m.groups {
            apply_one(&self.api::<DaskWorkerGroup>(), g, &pp).await?;
        }
        if let Some(a) = &m.autoscaler {
            apply_one(&self.api::<DaskAutoscaler>(), a, &pp).await?;
        }
        Ok(())
    }

    /// Creates Secret `s`. One of the same name left by an earlier `up` of
    /// this cluster (muster's labels) is replaced; anyone else's is an
    /// error, and stays.
    async fn create_secret(&self, s: &Secret) -> Result<(), Error> {
        let api = self.api::<Secret>();
        let name = s.metadata.name.clone().unwrap_or_default();
        let cluster = label(&s.metadata, LABEL_CLUSTER).unwrap_or_default();
        match api.create(&PostParams::default(), s).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(st)) if st.code == 409 => {}
            Err(e) => return Err(kube_error(format!("creating Secret {name}"), e)),
        }
        if !self.delete_secret(&cluster).await? {
            return Err(Error::backend(
                KIND,
                format!(
                    "Secret {name} already exists in namespace {} and is not muster's for cluster {cluster}: remove or rename it",
                    self.namespace
                ),
                false,
            ));
        }
        api.create(&PostParams::default(), s)
            .await
            .map(drop)
            .map_err(|e| kube_error(format!("creating Secret {name}"), e))
    }

    /// Makes Secret `s` owned by `dc` (not its controller: nothing
    /// reconciles it), so the garbage collector deletes it with the cluster.
    async fn own_secret(&self, s: &Secret, dc: &DaskCluster) -> Result<(), Error> {
        let name = s.metadata.name.clone().unwrap_or_default();
        let Some(owner) = dc.owner_ref(&()) else {
            return Err(Error::backend(
                KIND,
                "the API server returned the DaskCluster without a uid",
                false,
            ));
        };
        let body = json!({"metadata": {"ownerReferences": [owner]}});
        self.api::<Secret>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(drop)
            .map_err(|e| kube_error(format!("making Secret {name} the DaskCluster's"), e))
    }

    /// Cluster `cluster`'s credentials Secret, when there is one that
    /// muster made for it.
    pub async fn secret(&self, cluster: &str) -> Result<Option<Secret>, Error> {
        let name = super::tls::secret_name(cluster);
        let s = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(format!("reading Secret {name}"), e))?;
        Ok(s.filter(|s| {
            label(&s.metadata, LABEL_CLUSTER) == Some(cluster.to_string())
                && label(&s.metadata, LABEL_CREATED_BY).as_deref() == Some(CREATED_BY)
        }))
    }

    /// Deletes cluster `cluster`'s credentials Secret (only muster's for
    /// it); true when there was one.
    pub async fn delete_secret(&self, cluster: &str) -> Result<bool, Error> {
        if self.secret(cluster).await?.is_none() {
            return Ok(false);
        }
        delete_opt(
            &self.api::<Secret>(),
            &super::tls::secret_name(cluster),
            &DeleteParams::default(),
        )
        .await
    }

    /// Applies (creates or replaces) a DaskAutoscaler.
    pub async fn apply_autoscaler(&self, a: &DaskAutoscaler) -> Result<(), Error> {
        apply_one(&self.api(), a, &PatchParams::apply(FIELD_MANAGER).force()).await
    }

    /// The DaskCluster `name`, if it exists.
    pub async fn cluster(&self, name: &str) -> Result<Option<DaskCluster>, Error> {
        self.api::<DaskCluster>()
            .get_opt(name)
            .await
            .map_err(|e| kube_error(format!("reading DaskCluster {name}"), e))
    }

    /// The DaskAutoscaler `name`, if it exists.
    pub async fn autoscaler(&self, name: &str) -> Result<Option<DaskAutoscaler>, Error> {
        self.api::<DaskAutoscaler>()
            .get_opt(name)
            .await
            .map_err(|e| kube_error(format!("reading DaskAutoscaler {name}"), e))
    }

    /// The scheduler Service's cluster IP, once it has one.
    pub async fn scheduler_ip(&self, cluster: &str) -> Result<Option<String>, Error> {
        let svc = format!("{cluster}-scheduler");
        Ok(self
            .api::<Service>()
            .get_opt(&svc)
            .await
            .map_err(|e| kube_error(format!("reading Service {svc}"), e))?
            .and_then(|s| s.spec)
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None"))
    }

    /// Merge-patches a worker group's replicas: the DaskCluster's own field
    /// for the default group (the operator copies it), else the group's.
    pub async fn set_replicas(
        &self,
        cluster: &str,
        group: Option<&str>,
        n: u32,
    ) -> Result<(), Error> {
        let body = json!({"spec": {"worker": {"replicas": n}}});
        let pp = PatchParams::default();
        match group {
            None => self
                .api::<DaskCluster>()
                .patch(cluster, &pp, &Patch::Merge(&body))
                .await
                .map(drop)
                .map_err(|e| kube_error(format!("scaling DaskCluster {cluster}"), e)),
            Some(g) => self
                .api::<DaskWorkerGroup>()
                .patch(g, &pp, &Patch::Merge(&body))
                .await
                .map(drop)
                .map_err(|e| kube_error(format!("scaling DaskWorkerGroup {g}"), e)),
        }
    }

    /// The cluster's pods (scheduler and workers), by label.
    pub async fn pods(&self, cluster: &str) -> Result<Vec<Pod>, Error> {
        let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
        Ok(self
            .api::<Pod>()
            .list(&lp)
            .await
            .map_err(|e| kube_error(format!("listing the pods of {cluster}"), e))?
            .items)
    }

    /// Deletes every pod labelled with the cluster.
    pub async fn delete_pods(&self, cluster: &str) -> Result<(), Error> {
        let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
        self.api::<Pod>()
            .delete_collection(&DeleteParams::default(), &lp)
            .await
            .map(drop)
            .map_err(|e| kube_error(format!("deleting the pods of {cluster}"), e))
    }

    /// The worker groups of a cluster (the default one included).
    pub async fn groups(&self, cluster: &str) -> Result<Vec<DaskWorkerGroup>, Error> {
        let all = self
            .api::<DaskWorkerGroup>()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error("listing DaskWorkerGroups", e))?;
        Ok(all
            .items
            .into_iter()
            .filter(|g| g.spec.cluster == cluster)
            .collect())
    }

    /// A pod's log so far.
    pub async fn log(&self, pod: &str) -> Result<String, Error> {
        self.api::<Pod>()
            .logs(pod, &LogParams::default())
            .await
            .map_err(|e| kube_error(format!("reading the log of pod {pod}"), e))
    }

    /// A pod's log, following it until the pod ends, line by line.
    pub async fn follow(
        &self,
        pod: &str,
        tail: Option<usize>,
    ) -> Result<impl Stream<Item = std::io::Result<String>> + use<>, Error> {
        let lp = LogParams {
            follow: true,
            tail_lines: tail.map(|n| n as i64),
            ..LogParams::default()
        };
        let r = self
            .api::<Pod>()
            .log_stream(pod, &lp)
            .await
            .map_err(|e| kube_error(format!("following the log of pod {pod}"), e))?;
        Ok(r.lines())
    }

    /// The Events of the cluster's objects (the DaskCluster, its groups,
    /// autoscaler, Service and pods: objects named `<cluster>` or
    /// `<cluster>-...`), oldest first.
    pub async fn events(&self, cluster: &str) -> Result<Vec<Event>, Error> {
        let kinds: BTreeSet<&str> = [
            "DaskCluster",
            "DaskWorkerGroup",
            "DaskAutoscaler",
            "Pod",
            "Service",
        ]
        .into();
        let prefix = format!("{cluster}-");
        let all = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error("listing Events", e))?;
        let mut evs: Vec<Event> = all
            .items
            .into_iter()
            .filter(|e| {
                let o = &e.involved_object;
                let name = o.name.as_deref().unwrap_or("");
                kinds.contains(o.kind.as_deref().unwrap_or(""))
                    && (name == cluster || name.starts_with(&prefix))
            })
            .collect();
        evs.sort_by_key(event_time);
        Ok(evs)
    }

    /// Deletes the autoscaler, the extra groups, the DaskCluster (its
    /// children go with it: they are owned) and its credentials Secret.
    /// Missing objects are fine.
    pub async fn delete_all(&self, cluster: &str) -> Result<bool, Error> {
        let dp = DeleteParams::foreground();
        let mut existed = false;
        existed |= delete_opt(&self.api::<DaskAutoscaler>(), cluster, &dp).await?;
        for g in self.groups(cluster).await? {
            let name = g.metadata.name.clone().unwrap_or_default();
            existed |= delete_opt(&self.api::<DaskWorkerGroup>(), &name, &dp).await?;
        }
        existed |= delete_opt(&self.api::<DaskCluster>(), cluster, &dp).await?;
        // Owned by the DaskCluster, so collected with it; deleted here too
        // for an `up` that stopped before making it the cluster's.
        existed |= self.delete_secret(cluster).await?;
        Ok(existed)
    }

    /// Deletes the DaskAutoscaler `name`; true when it existed.
    pub async fn delete_autoscaler(&self, name: &str) -> Result<bool, Error> {
        delete_opt(
            &self.api::<DaskAutoscaler>(),
            name,
            &DeleteParams::default(),
        )
        .await
    }

    /// Muster's DaskClusters here, or in every namespace.
    pub async fn list_clusters(&self, all_namespaces: bool) -> Result<Vec<DaskCluster>, Error> {
        let api: Api<DaskCluster> = if all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.api()
        };
        let lp = ListParams::default().labels(&format!("{LABEL_CREATED_BY}={CREATED_BY}"));
        Ok(api
            .list(&lp)
            .await
            .map_err(|e| kube_error("listing DaskClusters", e))?
            .items)
    }
}

fn label(m: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    m.labels.as_ref().and_then(|l| l.get(key)).cloned()
}

/// When an Event happened (Unix seconds).
pub fn event_time(e: &Event) -> i64 {
    e.last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or(0)
}

/// Whether a pod is a worker or the scheduler, by its label.
pub fn component(p: &Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_COMPONENT))
        .map(String::as_str)
        .unwrap_or("")
}

async fn apply_one<K>(api: &Api<K>, obj: &K, pp: &PatchParams) -> Result<(), Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, pp, &Patch::Apply(obj))
        .await
        .map(drop)
        .map_err(|e| kube_error(format!("applying {name}"), e))
}

async fn delete_opt<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<bool, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(kube_error(format!("deleting {name}"), e)),
    }
}

/// Polls `check` every `every` until it gives a value or `timeout` passes.
pub async fn poll<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}
