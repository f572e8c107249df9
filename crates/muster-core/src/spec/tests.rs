//! Tests of reading and validating specs.

use super::*;

const FULL: &str = r#"
name: demo
backend: {kind: local}
scheduler: {host: 127.0.0.1, port: 0, dashboard_port: 0}
worker: {cores: 2, memory: 2GiB, processes: 1, python: python3, env: {}, extra_args: []}
workers: 2
adapt: {minimum: 0, maximum: 8}
"#;

fn problems(yaml: &str) -> Vec<String> {
    match ClusterSpec::from_yaml(yaml, None).and_then(|s| s.validate().map(|_| s)) {
        Ok(_) => vec![],
        Err(SpecError::Invalid(errs)) => errs.into_iter().map(|e| e.field).collect(),
        Err(e @ SpecError::Parse { .. }) => vec![e.to_string()],
    }
}

#[test]
fn the_documented_example_is_valid() {
    let spec = ClusterSpec::from_yaml(FULL, None).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.worker.memory, Some(Memory(2 << 30)));
    assert_eq!(spec.workers, 2);
    assert_eq!(spec.adapt.as_ref().unwrap().maximum, 8);
}

#[test]
fn a_minimal_spec_gets_defaults() {
    let spec = ClusterSpec::from_yaml("name: x", None).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.backend, BackendSpec::of_kind("local"));
    assert_eq!(spec.worker.python, "python3");
    assert_eq!(spec.worker.death_timeout, Seconds::from_secs(60));
    assert!(spec.worker.nanny);
}

#[test]
fn the_yaml_form_round_trips() {
    let spec = ClusterSpec::from_yaml(FULL, None).unwrap();
    let again = ClusterSpec::from_yaml(&spec.to_yaml(), None).unwrap();
    assert_eq!(spec, again);
}

