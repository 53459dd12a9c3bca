//! The engine's decisions: addresses, conditions, tunnels, endpoints,
//! stability across restarts, and determinism.

use epic_engine::plan::{DesiredInputs, GatewayNode, Plan, Recorded, plan};
use epic_engine::tunnel_ids::TunnelIdSecret;
use epic_gue::maps::tenant_mark;
use epic_model::source::parse_resources;
use epic_xds::ResourceType;
use proptest::prelude::*;

const BASE: &str = r#"
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {namespace: acme, id: 1}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: globex}
spec: {namespace: globex, id: 2, limits: {gateways: 1}, templates: [tcp]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {name: public}
spec: {addresses: [192.0.2.0/30, "2001:db8::/126"]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: web, namespace: acme}
spec:
  cluster: c1
  namespace: default
  service: web
  ports:
  - port: 80
    endpoints:
    - {address: 198.18.1.5, port: 8080, node: n1}
    - {address: 198.18.2.5, port: 8080, node: n2, ready: false}
  nodes:
  - {name: n1, address: 198.51.100.1}
  - {name: n2, address: 198.51.100.2}
"#;

fn web(name: &str, template: &str) -> String {
    format!(
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: {name}, namespace: acme}}
spec:
  template: {template}
  listeners: [{{name: web, port: 80, protocol: TCP, backends: [{{namespace: default, name: web, port: 80}}]}}]
"#
    )
}

fn inputs(extra: &str) -> DesiredInputs {
    let mut inputs = parse_resources(&format!("{BASE}{extra}")).unwrap();
    inputs.gateway_nodes = vec![GatewayNode {
        name: "gw1".into(),
        address: "203.0.113.1".parse().unwrap(),
    }];
    inputs
}

fn reason(plan: &Plan, ns: &str, name: &str, type_: &str) -> (String, String, String) {
    let c = plan
        .gateway(ns, name)
        .unwrap()
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("{ns}/{name} has no {type_}"))
        .clone();
    (c.status, c.reason, c.message)
}

#[test]
fn a_tcp_gateway_gets_an_address_a_snapshot_tunnels_and_endpoints() {
    let p = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let g = p.gateway("acme", "web").unwrap();
    assert!(g.programmed(), "{:?}", g.status.conditions);
    assert_eq!(g.tenant, "acme");
    assert_eq!(
        g.status.addresses,
        ["192.0.2.0".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(g.status.proxies, ["acme/web/proxy-0"]);
    assert_eq!(g.announcements.len(), 1);
    assert_eq!(g.announcements[0].prefix_len, 32);
    let snap = g.snapshot.as_ref().unwrap();
    assert!(snap.resources(ResourceType::Listener).get("web").is_some());
    assert!(
        snap.resources(ResourceType::Cluster)
            .get("default/web:80")
            .is_some()
    );
    // One tunnel per endpoint node (ready or not), on the one gateway node,
    // its id derived under the (here all-zero) secret.
    let tunnels: Vec<(u32, &str, &str)> = p
        .tunnels
        .iter()
        .map(|t| (t.id, t.key.node.as_str(), t.key.gateway_node.as_str()))
        .collect();
    let id = |i: usize| TunnelIdSecret::default().candidate(&p.tunnels[i].key, 0);
    let (id1, id2) = (id(0).min(id(1)), id(0).max(id(1)));
    let node_of = |id: u32| {
        p.tunnels
            .iter()
            .find(|t| t.id == id)
            .unwrap()
            .key
            .node
            .clone()
    };
    assert_eq!(
        tunnels,
        [(id1, &*node_of(id1), "gw1"), (id2, &*node_of(id2), "gw1")]
    );
    assert_eq!(p.tunnels[0].tenant_id, 1);
    assert_eq!(p.tunnels[0].node_address.to_string(), "198.51.100.1");
    let eps = &p.endpoints["gw1"];
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].address.to_string(), "198.18.1.5");
    let n1 = p.tunnels.iter().find(|t| t.key.node == "n1").unwrap().id;
    assert_eq!((eps[0].port, eps[0].protocol, eps[0].tunnel), (8080, 6, n1));
    assert_eq!(g.status.tunnels.len(), 2);
    // Each says where the node's hellos go and the tenant id they carry.
    for t in &g.status.tunnels {
        assert_eq!(t.gateway_address, Some("203.0.113.1".parse().unwrap()));
        assert_eq!(t.tenant_id, Some(1));
    }
    // Each tunnel's status names the endpoints it delivers to (what the
    // cluster node's agent lets it reach), ready or not.
    let mut delivered: Vec<(&str, Vec<String>)> = g
        .status
        .tunnels
        .iter()
        .map(|t| {
            let eps = t.endpoints.iter();
            let eps = eps.map(|e| format!("{}:{}/{:?}", e.address, e.port, e.protocol));
            (t.node.as_str(), eps.collect())
        })
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            ("n1", vec!["198.18.1.5:8080/Tcp".to_owned()]),
            ("n2", vec!["198.18.2.5:8080/Tcp".to_owned()])
        ]
    );
    // Recorded: the allocation and both tunnels.
    assert_eq!(p.recorded.allocations.len(), 1);
    assert_eq!(p.recorded.tunnels.len(), 2);
}

