//! `SchedulerAccess`: how this process reaches a scheduler's HTTP API that
//! was published at some URL. Directly for most backends; through an SSH
//! tunnel via a login node (muster-ssh) for a batch cluster driven from
//! outside; later through a Kubernetes port-forward. It owns only the
//! mapping from a published URL to a usable one; the HTTP client itself is
//! [`crate::dask::SchedulerClient`].

use std::fmt::Debug;

use async_trait::async_trait;

use crate::dask::SchedulerClient;
use crate::error::Result;

/// A way to reach a scheduler's HTTP API.
#[async_trait]
pub trait SchedulerAccess: Send + Sync + Debug {
    /// A base URL this process can use for the API the scheduler published
    /// at `published` (e.g. `http://10.1.2.3:8787`). May open a tunnel; the
    /// same published URL maps to the same tunnel for this value's life.
    async fn http_url(&self, published: &str) -> Result<String>;
}

/// The published URL works from here as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

#[async_trait]
impl SchedulerAccess for Direct {
    async fn http_url(&self, published: &str) -> Result<String> {
        Ok(published.to_string())
    }
}

/// A client for the scheduler published at `published`, reached through
/// `access`; an `https://` one trusts exactly the CA in `ca_file` (the
/// cluster's).
pub async fn client(
    access: &dyn SchedulerAccess,
    published: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<SchedulerClient> {
    let url = access.http_url(published).await?;
    match ca_file {
        Some(path) if url.starts_with("https://") => {
            let pem = std::fs::read(path).map_err(|e| {
                crate::Error::io(format!("reading the cluster's CA {}", path.display()), e)
            })?;
            SchedulerClient::with_ca(&url, &pem)
        }
        None if url.starts_with("https://") => Err(crate::Error::Scheduler {
            url,
            message: "the scheduler speaks HTTPS but the cluster has no credentials here".into(),
            transient: false,
        }),
        _ => Ok(SchedulerClient::new(&url)),
    }
}
