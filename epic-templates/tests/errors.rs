//! Every error kind, with where it points; and injection attempts.

mod support;

use epic_templates::validate::{EnvoyValidator, Problem, ValidationError, check_consistency};
use epic_templates::*;
use proptest::prelude::*;
use support::*;

fn custom(envoy: &str) -> Renderer {
    let mut renderer = Renderer::new();
    renderer
        .add_template(&GatewayTemplate {
            name: "custom".into(),
            envoy: envoy.into(),
            dns_name: None,
        })
        .unwrap_or_else(|err| panic!("{err}"));
    renderer
}

fn render_custom(envoy: &str) -> Result<Rendered, TemplateError> {
    custom(envoy).render("custom", &l4_context(ListenerProtocol::Tcp, Family::V4))
}

#[test]
fn unknown_template() {
    let err = Renderer::new()
        .render("nope", &l4_context(ListenerProtocol::Tcp, Family::V4))
        .unwrap_err();
    assert_eq!(err, TemplateError::UnknownTemplate("nope".into()));
}

#[test]
fn syntax_errors_give_template_line_and_column() {
    let mut renderer = Renderer::new();
    let err = renderer
        .add_template(&GatewayTemplate {
            name: "broken".into(),
            envoy: "listeners:\n- name: {{ gateway.name }}\n  port: {{ 1 + }}\n".into(),
            dns_name: None,
        })
        .unwrap_err();
    match err {
        TemplateError::Syntax {
            template,
            line,
            column,
            ..
        } => {
            assert_eq!(template, "broken");
            assert_eq!(line, 3);
            assert!(column > 10, "column {column}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn undefined_variables_are_errors() {
    let err = render_custom("listeners:\n- name: {{ gateway.nmae }}\n").unwrap_err();
    match err {
        TemplateError::Render {
            template,
            line,
            message,
        } => {
            assert_eq!(template, "custom");
            assert_eq!(line, 2);
            assert!(message.contains("undefined"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_yaml_output_points_at_the_rendered_line() {
    let err = render_custom("listeners:\n- name: {{ gateway.name }}-suffix\n").unwrap_err();
    match err {
        TemplateError::Yaml {
            template,
            line,
            snippet,
            ..
        } => {
            assert_eq!(template, "custom");
            assert_eq!(line, 2);
            assert_eq!(snippet, "- name: \"web\"-suffix");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn document_shape_errors() {
    let err = render_custom("listener: []\n").unwrap_err();
    assert!(
        matches!(&err, TemplateError::Shape { path, .. } if path == "listener"),
        "{err:?}"
    );
    let err = render_custom("clusters: {name: a}\n").unwrap_err();
    assert!(
        matches!(&err, TemplateError::Shape { path, .. } if path == "clusters"),
        "{err:?}"
    );
    let err = render_custom("- a\n").unwrap_err();
    assert!(
        matches!(&err, TemplateError::Shape { path, .. } if path == "<root>"),
        "{err:?}"
    );
}

fn field_error(envoy: &str) -> (ResourceKind, String, String) {
    match render_custom(envoy).unwrap_err() {
        TemplateError::Field {
            resource,
            path,
            message,
            ..
        } => (resource, path, message),
        other => panic!("{other:?}"),
    }
}

const TCP_LISTENER: &str = r#"listeners:
- name: {{ listeners[0].name }}
  address: {socket_address: {address: {{ addresses.all[0] }}, port_value: {{ listeners[0].port }}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: x
        cluster: {{ clusters[0].name }}
"#;

#[test]
fn the_base_listener_is_valid() {
    render_custom(TCP_LISTENER).unwrap();
}

#[test]
fn unknown_fields_are_reported_with_their_path() {
    let (kind, path, message) =
        field_error(&TCP_LISTENER.replace("stat_prefix: x", "stat_prefix: x\n        clustr: y"));
    assert_eq!(kind, ResourceKind::Listener);
    assert_eq!(
        path,
        "listeners[0].filter_chains[0].filters[0].typed_config.clustr"
    );
    assert!(message.contains("clustr"), "{message}");

    let (_, path, _) = field_error(&TCP_LISTENER.replace("  filter_chains:", "  filter_chain:"));
    assert_eq!(path, "listeners[0].filter_chain");
}

#[test]
fn wrong_types_are_reported_with_their_path() {
    let (_, path, message) =
        field_error(&TCP_LISTENER.replace("stat_prefix: x", "stat_prefix: [x]"));
    assert_eq!(
        path,
        "listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix"
    );
    assert!(message.contains("invalid type"), "{message}");
    let (_, path, _) = field_error(&TCP_LISTENER.replace("{{ listeners[0].port }}", "\"eighty\""));
    assert_eq!(path, "listeners[0].address.socket_address.port_value");
}

#[test]
fn out_of_range_values_are_reported_with_their_path() {
    let (_, path, _) = field_error(&TCP_LISTENER.replace("{{ listeners[0].port }}", "4294967296"));
    assert_eq!(path, "listeners[0].address.socket_address.port_value");
    let (_, path, _) = field_error(
        &TCP_LISTENER.replace("stat_prefix: x", "stat_prefix: x\n        idle_timeout: 1y"),
    );
    assert_eq!(
        path,
        "listeners[0].filter_chains[0].filters[0].typed_config.idle_timeout"
    );
}

#[test]
fn unknown_any_types_and_enum_values_are_reported() {
    let (_, path, message) =
        field_error(&TCP_LISTENER.replace("tcp_proxy.v3.TcpProxy", "tcp_proxy.v3.TcpProxyy"));
    assert!(
        path.starts_with("listeners[0].filter_chains[0].filters[0].typed_config"),
        "{path}"
    );
    assert!(message.contains("TcpProxyy"), "{message}");
    let (kind, path, _) = field_error("clusters:\n- {name: a, type: EDSS}\n");
    assert_eq!(kind, ResourceKind::Cluster);
    assert_eq!(path, "clusters[0].type");
}

#[test]
fn fail_function_aborts_with_the_message() {
    let err = render_custom("{{ fail(\"no \" ~ gateway.name) }}").unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("no web")),
        "{err:?}"
    );
}

#[test]
fn dns_name_templates_render_plain_and_are_checked() {
    let mut renderer = Renderer::new();
    let template = |dns: &str| GatewayTemplate {
        name: "with-dns".into(),
        envoy: "{% include \"epic/upstreams\" %}".into(),
        dns_name: Some(dns.into()),
    };
    renderer
        .add_template(&template(
            "{{ gateway.name }}.{{ gateway.tenant }}.gw.example.com",
        ))
        .unwrap();
    let rendered = renderer
        .render("with-dns", &l4_context(ListenerProtocol::Tcp, Family::V4))
        .unwrap();
    assert_eq!(rendered.dns_name, "web.tenant-a.gw.example.com");
    renderer
        .add_template(&template("{{ gateway.uid }}_x.example.com"))
        .unwrap();
    let err = renderer
        .render("with-dns", &l4_context(ListenerProtocol::Tcp, Family::V4))
        .unwrap_err();
    assert!(
        matches!(err, TemplateError::InvalidDnsName { .. }),
        "{err:?}"
    );
}

#[test]
fn the_dns_name_is_available_to_the_envoy_template() {
    let mut renderer = Renderer::new();
    renderer
        .add_template(&GatewayTemplate {
            name: "dns-in-envoy".into(),
            envoy: "clusters:\n- {name: {{ dns_name }}, type: STATIC}\n".into(),
            dns_name: Some("{{ gateway.name }}.example.com".into()),
        })
        .unwrap();
    let rendered = renderer
        .render(
            "dns-in-envoy",
            &l4_context(ListenerProtocol::Tcp, Family::V4),
        )
        .unwrap();
    assert_eq!(rendered.resources.clusters[0].name, "web.example.com");
}

fn problems(envoy: &str) -> Vec<(String, Problem)> {
    let rendered = render_custom(envoy).unwrap_or_else(|err| panic!("{err}"));
    match check_consistency(&rendered.resources) {
        Err(ValidationError::Inconsistent(items)) => {
            items.into_iter().map(|i| (i.path, i.problem)).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn consistency_catches_missing_clusters_and_routes() {
    let found =
        problems(&TCP_LISTENER.replace("cluster: {{ clusters[0].name }}", "cluster: nowhere"));
    assert_eq!(
        found,
        vec![(
            "listeners[0].filter_chains[0].filters[0].typed_config.cluster".into(),
            Problem::MissingCluster("nowhere".into())
        )]
    );
    let found = problems(
        r#"listeners:
- name: l
  address: {socket_address: {address: 192.0.2.1, port_value: 80}}
  filter_chains:
  - filters:
    - name: hcm
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: l
        rds: {route_config_name: missing, config_source: {ads: {}}}
route_configurations:
- name: r
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - match: {prefix: /}
      route: {weighted_clusters: {clusters: [{name: gone, weight: 1}, {name: epic/invalid-backend, weight: 1}]}}
"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "listeners[0].filter_chains[0].filters[0].typed_config.rds.route_config_name".into(),
                Problem::MissingRouteConfiguration("missing".into())
            ),
            (
                "route_configurations[0].virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].name".into(),
                Problem::MissingCluster("gone".into())
            ),
        ]
    );
}

#[test]
fn consistency_catches_eds_mismatches_duplicates_and_ports() {
    let found = problems(
        r#"listeners:
- {name: a, address: {socket_address: {address: 192.0.2.1, port_value: 70000}}}
- {name: a, address: {socket_address: {address: 192.0.2.1, port_value: 0}}}
clusters:
- {name: c, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}
cluster_load_assignments:
- cluster_name: d
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 198.51.100.1, port_value: 65536}}}}]}]
"#,
    );
    assert_eq!(
        found,
        vec![
            ("listeners[1].name".into(), Problem::DuplicateName { kind: ResourceKind::Listener, name: "a".into() }),
            ("listeners[0].address.socket_address.port_value".into(), Problem::PortOutOfRange(70000)),
            ("listeners[1].address.socket_address.port_value".into(), Problem::PortOutOfRange(0)),
            ("clusters[0]".into(), Problem::MissingAssignment("c".into())),
            ("cluster_load_assignments[0].cluster_name".into(), Problem::OrphanAssignment("d".into())),
            (
                "cluster_load_assignments[0].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"
                    .into(),
                Problem::PortOutOfRange(65536)
            ),
        ]
    );
}

#[test]
fn envoy_rejects_what_the_schema_accepts_but_envoy_does_not() {
    let mut context = http_context(Family::V4, false);
    context.listeners[0].virtual_hosts[0].routes[0].path = PathMatch {
        kind: PathMatchKind::Regex,
        value: "(".into(),
    };
    let rendered = Renderer::new().render("http", &context).unwrap();
    let err = EnvoyValidator::from_env()
        .validate(&rendered.resources)
        .unwrap_err();
    match err {
        ValidationError::EnvoyRejected { output } => {
            assert!(output.contains("missing )"), "{output}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_envoy_binary_is_reported() {
    let rendered = Renderer::new()
        .render("tcp", &l4_context(ListenerProtocol::Tcp, Family::V4))
        .unwrap();
    let err = EnvoyValidator::with_binary("/nonexistent/envoy")
        .validate(&rendered.resources)
        .unwrap_err();
    assert!(
        matches!(err, ValidationError::EnvoyUnavailable { .. }),
        "{err:?}"
    );
}

const NASTY: [&str; 9] = [
    "\"quoted\"",
    "line\nbreak: injected\nlisteners: []",
    "{{ gateway.uid }}",
    "{% raw %}x{% endraw %}",
    "value # not a comment",
    "]}, {name: evil",
    "\n---\nclusters: []",
    "'single' \\ back\\slash \t tab",
    "ünïcødé ☃ \u{2028}",
];

/// Renders the http template with `value` in a hostname, a header match, a
/// header to set and a redirect hostname, and checks that it comes back
/// verbatim and the structure is unchanged.
fn assert_not_injectable(value: &str) {
    let mut context = http_context(Family::V4, false);
    let routes = &mut context.listeners[0].virtual_hosts[0].routes;
    routes[1].headers[0].value = value.to_owned();
    routes[1].request_headers.set[0].value = value.to_owned();
    if let RouteAction::Redirect { hostname, .. } = &mut routes[2].action {
        *hostname = Some(value.to_owned());
    }
    context.listeners[0].virtual_hosts[1].domains = vec![value.to_owned()];
    let resources = Renderer::new().render("http", &context).unwrap().resources;
    assert_eq!(resources.listeners.len(), 1);
    assert_eq!(resources.clusters.len(), 3);
    let json = resources.to_json();
    let vhosts = &json["route_configurations"][0]["virtual_hosts"];
    assert_eq!(vhosts.as_array().unwrap().len(), 2);
    assert_eq!(vhosts[1]["domains"], serde_json::json!([value]));
    let route = &vhosts[0]["routes"][1];
    // proto3 JSON omits empty strings.
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    assert_eq!(
        text(&route["match"]["headers"][1]["string_match"]["exact"]),
        value
    );
    assert_eq!(
        text(&route["request_headers_to_add"][0]["header"]["value"]),
        value
    );
    assert_eq!(
        text(&vhosts[0]["routes"][2]["redirect"]["host_redirect"]),
        value
    );
    assert_eq!(vhosts[0]["routes"].as_array().unwrap().len(), 5);
}

#[test]
fn values_cannot_inject_configuration() {
    for value in NASTY {
        assert_not_injectable(value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_string_value_round_trips(value in "\\PC*") {
        assert_not_injectable(&value);
    }
}

#[test]
fn a_runaway_template_runs_out_of_fuel_instead_of_stalling() {
    // 10^10 loop iterations: without a budget this would run for hours.
    let err = render_custom(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}listeners: []\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("fuel")),
        "{err}"
    );
}

fn named(name: &str, envoy: &str) -> GatewayTemplate {
    GatewayTemplate {
        name: name.into(),
        envoy: envoy.into(),
        dns_name: None,
    }
}

/// A tenant's template (`namespace/name`) includes, imports and extends
/// only the built-ins and its own namespace's templates: another tenant's
/// template is out of reach whatever the spelling.
#[test]
fn a_template_reaches_only_its_own_namespace_and_the_built_ins() {
    let mut renderer = Renderer::new();
    for (name, envoy) in [
        ("globex/secret", "the secret of globex"),
        ("acme/part", "acme's part"),
        ("acme/direct", r#"{% include "acme/part" %}"#),
        ("acme/short", r#"{% include "part" %}"#),
        ("acme/builtin", r#"{% include "epic/upstreams" %}"#),
        ("acme/steal", r#"{% include "globex/secret" %}"#),
        ("acme/steal-import", r#"{% import "globex/secret" as s %}x"#),
        ("acme/steal-extends", r#"{% extends "globex/secret" %}"#),
        (
            "acme/steal-dots",
            r#"{% include "acme/../globex/secret" %}"#,
        ),
    ] {
        renderer.add_template(&named(name, envoy)).unwrap();
    }
    let ctx = l4_context(ListenerProtocol::Tcp, Family::V4);
    let text = |name: &str| renderer.render_text(name, &ctx).map(|(_, text)| text);
    assert_eq!(text("acme/direct").unwrap(), "acme's part");
    assert_eq!(text("acme/short").unwrap(), "acme's part");
    assert!(text("acme/builtin").unwrap().contains("clusters"));
    for stealer in ["acme/steal", "acme/steal-import", "acme/steal-extends"] {
        let err = text(stealer).unwrap_err().to_string();
        // To acme's templates, globex's do not exist.
        assert!(
            err.contains("template not found") && !err.contains("the secret of globex"),
            "{stealer}: {err}"
        );
    }
    // `..` is no path syntax here: the name stays in acme's namespace.
    let err = text("acme/steal-dots").unwrap_err().to_string();
    assert!(!err.contains("the secret of globex"), "{err}");
}

/// No custom template may take a built-in's name: a namespace called `epic`
/// would otherwise replace the shared partials of every tenant.
#[test]
fn built_in_names_are_reserved() {
    let mut renderer = Renderer::new();
    for name in [
        "epic/upstreams",
        "epic/http-gateway",
        "epic/anything",
        "tcp",
        "https",
    ] {
        assert_eq!(
            renderer.add_template(&named(name, "x: 1")),
            Err(TemplateError::ReservedName(name.into())),
            "{name}"
        );
    }
    let ctx = l4_context(ListenerProtocol::Tcp, Family::V4);
    let (_, upstreams) = renderer.render_text("tcp", &ctx).unwrap();
    assert!(!upstreams.contains("x: 1"));
    assert!(
        renderer
            .add_template(&named("epicx/upstreams", "x: 1"))
            .is_ok()
    );
}

/// What a tenant's template may make the controller hold is bounded: a
/// value too large for the fuel fails at once, and a cheap loop emitting a
/// large value fails at the output cap, before the controller's memory.
#[test]
fn huge_values_and_huge_output_fail_with_an_error() {
    let ctx = l4_context(ListenerProtocol::Tcp, Family::V4);
    // Whether fuel (values built at render time) or the output cap (a
    // constant folded at compile time, or a cheap loop) stops it, it stops
    // with an error.
    for (what, envoy) in [
        ("one huge value", r#"{{ (gateway.name ~ "-") * 5000000 }}"#),
        (
            "a loop of huge values",
            r#"{% for i in range(1000) %}{{ (gateway.name ~ "-") * 1000000 }}{% endfor %}"#,
        ),
        ("a huge constant", r#"{{ "x" * 100000000 }}"#),
        (
            "a cheap loop emitting a large value",
            r#"{% set big = "x" * 1000000 %}{% for i in range(1000) %}{{ big|safe }}{% endfor %}"#,
        ),
    ] {
        let err = custom(envoy).render_text("custom", &ctx).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, TemplateError::Render { .. })
                && (message.contains("fuel") || message.contains("rendered output exceeds")),
            "{what}: {err}"
        );
    }
    // Under the cap, a large output still renders.
    let (_, text) =
        custom(r#"{% set big = "x" * 1000000 %}{% for i in range(4) %}{{ big|safe }}{% endfor %}"#)
            .render_text("custom", &ctx)
            .unwrap();
    assert_eq!(text.len(), 4_000_000);
}