#[test]
fn the_plan_is_deterministic_and_stable_across_a_restart() {
    let first = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    let again = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    let key = |p: &Plan| {
        p.gateways
            .iter()
            .map(|g| {
                (
                    serde_json::to_string(&g.status).unwrap(),
                    g.snapshot.as_ref().map(|s| s.version().to_owned()),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&first), key(&again));
    assert_eq!(first.recorded, again.recorded);

    // Restart with the recorded state; a new gateway whose name sorts first
    // arrives: the existing one keeps its address and tunnels.
    let restarted = plan(
        &inputs(&format!("{}{}", web("web", "tcp"), web("aaa", "tcp"))),
        &first.recorded,
    );
    let old = restarted.gateway("acme", "web").unwrap();
    assert_eq!(
        old.status.addresses,
        first.gateway("acme", "web").unwrap().status.addresses
    );
    assert_eq!(
        old.status.tunnels,
        first.gateway("acme", "web").unwrap().status.tunnels
    );
    let new = restarted.gateway("acme", "aaa").unwrap();
    assert_eq!(new.status.addresses[0].to_string(), "192.0.2.1");
    // The new gateway shares the tunnels (same nodes, same cluster).
    assert_eq!(new.status.tunnels, old.status.tunnels);
}

#[test]
fn a_removed_gateway_releases_its_address_and_tunnels() {
    let first = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    let after = plan(&inputs(""), &first.recorded);
    assert!(after.gateways.is_empty());
    assert!(after.tunnels.is_empty());
    assert!(after.recorded.allocations.is_empty());
    assert!(after.recorded.tunnels.is_empty());
    // And the address goes to the next gateway.
    let next = plan(&inputs(&web("other", "tcp")), &after.recorded);
    assert_eq!(
        next.gateway("acme", "other").unwrap().status.addresses[0].to_string(),
        "192.0.2.0"
    );
}

#[test]
fn conditions_say_why_a_gateway_is_not_served() {
    let extra = format!(
        "{}{}{}{}",
        web("missing-template", "nope"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: stray, namespace: nobody}
spec: {template: tcp, listeners: [{name: a, port: 1, protocol: TCP}]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: g1, namespace: globex}
spec: {template: tcp, listeners: [{name: a, port: 1, protocol: TCP}]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: g2, namespace: globex}
spec: {template: tcp, listeners: [{name: a, port: 1, protocol: TCP}]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: g0, namespace: globex}
spec: {template: http, listeners: [{name: a, port: 1, protocol: HTTP}]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: twice, namespace: acme}
spec: {template: tcp, listeners: [{name: a, port: 1, protocol: TCP}, {name: b, port: 1, protocol: TCP}]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: broken, namespace: acme}
spec: {envoy: "{% for %}"}
---
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: bad-output, namespace: acme}
spec: {envoy: "listeners: [{name: x, address: {socket_address: {address: nowhere, port_value: 99999}}}]"}
"#,
        web("uses-broken", "broken"),
        web("uses-bad-output", "bad-output"),
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    let (s, r, m) = reason(&p, "acme", "missing-template", "Accepted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "InvalidParameters"));
    assert!(m.contains("no GatewayTemplate acme/nope"), "{m}");
    let (s, r, _) = reason(&p, "nobody", "stray", "Accepted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "UnknownTenant"));
    // globex: only tcp allowed, at most one gateway (g1 wins by name; g0 is refused first).
    let (s, r, _) = reason(&p, "globex", "g0", "Accepted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "NotAllowed"));
    assert!(p.gateway("globex", "g1").unwrap().programmed());
    let (s, r, m) = reason(&p, "globex", "g2", "Accepted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "TenantLimit"));
    assert!(m.contains("at most 1 gateways"), "{m}");
    let (_, r, m) = reason(&p, "acme", "twice", "Accepted");
    assert_eq!(r, "InvalidParameters");
    assert!(m.contains("port 1/tcp"), "{m}");
    let (_, r, m) = reason(&p, "acme", "uses-broken", "Accepted");
    assert_eq!(r, "InvalidParameters");
    assert!(m.contains("GatewayTemplate acme/broken"), "{m}");
    let (s, r, _) = reason(&p, "acme", "uses-bad-output", "Programmed");
    assert_eq!((s.as_str(), r.as_str()), ("False", "Invalid"));
    assert!(
        p.gateway("acme", "uses-bad-output")
            .unwrap()
            .snapshot
            .is_none()
    );
    // Only served gateways hold addresses.
    for g in &p.gateways {
        let served = g.status.addresses.is_empty();
        assert_eq!(
            served,
            !g.programmed() && g.name != "uses-bad-output",
            "{}",
            g.name
        );
    }
}

#[test]
fn an_exhausted_pool_is_address_not_assigned() {
    let extra: String = (0..5).map(|i| web(&format!("g{i}"), "tcp")).collect();
    let p = plan(&inputs(&extra), &Recorded::default());
    let programmed = p.gateways.iter().filter(|g| g.programmed()).count();
    assert_eq!(programmed, 4, "a /30 holds four addresses");
    let (s, r, _) = reason(&p, "acme", "g4", "Programmed");
    assert_eq!((s.as_str(), r.as_str()), ("False", "AddressNotAssigned"));
}

#[test]
fn http_routes_attach_and_report_unresolved_backends() {
    let extra = r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: site, namespace: acme}
spec:
  template: http
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Route
metadata: {name: site, namespace: acme}
spec:
  http:
    parentRefs: [{name: site}]
    rules:
    - backendRefs: [{name: web, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /gone}}]
      backendRefs: [{name: gone, port: 80}]
"#;
    let p = plan(&inputs(extra), &Recorded::default());
    let g = p.gateway("acme", "site").unwrap();
    assert!(g.programmed(), "{:?}", g.status.conditions);
    assert_eq!(g.status.routes.len(), 1);
    let r = &g.status.routes[0];
    assert_eq!(r.listeners, ["http"]);
    let resolved = r
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved.status, "False");
    assert!(resolved.message.contains("gone"), "{}", resolved.message);
    let snap = g.snapshot.as_ref().unwrap();
    assert!(snap.resources(ResourceType::Route).get("http").is_some());
    // Only the used backend's endpoints get tunnels.
    assert_eq!(p.tunnels.len(), 2);
}

#[test]
fn two_tenants_may_use_the_same_pod_address_each_in_its_own_scope() {
    let extra = format!(
        "{}{}",
        web("web", "tcp"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: web, namespace: globex}
spec:
  cluster: other
  namespace: default
  service: web
  ports: [{port: 80, endpoints: [{address: 198.18.1.5, port: 8080, node: x1}]}]
  nodes: [{name: x1, address: 198.51.100.9}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: web, namespace: globex}
spec:
  template: tcp
  listeners: [{name: web, port: 80, protocol: TCP, backends: [{namespace: default, name: web, port: 80}]}]
"#
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    let (acme, globex) = (
        p.gateway("acme", "web").unwrap(),
        p.gateway("globex", "web").unwrap(),
    );
    assert!(
        acme.programmed() && globex.programmed(),
        "{:?}",
        globex.status.conditions
    );
    assert_eq!((acme.tenant_id, globex.tenant_id), (1, 2));
    let tunnel_of = |tenant: &str| {
        p.tunnels
            .iter()
            .find(|t| t.key.tenant == tenant && t.key.node != "n2")
            .unwrap()
            .id
    };
    let pod: Vec<(u32, u32)> = p.endpoints["gw1"]
        .iter()
        .filter(|e| e.address.to_string() == "198.18.1.5")
        .map(|e| (e.scope, e.tunnel))
        .collect();
    // Each in its tenant's scope: the tenant's socket mark.
    assert_eq!(
        pod,
        [
            (tenant_mark(1), tunnel_of("acme")),
            (tenant_mark(2), tunnel_of("globex"))
        ]
    );
}

#[test]
fn one_tenant_cannot_reach_one_pod_address_through_two_clusters() {
    let extra = format!(
        "{}{}",
        web("web", "tcp"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: web2, namespace: acme}
spec:
  cluster: c2
  namespace: default
  service: web2
  ports: [{port: 80, endpoints: [{address: 198.18.1.5, port: 8080, node: y1}]}]
  nodes: [{name: y1, address: 198.51.100.9}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: web2, namespace: acme}
spec:
  template: tcp
  listeners: [{name: web, port: 80, protocol: TCP, backends: [{namespace: default, name: web2, port: 80}]}]
"#
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    assert!(p.gateway("acme", "web").unwrap().programmed());
    let (s, r, m) = reason(&p, "acme", "web2", "Programmed");
    assert_eq!((s.as_str(), r.as_str()), ("False", "EndpointConflict"));
    assert!(m.contains("198.18.1.5:8080"), "{m}");
    assert!(p.tunnels.iter().all(|t| t.key.cluster == "c1"));
}

#[test]
fn global_problems_are_reported() {
    let extra = r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: copycat}
spec: {namespace: other, id: 1}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Route
metadata: {name: empty, namespace: acme}
spec: {}
"#;
    let p = plan(&inputs(extra), &Recorded::default());
    let text: Vec<String> = p
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.message))
        .collect();
    assert!(
        text.contains(&"Tenant copycat: id 1 is already used by tenant acme".to_owned()),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"Route acme/empty: exactly one of `http`, `tcp` and `udp` must be set".to_owned()
        ),
        "{text:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever gateways come and go, tunnel ids stay unique, and a tunnel
    /// that is still wanted keeps its id.
    #[test]
    fn tunnel_ids_are_unique_and_kept(steps in proptest::collection::vec(proptest::collection::btree_set(0u8..6, 0..6), 1..6)) {
        let mut recorded = Recorded::default();
        for (step, nodes) in steps.into_iter().enumerate() {
            // Each step a new secret, as a restarted controller has: the
            // recorded ids are kept all the same.
            recorded.tunnel_id_secret = Some(TunnelIdSecret::from_bytes([step as u8; 32]));
            let mut extra = String::new();
            for n in &nodes {
                extra.push_str(&format!(
                    "\n---\napiVersion: epic-gateway.org/v1alpha1\nkind: BackendSet\nmetadata: {{name: s{n}, namespace: acme}}\nspec:\n  cluster: c1\n  namespace: default\n  service: s{n}\n  ports: [{{port: 80, endpoints: [{{address: 198.18.0.{n}, port: 80, node: n{n}}}]}}]\n  nodes: [{{name: n{n}, address: 198.51.100.{n}}}]\n---\napiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {{name: g{n}, namespace: acme}}\nspec:\n  template: tcp\n  listeners: [{{name: l, port: 80, protocol: TCP, backends: [{{namespace: default, name: s{n}, port: 80}}]}}]\n"
                ));
            }
            // The base backend set is unused here: drop it.
            let mut inputs = inputs(&extra);
            inputs.backend_sets.retain(|b| b.metadata.name.as_deref() != Some("web"));
            let p = plan(&inputs, &recorded);
            let ids: std::collections::BTreeSet<u32> = p.tunnels.iter().map(|t| t.id).collect();
            prop_assert_eq!(ids.len(), p.tunnels.len());
            for t in &p.tunnels {
                if let Some(old) = recorded.tunnels.iter().find(|r| r.key == t.key) {
                    prop_assert_eq!(old.id, t.id);
                }
            }
            // Each programmed gateway's one endpoint node (the /30 pool holds four).
            let wanted: std::collections::BTreeSet<String> = p
                .gateways
                .iter()
                .filter(|g| g.programmed())
                .map(|g| g.name.replacen('g', "n", 1))
                .collect();
            prop_assert_eq!(wanted.len(), nodes.len().min(4));
            let got: std::collections::BTreeSet<String> = p.tunnels.iter().map(|t| t.key.node.clone()).collect();
            prop_assert_eq!(got, wanted);
            recorded = p.recorded.clone();
        }
    }
}

#[test]
fn a_template_that_stops_rendering_keeps_the_gateway_served() {
    let first = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    let broken = format!(
        "{}\n---\napiVersion: epic-gateway.org/v1alpha1\nkind: GatewayTemplate\nmetadata: {{name: tcp, namespace: acme}}\nspec: {{envoy: '{{{{ fail(\"broken on purpose\") }}}}'}}\n",
        web("web", "tcp")
    );
    let p = plan(&inputs(&broken), &first.recorded);
    let g = p.gateway("acme", "web").unwrap();
    let (s, r, m) = reason(&p, "acme", "web", "Programmed");
    assert_eq!((s.as_str(), r.as_str()), ("False", "Invalid"));
    assert!(m.contains("broken on purpose"), "{m}");
    assert!(g.snapshot.is_none(), "no new configuration");
    let before = first.gateway("acme", "web").unwrap();
    assert_eq!(g.status.proxies, before.status.proxies);
    assert_eq!(g.status.addresses, before.status.addresses);
    assert_eq!(g.announcements, before.announcements);
    assert_eq!(g.status.tunnels, before.status.tunnels);
    assert_eq!(p.tunnels, first.tunnels);
    assert_eq!(p.endpoints, first.endpoints);
}

#[test]
fn replicas_outside_the_bounds_are_refused() {
    for replicas in [0, epic_engine::plan::MAX_REPLICAS + 1] {
        let extra = format!(
            "{}\n---\napiVersion: epic-gateway.org/v1alpha1\nkind: GatewayTemplate\nmetadata: {{name: big, namespace: acme}}\nspec: {{builtin: tcp, replicas: {replicas}}}\n",
            web("web", "big")
        );
        let p = plan(&inputs(&extra), &Recorded::default());
        let (s, r, m) = reason(&p, "acme", "web", "Accepted");
        assert_eq!((s.as_str(), r.as_str()), ("False", "InvalidParameters"));
        assert!(
            m.contains(&format!("replicas {replicas} is outside")),
            "{m}"
        );
    }
}

#[test]
fn an_endpoint_on_an_unlisted_node_is_reported() {
    let extra = format!(
        "{}{}",
        web("web", "tcp"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: lost, namespace: acme}
spec:
  cluster: c1
  namespace: default
  service: lost
  ports: [{port: 81, endpoints: [{address: 198.18.9.9, port: 81, node: nowhere}]}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: lost, namespace: acme}
spec:
  template: tcp
  listeners: [{name: l, port: 81, protocol: TCP, backends: [{namespace: default, name: lost, port: 81}]}]
"#
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    let text: Vec<String> = p
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.message))
        .collect();
    assert_eq!(
        text,
        [
            "BackendSet acme/lost: endpoint 198.18.9.9:81 is not used: it is on node \"nowhere\", which spec.nodes does not list: no tunnel reaches it"
        ]
    );
    assert!(p.tunnels.iter().all(|t| t.key.node != "nowhere"));
    // Envoy never gets an endpoint no tunnel reaches: it would leave the
    // gateway node unencapsulated.
    assert!(!rendered(&p, "lost", "198.18.9.9"));
    let (s, r, m) = reason(&p, "acme", "lost", "EndpointsAdmitted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "EndpointRefused"));
    assert!(m.starts_with("1 endpoints refused"), "{m}");
    let (s, ..) = reason(&p, "acme", "web", "EndpointsAdmitted");
    assert_eq!(s, "True");
}

/// Whether any resource of gateway `acme/name`'s snapshot holds `text`.
fn rendered(p: &Plan, name: &str, text: &str) -> bool {
    let snap = p.gateway("acme", name).unwrap().snapshot.as_ref().unwrap();
    [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
    ]
    .into_iter()
    .flat_map(|kind| snap.resources(kind).resources().iter())
    .any(|r| r.value().windows(text.len()).any(|w| w == text.as_bytes()))
}

#[test]
fn an_endpoint_is_rendered_only_once_its_tunnels_carry_packets() {
    use epic_model::VerifiedTunnel;
    let verified = |nodes: &[(&str, &str)]| {
        nodes
            .iter()
            .map(|(node, gateway_node)| VerifiedTunnel {
                tenant: "acme".into(),
                cluster: "c1".into(),
                node: (*node).into(),
                gateway_node: (*gateway_node).into(),
            })
            .collect()
    };
    let mut two_nodes = inputs(&web("web", "tcp"));
    two_nodes.gateway_nodes.push(GatewayNode {
        name: "gw2".into(),
        address: "203.0.113.2".parse().unwrap(),
    });
    // Nothing verified yet: no endpoint is rendered, but both tunnels (on
    // both gateway nodes) and the data-path endpoints are planned, so the
    // nodes' hellos can verify them.
    two_nodes.verified_tunnels = Some(Default::default());
    let p = plan(&two_nodes, &Recorded::default());
    assert!(p.gateway("acme", "web").unwrap().programmed());
    assert!(!rendered(&p, "web", "198.18.1.5"));
    assert!(!rendered(&p, "web", "198.18.2.5"));
    assert_eq!(p.tunnels.len(), 4);
    assert_eq!(p.endpoints["gw1"].len() + p.endpoints["gw2"].len(), 4);
    // n1's tunnel verified on one gateway node only: still held back (the
    // proxy on the other would drop its first packet).
    two_nodes.verified_tunnels = Some(verified(&[("n1", "gw1"), ("n2", "gw2")]));
    let p = plan(&two_nodes, &Recorded::default());
    assert!(!rendered(&p, "web", "198.18.1.5"));
    assert!(!rendered(&p, "web", "198.18.2.5"));
    // On both: n1's endpoint is rendered, n2's still waits.
    two_nodes.verified_tunnels = Some(verified(&[("n1", "gw1"), ("n1", "gw2"), ("n2", "gw2")]));
    let p = plan(&two_nodes, &Recorded::default());
    assert!(rendered(&p, "web", "198.18.1.5"));
    assert!(!rendered(&p, "web", "198.18.2.5"));
    // Another cluster's or tenant's verified tunnel does not count.
    let mut other = verified(&[("n2", "gw1"), ("n2", "gw2")]);
    other = other
        .into_iter()
        .map(|mut t: VerifiedTunnel| {
            t.cluster = "c2".into();
            t
        })
        .collect();
    two_nodes.verified_tunnels = Some(other);
    let p = plan(&two_nodes, &Recorded::default());
    assert!(!rendered(&p, "web", "198.18.2.5"));
    // Without a verified set (no data path to ask), every endpoint is.
    two_nodes.verified_tunnels = None;
    let p = plan(&two_nodes, &Recorded::default());
    assert!(rendered(&p, "web", "198.18.1.5"));
    assert!(rendered(&p, "web", "198.18.2.5"));
}

#[test]
fn endpoints_at_the_platform_or_outside_the_tenant_are_never_rendered() {
    let extra = format!(
        "{}{}",
        web("web", "tcp"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: initech}
spec: {namespace: initech, id: 3, clusterNetworks: [198.18.0.0/16, 198.51.100.0/24, "bad"]}
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: probe, namespace: initech}
spec:
  cluster: c1
  namespace: default
  service: probe
  ports:
  - port: 80
    endpoints:
    - {address: 198.18.3.5, port: 8080, node: n1}
    - {address: 127.0.0.1, port: 18000, node: n1}
    - {address: "::ffff:127.0.0.1", port: 18000, node: n1}
    - {address: 169.254.169.254, port: 80, node: n1}
    - {address: 203.0.113.1, port: 22, node: n1}
    - {address: 192.0.2.1, port: 80, node: n1}
    - {address: 198.18.250.1, port: 179, node: n1}
    - {address: 10.0.0.1, port: 80, node: n1}
    - {address: 198.18.7.7, port: 80, node: loopy}
  nodes:
  - {name: n1, address: 198.51.100.1}
  - {name: loopy, address: 127.0.0.1}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: probe, namespace: initech}
spec:
  template: tcp
  listeners: [{name: l, port: 80, protocol: TCP, backends: [{namespace: default, name: probe, port: 80}]}]
"#
    );
    let mut inputs = inputs(&extra);
    inputs.platform_networks = vec!["198.18.250.0/24".parse().unwrap()];
    let p = plan(&inputs, &Recorded::default());
    let g = p.gateway("initech", "probe").unwrap();
    assert!(g.programmed(), "{:?}", g.status.conditions);
    let (s, r, m) = reason(&p, "initech", "probe", "EndpointsAdmitted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "EndpointRefused"));
    assert!(m.starts_with("8 endpoints refused"), "{m}");
    assert!(
        m.contains("127.0.0.1:18000 of probe (its address is a loopback address)"),
        "{m}"
    );
    assert!(m.ends_with("; and 3 more"), "{m}");
    let problems: Vec<String> = p
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.message))
        .collect();
    let expected = [
        "Tenant initech: clusterNetworks[2]: \"bad\" is neither a CIDR nor an IP address: left out",
        "BackendSet initech/probe: endpoint 10.0.0.1:80 is not used: its address is outside the tenant's clusterNetworks",
        "BackendSet initech/probe: endpoint 127.0.0.1:18000 is not used: its address is a loopback address",
        "BackendSet initech/probe: endpoint 169.254.169.254:80 is not used: its address is a link-local address",
        "BackendSet initech/probe: endpoint 192.0.2.1:80 is not used: its address is inside address pool public",
        "BackendSet initech/probe: endpoint 198.18.250.1:179 is not used: its address is inside the platform network 198.18.250.0/24",
        "BackendSet initech/probe: endpoint 198.18.7.7:80 is not used: its node \"loopy\" has address 127.0.0.1, which is a loopback address",
        "BackendSet initech/probe: endpoint 203.0.113.1:22 is not used: its address is the address of gateway node gw1",
        "BackendSet initech/probe: endpoint ::ffff:127.0.0.1:18000 is not used: its address is an IPv6 address that stands for an IPv4 one",
    ];
    assert_eq!(problems, expected);
    // The data path and Envoy get the one admitted endpoint only.
    let snap = g.snapshot.as_ref().unwrap();
    let holds = |text: &str| {
        [ResourceType::Cluster, ResourceType::Endpoint]
            .into_iter()
            .flat_map(|kind| snap.resources(kind).resources().iter())
            .any(|r| r.value().windows(text.len()).any(|w| w == text.as_bytes()))
    };
    assert!(holds("198.18.3.5"));
    for refused in [
        "127.0.0.1",
        "169.254.169.254",
        "203.0.113.1",
        "192.0.2.1",
        "198.18.250.1",
        "10.0.0.1",
        "198.18.7.7",
    ] {
        assert!(!holds(refused), "{refused} is rendered");
    }
    let tenant_tunnels: Vec<&str> = p
        .tunnels
        .iter()
        .filter(|t| t.key.tenant == "initech")
        .map(|t| t.key.node.as_str())
        .collect();
    assert_eq!(tenant_tunnels, ["n1"], "no tunnel to the refused node");
    let planned: Vec<String> = p.endpoints["gw1"]
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect();
    assert!(planned.contains(&"198.18.3.5:8080".to_owned()));
    for refused in ["127.0.0.1:18000", "10.0.0.1:80", "198.18.7.7:80"] {
        assert!(!planned.contains(&refused.to_owned()), "{refused}");
    }
}

