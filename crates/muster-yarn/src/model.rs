//! The answers of the ResourceManager (Services API and cluster REST API)
//! and of the NodeManager's REST API, as typed values, and the pure
//! functions that read muster's view out of them (instance states, the
//! scheduler's address, what a refusal was about). Tested on answers
//! recorded from a real Hadoop 3.4.2 (`tests/fixtures/`, see COMMANDS.txt
//! there and `tests/services/yarn/record-fixtures.sh`). No I/O here.

use std::collections::BTreeSet;

use muster_core::JobStatus;
use serde::Deserialize;

use crate::service::{SCHEDULER, SCHEDULER_INSTANCE, WORKER, worker_instances};

/// `GET /app/v1/services/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Its YARN application id, once submitted.
    pub id: Option<String>,
    /// `ACCEPTED`, `STARTED`, `STABLE`, `FLEX`, `STOPPED`, `FAILED`, ...
    pub state: Option<String>,
    /// What muster wrote (marker and tags).
    pub description: Option<String>,
    /// The queue, when the answer names it.
    pub queue: Option<String>,
    /// The components (empty until the service's master runs).
    pub components: Vec<ComponentStatus>,
}

/// One component in a service status.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ComponentStatus {
    /// `scheduler` or `worker`.
    pub name: String,
    /// `FLEXING`, `STABLE`, ...
    pub state: Option<String>,
    /// Containers wanted.
    pub number_of_containers: Option<u64>,
    /// Instances removed on purpose (never reused).
    pub decommissioned_instances: Vec<String>,
    /// Containers allocated now.
    pub containers: Vec<ContainerStatus>,
    /// The command, as submitted.
    pub launch_command: Option<String>,
}

/// One container of a component.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    /// The YARN container id.
    pub id: String,
    /// `scheduler-0`, `worker-3`.
    pub component_instance_name: String,
    /// `RUNNING_BUT_UNREADY`, `READY`, `STOPPED`, ...
    pub state: Option<String>,
    /// The host as the NodeManager reports it (what `${X_HOST}` becomes).
    pub hostname: Option<String>,
    /// The container's IP.
    pub ip: Option<String>,
    /// The NodeManager's host name.
    pub bare_host: Option<String>,
}

/// `{"diagnostics": "..."}`, the Services API's answer to changes and errors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Diagnostics {
    /// The message.
    pub diagnostics: String,
    /// A finer code on some errors (404004: no such service).
    pub code: Option<i64>,
}

/// True when a ResourceManager's diagnostics say it read a service's
/// definition file while that file was being rewritten: Hadoop 3.4.2's
/// `GET /app/v1/services/NAME` answers 500 with Jackson's "No content to map
/// due to end-of-input" (the file empty) or "Unexpected end-of-input in ..."
/// (cut short) when a flex or decommission of the same service rewrites it
/// at that moment (recorded in tests/fixtures/COMMANDS.txt; 152 of ~640
/// reads failed so while a component was flexed every 0.3 s). Reading again
/// a moment later succeeds: it is a race, not a fault.
pub fn read_mid_rewrite(diagnostics: &str) -> bool {
    diagnostics.contains("end-of-input")
}

/// One application in `GET /ws/v1/cluster/apps`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct App {
    /// `application_..._0007`.
    pub id: String,
    /// The application's name (a service's name).
    pub name: String,
    /// Who submitted it.
    pub user: String,
    /// `NEW`, `ACCEPTED`, `RUNNING`, `FINISHED`, `FAILED`, `KILLED`.
    pub state: String,
    /// `yarn-service` for services.
    pub application_type: String,
    /// The RM's diagnostics.
    pub diagnostics: String,
}

