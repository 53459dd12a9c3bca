//! `epic quickstart` end to end (root): real Envoy fed by our ADS server,
//! the gateway and cluster eBPF programs, authenticated hellos across a
//! NAT, and HTTP from a client namespace to a pod namespace.

use std::process::Command;

use epic_test_support::require_root;

fn envoy() -> String {
    std::env::var("EPIC_ENVOY").unwrap_or_else(|_| "envoy".into())
}

#[test]
fn the_quickstart_serves_http_from_the_client_to_the_pod_through_the_tunnel() {
    if !require_root("the_quickstart_serves_http_from_the_client_to_the_pod_through_the_tunnel") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_epic"))
        .args(["quickstart", "--requests", "20", "--envoy", &envoy()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The pod saw the request from the gateway's uplink address: it came
    // through the tunnel (the gateway has no other way to the pod).
    assert!(
        stdout.contains("hello from pod 203.0.113.10 (the request came from 198.51.100.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("20 × 200 OK"), "{stdout}");
    assert!(
        stdout.contains("gateway demo/web programmed: public address 198.18.100.1"),
        "{stdout}"
    );
    let counters = stdout
        .lines()
        .find(|l| l.contains("packets decapsulated from the tunnel"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<u64> = counters
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // Decapsulated, encapsulated, hellos sent, challenges answered: the
    // gateway learned the tunnel only from an answered challenge.
    assert_eq!(numbers.len(), 4, "{counters}");
    assert!(numbers[0] >= 20 && numbers[1] >= 20, "{counters}");
    assert!(numbers[2] >= 1 && numbers[3] >= 1, "{counters}");
    // Endpoints reach Envoy only through verified tunnels: no packet is
    // ever sent into a pending one (the first request's SYN included).
    assert!(
        stdout.contains("dropped waiting for a tunnel to be verified"),
        "{stdout}"
    );
    let gateway = stdout
        .lines()
        .find(|l| l.contains("packets encapsulated into the tunnel"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<u64> = gateway
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{gateway}");
    assert!(numbers[0] >= 20, "{gateway}");
    assert_eq!(numbers[1], 0, "{gateway}");
    assert!(stdout.contains("quickstart done"), "{stdout}");
}

#[test]
fn epic_run_refuses_an_invalid_resources_file_and_names_the_problem() {
    if !require_root("epic_run_refuses_an_invalid_resources_file_and_names_the_problem") {
        return;
    }
    let gw = epic_test_support::Netns::new("run-bad-gw").unwrap();
    let peer = epic_test_support::Netns::new("run-bad-peer").unwrap();
    gw.add_veth("up0", &peer, "up1").unwrap();
    gw.add_address("up0", "198.51.100.1/24").unwrap();
    let dir = std::env::temp_dir().join(format!("epic-run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resources = dir.join("resources.yaml");
    std::fs::write(
        &resources,
        "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {name: web, namespace: t}\nspec: {template: tcp, listeners: [{name: a, port: 99999, protocol: TCP}]}\n",
    )
    .unwrap();
    let out = gw
        .command(env!("CARGO_BIN_EXE_epic"))
        .args(["run", "--resources"])
        .arg(&resources)
        .arg("--state-dir")
        .arg(&dir)
        .args([
            "--tunnel-address",
            "198.51.100.1",
            "--uplink",
            "up0",
            "--envoy",
            &envoy(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "document 1 (Gateway t/web): spec.listeners[0].port: invalid value: integer `99999`"
        ),
        "{stderr}"
    );
}
