//! The platform's policy on rendered configuration: every built-in passes
//! for every family, and each way out a hostile template could try is
//! refused with the field path where it was found.

mod support;

use epic_templates::policy::{PolicyProblem, check_policy};
use epic_templates::*;
use support::*;

/// Renders `envoy` as a tenant template for the L4 TCP context (IPv4).
fn rendered(envoy: &str) -> (EnvoyResources, TemplateContext) {
    let mut renderer = Renderer::new();
    renderer
        .add_template(&GatewayTemplate {
            name: "tenant/custom".into(),
            envoy: envoy.into(),
            dns_name: None,
        })
        .unwrap_or_else(|err| panic!("{err}"));
    let context = l4_context(ListenerProtocol::Tcp, Family::V4);
    let out = renderer
        .render("tenant/custom", &context)
        .unwrap_or_else(|err| panic!("{err}"));
    (out.resources, context)
}

/// The violations of `envoy` as `path: problem` lines.
fn refusals(envoy: &str) -> Vec<(String, PolicyProblem)> {
    let (resources, context) = rendered(envoy);
    match check_policy(&resources, &context) {
        Ok(()) => Vec::new(),
        Err(e) => e.0.into_iter().map(|v| (v.path, v.problem)).collect(),
    }
}

/// A TCP listener on the gateway's address with `filter` as its one filter.
fn listener_with(filter: &str) -> String {
    format!(
        r#"
listeners:
- name: l
  address: {{socket_address: {{address: 192.0.2.10, port_value: 5000}}}}
  filter_chains:
  - filters:
    - {filter}
"#
    )
}

#[test]
fn every_builtin_template_passes_for_every_family() {
    let renderer = Renderer::new();
    for family in FAMILIES {
        for (name, context) in [
            ("tcp", l4_context(ListenerProtocol::Tcp, family)),
            ("udp", l4_context(ListenerProtocol::Udp, family)),
            ("http", http_context(family, false)),
            ("https", http_context(family, true)),
        ] {
            let out = renderer.render(name, &context).unwrap();
            check_policy(&out.resources, &context)
                .unwrap_or_else(|e| panic!("built-in {name} ({family:?}): {e}"));
        }
    }
}

#[test]
fn a_tenant_template_may_use_allowed_extensions() {
    let envoy = listener_with(
        r#"{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: default/app:5000, access_log: [{name: out, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]}}"#,
    );
    assert_eq!(refusals(&envoy), []);
}

#[test]
fn extensions_outside_the_allowlist_are_refused_however_deep() {
    // A file access log inside an allowed TCP proxy.
    let envoy = listener_with(
        r#"{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c, access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /etc/passwd}}]}}"#,
    );
    assert_eq!(
        refusals(&envoy),
        [(
            "listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].typed_config"
                .to_owned(),
            PolicyProblem::Extension(
                "envoy.extensions.access_loggers.file.v3.FileAccessLog".into()
            )
        )]
    );
    // Lua, ext_authz and Wasm in an HTTP connection manager.
    let envoy = listener_with(
        r#"{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {name: r}, http_filters: [{name: lua, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, default_source_code: {inline_string: "x"}}}, {name: authz, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz}}, {name: wasm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm}}, {name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}"#,
    );
    let problems: Vec<PolicyProblem> = refusals(&envoy).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        problems,
        [
            PolicyProblem::Extension("envoy.extensions.filters.http.lua.v3.Lua".into()),
            PolicyProblem::Extension("envoy.extensions.filters.http.ext_authz.v3.ExtAuthz".into()),
            PolicyProblem::Extension("envoy.extensions.filters.http.wasm.v3.Wasm".into()),
        ]
    );
}

#[test]
fn fields_that_reach_the_node_or_other_servers_are_refused() {
    let envoy = r#"
listeners:
- name: l
  address: {socket_address: {address: 192.0.2.10, port_value: 5000}}
  transparent: true
  filter_chains:
  - transport_socket:
      name: tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
        common_tls_context:
          tls_certificates:
          - certificate_chain: {filename: /var/run/secrets/kubernetes.io/serviceaccount/token}
            private_key: {environment_variable: AWS_SECRET_ACCESS_KEY}
          tls_certificate_sds_secret_configs:
          - name: s
            sds_config: {path_config_source: {path: /etc/envoy/sds.yaml}}
    filters:
    - name: hcm
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: s
        rds:
          route_config_name: r
          config_source: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}
        http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"#;
    // In field-number order.
    let found: Vec<String> = refusals(envoy)
        .into_iter()
        .map(|(path, problem)| format!("{path}: {problem}"))
        .collect();
    let tls = "listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context";
    assert_eq!(
        found,
        [
            "listeners[0].filter_chains[0].filters[0].typed_config.rds.config_source.api_config_source: envoy.config.core.v3.ConfigSource.api_config_source is not allowed: it takes configuration from a server other than ADS".to_owned(),
            format!("{tls}.tls_certificates[0].certificate_chain.filename: envoy.config.core.v3.DataSource.filename is not allowed: it reads a file on the gateway node"),
            format!("{tls}.tls_certificates[0].private_key.environment_variable: envoy.config.core.v3.DataSource.environment_variable is not allowed: it reads the proxy's environment"),
            format!("{tls}.tls_certificate_sds_secret_configs[0].sds_config.path_config_source: envoy.config.core.v3.ConfigSource.path_config_source is not allowed: it reads configuration from a file"),
            "listeners[0].transparent: envoy.config.listener.v3.Listener.transparent is not allowed: it binds transparently".to_owned(),
        ]
    );
}