#[derive(Deserialize)]
struct AppsEnvelope {
    apps: Option<AppsInner>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AppsInner {
    app: Vec<App>,
}

/// Reads `GET /ws/v1/cluster/apps` (`{"apps":{}}` or `{"apps":null}` when empty).
pub fn parse_apps(body: &str) -> serde_json::Result<Vec<App>> {
    let env: AppsEnvelope = serde_json::from_str(body)?;
    Ok(env.apps.map(|a| a.app).unwrap_or_default())
}

/// Reads `GET /ws/v1/cluster/apps/{id}`.
pub fn parse_app(body: &str) -> serde_json::Result<App> {
    #[derive(Deserialize)]
    struct One {
        app: App,
    }
    Ok(serde_json::from_str::<One>(body)?.app)
}

/// One container of an application attempt
/// (`GET /ws/v1/cluster/apps/{app}/appattempts/{attempt}/containers`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AttemptContainer {
    /// The container id.
    pub container_id: String,
    /// The NodeManager's web address (`http://host:8042` or `host:8042`).
    pub node_http_address: String,
    /// `RUNNING`, `COMPLETE`, ...
    pub container_state: String,
}

/// Reads the ids of an application's attempts, oldest first.
pub fn parse_attempt_ids(body: &str) -> serde_json::Result<Vec<String>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Attempts {
        app_attempts: AttemptList,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct AttemptList {
        app_attempt: Vec<Attempt>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Attempt {
        app_attempt_id: String,
    }
    let a: Attempts = serde_json::from_str(body)?;
    Ok(a.app_attempts
        .app_attempt
        .into_iter()
        .map(|a| a.app_attempt_id)
        .collect())
}

/// Reads an attempt's containers. The RM (3.4.2) writes a list, but a lone
/// container as an object of its own (`attempt_one_container.json`).
pub fn parse_attempt_containers(body: &str) -> serde_json::Result<Vec<AttemptContainer>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<AttemptContainer>),
        One(AttemptContainer),
    }
    #[derive(Deserialize)]
    struct List {
        container: Option<OneOrMany>,
    }
    Ok(
        match serde_json::from_str::<Option<List>>(body)?.and_then(|l| l.container) {
            Some(OneOrMany::Many(v)) => v,
            Some(OneOrMany::One(c)) => vec![c],
            None => Vec::new(),
        },
    )
}

/// `GET {nm}/ws/v1/node/containers/{id}`: the container's state on its node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeContainer {
    /// The container id.
    pub id: String,
    /// `NEW`, `LOCALIZING`, `RUNNING`, `EXITED_WITH_SUCCESS`, `DONE`, ...
    pub state: String,
    /// Its exit code (-1000 while running).
    pub exit_code: i64,
    /// Why it ended.
    pub diagnostics: String,
    /// Its log files.
    pub container_log_files: Vec<String>,
}

impl NodeContainer {
    /// True once no process of the container can be left (the NodeManager
    /// has cleaned it up).
    pub fn is_done(&self) -> bool {
        self.state == "DONE"
    }
}

/// Reads `GET {nm}/ws/v1/node/containers/{id}`.
pub fn parse_node_container(body: &str) -> serde_json::Result<NodeContainer> {
    #[derive(Deserialize)]
    struct One {
        container: NodeContainer,
    }
    Ok(serde_json::from_str::<One>(body)?.container)
}

/// The text of a log file as `GET {nm}/ws/v1/node/containers/{id}/logs/{file}`
/// returns it, without the NodeManager's banner (`Container: ...`,
/// `LogType:`, ..., `LogContents:` before, `End of LogType:...` after).
pub fn strip_log_banner(body: &str) -> &str {
    let start = body
        .find("LogContents:\n")
        .map(|i| i + "LogContents:\n".len())
        .unwrap_or(0);
    let rest = &body[start..];
    let end = rest.rfind("End of LogType:").unwrap_or(rest.len());
    &rest[..end]
}

/// The NodeManager's base URL from an address the RM reports
/// (`localhost:8042` or `http://localhost:8042`).
pub fn node_url(http_address: &str) -> String {
    if http_address.contains("://") {
        http_address.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", http_address.trim_end_matches('/'))
    }
}

impl ServiceStatus {
    /// Reads a service status.
    pub fn parse(body: &str) -> serde_json::Result<Self> {
        serde_json::from_str(body)
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentStatus> {
        self.components.iter().find(|c| c.name == name)
    }

    /// True when the service has ended or is being torn down.
    pub fn is_stopped(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some("STOPPED" | "FAILED" | "SUCCEEDED")
        )
    }

