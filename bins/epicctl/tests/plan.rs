//! `epicctl plan` and `epicctl crds`, run as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("tests/fixtures/plan")
    .join(name)
    .display()
    .to_string()
}

fn epicctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .args(args)
        .output()
        .expect("epicctl runs")
}

#[test]
fn plans_a_resources_file_and_replans_from_its_records() {
    let o = epicctl(&[
        "plan",
        "--resources",
        &fixture("resources.yaml"),
        "--node",
        "gw-1=198.51.100.1",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let web = &plan["gateways"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["status"]["addresses"][0], "198.18.100.1");
    assert_eq!(web["status"]["proxies"][0], "demo/web/proxy-0");
    // A derived id (the one-shot tool plans under the all-zero secret).
    let tunnel_id = plan["tunnels"][0]["id"].as_u64().unwrap();
    assert_ne!(tunnel_id, 0);
    assert_eq!(web["status"]["tunnels"][0]["id"], tunnel_id);
    assert_eq!(plan["tunnels"][0]["gatewayNode"], "gw-1");
    assert_eq!(plan["endpoints"]["gw-1"][0]["address"], "203.0.113.10");

    // Planning again from the recorded state (as a state file) keeps the address.
    let dir = std::env::temp_dir().join(format!("epicctl-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        serde_json::json!({"recorded": plan["recorded"]}).to_string(),
    )
    .unwrap();
    let o = epicctl(&[
        "plan",
        "--resources",
        &fixture("resources.yaml"),
        "--state",
        &state.display().to_string(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        again["gateways"][0]["status"]["addresses"],
        web["status"]["addresses"]
    );
}

#[test]
fn an_invalid_file_or_node_is_an_error_that_names_it() {
    let dir = std::env::temp_dir().join(format!("epicctl-plan-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: epic-gateway.org/v1alpha1\nkind: Tenant\nmetadata: {name: t}\nspec: {namespace: t}\n").unwrap();
    let o = epicctl(&["plan", "--resources", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("bad.yaml: document 1 (Tenant t): spec: missing field `id`"),
        "{stderr}"
    );
    let o = epicctl(&[
        "plan",
        "--resources",
        &fixture("resources.yaml"),
        "--node",
        "gw-1",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--node \"gw-1\": expected name=address"));
    // A gateway that cannot be programmed makes the dry run fail, with the plan printed.
    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {name: g, namespace: nobody}\nspec: {template: tcp, listeners: [{name: a, port: 1, protocol: TCP}]}\n").unwrap();
    let o = epicctl(&["plan", "--resources", &unknown.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("UnknownTenant"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not programmed: [nobody/g]"));
}

#[test]
fn crds_prints_every_definition() {
    let o = epicctl(&["crds"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 6);
    for doc in &docs {
        assert_eq!(doc["kind"].as_str(), Some("CustomResourceDefinition"));
        assert_eq!(doc["spec"]["group"].as_str(), Some("epic-gateway.org"));
    }
}
