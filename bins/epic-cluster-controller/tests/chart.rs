//! The user-cluster Helm chart: real Helm (helm-python-sdk) lints and
//! renders it, with and without platform credentials, and every manifest
//! validates against the Kubernetes schemas (kubernetes-validate); both are
//! installed by `cargo xtask setup`.

use std::path::PathBuf;
use std::process::Command;

/// `check_chart.py` on the cluster chart with `values`: its exit status
/// and its standard output and error.
fn run_check(values: &str) -> (bool, String, String) {
    let charts = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../charts");
    let out = Command::new("python3")
        .arg(charts.join("check_chart.py"))
        .arg(charts.join("epic-cluster"))
        .arg(values)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report of a chart check that must pass.
fn check(values: &str) -> String {
    let (ok, stdout, stderr) = run_check(values);
    assert!(
        ok,
        "chart check failed for values {values} (helm-python-sdk and kubernetes-validate come from `cargo xtask setup`):\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn the_cluster_chart_lints_renders_and_validates() {
    for values in [
        "{}",
        r#"{"clusterId": "c1", "tenantNamespace": "acme", "platformKubeconfigSecret": "platform"}"#,
    ] {
        let out = check(values);
        for kind in [
            "Deployment/epic-cluster-controller",
            "ClusterRole/epic-cluster-controller",
            "ClusterRoleBinding/epic-cluster-controller",
            "ServiceAccount/epic-cluster-controller",
        ] {
            assert!(out.contains(kind), "{kind} missing for {values}:\n{out}");
        }
    }
}

#[test]
fn a_missing_cluster_id_is_refused_by_the_chart() {
    let (ok, stdout, stderr) = run_check(r#"{"clusterId": ""}"#);
    assert!(!ok);
    assert!(
        format!("{stdout}{stderr}").contains("clusterId is required"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_cluster_id_that_is_no_dns_label_is_refused_by_the_values_schema() {
    for (values, field) in [
        (
            r#"{"clusterId": "Bad_Name", "tenantNamespace": "acme"}"#,
            "/clusterId",
        ),
        (
            r#"{"clusterId": "c1", "tenantNamespace": "acme", "controller": {"replicas": 0}}"#,
            "/controller/replicas",
        ),
        (
            r#"{"clusterId": "c1", "tenantNamespace": "acme", "tennantNamespace": "x"}"#,
            "tennantNamespace",
        ),
    ] {
        let (ok, stdout, _) = run_check(values);
        assert!(!ok, "{values} was accepted:\n{stdout}");
        assert!(
            stdout.contains(field),
            "{values}: {field} not named in:\n{stdout}"
        );
    }
}

#[test]
fn the_notes_name_the_cluster_and_where_node_keys_go() {
    let out = check(
        r#"{"clusterId": "c1", "tenantNamespace": "acme", "platformKubeconfigSecret": "platform"}"#,
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let notes = report["notes"].as_str().unwrap();
    assert!(notes.contains(r#"cluster "c1""#), "{notes}");
    assert!(notes.contains("Secret epic-system/platform"), "{notes}");
    assert!(
        notes.contains("epic-system/epic-node-key-<node>"),
        "{notes}"
    );
}