#[test]
fn listeners_bind_only_the_gateways_addresses_and_ports() {
    let envoy = r#"
listeners:
- {name: any, address: {socket_address: {address: 0.0.0.0, port_value: 5000}}}
- {name: other-port, address: {socket_address: {address: 192.0.2.10, port_value: 22}}}
- {name: other-tenant, address: {socket_address: {address: 192.0.2.11, port_value: 5000}}}
- {name: pipe, address: {pipe: {path: /run/envoy.sock}}}
- name: extra
  address: {socket_address: {address: 192.0.2.10, port_value: 5001}}
  additional_addresses: [{address: {socket_address: {address: 203.0.113.9, port_value: 5001}}}]
"#;
    let found: Vec<String> = refusals(envoy)
        .into_iter()
        .map(|(path, problem)| format!("{path}: {problem}"))
        .collect();
    assert_eq!(
        found,
        [
            "listeners[0].address.socket_address: 0.0.0.0:5000 is not a public address and listener port of the gateway",
            "listeners[1].address.socket_address: 192.0.2.10:22 is not a public address and listener port of the gateway",
            "listeners[2].address.socket_address: 192.0.2.11:5000 is not a public address and listener port of the gateway",
            "listeners[3].address.pipe: envoy.config.core.v3.Address.pipe is not allowed: it uses a local socket",
            "listeners[4].additional_addresses[0].address.socket_address: 203.0.113.9:5001 is not a public address and listener port of the gateway",
        ]
    );
}

#[test]
fn clusters_reach_only_the_gateways_endpoints() {
    let envoy = r#"
clusters:
- name: ads
  type: STATIC
  load_assignment:
    cluster_name: ads
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18000}}}}]}]
- name: dns
  type: STRICT_DNS
  load_assignment:
    cluster_name: dns
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: kubernetes.default.svc, port_value: 443}}}}]}]
- name: pod
  type: STATIC
  load_assignment:
    cluster_name: pod
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 198.51.100.1, port_value: 8080}}}}]}]
- name: original
  type: ORIGINAL_DST
  lb_policy: CLUSTER_PROVIDED
cluster_load_assignments:
- cluster_name: eds
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: "2001:db8::1", port_value: 8080}}}}]}]
"#;
    let found: Vec<String> = refusals(envoy)
        .into_iter()
        .map(|(path, problem)| format!("{path}: {problem}"))
        .collect();
    let lb = "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address";
    assert_eq!(
        found,
        [
            format!("clusters[0].{lb}: 127.0.0.1:18000 is not an endpoint of the gateway"),
            "clusters[1].type: cluster type STRICT_DNS is not allowed (only STATIC and EDS)".to_owned(),
            format!("clusters[1].{lb}: kubernetes.default.svc:443 is not an endpoint of the gateway"),
            "clusters[3].type: cluster type ORIGINAL_DST is not allowed (only STATIC and EDS)".to_owned(),
            "cluster_load_assignments[0].endpoints[0].lb_endpoints[0].endpoint.address.socket_address: [2001:db8::1]:8080 is not an endpoint of the gateway".to_owned(),
        ]
    );
}

#[test]
fn the_error_names_the_first_violations_and_counts_the_rest() {
    let listeners: String = (0..8)
        .map(|i| {
            format!(
                "- {{name: l{i}, address: {{socket_address: {{address: 0.0.0.0, port_value: {}}}}}}}\n",
                6000 + i
            )
        })
        .collect();
    let (resources, context) = rendered(&format!("listeners:\n{listeners}"));
    let message = check_policy(&resources, &context).unwrap_err().to_string();
    assert!(
        message.starts_with("listeners[0].address.socket_address: 0.0.0.0:6000"),
        "{message}"
    );
    assert!(message.ends_with("; and 3 more"), "{message}");
}
