//! Standalone mode against the real parts (root): the gateway programs on a
//! veth uplink, real Envoys fed by the ADS server, public addresses on `lo`,
//! all in a namespace the test creates. Reconciles follow the file: new
//! gateways start proxies and get addresses, an invalid file changes
//! nothing, removed gateways give their address back (held back for the
//! grace period), and a restart keeps what was recorded.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use epic_standalone::standalone::{Standalone, StandaloneConfig, StandaloneError, StatusFile};
use epic_test_support::{Netns, require_root};

mod standalone_common;
use standalone_common::{HEAD, gateway};

fn lo_addresses(ns: &str) -> BTreeSet<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .filter(|a: &IpAddr| !a.is_loopback())
        .collect()
}

/// Envoy accepts on `addr` within a bounded time. Async, so the ADS
/// server on the same runtime keeps serving the Envoy being waited for.
async fn accepts(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn status(dir: &Path) -> StatusFile {
    serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap()
}

fn addresses_of(dir: &Path, name: &str) -> Vec<IpAddr> {
    status(dir)
        .gateways
        .into_iter()
        .find(|g| g.name == name)
        .unwrap()
        .status
        .addresses
}

#[test]
fn reconciles_follow_the_file_and_a_restart_keeps_the_records() {
    if !require_root("reconciles_follow_the_file_and_a_restart_keeps_the_records") {
        return;
    }
    let gw = Netns::new("sa-gw").unwrap();
    let peer = Netns::new("sa-peer").unwrap();
    gw.add_veth("up0", &peer, "up1").unwrap();
    gw.add_address("up0", "198.51.100.1/24").unwrap();
    let dir = std::env::temp_dir().join(format!("epic-standalone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("resources.yaml");
    let gw_for_checks = gw.name().to_owned();
    let dir2 = dir.clone();
    let result = gw.run_in(move || {
        let dir = dir2;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut config =
                StandaloneConfig::new(&file, &dir, "gw-1", "198.51.100.1".parse().unwrap(), "up0");
            config.xds = "127.0.0.1:0".parse().unwrap();
            let ns = NsName(gw_for_checks);

            // v1: one gateway.
            std::fs::write(&file, format!("{HEAD}{}", gateway("one", 5432))).unwrap();
            let mut epic = Standalone::start(config.clone()).await.unwrap();
            // A second `epic run` on the same state directory is refused.
            let second = Standalone::start(config.clone()).await.unwrap_err();
            assert!(matches!(second, StandaloneError::Locked { .. }), "{second}");
            let report = epic.reconcile().await.unwrap();
            assert_eq!((report.programmed, report.gateways), (1, 1), "{report}");
            assert_eq!(report.proxies_started, ["acme/one/proxy-0"]);
            assert_eq!(report.tunnels, (1, 0));
            assert_eq!(report.endpoints, (1, 0));
            let one = addresses_of(&dir, "one")[0];
            assert_eq!(one.to_string(), "203.0.113.8");
            assert_eq!(ns.lo(), BTreeSet::from([one]));
            assert!(
                accepts(SocketAddr::new(one, 5432)).await,
                "Envoy listens on {one}:5432"
            );
            // The cluster key was created for the tenant's cluster and the
            // node key of its node derived from it, both private.
            use std::os::unix::fs::PermissionsExt;
            for key in ["keys/acme/c1.key", "keys/acme/c1/n1.key"] {
                assert_eq!(
                    std::fs::metadata(dir.join(key))
                        .unwrap()
                        .permissions()
                        .mode()
                        & 0o777,
                    0o600,
                    "{key}"
                );
            }

            // v2: a second gateway.
            std::fs::write(
                &file,
                format!("{HEAD}{}{}", gateway("one", 5432), gateway("two", 5433)),
            )
            .unwrap();
            let report = epic.reconcile().await.unwrap();
            assert_eq!((report.programmed, report.gateways), (2, 2), "{report}");
            assert_eq!(report.proxies_started, ["acme/two/proxy-0"]);
            assert_eq!(report.tunnels, (0, 0), "the tunnel is shared");
            let two = addresses_of(&dir, "two")[0];
            assert_eq!(ns.lo(), BTreeSet::from([one, two]));
            assert!(accepts(SocketAddr::new(two, 5433)).await);

            // A proxy that dies is restarted and serves again.
            let (proxy, pid) = epic.proxies()[0].clone();
            std::process::Command::new("kill")
                .args(["-KILL", &pid.unwrap().to_string()])
                .status()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let healed = loop {
                let healed = epic.heal().await;
                if !healed.is_empty() || Instant::now() >= deadline {
                    break healed;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(healed.len(), 1);
            assert_eq!(healed[0].0, proxy);
            assert!(
                healed[0].1.to_string().contains("signal: 9"),
                "{}",
                healed[0].1
            );
            assert_ne!(epic.proxies()[0].1, pid);
            assert!(
                accepts(SocketAddr::new(one, 5432)).await,
                "the restarted Envoy serves"
            );

            // v3: invalid; nothing changes and both keep serving.
            std::fs::write(&file, format!("{HEAD}{}", gateway("one", 70000))).unwrap();
            let err = epic.reconcile().await.unwrap_err();
            assert!(matches!(err, StandaloneError::Resources { .. }), "{err}");
            assert!(err.to_string().contains("spec.listeners[0].port"), "{err}");
            assert_eq!(ns.lo(), BTreeSet::from([one, two]));
            assert!(accepts(SocketAddr::new(one, 5432)).await);
            assert!(accepts(SocketAddr::new(two, 5433)).await);

            // An empty file (caught mid-write) deletes nothing.
            for empty in ["", "\n", "---\n# nothing yet\n"] {
                std::fs::write(&file, empty).unwrap();
                let err = epic.reconcile().await.unwrap_err();
                assert!(
                    matches!(err, StandaloneError::EmptyResources { gateways: 2, .. }),
                    "{empty:?}: {err}"
                );
            }
            assert_eq!(ns.lo(), BTreeSet::from([one, two]));
            assert!(accepts(SocketAddr::new(one, 5432)).await);

            // v4: the first gateway goes: its proxy stops, its address leaves.
            std::fs::write(&file, format!("{HEAD}{}", gateway("two", 5433))).unwrap();
            let report = epic.reconcile().await.unwrap();
            assert_eq!(report.proxies_stopped, ["acme/one/proxy-0"]);
            assert_eq!(report.addresses.1, [one]);
            assert_eq!(ns.lo(), BTreeSet::from([two]));
            assert!(!accepts_now(SocketAddr::new(two, 5432)).await);
            epic.shutdown().await;

            // Restart: the recorded allocation holds, even with a new
            // gateway that sorts first asking for an address.
            std::fs::write(
                &file,
                format!("{HEAD}{}{}", gateway("two", 5433), gateway("a-new", 5434)),
            )
            .unwrap();
            let mut epic = Standalone::start(config).await.unwrap();
            let report = epic.reconcile().await.unwrap();
            assert_eq!(report.programmed, 2, "{report}");
            assert_eq!(addresses_of(&dir, "two"), [two]);
            // The freed address is held back for the grace period (recorded
            // in state.json, so across the restart): a-new gets another.
            let a_new = addresses_of(&dir, "a-new")[0];
            assert!(a_new != one && a_new != two, "{a_new}");
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
            assert_eq!(
                state["recorded"]["released"][0]["address"],
                one.to_string(),
                "{state}"
            );
            assert!(accepts(SocketAddr::new(two, 5433)).await);
            epic.shutdown().await;
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

async fn accepts_now(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The gateway namespace, by name, for `ip` checks from inside it.
struct NsName(String);

impl NsName {
    fn lo(&self) -> BTreeSet<IpAddr> {
        lo_addresses(&self.0)
    }
}
