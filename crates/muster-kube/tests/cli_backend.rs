//! The kubernetes backend's client against the real test Kubernetes
//! (tests/services/kubernetes; `. /run/muster-k8s/env.sh`): what `up` says
//! when muster's API is not served, asked of the real API server for an API
//! group nobody serves, and that the real group is served once the chart's
//! CRDs are applied (this test applies them itself, as the e2e kit does: a
//! fresh test cluster has none). Skipped without a kubeconfig unless
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
    // The real group is served once muster's CRDs are applied (server-side,
    // forced: the e2e kit re-applies them with kubectl the same way).
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(t.client.clone());
    for crd in muster_kube::crds::all() {
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("muster-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    }
    // Discovery serves a new group a moment after its CRDs are accepted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match t.require_operator().await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not served yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => panic!("muster's CRDs applied, but their API is not served: {e}"),
        }
    }
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
