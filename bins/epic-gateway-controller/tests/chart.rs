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
        committed == epic_model::crds_yaml(),
        "{} is stale: regenerate it with `cargo run -p epicctl -- crds > {}`",
        path.display(),
        path.display()
    );
}

/// What `check_chart.py` made of the chart with `values`: success, and its
/// report (objects, problems, rendered manifests) or its error output.
fn check(values: serde_json::Value) -> (bool, serde_json::Value, String) {
    let out = Command::new("python3")
        .arg(charts().join("check_chart.py"))
        .arg(charts().join("epic-gateway"))
        .arg(values.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), report, format!("{stdout}\n{stderr}"))
}

/// The values an install needs: the platform's networks (the gateway nodes').
fn values() -> serde_json::Value {
    serde_json::json!({"platformNetworks": ["198.51.100.0/24", "192.0.2.7", "2001:db8::1"]})
}

#[test]
fn the_chart_lints_renders_and_validates() {
    let (ok, report, output) = check(values());
    assert!(
        ok,
        "chart check failed (helm-python-sdk and kubernetes-validate come from `cargo xtask setup`):\n{output}"
    );
    for kind in [
        "Deployment/epic-gateway-controller",
        "ClusterRole/epic-gateway-controller",
        "Service/epic-gateway-controller",
        "NetworkPolicy/epic-gateway-controller",
        "CustomResourceDefinition/gateways.epic-gateway.org",
    ] {
        assert!(
            report["objects"]
                .as_array()
                .is_some_and(|o| o.iter().any(|k| k == kind)),
            "{kind} missing from the rendered chart:\n{output}"
        );
    }
}

fn manifest<'a>(report: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    report["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["kind"] == kind)
}

#[test]
fn the_ads_port_is_reachable_only_from_the_gateway_nodes_and_admin_only_on_loopback() {
    let (ok, report, output) = check(values());
    assert!(ok, "{output}");
    let policy = manifest(&report, "NetworkPolicy").expect("a NetworkPolicy");
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    let xds = ingress
        .iter()
        .find(|r| r["ports"][0]["port"] == 18000)
        .expect("an ADS rule");
    let cidrs: Vec<&str> = xds["from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ipBlock"]["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(
        cidrs,
        ["198.51.100.0/24", "192.0.2.7/32", "2001:db8::1/128"]
    );
    // No rule opens the admin port; the operations port is open.
    assert!(ingress.iter().all(|r| r["ports"][0]["port"] != 18001));
    assert!(ingress.iter().any(|r| r["ports"][0]["port"] == 8080));
    let deployment = manifest(&report, "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(
        args.iter().any(|a| a == "--admin-listen=127.0.0.1:18001"),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "--xds-tls=true"), "{args:?}");

    // Explicit sources win over platformNetworks.
    let mut explicit = values();
    explicit["networkPolicy"] = serde_json::json!({"xdsFrom": ["203.0.113.0/24"]});
    let (ok, report, output) = check(explicit);
    assert!(ok, "{output}");
    let policy = manifest(&report, "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        serde_json::json!([{"ipBlock": {"cidr": "203.0.113.0/24"}}])
    );

    // Nothing to allow: the render fails and says what to set.
    let (ok, _, output) = check(serde_json::json!({}));
    assert!(!ok, "{output}");
    assert!(output.contains("networkPolicy.xdsFrom"), "{output}");
    // Turned off: no policy.
    let (ok, report, output) = check(serde_json::json!({"networkPolicy": {"enabled": false}}));
    assert!(ok, "{output}");
    assert!(manifest(&report, "NetworkPolicy").is_none());
}

#[test]
fn values_the_schema_refuses_name_the_field_and_the_rule() {
    for (bad, field, rule) in [
        (
            serde_json::json!({"controller": {"replicas": "two"}}),
            "/controller/replicas",
            "want integer",
        ),
        (
            serde_json::json!({"xds": {"port": 70000}}),
            "/xds/port",
            "maximum",
        ),
        (
            serde_json::json!({"platformNetworks": ["not a network"]}),
            "/platformNetworks/0",
            "pattern",
        ),
        (
            serde_json::json!({"tenants": [{"namespace": "acme"}]}),
            "/tenants/0",
            "anyOf",
        ),
        (
            serde_json::json!({"contoller": {}}),
            "contoller",
            "additional",
        ),
    ] {
        let mut values = values();
        values
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let (ok, _, output) = check(values);
        assert!(!ok, "{bad} was accepted:\n{output}");
        assert!(
            output.contains(field) && output.contains(rule),
            "{bad}: no {field} / {rule} in:\n{output}"
        );
    }
}

#[test]
fn the_notes_say_where_proxies_connect_and_what_to_do_next() {
    let mut values = values();
    values["tenants"] = serde_json::json!([{"namespace": "acme", "group": "g"}, {"namespace": "globex", "user": "u"}]);
    let (ok, report, output) = check(values);
    assert!(ok, "{output}");
    let notes = report["notes"].as_str().unwrap();
    assert!(
        notes.contains("epic-gateway-controller.epic-system:18000"),
        "{notes}"
    );
    assert!(notes.contains("mutual TLS"), "{notes}");
    assert!(
        notes.contains("epic-gateway.org/gateway-node=true"),
        "{notes}"
    );
    assert!(notes.contains("acme, globex"), "{notes}");
}
