//! The HTTP client for a running scheduler: its `/api/v1` routes (workers,
//! adaptive target, idle check, retirement) and the per-worker load behind
//! choosing whom to retire. It speaks only HTTP to one scheduler; how that
//! scheduler is reached (a tunnel, a port-forward) is the caller's
//! `SchedulerAccess`, and it knows no backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HTTP_ROUTES_ENV;
use crate::error::{Error, Result};

/// A Dask worker as the scheduler knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's name (muster's job id, possibly with a process suffix).
    pub name: String,
    /// Its comm address.
    pub address: String,
}

/// A client for the scheduler's HTTP API.
#[derive(Debug, Clone)]
pub struct SchedulerClient {
    http: reqwest::Client,
    base: String,
}

impl SchedulerClient {
    /// A client for the scheduler whose dashboard is at `http_url`.
    pub fn new(http_url: &str) -> Self {
        let http = crate::tls::http_builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client always builds");
        SchedulerClient {
            http,
            base: http_url.trim_end_matches('/').to_string(),
        }
    }

    /// A client for the HTTPS API at `http_url` that trusts exactly the
    /// cluster's CA (`ca_pem`, no system roots) and checks that the server's
    /// certificate names [`crate::tls::SCHEDULER_NAME`], wherever the URL
    /// points (a tunnel's local end included). A plain `http://` URL gets a
    /// plain client.
    pub fn with_ca(http_url: &str, ca_pem: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Scheduler {
            url: http_url.to_string(),
            message: m,
            transient: false,
        };
        let mut url = reqwest::Url::parse(http_url).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "https" {
            return Ok(Self::new(http_url));
        }
        let addr = url
            .socket_addrs(|| None)
            .map_err(|e| bad(format!("resolving the scheduler's host: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| bad("the scheduler's host has no address".into()))?;
        url.set_host(Some(crate::tls::SCHEDULER_NAME))
            .map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| bad(format!("the cluster's CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("the cluster's CA file: {e}")))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = crate::tls::http_builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(config)
            .resolve(crate::tls::SCHEDULER_NAME, addr)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(SchedulerClient {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
        })
    }

    fn fail(&self, url: &str, e: impl std::fmt::Display, transient: bool) -> Error {
        Error::Scheduler {
            url: url.to_string(),
            message: e.to_string(),
            transient,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T> {
        tracing::debug!(%url, "scheduler api");
        let resp = req.send().await.map_err(|e| self.fail(url, e, true))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(self.fail(
                url,
                format!("404: the scheduler's API routes are off (set {HTTP_ROUTES_ENV})"),
                false,
            ));
        }
        if !status.is_success() {
            return Err(self.fail(url, format!("HTTP {status}"), status.is_server_error()));
        }
        resp.json().await.map_err(|e| self.fail(url, e, false))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// True when `/health` answers `ok`.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/health", self.base);
        match self.http.get(&url).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// The workers the scheduler knows.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        #[derive(Deserialize)]
        struct Raw {
            workers: Vec<RawWorker>,
        }
        #[derive(Deserialize)]
        struct RawWorker {
            name: serde_json::Value,
            address: String,
        }
        let raw: Raw = self.get("/api/v1/get_workers").await?;
        Ok(raw
            .workers
            .into_iter()
            .map(|w| WorkerInfo {
                name: value_to_name(&w.name),
                address: w.address,
            })
            .collect())
    }

    /// How many workers the scheduler would like (its adaptive target).
    pub async fn adaptive_target(&self) -> Result<u32> {
        #[derive(Deserialize)]
        struct Raw {
            workers: u32,
        }
        Ok(self.get::<Raw>("/api/v1/adaptive_target").await?.workers)
    }

    /// Since when (Unix seconds) the scheduler has been idle, if it is.
    pub async fn idle_since(&self) -> Result<Option<f64>> {
        #[derive(Deserialize)]
        struct Raw {
            idle_since: Option<f64>,
        }
        Ok(self.get::<Raw>("/api/v1/check_idle").await?.idle_since)
    }

    /// Retires the workers at these addresses: the scheduler moves their data
    /// to other workers and removes them before it answers. Returns the names
    /// of the workers it retired.
    pub async fn retire_workers(&self, addresses: &[String]) -> Result<Vec<String>> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        self.retire(serde_json::json!({ "workers": addresses }))
            .await
    }

    /// Posts to `/api/v1/retire_workers` and returns the retired workers' names.
    async fn retire(&self, body: serde_json::Value) -> Result<Vec<String>> {
        let url = format!("{}/api/v1/retire_workers", self.base);
        let raw: BTreeMap<String, serde_json::Value> =
            self.send(self.http.post(&url).json(&body), &url).await?;
        Ok(raw
            .values()
            .filter_map(|info| info.get("name").map(value_to_name))
            .collect())
    }
}

/// What retiring one Dask worker would cost, as its scheduler last heard
/// from it: tasks it has to run or is running, then the bytes it holds.
/// Ordered cheapest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkerLoad {
    /// Tasks executing, long-running, ready, constrained or waiting on it.
    pub busy: u64,
    /// Bytes of results it holds (Dask's managed memory).
    pub bytes: u64,
}

impl SchedulerClient {
    /// Every worker's [`WorkerLoad`], by address, from the scheduler's
    /// `/json/identity.json` (the workers' last heartbeat metrics). The
    /// `/api/v1` routes give no per-worker load, and `retire_workers` with
    /// `n` chooses among ALL workers: a caller that owns only some of them
    /// (one worker group) chooses its own from these.
    pub async fn worker_loads(&self) -> Result<BTreeMap<String, WorkerLoad>> {
        let raw: serde_json::Value = self.get("/json/identity.json").await?;
        let mut loads = BTreeMap::new();
        for (address, w) in raw["workers"].as_object().into_iter().flatten() {
            let counts = &w["metrics"]["task_counts"];
            let busy = [
                "executing",
                "long-running",
                "ready",
                "constrained",
                "waiting",
            ]
            .iter()
            .filter_map(|state| counts[*state].as_u64())
            .sum();
            let bytes = w["metrics"]["managed_bytes"].as_u64().unwrap_or(0);
            loads.insert(address.clone(), WorkerLoad { busy, bytes });
        }
        Ok(loads)
    }

    /// Asks the scheduler to choose `n` workers and retire them: it picks
    /// idle workers holding the least data and never one running a
    /// long-running task, moves their data elsewhere, and answers once they
    /// are removed. Returns the names of the workers it retired (possibly
    /// fewer than `n`).
    pub async fn retire_cheapest(&self, n: usize) -> Result<Vec<String>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.retire(serde_json::json!({ "n": n })).await
    }
}

fn value_to_name(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
