//! Snapshots of the service JSON and the container scripts, and the proof
//! that hostile strings survive the NodeManager's own shell wrapping.

use super::*;

use std::io::Write;

fn opts() -> YarnOptions {
    serde_json::from_str(r#"{"resource_manager": "http://127.0.0.1:23088"}"#).unwrap()
}

fn spec(yaml: &str) -> ClusterSpec {
    ClusterSpec::from_yaml(yaml, None).unwrap()
}

/// The default: TLS.
const TLS: &str =
    "name: demo\nworkers: 2\nworker: {cores: 2, memory: 3GiB, python: /opt/py/bin/python}\n";

/// `scheduler.security: none`: plain TCP, no credential files.
const PLAIN: &str = "name: demo\nworkers: 2\nworker: {cores: 2, memory: 3GiB, python: /opt/py/bin/python}\nscheduler: {security: none}\n";

/// The cluster's credential directory as `muster_core::tls::local_dir` gives it.
const CREDS: &str = "/home/u/.muster/clusters/demo/tls";

fn render(spec: &ClusterSpec, opts: &YarnOptions, workers: u64) -> Rendering {
    super::render(spec, opts, workers, Path::new(CREDS))
}

const HOSTILE: &str = r#"
name: evil
worker:
  python: "/opt/my env/bin/python"
  env:
    QUOTES: "it's \"quoted\" `id` $(id) ${SCHEDULER-0_HOST} {{HOME}} <CPS> \\ $HOME ;|&"
  extra_args: ["--resources", "GPU=1 ${CONTAINER_ID}"]
scheduler:
  env: {BANG: "!event; rm -rf / #"}
"#;

#[test]
fn plain_service_json() {
    let r = render(&spec(PLAIN), &opts(), 2);
    insta::assert_snapshot!("plain_service", r.service.to_json());
    insta::assert_snapshot!("plain_scheduler_script", r.scheduler_script);
    insta::assert_snapshot!("plain_worker_script", r.worker_script);
}

/// With TLS each component localises exactly its party's three files, by
/// path, owner-only (`APPLICATION`); keys and certificates never appear in
/// the JSON or the scripts, only `./` paths.
#[test]
fn tls_service_json() {
    let r = render(&spec(TLS), &opts(), 2);
    let json = r.service.to_json();
    insta::assert_snapshot!("tls_service", json);
    insta::assert_snapshot!("tls_scheduler_script", r.scheduler_script);
    insta::assert_snapshot!("tls_worker_script", r.worker_script);
    assert!(
        !json.contains("BEGIN") && !json.contains("PRIVATE"),
        "{json}"
    );
    for (c, party) in r.service.components.iter().zip(["scheduler", "worker"]) {
        let files = &c.configuration.as_ref().unwrap().files;
        let names: Vec<_> = files.iter().map(|f| f.dest_file.as_str()).collect();
        assert_eq!(
            names,
            [
                "ca.pem".to_string(),
                format!("{party}.pem"),
                format!("{party}-key.pem")
            ]
        );
        for f in files {
            assert_eq!(
                (f.kind.as_str(), f.visibility.as_str()),
                ("STATIC", "APPLICATION")
            );
            assert_eq!(f.src_file, format!("file://{CREDS}/{}", f.dest_file));
        }
    }
    assert!(r.worker_script.contains("\"tls://$1:8786\""));
    assert!(r.worker_script.contains("--tls-key ./worker-key.pem"));
    assert!(!r.worker_script.contains("scheduler-key"));
    assert!(r.scheduler_script.contains("--tls-key ./scheduler-key.pem"));
    assert!(
        r.scheduler_script
            .contains("--port 8786 --dashboard-address \"$host:8787\"")
    );
    // Plain TCP: no files, tcp:// workers.
    let plain = render(&spec(PLAIN), &opts(), 2);
    assert!(
        plain
            .service
            .components
            .iter()
            .all(|c| c.configuration.is_none())
    );
    assert!(!plain.worker_script.contains("--tls") && !plain.scheduler_script.contains("--tls"));
}

#[test]
fn options_reach_the_json() {
    let o: YarnOptions = serde_json::from_str(
        r#"{"resource_manager": ["http://a:8088", "http://b:8088"], "queue": "root.analytics",
            "archive": "hdfs:///envs/dask.tar.gz", "env": {"SHARED": "1"},
            "tags": ["team-a", "it's \"odd\""], "scheduler_cores": 2, "scheduler_memory": "4GiB"}"#,
    )
    .unwrap();
    let r = render(&spec(PLAIN), &o, 0);
    insta::assert_snapshot!("options_service", r.service.to_json());
    assert_eq!(
        tags_of_description(&r.service.description),
        vec!["team-a".to_string(), "it's \"odd\"".to_string()]
    );
}

