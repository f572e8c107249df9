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
/// `access`.
pub async fn client(access: &dyn SchedulerAccess, published: &str) -> Result<SchedulerClient> {
    Ok(SchedulerClient::new(&access.http_url(published).await?))
}
