//! `epicctl ipam check` and `epicctl ipam plan`, run as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("tests/fixtures/ipam")
    .join(name)
}

fn epicctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .args(args)
        .output()
        .expect("epicctl runs")
}

fn fixture_arg(name: &str) -> String {
    fixture(name).display().to_string()
}

#[test]
fn check_prints_pools_with_families_and_sizes() {
    let out = epicctl(&["ipam", "check", &fixture_arg("pools.yaml")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 pool(s)"), "{stdout}");
    assert!(
        stdout.contains("pool public: IPv4 3 addresses, IPv6 18446744073709551616 addresses; priority 10, auto-assign, any tenant"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "pool reserved: IPv4 11 addresses; priority 0, on request only, tenants acme"
        ),
        "{stdout}"
    );
}

#[test]
fn check_rejects_bad_pools_naming_file_pool_and_entry() {
    let out = epicctl(&["ipam", "check", &fixture_arg("pools-bad.yaml")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pools-bad.yaml: "), "{stderr}");
    assert!(
        stderr.contains("pool \"public\": address entry \"203.0.113.20-203.0.113.10\": range end precedes its start"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pool \"other\": entry \"198.51.100.128/25\" overlaps pool \"public\" entry \"198.51.100.0/24\""),
        "{stderr}"
    );
}

#[test]
fn check_rejects_unknown_fields_and_missing_files() {
    let out = epicctl(&["ipam", "check", &fixture_arg("pools-not-yaml.yaml")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pools-not-yaml.yaml: ") && stderr.contains("adresses"),
        "{stderr}"
    );

    let out = epicctl(&["ipam", "check", &fixture_arg("missing.yaml")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.yaml: cannot read"), "{stderr}");
}

#[test]
fn plan_prints_one_json_object_per_step() {
    let out = epicctl(&[
        "ipam",
        "plan",
        &fixture_arg("pools.yaml"),
        &fixture_arg("plan.yaml"),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["step"], i + 1);
    }
    let addresses = |v: &Value| -> Vec<String> {
        v["allocation"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["address"].as_str().unwrap().to_owned())
            .collect()
    };
    // dual stack, lowest free (198.51.100.1 is excluded)
    assert_eq!(addresses(&lines[0]), ["198.51.100.0", "2001:db8:1::"]);
    // DNS over TCP and UDP share an address
    assert_eq!(addresses(&lines[1]), ["198.51.100.2"]);
    assert_eq!(addresses(&lines[2]), ["198.51.100.2"]);
    assert_eq!(lines[2]["allocation"]["addresses"][0]["shared"], true);
    // a third owner with UDP 53 conflicts, naming the ports
    assert_eq!(lines[3]["ok"], false);
    assert_eq!(lines[3]["error"]["kind"], "SharingConflict");
    assert_eq!(lines[3]["error"]["ports"][0]["port"], 53);
    assert!(lines[3]["message"].as_str().unwrap().contains("UDP/53"));
    // specific address from a pool that is not auto-assigned
    assert_eq!(addresses(&lines[4]), ["203.0.113.15"]);
    // tenant not permitted
    assert_eq!(lines[5]["error"]["kind"], "TenantNotPermitted");
    // release in both families; unknown owner says so
    assert_eq!(lines[6]["release"]["outcome"], "released");
    assert_eq!(lines[6]["release"]["freed"].as_array().unwrap().len(), 2);
    assert_eq!(lines[7]["release"]["outcome"], "notAllocated");
    // restore: one restored, one conflict reported
    assert_eq!(lines[8]["ok"], false);
    assert_eq!(lines[8]["restore"]["restored"], 1);
    assert_eq!(lines[8]["restore"]["conflicts"][0]["owner"], "uid-outside");
    assert_eq!(
        lines[8]["restore"]["conflicts"][0]["error"]["kind"],
        "NotInAnyPool"
    );
    // records
    let owners: Vec<&str> = lines[9]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["owner"].as_str().unwrap())
        .collect();
    assert_eq!(
        owners,
        ["uid-dns-tcp", "uid-dns-udp", "uid-old", "uid-special"]
    );
}

#[test]
fn plan_rejects_bad_plan_naming_file() {
    let out = epicctl(&[
        "ipam",
        "plan",
        &fixture_arg("pools.yaml"),
        &fixture_arg("plan-bad.yaml"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plan-bad.yaml: ") && stderr.contains("DualStackPlease"),
        "{stderr}"
    );
}
