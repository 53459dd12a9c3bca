//! The user-cluster → platform translation: each rule, skipped objects,
//! EndpointSlice target ports and readiness, names, determinism, status
//! back, and that the mirrored objects plan.

use std::collections::BTreeSet;

use epic_engine::mirror::{
    MirrorConfig, Mirrored, Skipped, UserCluster, gateway_status, is_dns1123_label,
    keep_transition_times, mirror, service_status,
};
use epic_engine::plan::{DesiredInputs, GatewayNode, Recorded, plan};
use epic_model::{
    AddressPool, AddressPoolSpec, Condition as PlatformCondition, GatewayStatus, ListenerProtocol,
    PortProtocol, Tenant, TenantLimits, TenantSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use serde::Deserialize;

const TENANT_NS: &str = "acme";

/// A user cluster from a multi-document YAML of the objects a user writes.
fn cluster(yaml: &str) -> UserCluster {
    let mut c = UserCluster {
        cluster: "c1".into(),
        ..Default::default()
    };
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "Service" => c.services.push(serde_yaml_ng::from_value(value).unwrap()),
            "EndpointSlice" => c
                .endpoint_slices
                .push(serde_yaml_ng::from_value(value).unwrap()),
            "Node" => c.nodes.push(serde_yaml_ng::from_value(value).unwrap()),
            "Namespace" => c.namespaces.push(serde_yaml_ng::from_value(value).unwrap()),
            "GatewayClass" => c
                .gateway_classes
                .push(serde_yaml_ng::from_value(value).unwrap()),
            "Gateway" => c.gateways.push(serde_yaml_ng::from_value(value).unwrap()),
            "HTTPRoute" => c
                .http_routes
                .push(serde_yaml_ng::from_value(value).unwrap()),
            "TCPRoute" => c.tcp_routes.push(serde_yaml_ng::from_value(value).unwrap()),
            "UDPRoute" => c.udp_routes.push(serde_yaml_ng::from_value(value).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
    }
    c
}

fn config() -> MirrorConfig {
    MirrorConfig::new(TENANT_NS)
}

/// Nodes, classes and namespaces every scenario shares.
const BASE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  addresses:
  - {type: Hostname, address: n1}
  - {type: InternalIP, address: 198.51.100.1}
  - {type: InternalIP, address: "2001:db8:1::1"}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status:
  addresses:
  - {type: ExternalIP, address: 198.51.100.2}
---
apiVersion: v1
kind: Node
metadata: {name: bare}
---
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels: {gateway-access: "true"}
---
apiVersion: v1
kind: Namespace
metadata: {name: sandbox}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: epic}
spec: {controllerName: epic-gateway.org/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other-controller}
"#;

/// A TCP LoadBalancer Service with an SCTP port, its slices, and Services
/// that are not ours.
const SERVICES: &str = r#"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  uid: 4f1c-web
  annotations: {epic-gateway.org/sharing-key: shared}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-alt}
  - {name: https, port: 443, protocol: TCP, targetPort: 8443}
  - {name: assoc, port: 9, protocol: SCTP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-b
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: https, port: 8443, protocol: TCP}
endpoints:
- addresses: [198.18.1.5]
  nodeName: n1
  conditions: {ready: true}
- addresses: [198.18.2.5]
  nodeName: n2
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [198.18.3.5]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: [198.18.1.6]
  nodeName: n1
- addresses: [198.18.1.5]
  nodeName: n1
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-x
  namespace: default
  labels: {kubernetes.io/service-name: dns}
addressType: IPv4
ports:
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [198.18.1.7]
  nodeName: n1
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: default}
spec:
  type: ClusterIP
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/other
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: classless, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#;

/// Gateway API gateways and routes, with their Services.
const GATEWAY_API: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra, uid: 77aa-gw, generation: 3}
spec:
  gatewayClassName: epic
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-access: "true"}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls:
      mode: Terminate
      certificateRefs: [{name: web-cert}, {name: other-cert}]
    allowedRoutes: {namespaces: {from: All}}
  - name: passthrough
    port: 8443
    protocol: TLS
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: infra}
spec:
  gatewayClassName: epic
  listeners:
  - {name: db, port: 5432, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: udp, namespace: infra}
spec:
  gatewayClassName: epic
  addresses: [{type: IPAddress, value: 192.0.2.9}, {type: Hostname, value: gw.example.com}]
  listeners:
  - {name: syslog, port: 514, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: infra}
spec:
  gatewayClassName: other
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: apps}
spec:
  hostnames: [store.example.com]
  parentRefs:
  - {name: web, namespace: infra, sectionName: http}
  - {name: foreign, namespace: infra}
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: store, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: blocked, namespace: sandbox}
spec:
  parentRefs: [{name: web, namespace: infra, sectionName: http}]
  rules:
  - backendRefs: [{name: store, namespace: apps, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unrelated, namespace: apps}
spec:
  parentRefs: [{name: foreign, namespace: infra}]
  rules:
  - backendRefs: [{name: unrelated, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: infra}
spec:
  parentRefs: [{name: l4}]
  rules:
  - backendRefs: [{name: db, port: 5432}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: syslog, namespace: infra}
spec:
  parentRefs: [{name: udp, port: 514}]
  rules:
  - backendRefs: [{name: syslog, port: 514}]
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: apps}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: store-1
  namespace: apps
  labels: {kubernetes.io/service-name: store}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["2001:db8:a::5"]
  nodeName: n1
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: infra}
spec:
  ports: [{port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: infra
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: "", port: 5433}]
endpoints:
- addresses: [198.18.4.1]
  nodeName: n2
