//! TCP goodput through the GUE tunnel versus the same namespaces without it,
//! in one run (a measured scenario, not a timed test). Needs root and
//! `iperf3`; runs only under `cargo bench -p epic-bpf --bench throughput`.
//!
//! The topology is the end-to-end tests' (`tests/topology`): iperf3 server
//! in the pod namespace, client in the gateway namespace (where the proxy
//! runs). Through the tunnel: port `EXTRA_PORT`, an endpoint of the tunnel,
//! encapsulated by the gateway, across the NAT, decapsulated on the node.
//! Direct: another port (no endpoint, so the programs pass it), routed in
//! clear through the same NAT and node. The figure of merit is the ratio
//! (issue target: ≥ 0.85).

use std::time::Duration;

#[path = "../tests/topology/mod.rs"]
mod topology;

use topology::{EXTRA_PORT, Harness, Options, Plan, V4, V6};

const DIRECT_PORT: u16 = EXTRA_PORT + 1;
const SECONDS: &str = "5";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "throughput: a measured scenario; run it with `cargo bench -p epic-bpf --bench throughput`"
        );
        return;
    }
    if !epic_test_support::is_root() {
        eprintln!("skipping the throughput scenario: it needs root (network namespaces, eBPF)");
        return;
    }
    if std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipping the throughput scenario: iperf3 is not installed (`cargo xtask setup`)"
        );
        return;
    }
    for plan in [&V4, &V6] {
        run(plan);
    }
}

fn run(plan: &'static Plan) {
    let family = if plan.v6 { "IPv6" } else { "IPv4" };
    let mut h = Harness::new(plan, Options::default());
    h.learn();
    h.topo.route_pods_directly(plan);
    let tunnel = goodput(&h, EXTRA_PORT);
    let direct = goodput(&h, DIRECT_PORT);
    let encapsulated = h
        .gw_dp
        .counter(epic_gue::maps::Counter::Encapsulated)
        .unwrap();
    println!(
        "throughput {family}: tunnel {:.2} Gbit/s, direct {:.2} Gbit/s, ratio {:.3} (target >= 0.85); gateway encapsulated {} packets",
        tunnel / 1e9,
        direct / 1e9,
        tunnel / direct,
        encapsulated.packets,
    );
}

/// One `iperf3` TCP run from the gateway namespace to the pod on `port`:
/// the receiver's goodput in bit/s.
fn goodput(h: &Harness, port: u16) -> f64 {
    let port = port.to_string();
    let _server = h
        .topo
        .pod
        .spawn(
            "iperf3",
            [
                "-s",
                "-1",
                "-B",
                h.plan.pod,
                "-p",
                &port,
                "--logfile",
                "/dev/null",
            ],
        )
        .unwrap();
    // Bounded wait for the server to listen.
    let mut last = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        match h.topo.gw.exec(
            "iperf3",
            ["-c", h.plan.pod, "-p", &port, "-t", SECONDS, "-J"],
        ) {
            Ok(out) => {
                let json = String::from_utf8_lossy(&out.stdout);
                return received_bits_per_second(&json)
                    .unwrap_or_else(|| panic!("no sum_received in iperf3 output: {json}"));
            }
            Err(e) => last = e.to_string(),
        }
    }
    panic!("iperf3 to port {port} never ran: {last}");
}

/// `end.sum_received.bits_per_second` from iperf3's JSON, without a JSON parser.
fn received_bits_per_second(json: &str) -> Option<f64> {
    let at = json.rfind("\"sum_received\"")?;
    let rest = &json[at..];
    let at = rest.find("\"bits_per_second\"")?;
    let rest = rest[at + "\"bits_per_second\"".len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')
        })
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
