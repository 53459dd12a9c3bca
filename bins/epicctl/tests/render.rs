//! `epicctl render` end to end, run as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("tests/fixtures/render")
    .join(name)
    .display()
    .to_string()
}

fn epicctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .arg("render")
        .args(args)
        .output()
        .expect("epicctl runs")
}

#[test]
fn renders_a_builtin_with_routes_as_json_and_reports_issues() {
    let o = epicctl(&[
        "--template",
        "https",
        "--gateway",
        &fixture("gateway.yaml"),
        "--routes",
        &fixture("routes.yaml"),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["listeners"].as_array().unwrap().len(), 2);
    assert_eq!(doc["clusters"][0]["name"], "default/web:80");
    let vhosts = &doc["route_configurations"][0]["virtual_hosts"];
    assert_eq!(vhosts[0]["domains"][0], "shop.example.com");
    // The longer prefix (/missing) comes first; its backend is missing: 500.
    assert_eq!(vhosts[0]["routes"][0]["direct_response"]["status"], 500);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("BackendNotFound"), "{stderr}");
}

#[test]
fn renders_yaml_by_default_and_validates_with_envoy() {
    let o = epicctl(&[
        "--template",
        "tcp",
        "--gateway",
        &fixture("l4.yaml"),
        "--validate",
    ]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(
        doc["listeners"][0]["address"]["socket_address"]["address"],
        "2001:db8::20"
    );
}

#[test]
fn renders_a_template_file() {
    let o = epicctl(&[
        "--template",
        &fixture("custom.yaml.j2"),
        "--gateway",
        &fixture("l4.yaml"),
    ]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["clusters"][0]["type"], "STATIC");
}

#[test]
fn errors_are_precise_and_exit_non_zero() {
    let o = epicctl(&[
        "--template",
        &fixture("bad.yaml.j2"),
        "--gateway",
        &fixture("l4.yaml"),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("listeners[0].bogus_field"), "{stderr}");

    let o = epicctl(&["--template", "http", "--gateway", &fixture("l4.yaml")]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only HTTP and HTTPS"),
        "{o:?}"
    );

    let o = epicctl(&["--template", "tcp", "--gateway", &fixture("missing.yaml")]);
    assert!(!o.status.success());
}