---
apiVersion: v1
kind: Service
metadata: {name: syslog, namespace: infra}
spec:
  ports: [{port: 514, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: syslog-1
  namespace: infra
  labels: {kubernetes.io/service-name: syslog}
addressType: IPv4
ports: [{port: 1514, protocol: UDP}]
endpoints:
- addresses: [198.18.4.2]
  nodeName: n2
"#;

fn everything() -> UserCluster {
    cluster(&format!("{BASE}{SERVICES}{GATEWAY_API}"))
}

fn gateway<'a>(m: &'a Mirrored, name: &str) -> &'a epic_model::Gateway {
    m.gateways
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no gateway {name}: {:#?}", names(m)))
}

fn route<'a>(m: &'a Mirrored, name: &str) -> &'a epic_model::Route {
    m.routes
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no route {name}: {:#?}", names(m)))
}

fn backend_set<'a>(m: &'a Mirrored, name: &str) -> &'a epic_model::BackendSet {
    m.backend_sets
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no backend set {name}: {:#?}", names(m)))
}

/// Names of every mirrored object, by kind.
fn names(m: &Mirrored) -> (Vec<String>, Vec<String>, Vec<String>) {
    let n = |meta: &kube::core::ObjectMeta| meta.name.clone().unwrap_or_default();
    (
        m.gateways.iter().map(|g| n(&g.metadata)).collect(),
        m.routes.iter().map(|r| n(&r.metadata)).collect(),
        m.backend_sets.iter().map(|b| n(&b.metadata)).collect(),
    )
}

fn skipped_for<'a>(m: &'a Mirrored, object: &str) -> Vec<&'a Skipped> {
    m.skipped.iter().filter(|s| s.object == object).collect()
}

/// The whole output as JSON, for equality.
fn json(m: &Mirrored) -> serde_json::Value {
    serde_json::json!({
        "gateways": m.gateways,
        "routes": m.routes,
        "backendSets": m.backend_sets,
        "skipped": m.skipped.iter().map(|s| (s.object.clone(), s.reason.clone())).collect::<Vec<_>>(),
    })
}

#[test]
fn everything_is_mirrored_under_the_expected_names() {
    let m = mirror(&everything(), &config());
    let (gateways, routes, sets) = names(&m);
    assert_eq!(
        gateways,
        [
            "infra-l4",
            "infra-udp",
            "infra-web",
            "svc-default-dns",
            "svc-default-web"
        ]
    );
    assert_eq!(routes, ["apps-store", "infra-db", "infra-syslog"]);
    assert_eq!(
        sets,
        [
            "apps-store",
            "default-dns",
            "default-web",
            "infra-db",
            "infra-syslog"
        ]
    );
    for meta in m
        .gateways
        .iter()
        .map(|g| &g.metadata)
        .chain(m.routes.iter().map(|r| &r.metadata))
        .chain(m.backend_sets.iter().map(|b| &b.metadata))
    {
        assert_eq!(meta.namespace.as_deref(), Some(TENANT_NS));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["epic-gateway.org/cluster"], "c1");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "epic-cluster-controller"
        );
    }
}

#[test]
fn a_load_balancer_service_becomes_a_tcp_gateway_with_a_listener_per_port() {
    let m = mirror(&everything(), &config());
    let g = gateway(&m, "svc-default-web");
    assert_eq!(g.spec.template, "tcp");
    assert_eq!(g.spec.client.cluster, "c1");
    assert_eq!(g.spec.client.namespace, "default");
    assert_eq!(g.spec.client.name, "web");
    assert_eq!(g.spec.client.uid, "4f1c-web");
    assert_eq!(g.spec.sharing_key.as_deref(), Some("shared"));
    let listeners: Vec<_> = g
        .spec
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port, l.protocol))
        .collect();
    assert_eq!(
        listeners,
        [
            ("tcp-80", 80, ListenerProtocol::Tcp),
            ("tcp-443", 443, ListenerProtocol::Tcp)
        ]
    );
    let default = &g.spec.listeners[0].backends;
    assert_eq!(default.len(), 1);
    assert_eq!(
        (
            default[0].namespace.as_str(),
            default[0].name.as_str(),
            default[0].port
        ),
        ("default", "web", 80)
    );
    // SCTP is skipped with a reason.
    let sctp = skipped_for(&m, "Service default/web port 9");
    assert_eq!(sctp.len(), 1, "{:?}", m.skipped);
    assert!(sctp[0].reason.contains("SCTP"), "{}", sctp[0].reason);
    // Services that are not ours are neither mirrored nor reported.
    for other in ["internal", "elsewhere", "classless"] {
        assert!(!m.skipped.iter().any(|s| s.object.contains(other)));
        assert!(!names(&m).0.iter().any(|n| n.contains(other)));
    }
}

