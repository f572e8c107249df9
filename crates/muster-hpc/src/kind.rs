//! The `slurm` and `pbs` kinds: how the kind table validates their options
//! and builds their backend, running the batch commands on this machine or,
//! with `submit_host`, on a login node over SSH (reaching the scheduler
//! through a tunnel via that node).

use std::sync::Arc;

use muster_core::backend::Backend;
use muster_core::kinds::BackendKind;
use muster_core::spec::{ClusterSpec, FieldError, SpecError};
use muster_core::{Home, Result};
use muster_ssh::{SshOptions, SshRunner};

use crate::HpcBackend;
use crate::hpcspec::{HpcKind, HpcSpec};

/// A batch scheduler kind.
#[derive(Debug, Clone, Copy)]
pub struct BatchKind(HpcKind);

/// `kind: slurm`.
pub static SLURM: BatchKind = BatchKind(HpcKind::Slurm);
/// `kind: pbs`.
pub static PBS: BatchKind = BatchKind(HpcKind::Pbs);

impl BackendKind for BatchKind {
    fn kind(&self) -> &'static str {
        match self.0 {
            HpcKind::Slurm => "slurm",
            HpcKind::Pbs => "pbs",
        }
    }

    fn validate(&self, spec: &ClusterSpec) -> Vec<FieldError> {
        HpcSpec::problems(self.0, spec)
    }

    fn build(&self, spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>> {
        let hpc = HpcSpec::of(spec).map_err(|e| SpecError::Invalid(vec![e]))?;
        Ok(match &hpc.submit_host {
            None => Arc::new(HpcBackend::for_spec(spec, home.clone())?),
            Some(login) => {
                let runner =
                    SshRunner::connect_to(login, &SshOptions::for_login_node(hpc.ssh.as_ref()))?;
                // Queue listings are filtered by the login node's user.
                let user = runner.target().user.clone();
                let access = Arc::new(runner.clone());
                Arc::new(
                    HpcBackend::for_spec_with(spec, home.clone(), runner, access)?
                        .with_user(Some(user)),
                )
            }
        })
    }
}

/// The problems of a `slurm` spec (for tests).
#[cfg(test)]
pub(crate) fn slurm_problems(spec: &ClusterSpec) -> Vec<FieldError> {
    let mut errs = spec.problems();
    errs.extend(SLURM.validate(spec));
    errs
}
