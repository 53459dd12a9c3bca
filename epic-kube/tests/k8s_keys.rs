//! The key sinks on a real API server (kube-apiserver + etcd, the gateway
//! chart's CRDs; one server plays platform and user cluster): a Secret
//! deleted by hand comes back on the next pass once the sinks read again,
//! and nothing is written while nothing changed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{apply, platform, rt};
use epic_engine::plan::{GatewayPlan, Plan};
use epic_gue::hello::HelloKey;
use epic_kube::node_keys::{NodeKeySink, NodeKeyTarget, NodeTunnel};
use epic_kube::tunnel_keys::{TUNNEL_KEYS_SECRET, TunnelKeySink};
use epic_model::{GatewayStatus, Tenant, TunnelStatus};
use epic_test_support::kube::tenant_platform;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams};

/// A plan whose one gateway, in `acme`, has a tunnel of cluster `c1`.
fn plan_with_a_tunnel() -> Plan {
    Plan {
        gateways: vec![GatewayPlan {
            namespace: "acme".into(),
            name: "web".into(),
            tenant: "acme".into(),
            tenant_id: 3,
            snapshot: None,
            announcements: Vec::new(),
            status: GatewayStatus {
                tunnels: vec![TunnelStatus {
                    id: 7,
                    cluster: "c1".into(),
                    node: "n1".into(),
                    gateway_node: "gw-1".into(),
                    gateway_address: Some("198.51.100.1".parse().unwrap()),
                    tenant_id: Some(3),
                    endpoints: Vec::new(),
                }],
                ..Default::default()
            },
        }],
        ..Default::default()
    }
}

fn value(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[test]
fn keys_deleted_by_hand_come_back_and_unchanged_keys_are_not_rewritten() {
    rt().block_on(async {
        let plane = platform().await;
        let client = plane.client().await.unwrap();
        apply(
            &client,
            &tenant_platform("acme", 3, "203.0.113.0/30", "198.51.100.1"),
        )
        .await;
        apply(
            &client,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: agents}\n",
        )
        .await;
        let tenants: Vec<Tenant> = Api::<Tenant>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let platform_secrets: Api<Secret> = Api::namespaced(client.clone(), "acme");
        let node_secrets: Api<Secret> = Api::namespaced(client.clone(), "agents");
        let plan = plan_with_a_tunnel();

        // Reading again on every pass (revalidation 0).
        let mut keys = TunnelKeySink::new(client.clone()).with_revalidation(Duration::ZERO);
        assert!(keys.ensure(&plan, &tenants).await.is_empty());
        let first = platform_secrets.get(TUNNEL_KEYS_SECRET).await.unwrap();
        assert!(keys.ensure(&plan, &tenants).await.is_empty());
        let again = platform_secrets.get(TUNNEL_KEYS_SECRET).await.unwrap();
        assert_eq!(
            first.metadata.resource_version,
            again.metadata.resource_version
        );

        let target = NodeKeyTarget {
            tenant_namespace: "acme".into(),
            cluster: "c1".into(),
            namespace: "agents".into(),
        };
        let mut nodes = NodeKeySink::new(client.clone(), client.clone(), target)
            .with_revalidation(Duration::ZERO);
        let tunnels = BTreeMap::from([(
            "n1".to_owned(),
            vec![NodeTunnel {
                id: 7,
                gateway: "198.51.100.1".parse().unwrap(),
                tenant_id: 3,
                endpoints: Vec::new(),
            }],
        )]);
        assert!(nodes.sync(&tunnels).await.is_empty());
        let written = node_secrets.get("epic-node-key-n1").await.unwrap();
        assert!(nodes.sync(&tunnels).await.is_empty());
        let unchanged = node_secrets.get("epic-node-key-n1").await.unwrap();
        assert_eq!(
            written.metadata.resource_version,
            unchanged.metadata.resource_version
        );

        // Both deleted by hand: back on the next pass, the node's key
        // derived from the new cluster key.
        platform_secrets
            .delete(TUNNEL_KEYS_SECRET, &DeleteParams::default())
            .await
            .unwrap();
        node_secrets
            .delete("epic-node-key-n1", &DeleteParams::default())
            .await
            .unwrap();
        assert!(keys.ensure(&plan, &tenants).await.is_empty());
        let cluster = platform_secrets.get(TUNNEL_KEYS_SECRET).await.unwrap();
        assert_ne!(value(&cluster, "c1"), value(&first, "c1"));
        assert!(nodes.sync(&tunnels).await.is_empty());
        let back = node_secrets.get("epic-node-key-n1").await.unwrap();
        let cluster_key = HelloKey::from_hex(&value(&cluster, "c1")).unwrap();
        assert_eq!(value(&back, "key"), cluster_key.node_key("n1").to_hex());

        // No tunnel left on n1: its Secret goes.
        assert!(nodes.sync(&BTreeMap::new()).await.is_empty());
        assert!(
            node_secrets
                .get_opt("epic-node-key-n1")
                .await
                .unwrap()
                .is_none()
        );
    });
}
