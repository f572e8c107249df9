//! A typed client of the ResourceManager's REST APIs (the Services API under
//! `/app/v1` and the cluster API under `/ws/v1/cluster`) and of the
//! NodeManagers' (`/ws/v1/node`), under simple authentication (`user.name`
//! on every request). With several ResourceManagers (HA) it tries each in
//! turn and keeps talking to the one that answered. Thin I/O: what the
//! answers mean is read by [`crate::model`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::error::{YarnError, excerpt};
use crate::model::{self, App, AttemptContainer, Diagnostics, NodeContainer, ServiceStatus};
use crate::service::ServiceSpec;

/// How many times a service is read while its reads fail transiently, and
/// the pause between reads.
const REREADS: u32 = 5;
const REREAD_PAUSE: Duration = Duration::from_millis(200);

/// A ResourceManager (or HA list of them) and the user the calls act as.
#[derive(Debug)]
pub struct YarnClient {
    http: reqwest::Client,
    rms: Vec<String>,
    active: AtomicUsize,
    user: String,
}

/// An HTTP answer: status and body.
struct Answer {
    status: StatusCode,
    body: String,
    url: String,
}

impl YarnClient {
    /// A client of the ResourceManagers at `urls` (tried in order) acting
    /// as `user`.
    pub fn new(urls: &[&str], user: &str) -> Self {
        let http = muster_core::tls::http_builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain HTTP client always builds");
        YarnClient {
            http,
            rms: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            active: AtomicUsize::new(0),
            user: user.to_string(),
        }
    }

