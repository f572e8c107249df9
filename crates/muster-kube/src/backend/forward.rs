//! Reaching the scheduler through the API server when pod and Service IPs
//! are not routable from where muster runs: a [`SchedulerAccess`] that
//! listens on a loopback port and carries each connection to the scheduler
//! pod's port over a Kubernetes port-forward (kube's `portforward`, a
//! WebSocket to the API server). One listener per remote port, for this
//! value's life; dropping it closes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use muster_core::access::SchedulerAccess;
use muster_core::dask::{http_host_port, with_host_port};
use muster_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::client::kube_error;

/// `MUSTER_KUBE_PORT_FORWARD=1` forces the port-forward.
pub const FORCE_ENV: &str = "MUSTER_KUBE_PORT_FORWARD";

/// True when the environment forces the port-forward.
pub fn forced_by_env() -> bool {
    std::env::var(FORCE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Loopback listeners forwarding to ports of one pod.
pub struct PortForward {
    pods: Api<Pod>,
    pod: String,
    open: Mutex<BTreeMap<u16, (SocketAddr, JoinHandle<()>)>>,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForward")
            .field("pod", &self.pod)
            .finish()
    }
}

impl PortForward {
    /// Forwards to pod `pod` of `pods`' namespace.
    pub fn new(pods: Api<Pod>, pod: &str) -> Self {
        PortForward {
            pods,
            pod: pod.to_string(),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// The loopback address forwarding to the pod's `port` (opened on first use).
    pub async fn local(&self, port: u16) -> Result<SocketAddr> {
        let mut open = self.open.lock().await;
        if let Some((addr, task)) = open.get(&port)
            && !task.is_finished()
        {
            return Ok(*addr);
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::io("binding a loopback port for the port-forward", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("the port-forward's local address", e))?;
        let (pods, pod) = (self.pods.clone(), self.pod.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (pods, pod) = (pods.clone(), pod.clone());
                tokio::spawn(async move {
                    if let Err(e) = carry(&pods, &pod, port, &mut conn).await {
                        tracing::debug!("port-forward to {pod}:{port}: {e}");
                    }
                });
            }
        });
        tracing::debug!(pod = %self.pod, port, %addr, "port-forward listening");
        open.insert(port, (addr, task));
        Ok(addr)
    }
}

async fn carry(
    pods: &Api<Pod>,
    pod: &str,
    port: u16,
    conn: &mut tokio::net::TcpStream,
) -> Result<()> {
    let mut pf = pods
        .portforward(pod, &[port])
        .await
        .map_err(|e| kube_error(format!("port-forward to pod {pod}:{port}"), e))?;
    let mut upstream = pf
        .take_stream(port)
        .ok_or_else(|| Error::backend("kubernetes", "the port-forward gave no stream", true))?;
    let _ = tokio::io::copy_bidirectional(conn, &mut upstream).await;
    drop(upstream);
    let _ = pf.join().await;
    Ok(())
}

impl Drop for PortForward {
    fn drop(&mut self) {
        for (_, task) in self.open.get_mut().values() {
            task.abort();
        }
    }
}

#[async_trait]
impl SchedulerAccess for PortForward {
    async fn http_url(&self, published: &str) -> Result<String> {
        let (_, port) = http_host_port(published)
            .ok_or_else(|| Error::Usage(format!("not an http URL with a port: {published:?}")))?;
        let local = self.local(port).await?;
        with_host_port(published, "127.0.0.1", local.port())
            .ok_or_else(|| Error::Usage(format!("not an http URL: {published:?}")))
    }
}