#[test]
fn a_gateway_is_configured_only_with_the_backends_it_uses() {
    let extra = format!(
        "{}{}",
        web("web", "tcp"),
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: other, namespace: acme}
spec:
  cluster: c1
  namespace: default
  service: other
  ports: [{port: 90, endpoints: [{address: 198.18.8.8, port: 90, node: n9}]}]
  nodes: [{name: n9, address: 198.51.100.9}]
"#
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    let g = p.gateway("acme", "web").unwrap();
    let clusters = g
        .snapshot
        .as_ref()
        .unwrap()
        .resources(ResourceType::Cluster);
    assert!(clusters.get("default/web:80").is_some());
    assert!(
        clusters.get("default/other:90").is_none(),
        "unused backend configured"
    );
    assert!(
        p.tunnels.iter().all(|t| t.key.node != "n9"),
        "tunnel to an unused backend's node"
    );
}

/// The plan as compared here: each gateway's status and snapshot version.
fn outcome(p: &Plan) -> Vec<(String, epic_model::GatewayStatus, Option<String>)> {
    p.gateways
        .iter()
        .map(|g| {
            (
                format!("{}/{}", g.namespace, g.name),
                g.status.clone(),
                g.snapshot.as_ref().map(|s| s.version().to_owned()),
            )
        })
        .collect()
}

