//! `epic-example-custom-gateway [--keep]`: plans the example's resources,
//! serves them over ADS, starts a real Envoy with the proxy's node id, and
//! prints whether Envoy ACKed the configuration (a NACK with Envoy's
//! reason: outside a namespace that holds the gateway's public address,
//! Envoy cannot bind its listener) and the listeners and clusters it has.
//! `--keep` leaves both running until Ctrl-C. The test `tests/envoy.rs`
//! runs the same steps in a network namespace and sends HTTP through.

use std::time::Duration;

use epic_example_custom_gateway::{ControlPlane, PROXY, RESOURCES, plan_resources};
use epic_standalone::envoy::{EnvoyConfig, LocalEnvoy, find_envoy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().any(|a| a == "--keep");
    let plan = plan_resources(RESOURCES)?;
    for g in &plan.gateways {
        let addresses: Vec<String> = g.status.addresses.iter().map(|a| a.to_string()).collect();
        println!(
            "gateway {}/{}: addresses {}, proxies {:?}",
            g.namespace,
            g.name,
            addresses.join(", "),
            g.status.proxies
        );
    }
    let control = ControlPlane::start(&plan).await?;
    println!("ADS server on {}", control.address());
    let work_dir = std::env::temp_dir().join(format!("epic-example-{}", std::process::id()));
    let mut envoy = LocalEnvoy::start(EnvoyConfig::new(
        find_envoy()?,
        PROXY,
        control.address(),
        &work_dir,
    ))
    .await?;
    envoy.wait_ready(Duration::from_secs(30)).await?;
    report_revision(&control).await;
    let (_, dump) = envoy.admin_get("/config_dump").await?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    for name in resource_names(&dump) {
        println!("Envoy has {name}");
    }
    if keep {
        println!("running; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    envoy.stop().await?;
    control.stop().await;
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}

/// Prints the proxy's first revision once Envoy answered it (at most 10 s).
async fn report_revision(control: &ControlPlane) {
    use epic_xds::RevisionState;
    for _ in 0..100 {
        if let Some(r) = control.cache().revisions(PROXY).first()
            && r.state != RevisionState::Pending
        {
            println!("revision {} {:?}", r.number, r.state);
            for nack in &r.nacks {
                println!(
                    "  Envoy refused {:?}: {}",
                    nack.resource_type,
                    nack.error.trim()
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("Envoy has not answered the first revision within 10 s");
}

/// `listener <name>` and `cluster <name>` for every dynamic listener and
/// cluster in an Envoy config dump.
fn resource_names(dump: &serde_json::Value) -> Vec<String> {
    let mut names = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for (list, key, kind) in [
            ("dynamic_listeners", "name", "listener"),
            ("dynamic_active_clusters", "cluster", "cluster"),
        ] {
            for item in config[list].as_array().into_iter().flatten() {
                let name = match key {
                    "name" => &item["name"],
                    _ => &item["cluster"]["name"],
                };
                if let Some(name) = name.as_str() {
                    names.push(format!("{kind} {name}"));
                }
            }
        }
    }
    names
}