#[test]
fn names_must_be_dns_labels() {
    for good in ["a", "demo", "demo-2", "0abc", &"a".repeat(63)] {
        assert_eq!(check_name(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "Demo",
        "-x",
        "x-",
        "a_b",
        "a.b",
        "a b",
        "$(id)",
        "`id`",
        "x\ny",
        &"a".repeat(64),
        "../etc",
    ] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn unknown_fields_and_kinds_are_named() {
    assert_eq!(problems("name: x\nworker: {coress: 2}"), ["worker.coress"]);
    assert_eq!(problems("name: x\nbogus: 1"), ["bogus"]);
    let msg = problems("name: x\nworker: {memory: 2XB}").join("");
    assert!(
        msg.contains("worker.memory: ") && msg.contains("XB"),
        "{msg}"
    );
    let msg = problems("name: x\nadapt: {maximum: 2, interval: soon}").join("");
    assert!(msg.contains("adapt.interval: "), "{msg}");
    // The backend's own keys are its crate's to check (see kinds.rs).
    let spec =
        ClusterSpec::from_yaml("name: x\nbackend: {kind: mainframe, bogus: 1}", None).unwrap();
    assert_eq!(spec.backend.kind(), "mainframe");
    assert_eq!(spec.backend.options["bogus"], 1);
    let msg = problems("name: x\nbackend: {queue: q}").join("");
    assert!(msg.contains("backend: missing field `kind`"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = r#"
name: Bad_Name
scheduler: {host: "evil host;", port: 8786, dashboard_port: 8786}
worker: {cores: 0, processes: 3, python: "", memory: 1MiB, death_timeout: 0,
         env: {"BAD-KEY": x, MUSTER_CLUSTER: y}, extra_args: ["ok", "line\nbreak"],
         interface: "eth0; reboot"}
workers: 20000
adapt: {minimum: 9, maximum: 0}
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "name",
            "scheduler.host",
            "scheduler.dashboard_port",
            "worker.cores",
            "worker.processes",
            "worker.memory",
            "worker.python",
            "worker.env.BAD-KEY",
            "worker.env.MUSTER_CLUSTER",
            "worker.extra_args[1]",
            "worker.death_timeout",
            "worker.interface",
            "workers",
            "adapt.maximum",
            "adapt.minimum",
        ]
    );
}

#[test]
fn adapt_settings_have_defaults_and_are_checked_by_name() {
    let spec = ClusterSpec::from_yaml("name: x\nadapt: {maximum: 4}", None).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.adapt, Some(AdaptSpec::new(0, 4)));
    let spec = ClusterSpec::from_yaml(
        "name: x\nadapt: {maximum: 4, interval: 500ms, scale_down_wait: 2s, idle_timeout: 10m}",
        None,
    )
    .unwrap();
    spec.validate().unwrap();
    let a = spec.adapt.unwrap();
    assert_eq!(a.interval.duration().as_millis(), 500);
    assert_eq!(a.idle_timeout, Some(Seconds::from_secs(600)));
    let yaml = r#"
name: x
adapt: {minimum: 1, maximum: 4, interval: 10ms, scale_down_wait: 2d, cooldown: 3d,
        max_pending: 0, idle_timeout: 0, max_launch_failures: 0}
"#;
    assert_eq!(
        problems(yaml),
        vec![
            "adapt.interval",
            "adapt.scale_down_wait",
            "adapt.cooldown",
            "adapt.max_pending",
            "adapt.idle_timeout",
            "adapt.max_launch_failures",
        ]
    );
    let msg = problems("name: x\nadapt: {maximum: 4, wait: 3}").join("");
    assert!(msg.contains("wait"), "{msg}");
}

#[test]
fn hostile_but_harmless_strings_are_accepted_for_quoting() {
    // Shell metacharacters in values are legal: they are passed as argv
    // elements or quoted, never interpreted.
    let yaml = r#"
name: x
worker:
  env: {NOTE: "$(touch /tmp/pwned) `id` 'quoted' \"dq\""}
  extra_args: ["--resources", "GPU=1; rm -rf /"]
"#;
    assert_eq!(problems(yaml), Vec::<String>::new());
}

#[test]
fn per_process_shares() {
    let spec = ClusterSpec::from_yaml(
        "name: x\nworker: {cores: 8, processes: 4, memory: 8GiB}",
        None,
    )
    .unwrap();
    assert_eq!(spec.worker.threads_per_process(), 2);
    assert_eq!(spec.worker.memory_per_process(), Some(Memory(2 << 30)));
}

#[test]
fn every_unknown_key_is_reported_with_the_bad_values() {
    let yaml = r#"
name: x
wrokers: 2
worker: {coress: 2, cores: 0, env: {A: b}}
scheduler: {prot: 1}
adapt: {minimum: 3, maximum: 1, intreval: 5s}
"#;
    let spec = ClusterSpec::from_yaml(yaml, Some("bad.yaml")).unwrap();
    assert_eq!(
        spec.unknown_fields,
        [
            "wrokers",
            "worker.coress",
            "scheduler.prot",
            "adapt.intreval"
        ]
    );
    insta::assert_snapshot!(spec.validate().unwrap_err().to_string());
}

#[test]
fn a_value_that_cannot_be_read_is_named_with_the_unknown_keys_before_it() {
    let yaml = "name: x\nbogus: 1\nworker: {extra: 1, cores: many}\n";
    let err = ClusterSpec::from_yaml(yaml, Some("bad.yaml")).unwrap_err();
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn extra_args_repeating_musters_own_flags_are_refused_with_the_field_to_use() {
    let yaml = r#"
name: x
scheduler: {extra_args: ["--port", "9000", "--idle-timeout", "1h", "--dashboard-address=:1"]}
worker: {extra_args: ["--resources", "GPU=1", "--nworkers", "4", "--memory-limit=2GB",
                      "--nthreads", "8", "--name", "w", "--tls-cert", "c.pem", "--no-nanny"]}
"#;
    let spec = ClusterSpec::from_yaml(yaml, None).unwrap();
    let Err(SpecError::Invalid(errs)) = spec.validate() else {
        panic!("validation passed");
    };
    let got: Vec<(&str, &str)> = errs
        .iter()
        .map(|e| (e.field.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "scheduler.extra_args[0]",
                "muster sets --port itself: use scheduler.port instead"
            ),
            (
                "scheduler.extra_args[4]",
                "muster sets --dashboard-address itself: use scheduler.dashboard_port instead"
            ),
            (
                "worker.extra_args[2]",
                "muster sets --nworkers itself: use worker.processes instead"
            ),
            (
                "worker.extra_args[4]",
                "muster sets --memory-limit itself: use worker.memory instead"
            ),
            (
                "worker.extra_args[5]",
                "muster sets --nthreads itself: use worker.cores instead"
            ),
            (
                "worker.extra_args[7]",
                "muster sets --name itself (the worker's name is its job id): remove it"
            ),
            (
                "worker.extra_args[9]",
                "muster sets --tls-cert itself: use scheduler.security instead"
            ),
            (
                "worker.extra_args[11]",
                "muster sets --no-nanny itself: use worker.nanny instead"
            ),
        ]
    );
}