#[test]
fn an_incremental_plan_is_the_full_plan_and_renders_only_what_changed() {
    use epic_engine::plan::{RenderCache, plan_incremental};
    let a = inputs(&format!("{}{}", web("web", "tcp"), web("api", "tcp")));
    let mut b = a.clone();
    b.backend_sets[0].spec.ports[0].endpoints[0].port = 8081;
    let broken = inputs(&format!(
        "{}{}\n---\napiVersion: epic-gateway.org/v1alpha1\nkind: GatewayTemplate\nmetadata: {{name: bad, namespace: acme}}\nspec: {{envoy: '{{{{ fail(\"no\") }}}}'}}\n",
        web("web", "bad"),
        web("api", "tcp")
    ));
    let mut cache = RenderCache::new();
    let mut recorded = Recorded::default();
    for (step, next) in [&a, &a, &b, &a, &broken, &a].into_iter().enumerate() {
        let incremental = plan_incremental(next, &recorded, &mut cache);
        let full = plan(next, &recorded);
        assert_eq!(outcome(&incremental), outcome(&full), "step {step}");
        recorded = full.recorded;
        assert!(
            cache.len() <= 2,
            "step {step}: only live renderings are kept"
        );
    }
    // a: 2 renders; a again: 0; b (both gateways use the changed set): 2;
    // back to a: 2 (the cache keeps only the last plan's); broken: a new
    // template changes every key (templates may include each other): 2;
    // a: 2 again.
    assert_eq!((cache.misses(), cache.hits()), (10, 2));
}

