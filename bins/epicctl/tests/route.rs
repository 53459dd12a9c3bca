//! `epicctl route show` and `epicctl route bird-config`, run as the real binary.

use std::process::{Command, Output};

use epic_test_support::{Netns, require_root};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("epicctl-route-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

const PEERS: &str = r#"
router_id: 198.51.100.2
local_asn: 65001
allowed_prefixes: [203.0.113.0/24]
peers:
  - name: upstream4
    address: 198.51.100.1
    asn: 65000
    password: s3cret
    bfd: true
  - name: upstream6
    address: "2001:db8:a::1"
    asn: 65000
"#;

#[test]
fn bird_config_prints_the_generated_configuration() {
    let path = scratch("peers.yaml", PEERS);
    let o = Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .args(["route", "bird-config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for needle in [
        "kernel table 4242;",
        "if krt_source = 242 then accept;",
        "neighbor 198.51.100.1 as 65000;",
        "neighbor 2001:db8:a::1 as 65000;",
        "password \"s3cret\";",
        "bfd on;",
        "if net !~ [ 203.0.113.0/24+ ] then reject;",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // With bird installed, --check validates the output too.
    if Command::new("bird").arg("--version").output().is_ok() {
        let o = Command::new(env!("CARGO_BIN_EXE_epicctl"))
            .args(["route", "bird-config", "--check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bird_config_errors_name_the_file_and_the_problem() {
    let path = scratch("bad.yaml", &PEERS.replace("upstream6", "bad name"));
    let o = Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .args(["route", "bird-config"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml") && err.contains("\"bad name\""),
        "{err}"
    );
}

#[test]
fn show_lists_only_owned_routes() {
    if !require_root("show_lists_only_owned_routes") {
        return;
    }
    let ns = Netns::new("ctl-route").unwrap();
    for args in [
        &[
            "route",
            "add",
            "203.0.113.10/32",
            "dev",
            "lo",
            "table",
            "4242",
            "proto",
            "242",
        ][..],
        &[
            "route",
            "add",
            "blackhole",
            "203.0.113.11/32",
            "table",
            "4242",
            "proto",
            "242",
        ],
        &[
            "-6",
            "route",
            "add",
            "2001:db8:ff::10/128",
            "dev",
            "lo",
            "table",
            "4242",
            "proto",
            "242",
        ],
        // not ours: other protocol in our table, our protocol in main
        &[
            "route",
            "add",
            "203.0.113.200/32",
            "dev",
            "lo",
            "table",
            "4242",
            "proto",
            "static",
        ],
        &[
            "route",
            "add",
            "203.0.113.201/32",
            "dev",
            "lo",
            "proto",
            "242",
        ],
    ] {
        ns.ip(args).unwrap();
    }
    let o = ns
        .exec(env!("CARGO_BIN_EXE_epicctl"), ["route", "show"])
        .unwrap();
    let text = stdout(&o);
    assert!(text.contains("3 owned route(s)"), "{text}");
    assert!(text.contains("203.0.113.10/32 dev lo metric"), "{text}");
    assert!(text.contains("203.0.113.11/32 blackhole"), "{text}");
    assert!(
        text.contains("2001:db8:ff::10/128 dev lo metric 1024 table 4242 proto 242"),
        "{text}"
    );
    assert!(
        !text.contains("203.0.113.200") && !text.contains("203.0.113.201"),
        "{text}"
    );
}