#[test]
fn hostile_strings_stay_inside_the_base64_script() {
    let r = render(&spec(HOSTILE), &opts(), 1);
    let json = r.service.to_json();
    // Nothing the user wrote appears outside the encoded script.
    for needle in ["QUOTES", "$(id)", "GPU=1", "my env", "rm -rf"] {
        assert!(!json.contains(needle), "{needle} leaked into {json}");
    }
    insta::assert_snapshot!("hostile_service", json);
    insta::assert_snapshot!("hostile_worker_script", r.worker_script);
    for c in &r.service.components {
        let script = script_of_launch_command(&c.launch_command).unwrap();
        let expected = if c.name == WORKER {
            &r.worker_script
        } else {
            &r.scheduler_script
        };
        assert_eq!(&script, expected);
        // Only characters no shell or YARN layer acts on, besides muster's tokens.
        let rest = c
            .launch_command
            .replace("${SCHEDULER-0_HOST}", "")
            .replace("${COMPONENT_INSTANCE_NAME}", "");
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" +/=|-".contains(&b)),
            "{rest}"
        );
    }
}

/// Runs a worker's launch command the way the NodeManager 3.4.2 does: after
/// YARN's token substitution, inside `bash -c "..."` with output redirected,
/// with `worker.python` pointing at a program that records its argv and
/// environment. Every hostile string must arrive byte for byte.
#[test]
fn hostile_strings_arrive_literally_through_the_nodemanagers_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe prog");
    let out = dir.path().join("argv.json");
    let mut f = std::fs::File::create(&probe).unwrap();
    writeln!(
        f,
        "#!/usr/bin/env python3\nimport json, os, sys\njson.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({:?}, 'w'))",
        out.display().to_string()
    )
    .unwrap();
    drop(f);
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut s = spec(HOSTILE);
    s.worker.python = probe.display().to_string();
    let r = render(&s, &opts(), 1);
    let worker = &r.service.components[1];
    let cmd = worker
        .launch_command
        .replace("${SCHEDULER-0_HOST}", "node7.example")
        .replace("${COMPONENT_INSTANCE_NAME}", "worker-3");
    let nm_line = format!(
        "{cmd} 1>{} 2>{}",
        dir.path().join("stdout.txt").display(),
        dir.path().join("stderr.txt").display()
    );
    let status = std::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(format!("exec /bin/bash -c \"{nm_line} \""))
        .status()
        .unwrap();
    assert!(status.success());
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let argv: Vec<&str> = got["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The default layout: muster's launcher runs `dask worker`, with TLS.
    assert_eq!(&argv[..2], ["-c", muster_core::dask::launcher_source()]);
    assert_eq!(argv[2..4], ["--protocol", "tls"]);
    assert_eq!(argv[8..10], ["--tls-key", "./worker-key.pem"]);
    assert_eq!(argv[10], "tls://node7.example:8786");
    assert_eq!(&argv[11..13], ["--name", "worker-3"]);
    assert_eq!(
        &argv[argv.len() - 2..],
        ["--resources", "GPU=1 ${CONTAINER_ID}"]
    );
    assert_eq!(
        got["env"]["QUOTES"],
        s.worker.env["QUOTES"].as_str(),
        "env value changed on the way"
    );
    assert_eq!(got["env"]["MUSTER_CLUSTER"], "evil");
}

#[test]
fn scheduler_host_and_ports() {
    let mut s = spec(PLAIN);
    s.scheduler.host = Some("0.0.0.0".into());
    s.scheduler.port = 23786;
    s.scheduler.dashboard_port = 23787;
    let r = render(&s, &opts(), 0);
    assert!(r.scheduler_script.contains("host=0.0.0.0\n"));
    assert!(
        r.scheduler_script
            .contains("--port 23786 --dashboard-address \"$host:23787\"")
    );
    assert!(r.worker_script.contains("\"tcp://$1:23786\""));
    let check = r.service.components[0].readiness_check.as_ref().unwrap();
    assert_eq!(check.properties["port"], "23786");
}

#[test]
fn instances_skip_decommissioned_names() {
    let none = BTreeSet::new();
    assert_eq!(worker_instances(0, &none), Vec::<String>::new());
    assert_eq!(
        worker_instances(3, &none),
        ["worker-0", "worker-1", "worker-2"]
    );
    let gone: BTreeSet<String> = ["worker-0", "worker-2", "worker-1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(worker_instances(2, &gone), ["worker-3", "worker-4"]);
}

#[test]
fn request_bodies() {
    assert_eq!(flex_body(4).to_string(), r#"{"number_of_containers":4}"#);
    assert_eq!(
        decommission_body("muster-demo", &["worker-1".into()]).to_string(),
        r#"{"components":[{"decommissioned_instances":["worker-1"],"name":"worker"}],"name":"muster-demo"}"#
    );
}