/// New tunnel ids depend on the records' secret (not "the lowest free id"),
/// are never 0, and come back unchanged from the records under any secret.
#[test]
fn tunnel_ids_are_derived_from_the_secret_and_kept_by_the_records() {
    let inputs = inputs(&web("web", "tcp"));
    let ids = |p: &Plan| -> Vec<u32> { p.tunnels.iter().map(|t| t.id).collect() };
    let secret = |b: u8| Recorded {
        tunnel_id_secret: Some(TunnelIdSecret::from_bytes([b; 32])),
        ..Recorded::default()
    };
    let (a, b) = (plan(&inputs, &secret(1)), plan(&inputs, &secret(2)));
    assert_eq!(ids(&a).len(), 2);
    assert!(
        ids(&a).iter().all(|id| *id != 0 && *id > 2),
        "{:?}",
        ids(&a)
    );
    assert_ne!(ids(&a), ids(&b), "another secret, other ids");
    assert_eq!(ids(&a), ids(&plan(&inputs, &secret(1))), "deterministic");
    // Restarted with another secret, from the records: the same ids.
    let mut restarted = a.recorded.clone();
    restarted.tunnel_id_secret = Some(TunnelIdSecret::from_bytes([3; 32]));
    assert_eq!(ids(&plan(&inputs, &restarted)), ids(&a));
    // The secret goes into the records with them.
    assert_eq!(a.recorded.tunnel_id_secret, secret(1).tunnel_id_secret);
}

