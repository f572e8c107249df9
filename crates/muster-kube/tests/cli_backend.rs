//! The kubernetes backend's client against the real test Kubernetes
//! (tests/services/kubernetes; `. /run/muster-k8s/env.sh`): what `up` says
//! when muster's API is not served, asked of the real API server for an API
//! group nobody serves (the shared test cluster's CRDs stay installed for
//! the other tests). Skipped without a kubeconfig unless
//! MUSTER_REQUIRE_KUBERNETES=1, which makes a missing cluster a failure.

use muster_kube::backend::KubeOptions;
use muster_kube::backend::client::connect;

fn available() -> bool {
    let ok = std::env::var_os("KUBECONFIG").is_some_and(|p| std::path::Path::new(&p).exists());
    if !ok && std::env::var("MUSTER_REQUIRE_KUBERNETES").as_deref() == Ok("1") {
        panic!("MUSTER_REQUIRE_KUBERNETES=1 but KUBECONFIG is unset or missing");
    }
    ok
}

#[tokio::test]
async fn an_api_that_is_not_served_says_how_to_install_the_operator() {
    if !available() {
        eprintln!("skipped: no test Kubernetes (tests/services/kubernetes/start.sh)");
        return;
    }
    let t = connect(&KubeOptions::default()).await.expect("connect");
    let err = t
        .require_api("nothing.muster.test/v1")
        .await
        .expect_err("no such API");
    let msg = err.to_string();
    assert!(msg.contains("operator is not installed"), "{msg}");
    assert!(
        msg.contains("helm install muster-operator charts/muster-operator"),
        "{msg}"
    );
    assert!(!err.is_transient());
    // The real group is served on the test cluster (the chart's CRDs).
    t.require_operator()
        .await
        .expect("muster's CRDs are installed");
}

#[tokio::test]
async fn a_context_not_in_the_kubeconfig_is_a_usage_error_naming_the_field() {
    if !available() {
        return;
    }
    let opts = KubeOptions {
        context: Some("no-such-context".into()),
        ..KubeOptions::default()
    };
    let err = connect(&opts).await.expect_err("unknown context");
    assert!(err.is_usage(), "{err}");
    assert!(err.to_string().starts_with("backend.context:"), "{err}");
}
