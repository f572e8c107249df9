//! muster: deploy and scale Dask (a `dask scheduler` plus `dask worker`
//! processes) on the cluster managers you already run, from Rust.
//!
//! This facade re-exports the public API of muster's crates, holds the one
//! table of backend kinds ([`KINDS`]) and hands out clusters wired with the
//! same agent and timeline the CLI uses. It owns no logic of its own.
//!
//! ```no_run
//! use muster::{Cluster, ClusterSpec, Quiet};
//!
//! # async fn demo() -> muster::Result<()> {
//! let spec = ClusterSpec::from_yaml("name: demo\nworkers: 2\nworker: {python: python3}", None)?;
//! let mut cluster = muster::cluster(spec)?;
//! cluster.up(&Quiet).await?;
//! println!("scheduler at {}", cluster.scheduler_address().unwrap());
//! cluster.scale(4, &Quiet).await?;
//! cluster.adapt(Some(muster::AdaptSpec::new(1, 8))).await?;
//! cluster.down().await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

pub use muster_adaptive as adaptive;
pub use muster_core::{
    AdaptSpec, AgentControl, Backend, BackendKind, BackendSpec, Capabilities, Cluster,
    ClusterRecord, ClusterSpec, ClusterStatus, DownReport, EndedJob, Error, Home, JobId, JobStatus,
    Kinds, Launched, ManagedCluster, Memory, Phase, Progress, Quiet, Rendered, RenderedItem,
    Result, Role, SchedulerContact, SchedulerSpec, Seconds, SpecError, Supervisor, WorkerRow,
    WorkerSpec,
};
pub use muster_core::{
    access, backend, cluster as cluster_api, dask, kinds, ops, policy, reconcile, registry, runner,
    spec, tls, units,
};
pub use muster_hpc::HpcBackend;
pub use muster_kube as kube;
pub use muster_kube::backend::KubeCluster;
pub use muster_local::LocalBackend;
pub use muster_ssh::{SshBackend, SshOptions, SshRunner, SshSpec};

/// Every kind of cluster manager muster knows: the one table. A new backend
/// adds its [`BackendKind`] here.
pub const KINDS: Kinds = Kinds(&[
    &muster_local::LocalKind,
    &muster_ssh::SshKind,
    &muster_hpc::SLURM,
    &muster_hpc::PBS,
    &muster_yarn::backend::YarnKind,
    &muster_kube::backend::KubeKind,
]);

/// Validates the whole spec (backend-independent fields, then the backend's
/// own options), reporting every problem at once.
pub fn validate(spec: &ClusterSpec) -> Result<()> {
    Ok(KINDS.validate(spec)?)
}

/// The backend of one cluster, built from its validated spec, keeping local
/// state under `home`. Connects nothing yet.
pub fn backend_for_spec(spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>> {
    KINDS.build(spec, home)
}

/// A backend that only finds and stops what a cluster `name` of `kind` left
/// behind, when there is no registry record and no spec: built from the
/// kind's defaults without validating them (nothing is launched with it, so
/// e.g. a batch backend's required `worker.memory` does not matter).
pub fn backend_for_down(kind: &str, name: &str, home: &Home) -> Result<Arc<dyn Backend>> {
    let mut spec = ClusterSpec::from_yaml("{}", None)?;
    spec.name = name.to_string();
    spec.backend = BackendSpec::of_kind(kind);
    let k = KINDS
        .get(kind)
        .ok_or_else(|| Error::Usage(format!("unknown backend {kind:?}")))?;
    k.build(&spec, home)
}

/// The clusters of `home` with live processes on this host, found from the
/// markers in their environment (`/proc`), with their job ids: what runs
/// here whether or not the registry remembers it. Local clusters and the
/// submit-host schedulers of batch clusters both carry these markers.
pub fn marked_on_this_host(home: &Home) -> std::collections::BTreeMap<String, Vec<String>> {
    muster_local::procs::scan_home(&home.root().display().to_string())
        .into_iter()
        .map(|(cluster, procs)| {
            let mut jobs: Vec<String> = procs.into_iter().map(|p| p.job).collect();
            jobs.sort();
            jobs.dedup();
            (cluster, jobs)
        })
        .collect()
}

/// The batch clusters of `home` with live jobs in this machine's `kind`
/// queue (`slurm` or `pbs`), with their job ids, found from the home's tag
/// in the job names (see [`Home::tag`]): what runs there whether or not the
/// registry remembers it, and never another home's jobs.
pub async fn queued_in_batch(
    kind: &str,
    home: &Home,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let kind = match kind {
        "slurm" => muster_hpc::HpcKind::Slurm,
        "pbs" => muster_hpc::HpcKind::Pbs,
        other => return Err(Error::Usage(format!("{other:?} is not a batch backend"))),
    };
    Ok(muster_hpc::home_clusters(kind, home)
        .await?
        .into_iter()
        .map(|(cluster, jobs)| (cluster, jobs.into_iter().map(|j| j.0).collect()))
        .collect())
}

/// Fills a spec's unset options from the machine's site configuration: for
/// `slurm`/`pbs`, an existing dask-jobqueue config (`jobqueue.slurm` /
/// `jobqueue.pbs` in the Dask config files). Explicit values win. Call it
/// before validating a spec built from user input.
pub fn apply_site_defaults(spec: &mut ClusterSpec) {
    muster_hpc::jobqueue::apply_from_environment(spec);
}

/// The `muster` binary that runs agents: `$MUSTER_BIN`, else a `muster`
/// beside this program, else `muster` on `PATH`.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MUSTER_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("muster")))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| PathBuf::from("muster"))
}

/// Wires a cluster with its timeline (`events.jsonl`) and its agent (run as
/// `agent_exe agent NAME`).
pub fn wire(cluster: ManagedCluster, home: &Home, agent_exe: PathBuf) -> ManagedCluster {
    let name = cluster.name().to_string();
    cluster
        .with_timeline(Arc::new(adaptive::FileTimeline::new(home.clone(), &name)))
        .with_agent(Arc::new(adaptive::ProcessAgent::new(
            agent_exe,
            home.clone(),
        )))
}

/// A handle for a new cluster from a spec, with state under the default home
/// (`$MUSTER_HOME`, else `$XDG_STATE_HOME/muster`, else
/// `~/.local/state/muster`). Nothing is launched until [`Cluster::up`];
/// after it, the cluster's supervisor keeps it: its agent (see
/// [`agent_binary`]), or on Kubernetes muster's operator ([`KubeCluster`]).
pub fn cluster(spec: ClusterSpec) -> Result<Box<dyn Cluster>> {
    let home = Home::from_env()?;
    let mut spec = spec;
    apply_site_defaults(&mut spec);
    let backend = backend_for_spec(&spec, &home)?;
    if backend.capabilities().supervisor == Supervisor::Operator {
        return Ok(Box::new(KubeCluster::new(spec, home)?));
    }
    Ok(Box::new(wire(
        ManagedCluster::new(spec, backend, home.clone())?,
        &home,
        agent_binary(),
    )))
}

/// A handle for an existing cluster in the default home's registry.
pub fn open(name: &str) -> Result<Box<dyn Cluster>> {
    let home = Home::from_env()?;
    let record = home
        .load(name)?
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let backend = backend_for_spec(&record.spec, &home)?;
    if backend.capabilities().supervisor == Supervisor::Operator {
        return Ok(Box::new(KubeCluster::open(&record, home)?));
    }
    Ok(Box::new(wire(
        ManagedCluster::open(name, backend, home.clone())?,
        &home,
        agent_binary(),
    )))
}
