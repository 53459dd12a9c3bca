//! Standalone mode's hello verifier across a restart (root): a hello the
//! gateway accepted before it restarted is a replay after it, because the
//! last accepted counters are persisted in the state directory.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{HelloKey, HelloSender, SenderConfig};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId};
use epic_standalone::standalone::{Standalone, StandaloneConfig, StatusFile};
use epic_test_support::{Netns, require_root};

mod standalone_common;
use standalone_common::{HEAD, answer_challenge, gateway, until};

fn tunnel_id(dir: &Path) -> u32 {
    let status: StatusFile =
        serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
    status.gateways[0].status.tunnels[0].id
}

#[test]
fn a_hello_accepted_before_a_restart_is_a_replay_after_it() {
    if !require_root("a_hello_accepted_before_a_restart_is_a_replay_after_it") {
        return;
    }
    let gw = Netns::new("sh-gw").unwrap();
    let node = Netns::new("sh-node").unwrap();
    gw.add_veth("up0", &node, "up1").unwrap();
    gw.add_address("up0", "198.51.100.1/24").unwrap();
    node.add_address("up1", "198.51.100.2/24").unwrap();
    let node_socket = node
        .run_in(|| UdpSocket::bind("198.51.100.2:6080").unwrap())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("epic-standalone-hellos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("resources.yaml");
    std::fs::write(&file, format!("{HEAD}{}", gateway("db", 5432))).unwrap();
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
            let gateway = SocketAddr::new("198.51.100.1".parse().unwrap(), GUE_PORT);

            let mut epic = Standalone::start(config.clone()).await.unwrap();
            epic.reconcile().await.unwrap();
            let read_key = |path: &str| {
                let hex = std::fs::read_to_string(dir.join(path)).unwrap();
                HelloKey::from_hex(hex.trim()).unwrap()
            };
            // n1's agent gets its own key, derived from the cluster key.
            let cluster_key = read_key("keys/acme/c1.key");
            let key = read_key("keys/acme/c1/n1.key");
            assert_eq!(key, cluster_key.node_key("n1"));
            let clock = MonotonicClock::new();
            // Signed with the cluster key or another node's key, a hello
            // claiming to be n1 is refused (a bad MAC) and teaches nothing.
            for (i, wrong) in [cluster_key.clone(), cluster_key.node_key("n2")]
                .into_iter()
                .enumerate()
            {
                let forger = SenderConfig::new(
                    TunnelId(tunnel_id(&dir)),
                    wrong,
                    TenantId(5),
                    NodeId::from_name("n1"),
                );
                let mut forger = HelloSender::new(&forger, clock.now(), wall_clock_nanos());
                let forged = forger.hello_now(clock.now());
                node_socket.send_to(forged.as_bytes(), gateway).unwrap();
                until("the forged hello is refused", || {
                    epic.hello_stats().bad_mac == i as u64 + 1
                })
                .await;
            }
            assert_eq!(epic.hello_stats().learned, 0);
            let hello = SenderConfig::new(
                TunnelId(tunnel_id(&dir)),
                key,
                TenantId(5),
                NodeId::from_name("n1"),
            );
            let mut sender = HelloSender::new(&hello, clock.now(), wall_clock_nanos());
            let captured = sender.hello_now(clock.now());
            node_socket.send_to(captured.as_bytes(), gateway).unwrap();
            answer_challenge(&node_socket, &mut sender);
            until("the first hello is learned", || {
                epic.hello_stats().learned == 1
            })
            .await;
            let counters = dir.join("hello-counters.json");
            until("the counter is persisted", || {
                std::fs::read_to_string(&counters).is_ok_and(|t| t.contains("tunnels"))
            })
            .await;
            epic.shutdown().await;

            // Restarted: the captured hello is a replay; the node's next one
            // is learned.
            let mut epic = Standalone::start(config).await.unwrap();
            epic.reconcile().await.unwrap();
            node_socket.send_to(captured.as_bytes(), gateway).unwrap();
            until("the replay is refused", || epic.hello_stats().replayed == 1).await;
            assert_eq!(epic.hello_stats().learned, 0, "the replay taught nothing");
            let next = sender.hello_now(clock.now());
            node_socket.send_to(next.as_bytes(), gateway).unwrap();
            answer_challenge(&node_socket, &mut sender);
            until("the next hello is learned", || {
                epic.hello_stats().learned == 1
            })
            .await;
            epic.shutdown().await;
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}
