//! The Helm chart: its CRDs are the ones generated from the Rust types, and
//! real Helm (helm-python-sdk) lints and renders it, and every manifest
//! validates against the Kubernetes schemas (kubernetes-validate); both are
//! installed by `cargo xtask setup`.

use std::path::PathBuf;
use std::process::Command;

fn charts() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../charts")
}

#[test]
fn the_chart_crds_are_the_ones_generated_from_the_rust_types() {
    let path = charts().join("epic-gateway/crds/epic-gateway.org.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == epic_core::model::crds_yaml(),
        "{} is stale: regenerate it with `cargo run -p epicctl -- crds > {}`",
        path.display(),
        path.display()
    );
}

#[test]
fn the_chart_lints_renders_and_validates() {
    let out = Command::new("python3")
        .arg(charts().join("check_chart.py"))
        .arg(charts().join("epic-gateway"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chart check failed (helm-python-sdk and kubernetes-validate come from `cargo xtask setup`):\n{stdout}\n{stderr}"
    );
    for kind in [
        "Deployment/epic-gateway-controller",
        "ClusterRole/epic-gateway-controller",
        "Service/epic-gateway-controller",
        "CustomResourceDefinition/gateways.epic-gateway.org",
    ] {
        assert!(
            stdout.contains(kind),
            "{kind} missing from the rendered chart:\n{stdout}"
        );
    }
}
