//! The fast decoding path against the reference path (serde_yaml_ng then
//! prost-reflect): the built-in templates must take the fast path, and
//! whatever it accepts must decode to exactly what the reference decodes.

mod support;

use epic_templates::*;
use proptest::prelude::*;
use support::*;

/// Decodes `text` both ways; returns whether the fast path accepted it.
fn differential(text: &str) -> bool {
    let reference = EnvoyResources::from_text_reference("t", text);
    match EnvoyResources::from_text_fast(text) {
        Some(fast) => {
            assert_eq!(Ok(&fast), reference.as_ref(), "fast path differs on {text}");
            assert_eq!(fast.to_any(), reference.unwrap().to_any());
            true
        }
        None => {
            assert_eq!(EnvoyResources::from_text("t", text), reference);
            false
        }
    }
}

fn builtin_contexts() -> Vec<(&'static str, TemplateContext)> {
    let mut out = Vec::new();
    for family in FAMILIES {
        out.push(("tcp", l4_context(ListenerProtocol::Tcp, family)));
        out.push(("udp", l4_context(ListenerProtocol::Udp, family)));
        out.push(("http", http_context(family, false)));
        out.push(("https", http_context(family, true)));
    }
    out
}

#[test]
fn builtin_templates_take_the_fast_path_and_match_the_reference() {
    let renderer = Renderer::new();
    for (name, context) in builtin_contexts() {
        let (_, text) = renderer.render_text(name, &context).unwrap();
        assert!(
            differential(&text),
            "{name} fell back to the reference path"
        );
    }
}

#[test]
fn documents_outside_the_subset_fall_back_with_the_same_result() {
    let base = r#"listeners:
- name: l
  address: {socket_address: {address: "192.0.2.1", port_value: 80}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: x
        cluster: c
clusters:
- name: c
  type: STATIC
  connect_timeout: 0.25s
  per_connection_buffer_limit_bytes: 0
  ignore_health_on_host_removal: false
  load_assignment:
    cluster_name: c
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 198.51.100.1, port_value: 8080}}}}]}]
"#;
    assert!(differential(base));
    for (from, to) in [
        ("stat_prefix: x", "stat_prefix: 'it''s'"),
        ("stat_prefix: x", "statPrefix: x"),
        ("stat_prefix: x", "stat_prefix: x  # comment"),
        ("port_value: 80", "port_value: 0"),
        ("name: c\n", "name: \"c\\u00e9\\n\\t\\\"\"\n"),
    ] {
        assert!(differential(&base.replacen(from, to, 1)), "{to}");
    }
    // Outside the subset or invalid: same outcome as the reference.
    for (from, to) in [
        ("port_value: 80", "port_value: 80.0"),
        ("port_value: 80", "port_value: \"80\""),
        ("port_value: 80", "port_value: 0x50"),
        ("port_value: 80", "port_value: 4294967296"),
        ("port_value: 80", "port_value: -1"),
        ("port_value: 80", "port_value: null"),
        ("type: STATIC", "type: 2"),
        ("type: STATIC", "type: STATICC"),
        ("stat_prefix: x", "stat_prefix: &a x"),
        ("stat_prefix: x", "stat_prefix: |\n          x"),
        ("stat_prefix: x", "stat_prefix: x\n        stat_prefix: y"),
        ("stat_prefix: x", "stat_prefix: x\n        statPrefix: y"),
        ("stat_prefix: x", "stat_prefix: x\n          y"),
        ("stat_prefix: x", "stat_prefix: x\n        clustr: y"),
        (
            "cluster: c",
            "cluster: c\n        weighted_clusters: {clusters: [{name: c, weight: 1}]}",
        ),
        ("connect_timeout: 0.25s", "connect_timeout: 1y"),
        ("connect_timeout: 0.25s", "connect_timeout: -1s"),
        ("tcp_proxy.v3.TcpProxy", "tcp_proxy.v3.TcpProxyy"),
        ("listeners:", "listener:"),
        ("listeners:", "---\nlisteners:"),
    ] {
        assert!(!differential(&base.replacen(from, to, 1)), "{to}");
    }
    for text in [
        "",
        "# nothing\n",
        "listeners:\nclusters: []\n",
        "{}",
        "[]",
        "- a\n",
        "x",
    ] {
        differential(text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_value_in_the_http_template_stays_on_the_fast_path(value in "\\PC*") {
        let mut context = http_context(Family::Dual, true);
        let routes = &mut context.listeners[0].virtual_hosts[0].routes;
        routes[1].headers[0].value = value.clone();
        routes[1].request_headers.set[0].value = value.clone();
        context.listeners[0].virtual_hosts[1].domains = vec![value];
        let (_, text) = Renderer::new().render_text("https", &context).unwrap();
        prop_assert!(differential(&text));
    }

    #[test]
    fn arbitrary_documents_agree(text in "[-a-z_:\\[\\]{}, \"'#\n0-9.@/]{0,80}") {
        differential(&text);
    }
}