#[test]
fn a_udp_only_service_uses_the_udp_template_and_a_mixed_one_the_service_template() {
    let m = mirror(&everything(), &config());
    let g = gateway(&m, "svc-default-dns");
    assert_eq!(g.spec.template, "udp");
    assert_eq!(g.spec.listeners[0].name, "udp-53");
    assert_eq!(g.spec.listeners[0].protocol, ListenerProtocol::Udp);
    assert_eq!(g.spec.sharing_key, None);

    let mixed = cluster(
        r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports:
  - {name: dns-udp, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
"#,
    );
    let m = mirror(&mixed, &config());
    let g = gateway(&m, "svc-default-dns");
    assert_eq!(g.spec.template, "tcp");
    let names: Vec<_> = g.spec.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["udp-53", "tcp-53"]);
}

#[test]
fn a_service_with_only_sctp_ports_is_skipped() {
    let c = cluster(
        r#"
apiVersion: v1
kind: Service
metadata: {name: sig, namespace: telco}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{port: 2905, protocol: SCTP}]
"#,
    );
    let m = mirror(&c, &config());
    assert!(m.gateways.is_empty() && m.backend_sets.is_empty());
    assert_eq!(
        skipped_for(&m, "Service telco/sig").len(),
        1,
        "{:?}",
        m.skipped
    );
    assert_eq!(skipped_for(&m, "Service telco/sig port 2905").len(), 1);
}

#[test]
fn gateway_api_gateways_map_listeners_and_pick_templates() {
    let m = mirror(&everything(), &config());
    let web = gateway(&m, "infra-web");
    assert_eq!(web.spec.template, "https");
    assert_eq!(web.spec.client.namespace, "infra");
    assert_eq!(web.spec.client.name, "web");
    assert_eq!(web.spec.client.uid, "77aa-gw");
    let listeners: Vec<_> = web
        .spec
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.port,
                l.protocol,
                l.hostname.as_deref(),
                l.tls_secret.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            (
                "http",
                80,
                ListenerProtocol::Http,
                Some("*.example.com"),
                None
            ),
            (
                "https",
                443,
                ListenerProtocol::Https,
                Some("*.example.com"),
                Some("web-cert")
            ),
        ]
    );
    let passthrough = skipped_for(&m, "Gateway infra/web listener passthrough");
    assert_eq!(passthrough.len(), 1, "{:?}", m.skipped);
    assert!(passthrough[0].reason.contains("passthrough"));

    assert_eq!(gateway(&m, "infra-l4").spec.template, "tcp");
    let udp = gateway(&m, "infra-udp");
    assert_eq!(udp.spec.template, "udp");
    assert_eq!(
        udp.spec.addresses,
        ["192.0.2.9".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        skipped_for(&m, "Gateway infra/udp address gw.example.com").len(),
        1,
        "{:?}",
        m.skipped
    );
    // A Gateway of another class is not ours.
    assert!(!m.skipped.iter().any(|s| s.object.contains("foreign")));
    assert!(!names(&m).0.contains(&"infra-foreign".to_owned()));
}

#[test]
fn http_only_gateways_use_the_gateway_template_and_bad_listeners_are_skipped() {
    let c = cluster(&format!(
        r#"{BASE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: site, namespace: web}}
spec:
  gatewayClassName: epic
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: nocert, port: 443, protocol: HTTPS}}
  - {{name: pass, port: 8443, protocol: HTTPS, tls: {{mode: Passthrough, certificateRefs: [{{name: c}}]}}}}
  - {{name: odd, port: 9000, protocol: example.com/QUIC}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: empty, namespace: web}}
spec:
  gatewayClassName: epic
  listeners:
  - {{name: tls, port: 443, protocol: TLS}}
"#
    ));
    let m = mirror(&c, &config());
    let site = gateway(&m, "web-site");
    assert_eq!(site.spec.template, "http");
    assert_eq!(site.spec.listeners.len(), 1);
    for listener in ["nocert", "pass", "odd"] {
        assert_eq!(
            skipped_for(&m, &format!("Gateway web/site listener {listener}")).len(),
            1,
            "{listener}: {:?}",
            m.skipped
        );
    }
    assert_eq!(
        skipped_for(&m, "Gateway web/empty").len(),
        1,
        "{:?}",
        m.skipped
    );
    assert_eq!(m.gateways.len(), 1);
}

#[test]
fn routes_keep_only_parent_refs_to_our_gateways_renamed() {
    let m = mirror(&everything(), &config());
    let store = route(&m, "apps-store");
    assert_eq!(store.spec.namespace, "apps");
    let http = store.spec.http.as_ref().unwrap();
    let parents = http.parent_refs.as_ref().unwrap();
    assert_eq!(parents.len(), 1, "the foreign parent is dropped");
    assert_eq!(parents[0].name, "infra-web");
    // Cross-namespace: the platform resolves a bare parentRef in the
    // route's namespace, so the gateway's namespace stays.
    assert_eq!(parents[0].namespace.as_deref(), Some("infra"));
    assert_eq!(parents[0].section_name.as_deref(), Some("http"));
    assert_eq!(http.hostnames.as_ref().unwrap(), &["store.example.com"]);
    assert_eq!(
        http.rules.as_ref().unwrap()[0]
            .backend_refs
            .as_ref()
            .unwrap()[0]
            .name,
        "store"
    );

    let db = route(&m, "infra-db");
    let tcp = db.spec.tcp.as_ref().unwrap();
    let parents = tcp.parent_refs.as_ref().unwrap();
    assert_eq!(parents[0].name, "infra-l4");
    assert_eq!(parents[0].namespace, None);
    assert!(db.spec.http.is_none() && db.spec.udp.is_none());

    let syslog = route(&m, "infra-syslog");
    let udp = syslog.spec.udp.as_ref().unwrap();
    assert_eq!(udp.parent_refs.as_ref().unwrap()[0].name, "infra-udp");
    assert_eq!(udp.parent_refs.as_ref().unwrap()[0].port, Some(514));

    // Routes only to gateways that are not ours are not mirrored or reported.
    assert!(!names(&m).1.contains(&"apps-unrelated".to_owned()));
    assert!(!m.skipped.iter().any(|s| s.object.contains("unrelated")));
    assert!(!names(&m).2.contains(&"apps-unrelated".to_owned()));
}

