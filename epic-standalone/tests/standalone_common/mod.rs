//! The resources the standalone tests serve, and their bounded wait.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use epic_gue::hello::HelloSender;

/// Waits (at most 15 s) until `done` holds, yielding to the runtime (the
/// ADS server and the hello thread run meanwhile).
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Answers, from `socket` (the one the hello left from), the challenge the
/// gateway sends to a hello from a new address: waits at most 2 s for it
/// (the gateway's hello thread sends it), and checks the sender takes it.
pub fn answer_challenge(socket: &UdpSocket, sender: &mut HelloSender) {
    let mut buf = [0u8; 1500];
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (len, gateway) = socket
        .recv_from(&mut buf)
        .expect("the gateway's challenge within 2 s");
    let response = sender
        .answer(&buf[..len])
        .expect("a genuine challenge from the gateway");
    socket.send_to(response.as_bytes(), gateway).unwrap();
}

/// A tenant `acme` (id 5), a pool and its backend set `db` on node `n1`.
pub const HEAD: &str = r#"
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {namespace: acme, id: 5}
---
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {name: public}
spec: {addresses: [203.0.113.8/29]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: db, namespace: acme}
spec:
  cluster: c1
  namespace: default
  service: db
  ports: [{port: 5432, endpoints: [{address: 198.18.7.7, port: 5432, node: n1}]}]
  nodes: [{name: n1, address: 192.0.2.1}]
"#;

/// A TCP gateway `name` of tenant `acme` to `db` on `port`.
pub fn gateway(name: &str, port: u32) -> String {
    format!(
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: {name}, namespace: acme}}
spec:
  template: tcp
  listeners: [{{name: pg, port: {port}, protocol: TCP, backends: [{{namespace: default, name: db, port: 5432}}]}}]
"#
    )
}