/// A tenant's address limit counts its distinct addresses: a third gateway
/// beyond `addresses: 2` gets `AddressNotAssigned` and holds nothing, and a
/// gateway deleted makes room for it.
#[test]
fn the_tenant_address_limit_counts_what_the_tenant_holds() {
    let gateways = format!("{}{}{}", web("a", "tcp"), web("b", "tcp"), web("c", "tcp"));
    let mut inputs = inputs(&gateways);
    inputs.tenants[0].spec.limits.addresses = Some(2);
    let p = plan(&inputs, &Recorded::default());
    let held = |p: &Plan, name: &str| p.gateway("acme", name).unwrap().status.addresses.len();
    assert_eq!((held(&p, "a"), held(&p, "b"), held(&p, "c")), (1, 1, 0));
    let (_, reason, message) = reason(&p, "acme", "c", "Programmed");
    assert_eq!(reason, "AddressNotAssigned");
    assert!(
        message.contains("may hold at most 2 addresses"),
        "{message}"
    );
    assert_eq!(p.recorded.allocations.len(), 2);

    inputs
        .gateways
        .retain(|g| g.metadata.name.as_deref() != Some("a"));
    let p = plan(&inputs, &p.recorded);
    assert_eq!((held(&p, "b"), held(&p, "c")), (1, 1));
}