    /// Names removed from the worker component on purpose.
    pub fn decommissioned(&self) -> BTreeSet<String> {
        self.component(WORKER)
            .map(|c| c.decommissioned_instances.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many worker containers the service wants now (0 before its
    /// master has read the spec).
    pub fn wanted_workers(&self) -> u64 {
        self.component(WORKER)
            .and_then(|c| c.number_of_containers)
            .unwrap_or(0)
    }

    /// The worker instances the service keeps (allocated or not yet).
    pub fn worker_names(&self) -> Vec<String> {
        worker_instances(self.wanted_workers(), &self.decommissioned())
    }

    /// The container that runs `instance` now, if one is allocated.
    pub fn container(&self, instance: &str) -> Option<&ContainerStatus> {
        self.components
            .iter()
            .flat_map(|c| &c.containers)
            .find(|c| c.component_instance_name == instance)
    }

    /// muster's state of one instance (`scheduler-0` or `worker-N`):
    /// a kept instance without a container yet is Pending; one with a
    /// container is Running (YARN relaunches a container that exits); a
    /// decommissioned one, or any once the service stopped, is Finished; a
    /// name the service never had is Unknown.
    pub fn instance_status(&self, instance: &str) -> JobStatus {
        if self.is_stopped() {
            return match self.state.as_deref() {
                Some("FAILED") => JobStatus::Failed {
                    reason: "the YARN service failed".into(),
                },
                _ => JobStatus::Finished,
            };
        }
        let kept = if instance == SCHEDULER_INSTANCE {
            true
        } else if self.decommissioned().contains(instance) {
            return JobStatus::Finished;
        } else if self.components.is_empty() {
            // Accepted, its master not running yet: everything is to come.
            return JobStatus::Pending;
        } else {
            self.worker_names().iter().any(|n| n == instance)
        };
        if !kept {
            return JobStatus::Unknown;
        }
        match self.container(instance) {
            Some(_) => JobStatus::Running,
            None => JobStatus::Pending,
        }
    }

    /// Every instance the service keeps, with its state: the scheduler, then
    /// the workers in number order.
    pub fn instances(&self) -> Vec<(String, JobStatus)> {
        let mut out = vec![(
            SCHEDULER_INSTANCE.to_string(),
            self.instance_status(SCHEDULER_INSTANCE),
        )];
        for name in self.worker_names() {
            let st = self.instance_status(&name);
            out.push((name, st));
        }
        out
    }

    /// Where the scheduler's container runs, once it is READY (its port
    /// open): the host the NodeManager reports (the same name the workers
    /// were given), else its IP.
    pub fn scheduler_host(&self) -> Option<String> {
        let c = self
            .component(SCHEDULER)?
            .containers
            .iter()
            .find(|c| c.state.as_deref() == Some("READY"))?;
        c.hostname
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| c.ip.clone().filter(|i| !i.is_empty()))
    }
}

/// What a refused submission was about, as a spec field, from the Services
/// API's diagnostics (Hadoop 3.4.2's wording; see the `post_*` fixtures).
pub fn refused_field(diagnostics: &str) -> Option<&'static str> {
    let d = diagnostics.to_ascii_lowercase();
    let component = if d.starts_with("component worker") {
        Some(WORKER)
    } else if d.starts_with("component scheduler") {
        Some(SCHEDULER)
    } else {
        None
    };
    if d.contains("queue") {
        Some("backend.queue")
    } else if d.contains("memory") {
        match component {
            Some(SCHEDULER) => Some("backend.scheduler_memory"),
            _ => Some("worker.memory"),
        }
    } else if d.contains("vcore") || d.contains("cpu") {
        match component {
            Some(SCHEDULER) => Some("backend.scheduler_cores"),
            _ => Some("worker.cores"),
        }
    } else if d.contains("already taken") || d.contains("invalid format") {
        Some("name")
    } else if d.contains("artifact") || d.contains("tarball") {
        Some("backend.archive")
    } else if d.contains("does not exist") && d.contains("/tls/") && d.contains(".pem") {
        // The TLS credentials YARN localises (service.rs): it cannot read
        // them where muster wrote them (`post_missing_credentials.json`).
        Some("scheduler.security")
    } else {
        None
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
