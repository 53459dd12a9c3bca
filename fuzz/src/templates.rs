//! Fuzz entry point for epic-templates: rendered text → Envoy resources,
//! custom templates, and YAML escaping of template values.

use std::net::IpAddr;
use std::sync::LazyLock;

use epic_templates::validate::{check_consistency, validation_bootstrap};
use epic_templates::*;

/// Feeds `data` (when UTF-8) three ways through the public API:
///
/// 1. as a rendered document: [`EnvoyResources::from_text`] (fast path with
///    fallback) must agree exactly with the reference decoder, and decoded
///    resources must survive JSON/`Any` encoding and the consistency checks;
/// 2. as a custom template source rendered for a fixed small gateway (only
///    sources that cannot loop or allocate without bound: minijinja has no
///    fuel here);
/// 3. as a value (domain, header match, header value) in the built-in
///    `http` template: it must render, stay on the fast path and come back
///    verbatim — the YAML escaping cannot be broken out of.
///
/// Errors are expected; panics (including a fast/reference mismatch) are bugs.
pub fn templates_render(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    decode(text);
    if bounded_template(text) {
        custom_template(text);
    }
    value_round_trip(text);
}

/// The built-ins, compiled once (custom templates get their own renderer).
static BUILTIN: LazyLock<Renderer> = LazyLock::new(Renderer::new);

fn decode(text: &str) {
    let reference = EnvoyResources::from_text_reference("fuzz", text);
    if let Some(fast) = EnvoyResources::from_text_fast(text) {
        assert_eq!(
            Ok(&fast),
            reference.as_ref(),
            "fast path accepted what the reference decodes differently"
        );
    }
    assert_eq!(EnvoyResources::from_text("fuzz", text), reference);
    if let Ok(resources) = reference {
        let json = resources.to_json();
        let _ = to_yaml(&json);
        let _ = resources.to_any();
        let _ = check_consistency(&resources);
        let _ = validation_bootstrap(&resources);
    }
}

/// Template sources that terminate quickly with bounded output: short, few
/// loops, no `range`, no arithmetic on strings, no huge numbers.
fn bounded_template(text: &str) -> bool {
    let mut digits = 0;
    let long_number = text.chars().any(|c| {
        digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
        digits > 4
    });
    text.len() <= 1024
        && text.matches("for").count() <= 3
        && !long_number
        && !["range", "*", "indent", "center", "recursive", "loop("]
            .iter()
            .any(|risky| text.contains(risky))
}

fn custom_template(text: &str) {
    let mut renderer = Renderer::new();
    let template = GatewayTemplate {
        name: "fuzz".into(),
        envoy: text.into(),
        dns_name: None,
    };
    if renderer.add_template(&template).is_err() {
        return;
    }
    let context = context("web");
    let rendered = renderer.render("fuzz", &context);
    if let Ok((_, output)) = renderer.render_text("fuzz", &context) {
        // Rendering is deterministic: same outcome as decoding its text.
        assert_eq!(
            rendered.map(|r| r.resources),
            EnvoyResources::from_text("fuzz", &output)
        );
        decode(&output);
    }
}

fn value_round_trip(value: &str) {
    let mut context = context(value);
    context.listeners[0].virtual_hosts[0].domains = vec![value.to_owned()];
    let (_, text) = BUILTIN
        .render_text("http", &context)
        .expect("any value renders");
    let resources = EnvoyResources::from_text_fast(&text)
        .expect("the http template's output takes the fast path");
    assert_eq!(
        Ok(&resources),
        EnvoyResources::from_text_reference("http", &text).as_ref()
    );
    let route_config = &resources.route_configurations[0];
    let virtual_host = &route_config.virtual_hosts[0];
    assert_eq!(virtual_host.domains, [value]);
    assert_eq!(virtual_host.routes.len(), 1);
    let route = &virtual_host.routes[0];
    assert_eq!(route.request_headers_to_add.len(), 1);
    let header = route.request_headers_to_add[0].header.as_ref().unwrap();
    assert_eq!(header.value, value);
    assert_eq!(resources.listeners.len(), 1);
    assert_eq!(resources.clusters.len(), 1);
}

/// A small fixed gateway: one HTTP listener with one route (matching and
/// setting a header to `value`), one cluster with one endpoint.
fn context(value: &str) -> TemplateContext {
    let service = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
        port: 80,
    };
    let cluster = ClusterContext {
        name: ClusterContext::name_for(&service),
        service,
        endpoints: vec![EndpointContext {
            address: IpAddr::from([198, 51, 100, 7]),
            port: 8080,
            ready: true,
            node: Some("node-0".into()),
        }],
    };
    let route = RouteContext {
        name: "default/web/rule0/match0".into(),
        source: "default/web".into(),
        rule: 0,
        path: PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/app".into(),
        },
        method: Some("GET".into()),
        headers: vec![ValueMatch {
            name: "x-fuzz".into(),
            kind: ValueMatchKind::Exact,
            value: value.to_owned(),
        }],
        query_params: vec![],
        action: RouteAction::Forward {
            backends: vec![WeightedCluster {
                cluster: cluster.name.clone(),
                weight: 1,
            }],
        },
        request_headers: HeaderModifier {
            set: vec![HeaderValue {
                name: "x-value".into(),
                value: value.to_owned(),
            }],
            ..HeaderModifier::default()
        },
        response_headers: HeaderModifier::default(),
        rewrite: None,
        mirrors: vec![],
        timeouts: Timeouts {
            request: Some("15s".into()),
            backend_request: None,
        },
    };
    TemplateContext {
        version: CONTEXT_VERSION,
        gateway: GatewayIdentity {
            name: "web".into(),
            namespace: "default".into(),
            tenant: "tenant-a".into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
        },
        addresses: PublicAddresses::new([IpAddr::from([192, 0, 2, 1])]),
        listeners: vec![ListenerContext {
            name: "http".into(),
            port: 80,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
            virtual_hosts: vec![VirtualHostContext {
                name: "web".into(),
                domains: vec!["web.example.com".into()],
                routes: vec![route],
            }],
            backends: vec![],
        }],
        clusters: vec![cluster],
        dns_name: "web.example.com".into(),
    }
}
