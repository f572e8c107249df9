//! Tests of the `backend:` options of `kind: ssh` as a whole spec reads
//! them: every problem reported at once, each by its full path.

use muster_core::kinds::BackendKind;
use muster_core::spec::ClusterSpec;

fn fields(yaml: &str) -> Vec<String> {
    match ClusterSpec::from_yaml(yaml, None) {
        Ok(s) => {
            let mut errs = s.problems();
            errs.extend(crate::SshKind.validate(&s));
            errs.into_iter().map(|e| e.field).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn a_full_ssh_section_is_valid_and_round_trips() {
    let yaml = r#"
name: lab
backend:
  kind: ssh
  hosts: [head, "alice@node1:2222", {host: node2, python: /py, identity: ~/.ssh/k, name: n2}]
  workers_per_host: 4
  accept_new_host_keys: true
  connect_timeout: 5s
"#;
    assert_eq!(fields(yaml), Vec::<String>::new());
    let spec = ClusterSpec::from_yaml(yaml, None).unwrap();
    assert_eq!(ClusterSpec::from_yaml(&spec.to_yaml(), None).unwrap(), spec);
}

#[test]
fn every_ssh_problem_is_named() {
    let yaml = r#"
name: lab
backend:
  kind: ssh
  hosts: ["root@h1:0", {host: "h2; reboot"}, {host: "u@h3", user: v}, h4, {host: H4}, "-oProxyCommand=x"]
  user: "bad user"
  workers_per_host: 0
  scheduler_host: nowhere
  parallelism: 0
  state_dir: ""
"#;
    assert_eq!(
        fields(yaml),
        vec![
            "backend.hosts[0].host",
            "backend.hosts[1].host",
            "backend.hosts[2].user",
            "backend.hosts[4].name",
            "backend.hosts[5].host",
            "backend.user",
            "backend.scheduler_host",
            "backend.workers_per_host",
            "backend.parallelism",
            "backend.state_dir",
        ]
    );
    assert_eq!(
        fields("name: x\nbackend: {kind: ssh}"),
        vec!["backend.hosts"]
    );
    let unknown = fields("name: x\nbackend: {kind: ssh, hosts: [{host: a, prot: 2}]}");
    assert_eq!(unknown, ["backend.hosts[0].prot"]);
}

#[test]
fn every_unknown_key_and_bad_value_is_named_at_once() {
    // Unknown keys at the top, in core's sections, in the backend beside
    // the connection settings and inside a host; bad values of both
    // the backend's own fields and the connection settings.
    let yaml = r#"
name: lab
wrokers: 2
worker: {coress: 2}
backend:
  kind: ssh
  hosts: [{host: h1, prot: 2}, "h2;reboot"]
  bogus: 1
  connect_timeout: soon
  command_timeout: 0s
  identity: ""
  parallelism: 0
"#;
    let spec = ClusterSpec::from_yaml(yaml, None).unwrap();
    let mut errs = spec.problems();
    errs.extend(crate::SshKind.validate(&spec));
    insta::assert_snapshot!(muster_core::SpecError::Invalid(errs).to_string());
}

#[test]
fn the_connection_settings_are_read_into_one_place() {
    let spec = ClusterSpec::from_yaml(
        "name: x\nbackend: {kind: ssh, hosts: [a], known_hosts: /k, command_timeout: 5s, user: u}",
        None,
    )
    .unwrap();
    let (ssh, errs) = crate::SshSpec::read(&spec.backend.options);
    assert_eq!(errs, []);
    let ssh = ssh.unwrap();
    assert_eq!(ssh.connect.known_hosts.as_deref(), Some("/k"));
    assert_eq!(ssh.command_timeout(), muster_core::Seconds::from_secs(5));
    assert_eq!(ssh.user.as_deref(), Some("u"));
    let default = crate::SshSpec::read(&serde_json::Map::from_iter([(
        "hosts".to_string(),
        serde_json::json!(["a"]),
    )]));
    assert_eq!(
        default.0.unwrap().command_timeout(),
        crate::ssh_spec::COMMAND_TIMEOUT
    );
}
