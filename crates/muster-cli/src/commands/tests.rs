//! Tests of what `up` and `render` make of their flags and a spec file.

use super::*;

#[test]
fn flags_override_the_file_and_everything_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "name: fromfile\nworkers: 2\nworker: {cores: 4, memory: 4GiB}\n",
    )
    .unwrap();
    let args = SpecArgs {
        file: Some(file.clone()),
        workers: Some(5),
        ..Default::default()
    };
    let spec = build_spec(&args).unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.workers, spec.worker.cores),
        ("fromfile", 5, 4)
    );
    assert!(spec.scheduler.security.is_tls(), "TLS unless asked");
    std::fs::write(
        &file,
        "name: fromfile\nscheduler: {security: tls}\nworker: {cores: 4, memory: 4GiB}\n",
    )
    .unwrap();
    let plain = SpecArgs {
        file: Some(file.clone()),
        security: Some(crate::cli::SecurityFlag::None),
        ..Default::default()
    };
    let spec = build_spec(&plain).unwrap();
    assert_eq!(spec.scheduler.security, muster::spec::Security::None);

    let bad = SpecArgs {
        file: Some(file),
        name: Some("Bad Name".into()),
        processes: Some(9),
        ..Default::default()
    };
    let err = build_spec(&bad).unwrap_err();
    assert!(err.is_usage());
    let msg = err.to_string();
    assert!(
        msg.contains("name: \"Bad Name\"") && msg.contains("worker.processes: \"9\""),
        "{msg}"
    );

    let missing = SpecArgs {
        file: Some(dir.path().join("nope.yaml")),
        ..Default::default()
    };
    let err = build_spec(&missing).unwrap_err();
    assert!(
        err.is_usage() && err.to_string().contains("nope.yaml"),
        "{err}"
    );
    assert!(
        build_spec(&SpecArgs::default())
            .unwrap_err()
            .to_string()
            .contains("name")
    );
}
