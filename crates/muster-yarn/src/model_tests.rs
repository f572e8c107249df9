//! Parsers over answers recorded from Hadoop 3.4.2 (tests/fixtures/COMMANDS.txt).

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
    };
}

#[test]
fn stable_service() {
    let s = ServiceStatus::parse(fixture!("service_stable.json")).unwrap();
    assert_eq!(s.name, "muster-fixture");
    assert_eq!(s.state.as_deref(), Some("STABLE"));
    assert!(s.id.as_deref().unwrap().starts_with("application_"));
    assert_eq!(s.wanted_workers(), 2);
    assert_eq!(
        s.instances(),
        vec![
            ("scheduler-0".to_string(), JobStatus::Running),
            ("worker-0".to_string(), JobStatus::Running),
            ("worker-1".to_string(), JobStatus::Running),
        ]
    );
    assert_eq!(s.scheduler_host().as_deref(), Some("vm"));
    assert_eq!(s.instance_status("worker-2"), JobStatus::Unknown);
    assert_eq!(
        crate::service::tags_of_description(s.description.as_deref().unwrap()),
        vec!["rec".to_string()]
    );
}

#[test]
fn decommissioned_instance_is_finished_and_names_move_on() {
    let s = ServiceStatus::parse(fixture!("service_decommissioned.json")).unwrap();
    assert_eq!(
        s.decommissioned().into_iter().collect::<Vec<_>>(),
        ["worker-1"]
    );
    assert_eq!(s.worker_names(), ["worker-0", "worker-2"]);
    assert_eq!(s.instance_status("worker-1"), JobStatus::Finished);
    assert_eq!(s.instance_status("worker-2"), JobStatus::Running);
    // Every instance YARN reports is one muster predicts.
    for c in s.components.iter().flat_map(|c| &c.containers) {
        assert!(
            c.component_instance_name == "scheduler-0"
                || s.worker_names().contains(&c.component_instance_name),
            "{c:?}"
        );
    }
}

#[test]
fn starting_service_has_unready_scheduler_and_pending_workers() {
    let s = ServiceStatus::parse(fixture!("service_starting.json")).unwrap();
    assert_eq!(s.scheduler_host(), None, "not READY yet: no address");
    assert_eq!(s.instance_status("scheduler-0"), JobStatus::Running);
    assert_eq!(s.instance_status("worker-0"), JobStatus::Pending);
}

#[test]
fn accepted_service_has_no_components_yet() {
    let s = ServiceStatus::parse(fixture!("service_accepted_get.json")).unwrap();
    assert_eq!(s.state.as_deref(), Some("ACCEPTED"));
    assert!(s.components.is_empty());
    assert_eq!(s.instance_status("scheduler-0"), JobStatus::Pending);
    assert_eq!(s.instance_status("worker-0"), JobStatus::Pending);
}

#[test]
fn stopped_service_ends_everything() {
    let s = ServiceStatus::parse(fixture!("service_stopped.json")).unwrap();
    assert!(s.is_stopped());
    assert_eq!(s.instance_status("scheduler-0"), JobStatus::Finished);
}

#[test]
fn diagnostics_and_refusals() {
    let nf: Diagnostics = serde_json::from_str(fixture!("service_not_found.json")).unwrap();
    assert_eq!(nf.code, Some(404004));
    for (file, field) in [
        (fixture!("post_closed_queue.json"), "backend.queue"),
        (fixture!("post_too_big.json"), "worker.memory"),
        (fixture!("post_exists.json"), "name"),
        (fixture!("post_bad_name.json"), "name"),
        (
            fixture!("post_missing_credentials.json"),
            "scheduler.security",
        ),
    ] {
        let d: Diagnostics = serde_json::from_str(file).unwrap();
        assert_eq!(
            refused_field(&d.diagnostics),
            Some(field),
            "{}",
            d.diagnostics
        );
    }
    assert_eq!(
        refused_field(
            "Component scheduler: specified memory size (999999) is larger than configured max container memory size (16384)"
        ),
        Some("backend.scheduler_memory")
    );
    let ok: Diagnostics = serde_json::from_str(fixture!("post_accepted.json")).unwrap();
    assert!(ok.diagnostics.contains("application_"));
}

#[test]
fn definition_read_mid_rewrite() {
    for file in [
        fixture!("service_get_mid_flex_empty.json"),
        fixture!("service_get_mid_flex_truncated.json"),
    ] {
        let d: Diagnostics = serde_json::from_str(file).unwrap();
        assert!(read_mid_rewrite(&d.diagnostics), "{}", d.diagnostics);
    }
    // Real refusals and a missing service are not that race.
    for file in [
        fixture!("post_closed_queue.json"),
        fixture!("post_exists.json"),
        fixture!("service_not_found.json"),
    ] {
        let d: Diagnostics = serde_json::from_str(file).unwrap();
        assert!(!read_mid_rewrite(&d.diagnostics), "{}", d.diagnostics);
    }
}

#[test]
fn apps_lists() {
    let apps = parse_apps(fixture!("apps_yarn_service.json")).unwrap();
    let app = apps.iter().find(|a| a.name == "muster-fixture").unwrap();
    assert_eq!(app.state, "RUNNING");
    assert_eq!(app.application_type, "yarn-service");
    assert!(parse_apps(fixture!("apps_none.json")).unwrap().is_empty());
    assert!(parse_apps(r#"{"apps":null}"#).unwrap().is_empty());
    let finished = parse_app(fixture!("app_finished.json")).unwrap();
    assert_eq!(finished.state, "FINISHED");
}

#[test]
fn attempts_and_their_containers() {
    let ids = parse_attempt_ids(fixture!("app_attempts.json")).unwrap();
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("appattempt_"));
    let cs = parse_attempt_containers(fixture!("attempt_containers.json")).unwrap();
    assert!(cs.len() >= 3, "{cs:?}");
    assert!(cs.iter().all(|c| c.container_state == "RUNNING"));
    assert_eq!(node_url(&cs[0].node_http_address), "http://localhost:23042");
    assert_eq!(node_url("localhost:23042"), "http://localhost:23042");
    // A lone container comes as an object, not a list of one.
    let one = parse_attempt_containers(fixture!("attempt_one_container.json")).unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(one[0].container_id.ends_with("_000001"), "{one:?}");
    assert_eq!(
        node_url(&one[0].node_http_address),
        "http://localhost:23042"
    );
}

#[test]
fn node_containers_and_logs() {
    let c = parse_node_container(fixture!("nm_container.json")).unwrap();
    assert_eq!(c.state, "RUNNING");
    assert!(!c.is_done());
    assert!(c.container_log_files.contains(&"stderr.txt".to_string()));
    let gone = parse_node_container(fixture!("nm_container_gone.json")).unwrap();
    assert!(gone.is_done());
    assert!(gone.diagnostics.contains("killed"));
    let text = strip_log_banner(fixture!("nm_container_stdout.txt"));
    assert_eq!(text, "worker of vm\n");
    assert_eq!(strip_log_banner("plain"), "plain");
}
