//! muster: deploy and scale Dask (a `dask scheduler` plus `dask worker`
//! processes) on the cluster managers you already run, from Rust.
//!
//! This facade re-exports the public API of muster's crates and picks the
//! right backend for a spec. It owns no logic of its own.
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
//! cluster.down().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

pub use muster_adaptive as adaptive;
pub use muster_core::legacy::Backend;
pub use muster_core::{
    AdaptSpec, BackendSpec, Cluster, ClusterRecord, ClusterSpec, ClusterStatus, DownReport, Error,
    Home, JobId, JobStatus, LaunchRequest, ManagedCluster, Memory, Phase, Progress, Quiet,
    Rendered, RenderedItem, Result, Role, SchedulerContact, SchedulerSpec, Seconds, SpecError,
    SshSpec, WorkerRow, WorkerSpec,
};
pub use muster_core::{
    access, backend, cluster as cluster_api, dask, kinds, legacy, ops, policy, reconcile, registry,
    runner, spec, units,
};
pub use muster_hpc::HpcBackend;
pub use muster_local::LocalBackend;
pub use muster_ssh::{SshBackend, SshOptions, SshRunner};

/// The backend that runs clusters of this kind, keeping its state under
/// `home`. Fails only when a `submit_host`'s ssh settings cannot be read
/// (e.g. an unreadable ssh config); nothing is connected yet.
pub fn backend_for(spec: &BackendSpec, home: &Home) -> Result<Arc<dyn Backend>> {
    Ok(match spec {
        BackendSpec::Local(_) => Arc::new(LocalBackend::new(home.clone())),
        BackendSpec::Slurm(hpc) | BackendSpec::Pbs(hpc) => match &hpc.submit_host {
            None => {
                Arc::new(HpcBackend::for_spec(spec, home.clone()).expect("a batch backend section"))
            }
            Some(login) => {
                let runner =
                    SshRunner::connect_to(login, &SshOptions::for_login_node(hpc.ssh.as_ref()))?;
                // Queue listings are filtered by the login node's user.
                let user = runner.target().user.clone();
                Arc::new(
                    HpcBackend::for_spec_with(spec, home.clone(), runner)
                        .expect("a batch backend section")
                        .with_user(Some(user)),
                )
            }
        },
        BackendSpec::Ssh(ssh) => Arc::new(SshBackend::new(ssh.clone())),
    })
}

/// The backend for a whole cluster spec: like [`backend_for`], and tells
/// backends that run remote helpers which python the cluster uses.
pub fn backend_for_spec(spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>> {
    match &spec.backend {
        BackendSpec::Ssh(ssh) => Ok(Arc::new(
            SshBackend::new(ssh.clone()).with_python(spec.worker.python.clone()),
        )),
        other => backend_for(other, home),
    }
}

/// Fills a spec's unset options from the machine's site configuration: for
/// `slurm`/`pbs`, an existing dask-jobqueue config (`jobqueue.slurm` /
/// `jobqueue.pbs` in the Dask config files). Explicit values win. Call it
/// before validating a spec built from user input.
pub fn apply_site_defaults(spec: &mut ClusterSpec) {
    muster_hpc::jobqueue::apply_from_environment(spec);
}

/// A handle for a new cluster from a spec, with state under the default home
/// (`$MUSTER_HOME`, else `$XDG_STATE_HOME/muster`, else
/// `~/.local/state/muster`). Nothing is launched until [`Cluster::up`].
pub fn cluster(spec: ClusterSpec) -> Result<ManagedCluster> {
    let home = Home::from_env()?;
    let mut spec = spec;
    apply_site_defaults(&mut spec);
    let backend = backend_for_spec(&spec, &home)?;
    ManagedCluster::new(spec, backend, home)
}

/// A handle for an existing cluster in the default home's registry.
pub fn open(name: &str) -> Result<ManagedCluster> {
    let home = Home::from_env()?;
    let record = home
        .load(name)?
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let backend = backend_for_spec(&record.spec, &home)?;
    ManagedCluster::open(name, backend, home)
}