#[test]
fn allowed_routes_gate_which_namespaces_attach() {
    let m = mirror(&everything(), &config());
    // `sandbox` lacks the label the http listener selects.
    assert!(!names(&m).1.contains(&"sandbox-blocked".to_owned()));
    let blocked = skipped_for(&m, "HTTPRoute sandbox/blocked parentRef infra/web");
    assert_eq!(blocked.len(), 1, "{:?}", m.skipped);

    // Without a sectionName the https listener (from: All) lets it in.
    let c = cluster(&format!(
        "{BASE}{GATEWAY_API}\n---\n{}",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: open, namespace: sandbox}
spec:
  parentRefs: [{name: web, namespace: infra}]
  rules: [{backendRefs: [{name: store, namespace: apps, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-only, namespace: apps}
spec:
  parentRefs: [{name: l4, namespace: infra}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: wrong-kind, namespace: infra}
spec:
  parentRefs: [{name: kinds}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kinds, namespace: infra}
spec:
  gatewayClassName: epic
  listeners:
  - name: db
    port: 5432
    protocol: TCP
    allowedRoutes: {kinds: [{kind: UDPRoute}]}
"#
    ));
    let m = mirror(&c, &config());
    let open = route(&m, "sandbox-open");
    assert_eq!(
        open.spec
            .http
            .as_ref()
            .unwrap()
            .parent_refs
            .as_ref()
            .unwrap()[0]
            .name,
        "infra-web"
    );
    // `from: Same` is the default.
    assert_eq!(
        skipped_for(&m, "HTTPRoute apps/same-only parentRef infra/l4").len(),
        1,
        "{:?}",
        m.skipped
    );
    assert_eq!(
        skipped_for(&m, "TCPRoute infra/wrong-kind parentRef infra/kinds").len(),
        1,
        "{:?}",
        m.skipped
    );
}

#[test]
fn endpoint_slices_give_target_ports_readiness_nodes_and_skips() {
    let m = mirror(&everything(), &config());
    let web = backend_set(&m, "default-web");
    assert_eq!(web.spec.cluster, "c1");
    assert_eq!(web.spec.namespace, "default");
    assert_eq!(web.spec.service, "web");
    let ports: Vec<_> = web
        .spec
        .ports
        .iter()
        .map(|p| {
            (
                p.port,
                p.protocol,
                p.endpoints
                    .iter()
                    .map(|e| (e.address.to_string(), e.port, e.ready, e.node.as_str()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (
                80,
                PortProtocol::Tcp,
                vec![
                    // In two slices, ready in one: ready.
                    ("198.18.1.5".to_owned(), 8080, true, "n1"),
                    // No conditions: ready.
                    ("198.18.1.6".to_owned(), 8080, true, "n1"),
                    ("198.18.2.5".to_owned(), 8080, false, "n2"),
                ]
            ),
            (
                443,
                PortProtocol::Tcp,
                vec![
                    ("198.18.1.5".to_owned(), 8443, true, "n1"),
                    ("198.18.2.5".to_owned(), 8443, false, "n2"),
                ]
            ),
        ],
        "SCTP port omitted, named target ports resolved through the slices"
    );
    let nodes: Vec<_> = web
        .spec
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address.to_string()))
        .collect();
    // n2 has only an ExternalIP.
    assert_eq!(
        nodes,
        [
            ("n1", "198.51.100.1".to_owned()),
            ("n2", "198.51.100.2".to_owned())
        ]
    );
    let no_node = skipped_for(&m, "EndpointSlice default/web-b endpoint 198.18.3.5");
    assert_eq!(no_node.len(), 1, "{:?}", m.skipped);
    assert!(no_node[0].reason.contains("nodeName"));

    // IPv6 endpoints get the node's IPv6 InternalIP.
    let store = backend_set(&m, "apps-store");
    assert_eq!(store.spec.nodes[0].address.to_string(), "2001:db8:1::1");
    assert_eq!(store.spec.ports[0].endpoints[0].port, 8080);
    // Unnamed ports match unnamed (or empty-named) slice ports.
    let db = backend_set(&m, "infra-db");
    assert_eq!(db.spec.ports[0].endpoints[0].port, 5433);
    let syslog = backend_set(&m, "infra-syslog");
    assert_eq!(syslog.spec.ports[0].protocol, PortProtocol::Udp);
    assert_eq!(syslog.spec.ports[0].endpoints[0].port, 1514);
}

#[test]
fn odd_endpoint_slices_are_skipped_not_trusted() {
    let c = cluster(&format!(
        r#"{BASE}
---
apiVersion: v1
kind: Service
metadata: {{name: odd, namespace: default}}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports:
  - {{name: a, port: 80}}
  - {{name: b, port: 81, protocol: UDP}}
  - {{name: c, port: 70000}}
  - {{name: d, port: -1}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: odd-1
  namespace: default
  labels: {{kubernetes.io/service-name: odd}}
addressType: IPv4
ports:
- {{name: a, port: 8080}}
- {{name: b, port: 8081}}
- {{name: b, protocol: UDP}}
endpoints:
- addresses: [not-an-ip]
  nodeName: n1
- addresses: [198.18.9.1]
  nodeName: ghost
- addresses: [198.18.9.2]
  nodeName: bare
- addresses: [198.18.9.3]
  nodeName: n1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: odd-fqdn
  namespace: default
  labels: {{kubernetes.io/service-name: odd}}
addressType: FQDN
ports: [{{name: a, port: 8080}}]
endpoints:
- addresses: [pod.example.com]
  nodeName: n1
"#
    ));
    let m = mirror(&c, &config());
    let g = gateway(&m, "svc-default-odd");
    assert_eq!(g.spec.listeners.len(), 2);
    let set = backend_set(&m, "default-odd");
    let a = &set.spec.ports[0];
    assert_eq!(a.endpoints.len(), 1);
    assert_eq!(a.endpoints[0].address.to_string(), "198.18.9.3");
    // Port b's slice ports: the TCP one has the wrong protocol, the UDP
    // one no port number.
    assert!(set.spec.ports[1].endpoints.is_empty());
    let objects: BTreeSet<&str> = m.skipped.iter().map(|s| s.object.as_str()).collect();
    for expected in [
        "Service default/odd port 70000",
        "Service default/odd port -1",
        "EndpointSlice default/odd-1 endpoint not-an-ip",
        "EndpointSlice default/odd-1 endpoint 198.18.9.1",
        "EndpointSlice default/odd-1 endpoint 198.18.9.2",
        "EndpointSlice default/odd-fqdn",
    ] {
        assert!(objects.contains(expected), "{expected}: {:?}", m.skipped);
    }
    assert_eq!(set.spec.nodes.len(), 1);
}

#[test]
fn a_missing_backend_service_is_reported() {
    let c = cluster(&format!(
        r#"{BASE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: l4, namespace: infra}}
spec:
  gatewayClassName: epic
  listeners: [{{name: db, port: 5432, protocol: TCP}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db, namespace: infra}}
spec:
  parentRefs: [{{name: l4}}]
  rules:
  - backendRefs: [{{name: gone, port: 5432}}, {{name: bucket, kind: Bucket, group: example.com}}]
"#
    ));
    let m = mirror(&c, &config());
    assert_eq!(m.routes.len(), 1);
    assert!(m.backend_sets.is_empty());
    let gone = skipped_for(&m, "Service infra/gone");
    assert_eq!(gone.len(), 1, "{:?}", m.skipped);
    assert!(
        gone[0].reason.contains("TCPRoute infra/db"),
        "{}",
        gone[0].reason
    );
    assert!(!m.skipped.iter().any(|s| s.object.contains("bucket")));
}

#[test]
fn request_mirror_backends_get_backend_sets() {
    let c = cluster(&format!(
        r#"{BASE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: default}}
spec:
  gatewayClassName: epic
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - backendRefs: [{{name: main, port: 80}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: shadow, port: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: main, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: shadow, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
"#
    ));
    let m = mirror(&c, &config());
    assert_eq!(names(&m).2, ["default-main", "default-shadow"]);
}

#[test]
fn long_and_odd_names_are_shortened_validly_and_stably() {
    let long_ns = "n".repeat(60);
    let long_name = "s".repeat(60);
    let c = cluster(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {long_name}, namespace: {long_ns}}}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{{port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: epic}}
spec: {{controllerName: epic-gateway.org/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: my.gateway, namespace: default}}
spec:
  gatewayClassName: epic
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"#
    ));
    let m = mirror(&c, &config());
    let (gateways, _, sets) = names(&m);
    for n in gateways.iter().chain(&sets) {
        assert!(is_dns1123_label(n), "{n}");
    }
    let svc = gateways.iter().find(|n| n.starts_with("svc-")).unwrap();
    assert_eq!(svc.len(), 63);
    assert!(
        svc.starts_with(&format!("svc-{}-", "n".repeat(50))),
        "{svc}"
    );
    let dotted = gateways
        .iter()
        .find(|n| n.starts_with("default-my"))
        .unwrap();
    assert_ne!(dotted, "default-my-gateway", "a lossy name gets a hash");
    // Stable: the same objects give the same names every time.
    assert_eq!(names(&mirror(&c, &config())), names(&m));
}

#[test]
fn a_contested_name_goes_to_the_older_object() {
    // Service default/web and Gateway svc/default-web both want
    // `svc-default-web`.
    let objects = |service_time: &str, gateway_time: &str| {
        cluster(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default, creationTimestamp: "{service_time}"}}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{{port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: epic}}
spec: {{controllerName: epic-gateway.org/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: default-web, namespace: svc, creationTimestamp: "{gateway_time}"}}
spec:
  gatewayClassName: epic
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"#
        ))
    };
    let older_service = mirror(
        &objects("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        &config(),
    );
    let plain = gateway(&older_service, "svc-default-web");
    assert_eq!(plain.spec.client.namespace, "default");
    let older_gateway = mirror(
        &objects("2025-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        &config(),
    );
    let plain = gateway(&older_gateway, "svc-default-web");
    assert_eq!(plain.spec.client.namespace, "svc");
    for m in [&older_service, &older_gateway] {
        let (gateways, _, _) = names(m);
        assert_eq!(gateways.len(), 2);
        assert!(gateways.iter().all(|n| is_dns1123_label(n)));
    }
}

#[test]
fn the_mirrored_objects_plan() {
    let m = mirror(&everything(), &config());
    let tenant = Tenant::new(
        "acme",
        TenantSpec {
            namespace: TENANT_NS.into(),
            id: 1,
            limits: TenantLimits::default(),
            templates: None,
            cluster_networks: None,
        },
    );
    let pool = AddressPool::new(
        "public",
        AddressPoolSpec {
            addresses: vec!["192.0.2.0/28".into()],
            exclude: vec![],
            avoid_buggy_ips: false,
            aggregation_ipv4: None,
            aggregation_ipv6: None,
            auto_assign: None,
            priority: 0,
            tenants: None,
        },
    );
    let inputs = DesiredInputs {
        tenants: vec![tenant],
        pools: vec![pool],
        templates: vec![],
        gateways: m.gateways.clone(),
        routes: m.routes.clone(),
        backend_sets: m.backend_sets.clone(),
        gateway_nodes: vec![GatewayNode {
            name: "gw1".into(),
            address: "203.0.113.1".parse().unwrap(),
        }],
        platform_networks: vec![],
        envoy_images: None,
        now: 0,
        address_grace: 0,
        verified_tunnels: None,
    };
    let p = plan(&inputs, &Recorded::default());
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    for g in &m.gateways {
        let name = g.metadata.name.as_deref().unwrap();
        let gp = p.gateway(TENANT_NS, name).unwrap();
        assert!(gp.programmed(), "{name}: {:?}", gp.status.conditions);
        assert!(!gp.status.addresses.is_empty());
    }
    let attached = |gateway: &str, route: &str| {
        let gp = p.gateway(TENANT_NS, gateway).unwrap();
        let r = gp
            .status
            .routes
            .iter()
            .find(|r| r.name == route)
            .unwrap_or_else(|| panic!("{route} not on {gateway}: {:?}", gp.status.routes));
        assert!(
            r.conditions.iter().all(PlatformCondition::is_true),
            "{route}: {:?}",
            r.conditions
        );
        r.listeners.clone()
    };
    assert_eq!(attached("infra-web", "apps-store"), ["http"]);
    assert_eq!(attached("infra-l4", "infra-db"), ["db"]);
    assert_eq!(attached("infra-udp", "infra-syslog"), ["syslog"]);
    // The requested address is honoured.
    assert_eq!(
        p.gateway(TENANT_NS, "infra-udp").unwrap().status.addresses[0].to_string(),
        "192.0.2.9"
    );
    // Tunnels reach the nodes of the endpoints.
    let tunnel_nodes: BTreeSet<&str> = p.tunnels.iter().map(|t| t.key.node.as_str()).collect();
    assert_eq!(tunnel_nodes, BTreeSet::from(["n1", "n2"]));
    let web = p.gateway(TENANT_NS, "svc-default-web").unwrap();
    assert!(web.status.tunnels.iter().all(|t| t.cluster == "c1"));
}

#[test]
fn service_status_lists_every_address_as_a_vip() {
    let status = GatewayStatus {
        addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        dns_name: Some("web.example.com".into()),
        ..Default::default()
    };
    let s = service_status(&status, &[]);
    let ingress = s.load_balancer.unwrap().ingress.unwrap();
    let got: Vec<_> = ingress
        .iter()
        .map(|i| (i.ip.as_deref(), i.hostname.as_deref(), i.ip_mode.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("192.0.2.1"), Some("web.example.com"), Some("VIP")),
            (Some("2001:db8::1"), Some("web.example.com"), Some("VIP")),
        ]
    );
    let none = service_status(&GatewayStatus::default(), &[]);
    assert_eq!(none.load_balancer.unwrap().ingress, None);
    let dns_only = service_status(
        &GatewayStatus {
            dns_name: Some("web.example.com".into()),
            ..Default::default()
        },
        &[],
    );
    let ingress = dns_only.load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0].ip, None);
    assert_eq!(ingress[0].hostname.as_deref(), Some("web.example.com"));
}