#[test]
fn a_tenant_template_that_reaches_the_platform_is_never_served() {
    // The template copies the built-in TCP proxy but adds a static cluster
    // to the ADS server and points the listener at it.
    let extra = format!(
        "{}{}",
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: sneaky, namespace: acme}
spec:
  envoy: |
    listeners:
    - name: web
      address: {socket_address: {address: {{ addresses.all[0] }}, port_value: 80}}
      filter_chains:
      - filters:
        - name: tcp
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
            stat_prefix: web
            cluster: ads
    clusters:
    - name: ads
      type: STATIC
      load_assignment:
        cluster_name: ads
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18000}}}}]}]
"#,
        web("web", "sneaky")
    );
    let p = plan(&inputs(&extra), &Recorded::default());
    let g = p.gateway("acme", "web").unwrap();
    let (s, r, m) = reason(&p, "acme", "web", "Programmed");
    assert_eq!((s.as_str(), r.as_str()), ("False", "Invalid"));
    assert!(
        m.contains("refused by the platform's policy: clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address: 127.0.0.1:18000 is not an endpoint of the gateway"),
        "{m}"
    );
    assert!(g.snapshot.is_none());
}

#[test]
fn a_template_may_name_only_an_envoy_image_the_platform_allows() {
    let extra = format!(
        "{}{}{}",
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: own-image, namespace: acme}
spec: {builtin: tcp, envoyImage: "registry.example/evil/envoy:latest"}
---
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: platform-image, namespace: acme}
spec: {builtin: tcp, envoyImage: "envoyproxy/envoy:v1.40.0"}
"#,
        web("evil", "own-image"),
        web("fine", "platform-image"),
    );
    let mut inputs = inputs(&extra);
    // Standalone mode (no list) ignores images.
    let p = plan(&inputs, &Recorded::default());
    assert!(p.gateway("acme", "evil").unwrap().accepted());
    inputs.envoy_images = Some(vec!["envoyproxy/envoy:v1.40.0".into()]);
    let p = plan(&inputs, &Recorded::default());
    let (s, r, m) = reason(&p, "acme", "evil", "Accepted");
    assert_eq!((s.as_str(), r.as_str()), ("False", "NotAllowed"));
    assert!(
        m.contains(
            "Envoy image \"registry.example/evil/envoy:latest\" is not one the platform allows"
        ),
        "{m}"
    );
    assert!(
        p.gateway("acme", "evil")
            .unwrap()
            .status
            .addresses
            .is_empty()
    );
    assert!(p.gateway("acme", "fine").unwrap().programmed());
}

#[test]
fn a_tenants_route_and_endpoint_limits_give_conditions_not_failures() {
    let extra = r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: initech}
spec: {namespace: initech, id: 3, limits: {routes: 1, endpoints: 3}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: web, namespace: initech}
spec:
  cluster: c1
  namespace: default
  service: web
  ports:
  - port: 80
    endpoints:
    - {address: 198.18.4.1, port: 8080, node: n1}
    - {address: 198.18.4.2, port: 8080, node: n1}
    - {address: 198.18.4.3, port: 8080, node: n1}
    - {address: 198.18.4.4, port: 8080, node: n1}
    - {address: 198.18.4.5, port: 8080, node: n1}
  nodes: [{name: n1, address: 198.51.100.1}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: a, namespace: initech}
spec:
  template: http
  listeners: [{name: web, port: 80, protocol: HTTP}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: b, namespace: initech}
spec:
  template: tcp
  listeners: [{name: web, port: 81, protocol: TCP, backends: [{namespace: default, name: web, port: 80}]}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Route
metadata: {name: r1, namespace: initech}
spec:
  http:
    parentRefs: [{name: a}]
    rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Route
metadata: {name: r2, namespace: initech}
spec:
  http:
    parentRefs: [{name: a}]
    rules: [{matches: [{path: {type: PathPrefix, value: /two}}], backendRefs: [{name: web, port: 80}]}]
"#;
    let p = plan(&inputs(extra), &Recorded::default());
    // The second route is ignored and reported; the first serves.
    assert!(
        p.problems.iter().any(|x| x.object == "Route initech/r2"
            && x.message == "ignored: the tenant may have at most 1 routes"),
        "{:?}",
        p.problems
    );
    let a = p.gateway("initech", "a").unwrap();
    assert_eq!(
        a.status
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["r1"]
    );
    // Gateway a takes 3 of the 5 endpoints; b, planned after it, none.
    for (name, refused) in [("a", 2), ("b", 5)] {
        let g = p.gateway("initech", name).unwrap();
        assert!(g.programmed(), "{name}: {:?}", g.status.conditions);
        let (s, r, m) = reason(&p, "initech", name, "EndpointsAdmitted");
        assert_eq!((s.as_str(), r.as_str()), ("False", "TenantLimit"), "{name}");
        assert!(
            m.starts_with(&format!("{refused} endpoints refused")),
            "{m}"
        );
        assert!(
            m.contains("the tenant's limit of 3 endpoints is reached"),
            "{m}"
        );
    }
    let rendered: Vec<String> = p.endpoints["gw1"]
        .iter()
        .filter(|e| e.scope == tenant_mark(3))
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(rendered, ["198.18.4.1", "198.18.4.2", "198.18.4.3"]);
}