    /// The user the calls act as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The ResourceManager that answered last.
    pub fn active_rm(&self) -> &str {
        if self.rms.is_empty() {
            return "";
        }
        &self.rms[self.active.load(Ordering::Relaxed) % self.rms.len()]
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, reqwest::Error> {
        tracing::debug!(%method, %url, body = body.map(|b| b.to_string()), "yarn rest");
        let mut full = reqwest::Url::parse(url).expect("validated ResourceManager URLs");
        full.query_pairs_mut().append_pair("user.name", &self.user);
        let mut req = self.http.request(method.clone(), full);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        tracing::debug!(%url, status = status.as_u16(), "yarn rest answer");
        Ok(Answer {
            status,
            body,
            url: url.to_string(),
        })
    }

    /// One call to the RM, trying each HA address from the one that answered
    /// last; a 503 (a standby, or the RM still starting) moves on too.
    async fn rm(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, YarnError> {
        let n = self.rms.len();
        if n == 0 {
            return Err(YarnError::Refused {
                what: format!("{method} {path}"),
                field: Some("backend.resource_manager"),
                message: "no ResourceManager address is configured (give -f with the spec's backend section)".into(),
            });
        }
        let first = self.active.load(Ordering::Relaxed) % n;
        let mut last_err = None;
        let mut last_503 = None;
        for k in 0..n {
            let i = (first + k) % n;
            let url = format!("{}{path}", self.rms[i]);
            match self.send(&method, &url, body).await {
                Ok(a) if a.status == StatusCode::SERVICE_UNAVAILABLE => last_503 = Some(a),
                Ok(a) => {
                    self.active.store(i, Ordering::Relaxed);
                    return Ok(a);
                }
                Err(e) => {
                    tracing::debug!(%url, error = %e, "ResourceManager did not answer");
                    last_err = Some(e);
                }
            }
        }
        if let Some(a) = last_503 {
            return Err(http_error(&method, &a));
        }
        Err(YarnError::Unreachable {
            tried: self.rms.clone(),
            source: last_err.expect("at least one ResourceManager was tried"),
        })
    }

    async fn node(&self, base: &str, path: &str) -> Result<Answer, YarnError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        self.send(&Method::GET, &url, None)
            .await
            .map_err(|source| YarnError::Unreachable {
                tried: vec![base.to_string()],
                source,
            })
    }

    /// The ResourceManager's version (`/ws/v1/cluster/info`): a cheap check
    /// that it answers and accepts the user.
    pub async fn rm_version(&self) -> Result<String, YarnError> {
        let a = self.rm(Method::GET, "/ws/v1/cluster/info", None).await?;
        ensure_ok(&Method::GET, &a)?;
        let v: serde_json::Value = parse(&a)?;
        Ok(v["clusterInfo"]["resourceManagerVersion"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }

    /// The service's status, or `None` when the RM knows no such service.
    /// A read that failed transiently (the definition met mid-rewrite by a
    /// concurrent flex, [`model::read_mid_rewrite`]) is made again, a few
    /// times: `get` is one call, with no next round to retry it.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceStatus>, YarnError> {
        let path = format!("/app/v1/services/{name}");
        let mut tries = 1;
        let a = loop {
            let a = self.rm(Method::GET, &path, None).await?;
            if a.status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if a.status.is_success() {
                break a;
            }
            let err = http_error(&Method::GET, &a);
            if tries >= REREADS || !err.is_transient() {
                return Err(err);
            }
            tracing::debug!(service = name, tries, "{err}; reading again");
            tries += 1;
            tokio::time::sleep(REREAD_PAUSE).await;
        };
        ServiceStatus::parse(&a.body)
            .map(Some)
            .map_err(|source| unexpected(&a, source))
    }

    /// Submits a service; YARN's refusal (name taken, queue stopped, a
    /// container larger than any node) comes back as [`YarnError::Refused`]
    /// naming the spec field.
    pub async fn create_service(&self, spec: &ServiceSpec) -> Result<(), YarnError> {
        let body = to_value(spec);
        let a = self
            .rm(Method::POST, "/app/v1/services", Some(&body))
            .await?;
        self.changed(Method::POST, a, &format!("service {}", spec.name))
    }

    /// Sets the number of containers of a component.
    pub async fn flex(&self, service: &str, component: &str, count: u64) -> Result<(), YarnError> {
        let body = crate::service::flex_body(count);
        let path = format!("/app/v1/services/{service}/components/{component}");
        let a = self.rm(Method::PUT, &path, Some(&body)).await?;
        self.changed(
            Method::PUT,
            a,
            &format!("flexing {service}/{component} to {count}"),
        )
    }

    /// Removes exactly these worker instances.
    pub async fn decommission(&self, service: &str, instances: &[String]) -> Result<(), YarnError> {
        let body = crate::service::decommission_body(service, instances);
        let path = format!("/app/v1/services/{service}");
        let a = self.rm(Method::PUT, &path, Some(&body)).await?;
        self.changed(
            Method::PUT,
            a,
            &format!("decommissioning {} of {service}", instances.join(", ")),
        )
    }

    /// Stops and deletes a service (its containers, its registry entry,
    /// its files). Returns false when there was no such service.
    pub async fn destroy(&self, service: &str) -> Result<bool, YarnError> {
        let path = format!("/app/v1/services/{service}");
        let a = self.rm(Method::DELETE, &path, None).await?;
        if a.status == StatusCode::NOT_FOUND
            || (a.status == StatusCode::BAD_REQUEST && a.body.contains("doesn't exist"))
        {
            return Ok(false);
        }
        self.changed(Method::DELETE, a, &format!("destroying {service}"))?;
        Ok(true)
    }

    /// Applications of a type in some states.
    pub async fn apps(&self, app_type: &str, states: &str) -> Result<Vec<App>, YarnError> {
        let path = format!("/ws/v1/cluster/apps?applicationTypes={app_type}&states={states}");
        let a = self.rm(Method::GET, &path, None).await?;
        ensure_ok(&Method::GET, &a)?;
        model::parse_apps(&a.body).map_err(|source| unexpected(&a, source))
    }

    /// Every container of every attempt of an application the RM still
    /// lists (the running ones).
    pub async fn app_containers(&self, app_id: &str) -> Result<Vec<AttemptContainer>, YarnError> {
        let a = self
            .rm(
                Method::GET,
                &format!("/ws/v1/cluster/apps/{app_id}/appattempts"),
                None,
            )
            .await?;
        ensure_ok(&Method::GET, &a)?;
        let attempts = model::parse_attempt_ids(&a.body).map_err(|s| unexpected(&a, s))?;
        let mut out = Vec::new();
        for attempt in attempts {
            let path = format!("/ws/v1/cluster/apps/{app_id}/appattempts/{attempt}/containers");
            let a = self.rm(Method::GET, &path, None).await?;
            if a.status == StatusCode::NOT_FOUND {
                continue;
            }
            ensure_ok(&Method::GET, &a)?;
            for c in model::parse_attempt_containers(&a.body).map_err(|s| unexpected(&a, s))? {
                if !out
                    .iter()
                    .any(|o: &AttemptContainer| o.container_id == c.container_id)
                {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// A container's state on its NodeManager; `None` when the node no
    /// longer knows it.
    pub async fn node_container(
        &self,
        node: &str,
        container: &str,
    ) -> Result<Option<NodeContainer>, YarnError> {
        let a = self
            .node(node, &format!("/ws/v1/node/containers/{container}"))
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure_ok(&Method::GET, &a)?;
        model::parse_node_container(&a.body)
            .map(Some)
            .map_err(|s| unexpected(&a, s))
    }

    /// One log file of a container, without the NodeManager's banner.
    pub async fn node_log(
        &self,
        node: &str,
        container: &str,
        file: &str,
    ) -> Result<String, YarnError> {
        let a = self
            .node(
                node,
                &format!("/ws/v1/node/containers/{container}/logs/{file}"),
            )
            .await?;
        ensure_ok(&Method::GET, &a)?;
        Ok(model::strip_log_banner(&a.body).to_string())
    }

    /// Reads the answer to a change: success, YARN's refusal (with its
    /// diagnostics), or an HTTP error without any.
    fn changed(&self, method: Method, a: Answer, what: &str) -> Result<(), YarnError> {
        if a.status.is_success() {
            return Ok(());
        }
        let d: Diagnostics = serde_json::from_str(&a.body).unwrap_or_default();
        if d.diagnostics.is_empty() || a.status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(http_error(&method, &a));
        }
        Err(YarnError::Refused {
            what: what.to_string(),
            field: model::refused_field(&d.diagnostics),
            message: d.diagnostics,
        })
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("request bodies always serialise")
}

fn ensure_ok(method: &Method, a: &Answer) -> Result<(), YarnError> {
    if a.status.is_success() {
        Ok(())
    } else {
        Err(http_error(method, a))
    }
}

fn http_error(method: &Method, a: &Answer) -> YarnError {
    let message = serde_json::from_str::<Diagnostics>(&a.body)
        .ok()
        .map(|d| d.diagnostics)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| excerpt(&a.body, 300));
    YarnError::Http {
        method: method_name(method),
        url: a.url.clone(),
        status: a.status.as_u16(),
        message,
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}

fn parse<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, YarnError> {
    serde_json::from_str(&a.body).map_err(|source| unexpected(a, source))
}

fn unexpected(a: &Answer, source: serde_json::Error) -> YarnError {
    YarnError::UnexpectedAnswer {
        url: a.url.clone(),
        body: excerpt(&a.body, 300),
        source,
    }
}