#[test]
fn each_ingress_lists_the_services_ports_with_the_reason_they_are_not_served() {
    use epic_model::conditions::{ConditionType, Reason};
    use k8s_openapi::api::core::v1::ServicePort;
    let ports = [
        ServicePort {
            port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        },
        ServicePort {
            port: 80,
            ..Default::default()
        },
    ];
    let with = |programmed: Option<(bool, Reason)>| {
        let status = GatewayStatus {
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            conditions: programmed
                .map(|(ok, reason)| ConditionType::Programmed.condition(ok, reason, ""))
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let ingress = service_status(&status, &ports)
            .load_balancer
            .unwrap()
            .ingress
            .unwrap();
        ingress
            .iter()
            .map(|i| {
                i.ports
                    .iter()
                    .flatten()
                    .map(|p| (p.port, p.protocol.clone(), p.error.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let served = vec![(53, "UDP".to_owned(), None), (80, "TCP".to_owned(), None)];
    assert_eq!(
        with(Some((true, Reason::Programmed))),
        [served.clone(), served]
    );
    let invalid = Some(Reason::Invalid.as_str().to_owned());
    assert_eq!(
        with(Some((false, Reason::Invalid)))[0],
        [
            (53, "UDP".to_owned(), invalid.clone()),
            (80, "TCP".to_owned(), invalid)
        ]
    );
    assert_eq!(with(None)[1][0].2.as_deref(), Some("Pending"));
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

#[test]
fn gateway_status_maps_addresses_and_conditions() {
    let now = time("2025-06-01T12:00:00Z");
    let programmed = GatewayStatus {
        addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        dns_name: Some("web.example.com".into()),
        conditions: vec![
            epic_model::conditions::ConditionType::Accepted.condition(
                true,
                epic_model::conditions::Reason::Accepted,
                "",
            ),
            epic_model::conditions::ConditionType::Programmed.condition(
                true,
                epic_model::conditions::Reason::Programmed,
                "",
            ),
        ],
        ..Default::default()
    };
    let s = gateway_status(&programmed, Some(3), now.clone());
    let addresses: Vec<_> = s
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.r#type.unwrap(), a.value))
        .collect();
    assert_eq!(
        addresses,
        [
            ("IPAddress".to_owned(), "192.0.2.1".to_owned()),
            ("IPAddress".to_owned(), "2001:db8::1".to_owned()),
            ("Hostname".to_owned(), "web.example.com".to_owned()),
        ]
    );
    let conditions = s.conditions.unwrap();
    let got: Vec<_> = conditions
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.observed_generation,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Accepted", "True", "Accepted", Some(3)),
            ("Programmed", "True", "Programmed", Some(3))
        ]
    );
    assert!(conditions.iter().all(|c| c.last_transition_time == now));

    // A platform-only reason keeps its detail in the message.
    let refused = GatewayStatus {
        conditions: vec![epic_model::conditions::ConditionType::Accepted.condition(
            false,
            epic_model::conditions::Reason::UnknownTenant,
            "namespace \"acme\" belongs to no tenant",
        )],
        ..Default::default()
    };
    let s = gateway_status(&refused, None, now.clone());
    assert_eq!(s.addresses, None);
    let c = s.conditions.unwrap();
    assert_eq!(
        (c[0].status.as_str(), c[0].reason.as_str()),
        ("False", "InvalidParameters")
    );
    assert!(
        c[0].message.starts_with("UnknownTenant: "),
        "{}",
        c[0].message
    );
    assert_eq!(
        (
            c[1].type_.as_str(),
            c[1].status.as_str(),
            c[1].reason.as_str()
        ),
        ("Programmed", "False", "Invalid")
    );

    let conflict = GatewayStatus {
        conditions: vec![
            epic_model::conditions::ConditionType::Accepted.condition(
                true,
                epic_model::conditions::Reason::Accepted,
                "",
            ),
            epic_model::conditions::ConditionType::Programmed.condition(
                false,
                epic_model::conditions::Reason::AddressNotAssigned,
                "pool is full",
            ),
        ],
        ..Default::default()
    };
    let c = gateway_status(&conflict, Some(1), now.clone())
        .conditions
        .unwrap();
    assert_eq!(
        (c[1].reason.as_str(), c[1].message.as_str()),
        ("AddressNotAssigned", "pool is full")
    );

    // Not seen by the platform yet.
    let c = gateway_status(&GatewayStatus::default(), Some(1), now)
        .conditions
        .unwrap();
    assert!(
        c.iter()
            .all(|c| c.status == "Unknown" && c.reason == "Pending")
    );
}

#[test]
fn transition_times_move_only_with_the_status() {
    let before = time("2025-01-01T00:00:00Z");
    let now = time("2025-06-01T12:00:00Z");
    let previous = gateway_status(
        &GatewayStatus {
            conditions: vec![
                epic_model::conditions::ConditionType::Accepted.condition(
                    true,
                    epic_model::conditions::Reason::Accepted,
                    "",
                ),
                epic_model::conditions::ConditionType::Programmed.condition(
                    false,
                    epic_model::conditions::Reason::AddressNotAssigned,
                    "",
                ),
            ],
            ..Default::default()
        },
        Some(1),
        before.clone(),
    );
    let mut next = gateway_status(
        &GatewayStatus {
            conditions: vec![
                epic_model::conditions::ConditionType::Accepted.condition(
                    true,
                    epic_model::conditions::Reason::Accepted,
                    "",
                ),
                epic_model::conditions::ConditionType::Programmed.condition(
                    true,
                    epic_model::conditions::Reason::Programmed,
                    "",
                ),
            ],
            ..Default::default()
        },
        Some(2),
        now.clone(),
    );
    let mut conditions = next.conditions.take().unwrap();
    keep_transition_times(previous.conditions.as_deref().unwrap(), &mut conditions);
    assert_eq!(conditions[0].last_transition_time, before);
    assert_eq!(conditions[1].last_transition_time, now);
}

#[test]
fn an_empty_cluster_mirrors_nothing() {
    let m = mirror(&UserCluster::default(), &config());
    assert!(m.gateways.is_empty() && m.routes.is_empty() && m.backend_sets.is_empty());
    assert!(m.skipped.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn output_does_not_depend_on_input_order(seed in any::<u64>()) {
        let base = everything();
        let expected = json(&mirror(&base, &config()));
        let mut shuffled = base.clone();
        let mut rng = seed;
        // A small deterministic shuffle (xorshift) of every list.
        fn shuffle<T>(v: &mut [T], rng: &mut u64) {
            for i in (1..v.len()).rev() {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let j = (*rng % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        }
        rng |= 1;
        shuffle(&mut shuffled.services, &mut rng);
        shuffle(&mut shuffled.endpoint_slices, &mut rng);
        shuffle(&mut shuffled.nodes, &mut rng);
        shuffle(&mut shuffled.namespaces, &mut rng);
        shuffle(&mut shuffled.gateway_classes, &mut rng);
        shuffle(&mut shuffled.gateways, &mut rng);
        shuffle(&mut shuffled.http_routes, &mut rng);
        shuffle(&mut shuffled.tcp_routes, &mut rng);
        shuffle(&mut shuffled.udp_routes, &mut rng);
        for s in &mut shuffled.endpoint_slices {
            if let Some(e) = s.endpoints.as_mut() {
                shuffle(e, &mut rng);
            }
        }
        prop_assert_eq!(json(&mirror(&shuffled, &config())), expected);
    }

    #[test]
    fn permutations_of_services_give_the_same_output(
        order in Just((0..SERVICE_COUNT).collect::<Vec<usize>>()).prop_shuffle()
    ) {
        let base = everything();
        prop_assert_eq!(base.services.len(), SERVICE_COUNT);
        let mut permuted = base.clone();
        permuted.services = order.iter().map(|i| base.services[*i].clone()).collect();
        prop_assert_eq!(json(&mirror(&permuted, &config())), json(&mirror(&base, &config())));
    }

    #[test]
    fn names_are_unique_dns_labels_whatever_the_user_names(
        objects in prop::collection::vec(("[a-z0-9][a-z0-9.-]{0,70}", "[a-z0-9][a-z0-9.-]{0,70}"), 1..12)
    ) {
        let mut yaml = String::from(BASE);
        for (ns, name) in &objects {
            yaml.push_str(&format!(
                r#"
---
apiVersion: v1
kind: Service
metadata: {{name: "{name}", namespace: "{ns}"}}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{{port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: "{name}", namespace: "{ns}"}}
spec:
  gatewayClassName: epic
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: "{name}", namespace: "{ns}"}}
spec:
  parentRefs: [{{name: "{name}"}}]
  rules: [{{backendRefs: [{{name: "{name}", port: 80}}]}}]
"#
            ));
        }
        let distinct: BTreeSet<_> = objects.iter().cloned().collect();
        let m = mirror(&cluster(&yaml), &config());
        let (gateways, routes, sets) = names(&m);
        for list in [&gateways, &routes, &sets] {
            let unique: BTreeSet<_> = list.iter().collect();
            prop_assert_eq!(unique.len(), list.len());
            for n in list {
                prop_assert!(is_dns1123_label(n), "{}", n);
            }
        }
        prop_assert_eq!(gateways.len(), 2 * distinct.len());
        prop_assert_eq!(routes.len(), distinct.len());
        prop_assert_eq!(sets.len(), distinct.len());
    }

    #[test]
    fn any_ports_and_addresses_never_panic(
        ports in prop::collection::vec((any::<i32>(), prop::sample::select(vec!["TCP", "UDP", "SCTP", "", "tcp"]), "[a-z]{0,3}"), 0..6),
        addresses in prop::collection::vec("[0-9a-f.:x]{0,20}", 0..6),
        slice_ports in prop::collection::vec((prop::option::of(any::<i32>()), "[a-z]{0,3}"), 0..4),
    ) {
        let service_ports: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, protocol, name))| {
                format!("{{name: \"{name}{i}\", port: {port}, protocol: \"{protocol}\"}}")
            })
            .collect();
        let slice_ports: Vec<String> = slice_ports
            .iter()
            .map(|(port, name)| match port {
                Some(p) => format!("{{name: \"{name}\", port: {p}}}"),
                None => format!("{{name: \"{name}\"}}"),
            })
            .collect();
        let endpoints: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let node = ["n1", "n2", "bare", "ghost"][i % 4];
                format!("{{addresses: [\"{a}\"], nodeName: {node}}}")
            })
            .collect();
        let yaml = format!(
            r#"{BASE}
---
apiVersion: v1
kind: Service
metadata: {{name: x, namespace: y}}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: x-1, namespace: y, labels: {{kubernetes.io/service-name: x}}}}
addressType: IPv4
ports: [{}]
endpoints: [{}]
"#,
            service_ports.join(", "),
            slice_ports.join(", "),
            endpoints.join(", ")
        );
        let m = mirror(&cluster(&yaml), &config());
        for set in &m.backend_sets {
            for p in &set.spec.ports {
                prop_assert!(p.port != 0);
                for e in &p.endpoints {
                    prop_assert!(set.spec.nodes.iter().any(|n| n.name == e.node));
                }
            }
        }
    }
}

/// Services in [`everything`].
const SERVICE_COUNT: usize = 8;