fn globex_gateway(name: &str, extra_spec: &str) -> String {
    format!(
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: {name}, namespace: globex}}
spec:
  template: tcp
  listeners: [{{name: web, port: 80, protocol: TCP, backends: [{{namespace: default, name: web, port: 80}}]}}]
{extra_spec}"#
    )
}

fn at(mut inputs: DesiredInputs, now: u64) -> DesiredInputs {
    inputs.now = now;
    inputs.address_grace = 600;
    inputs
}

#[test]
fn a_tenant_id_a_socket_mark_cannot_carry_is_refused() {
    let big = BASE.replace(
        "spec: {namespace: acme, id: 1}",
        "spec: {namespace: acme, id: 65536}",
    );
    let mut inputs = parse_resources(&format!("{big}{}", web("web", "tcp"))).unwrap();
    inputs.gateway_nodes = vec![GatewayNode {
        name: "gw1".into(),
        address: "203.0.113.1".parse().unwrap(),
    }];
    let p = plan(&inputs, &Recorded::default());
    let problem = p
        .problems
        .iter()
        .find(|p| p.object == "Tenant acme")
        .unwrap();
    assert!(
        problem.message.contains("1 to 65535"),
        "{}",
        problem.message
    );
    assert!(p.endpoints.is_empty());
}

#[test]
fn a_released_address_is_held_back_from_other_gateways_for_the_grace_period() {
    let first = plan(&at(inputs(&web("web", "tcp")), 1_000), &Recorded::default());
    let held = first.gateway("acme", "web").unwrap().status.addresses[0];
    assert!(first.recorded.released.is_empty());

    // web is deleted; another tenant's gateway arrives: not web's address.
    let later = at(inputs(&globex_gateway("edge", "")), 1_100);
    let p = plan(&later, &first.recorded);
    let released: Vec<_> = p
        .recorded
        .released
        .iter()
        .map(|r| (r.address, r.tenant.as_str(), r.pool.as_str(), r.released_at))
        .collect();
    assert_eq!(released, [(held, "acme", "public", 1_100)]);
    let edge = p
        .gateway("globex", "edge")
        .unwrap()
        .status
        .addresses
        .clone();
    assert!(!edge.is_empty() && !edge.contains(&held), "{edge:?}");
    // The placeholder is no allocation anyone sees.
    assert!(
        p.recorded
            .allocations
            .iter()
            .all(|a| !a.addresses.contains(&held))
    );

    // Still held (the records carry it across restarts) until its time.
    let p = plan(&at(inputs(&globex_gateway("edge", "")), 1_699), &p.recorded);
    assert_eq!(p.recorded.released.len(), 1);
    assert_eq!(p.recorded.released[0].released_at, 1_100);
    // Then free again: the next gateway may get it.
    let both = format!("{}{}", globex_gateway("edge", ""), web("web2", "tcp"));
    let p = plan(&at(inputs(&both), 1_700), &p.recorded);
    assert!(p.recorded.released.is_empty());
    assert_eq!(p.gateway("acme", "web2").unwrap().status.addresses, [held]);
}

#[test]
fn within_the_grace_period_only_its_tenant_may_take_it_back_by_asking() {
    let first = plan(&at(inputs(&web("web", "tcp")), 1_000), &Recorded::default());
    let held = first.gateway("acme", "web").unwrap().status.addresses[0];
    let gone = plan(&at(inputs(""), 1_010), &first.recorded);
    assert_eq!(gone.recorded.released.len(), 1);
    // Another tenant asking for it does not get it.
    let ask = format!("  addresses: [{held}]\n");
    let p = plan(
        &at(inputs(&globex_gateway("edge", &ask)), 1_020),
        &gone.recorded,
    );
    assert!(
        p.gateway("globex", "edge")
            .unwrap()
            .status
            .addresses
            .is_empty()
    );
    assert_eq!(
        reason(&p, "globex", "edge", "Programmed").1,
        "AddressNotAssigned"
    );
    // Its tenant asking for it gets it back, and it is held back no more.
    let again =
        web("again", "tcp").replace("  template: tcp\n", &format!("  template: tcp\n{ask}"));
    let p = plan(&at(inputs(&again), 1_020), &gone.recorded);
    assert_eq!(p.gateway("acme", "again").unwrap().status.addresses, [held]);
    assert!(p.recorded.released.is_empty());
}

#[test]
fn without_a_grace_period_a_released_address_is_reused_at_once() {
    let first = plan(&inputs(&web("web", "tcp")), &Recorded::default());
    let held = first.gateway("acme", "web").unwrap().status.addresses[0];
    let p = plan(&inputs(&globex_gateway("edge", "")), &first.recorded);
    assert!(p.recorded.released.is_empty());
    assert_eq!(
        p.gateway("globex", "edge").unwrap().status.addresses,
        [held]
    );
}
