//! Gateway API translation: every core HTTPRoute feature, precedence rule
//! by rule, TCP/UDP routes, reports; and the whole path to real Envoy.

use epic_templates::translate::*;
use epic_templates::validate::EnvoyValidator;
use epic_templates::*;

const GATEWAY: &str = r#"
gateway: {name: web, namespace: default, tenant: tenant-a, uid: 7f0c7a52-0000-4000-8000-000000000001}
addresses: [192.0.2.10, "2001:db8::10"]
listeners:
- {name: http, port: 80, protocol: HTTP}
- {name: https, port: 443, protocol: HTTPS, hostname: "*.example.com", tlsSecret: default/web-cert}
- {name: tcp, port: 5432, protocol: TCP}
- {name: udp, port: 53, protocol: UDP}
- {name: lb, port: 6000, protocol: TCP, backends: [{namespace: default, name: db, port: 5432}]}
backends:
- namespace: default
  name: web
  port: 80
  endpoints:
  - {address: 198.51.100.1, port: 8080, ready: true, node: n1}
  - {address: "2001:db8:1::1", port: 8080, ready: false}
- {namespace: default, name: canary, port: 80, endpoints: [{address: 198.51.100.2, port: 8080, ready: true}]}
- {namespace: default, name: shadow, port: 80, endpoints: [{address: 198.51.100.3, port: 8080, ready: true}]}
- {namespace: default, name: db, port: 5432, endpoints: [{address: 198.51.100.4, port: 5432, ready: true}]}
- {namespace: default, name: dns, port: 53, endpoints: [{address: 198.51.100.5, port: 5353, ready: true}]}
- {namespace: default, name: dns2, port: 53, endpoints: [{address: 198.51.100.6, port: 5353, ready: true}]}
"#;

fn inputs() -> GatewayInputs {
    serde_yaml_ng::from_str(GATEWAY).unwrap()
}

fn http_route(name: &str, created: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{name: web, sectionName: http}}]\n{spec}"
    )
}

fn translate_yaml(routes: &str) -> Translation {
    translate(
        &inputs(),
        &Route::from_yaml(routes).unwrap_or_else(|err| panic!("{err}")),
    )
}

/// The routes of the single virtual host of listener `http`.
fn http_routes(t: &Translation) -> Vec<RouteContext> {
    let listener = t
        .context
        .listeners
        .iter()
        .find(|l| l.name == "http")
        .unwrap();
    assert_eq!(
        listener.virtual_hosts.len(),
        1,
        "{:?}",
        listener.virtual_hosts
    );
    listener.virtual_hosts[0].routes.clone()
}

fn one_route(spec: &str) -> (RouteContext, RouteReport) {
    let t = translate_yaml(&http_route("r", "2024-01-01T00:00:00Z", spec));
    let routes = http_routes(&t);
    assert_eq!(routes.len(), 1, "{routes:?}");
    (routes[0].clone(), t.reports[0].clone())
}

fn backend(name: &str, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: format!("default/{name}:80"),
        weight,
    }
}

const WEB: &str = "    backendRefs: [{name: web, port: 80}]\n";

#[test]
fn path_matches_exact_prefix_regex() {
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches: [{{path: {{type: Exact, value: /a}}}}]\n{WEB}"
    ));
    assert_eq!(
        r.path,
        PathMatch {
            kind: PathMatchKind::Exact,
            value: "/a".into()
        }
    );
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /a/}}}}]\n{WEB}"
    ));
    assert_eq!(
        r.path,
        PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/a".into()
        }
    );
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches: [{{path: {{type: RegularExpression, value: \"/a/[0-9]+\"}}}}]\n{WEB}"
    ));
    assert_eq!(
        r.path,
        PathMatch {
            kind: PathMatchKind::Regex,
            value: "/a/[0-9]+".into()
        }
    );
    let (r, _) = one_route(&format!("  rules:\n  -\n{WEB}"));
    assert_eq!(
        r.path,
        PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/".into()
        }
    );
}

#[test]
fn header_query_and_method_matches() {
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches:\n    - method: POST\n      headers: [{{name: X-Env, value: prod}}, {{name: x-user, type: RegularExpression, value: \"^a\"}}]\n      queryParams: [{{name: v, value: \"2\"}}, {{name: q, type: RegularExpression, value: \".*\"}}]\n{WEB}"
    ));
    assert_eq!(r.method.as_deref(), Some("POST"));
    assert_eq!(
        r.headers,
        vec![
            ValueMatch {
                name: "x-env".into(),
                kind: ValueMatchKind::Exact,
                value: "prod".into()
            },
            ValueMatch {
                name: "x-user".into(),
                kind: ValueMatchKind::Regex,
                value: "^a".into()
            },
        ]
    );
    assert_eq!(
        r.query_params,
        vec![
            ValueMatch {
                name: "v".into(),
                kind: ValueMatchKind::Exact,
                value: "2".into()
            },
            ValueMatch {
                name: "q".into(),
                kind: ValueMatchKind::Regex,
                value: ".*".into()
            },
        ]
    );
}

#[test]
fn request_and_response_header_modifiers() {
    let (r, _) = one_route(&format!(
        "  rules:\n  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {{set: [{{name: X-A, value: \"1\"}}], add: [{{name: x-b, value: \"2\"}}], remove: [X-C]}}\n    - type: ResponseHeaderModifier\n      responseHeaderModifier: {{set: [{{name: x-d, value: \"4\"}}], remove: [x-e]}}\n{WEB}"
    ));
    assert_eq!(
        r.request_headers.set,
        vec![HeaderValue {
            name: "x-a".into(),
            value: "1".into()
        }]
    );
    assert_eq!(
        r.request_headers.add,
        vec![HeaderValue {
            name: "x-b".into(),
            value: "2".into()
        }]
    );
    assert_eq!(r.request_headers.remove, vec!["x-c".to_owned()]);
    assert_eq!(
        r.response_headers.set,
        vec![HeaderValue {
            name: "x-d".into(),
            value: "4".into()
        }]
    );
    assert_eq!(r.response_headers.remove, vec!["x-e".to_owned()]);
}

#[test]
fn request_redirect_scheme_host_port_path_and_status() {
    let (r, _) = one_route(
        "  rules:\n  - matches: [{path: {type: PathPrefix, value: /old}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {scheme: https, hostname: www.example.com, port: 8443, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}\n",
    );
    assert_eq!(
        r.action,
        RouteAction::Redirect {
            scheme: Some("https".into()),
            hostname: Some("www.example.com".into()),
            port: Some(8443),
            path: Some(PathRewrite::Prefix {
                value: "/new".into()
            }),
            response_code: "MOVED_PERMANENTLY".into(),
        }
    );
    let (r, _) = one_route(
        "  rules:\n  - filters:\n    - type: RequestRedirect\n      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /maintenance}}\n",
    );
    match r.action {
        RouteAction::Redirect {
            path,
            response_code,
            ..
        } => {
            assert_eq!(response_code, "FOUND");
            assert_eq!(
                path,
                Some(PathRewrite::Regex {
                    pattern: "^/.*$".into(),
                    substitution: "/maintenance".into()
                })
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Gateway API: a redirect without a port goes to the listener's port
/// when it names no scheme (omitted when that is the protocol's default),
/// and to the scheme's default port when it names one
/// (HTTPRouteRedirectPortAndScheme).
#[test]
fn a_redirect_without_a_port_keeps_the_listeners_port() {
    let spec = "  rules:\n  - matches: [{path: {value: /nil}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {hostname: example.org}\n  - matches: [{path: {value: /https}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {scheme: https, hostname: example.org}\n  - matches: [{path: {value: /80}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {port: 80, hostname: example.org}\n";
    let routes = Route::from_yaml(&http_route("r", "2024-01-01T00:00:00Z", spec)).unwrap();
    let ports = |listener_port: u16| -> Vec<(String, Option<u16>)> {
        let mut inputs = inputs();
        inputs.listeners[0].port = listener_port;
        http_routes(&translate(&inputs, &routes))
            .into_iter()
            .map(|r| match r.action {
                RouteAction::Redirect { port, .. } => (r.path.value, port),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let expected = |nil: Option<u16>| {
        vec![
            ("/https".to_owned(), None),
            ("/nil".to_owned(), nil),
            ("/80".to_owned(), Some(80)),
        ]
    };
    assert_eq!(ports(8080), expected(Some(8080)));
    assert_eq!(ports(80), expected(None));
}

#[test]
fn url_rewrite_hostname_full_path_and_prefix() {
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches: [{{path: {{value: /api}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{hostname: internal, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}\n{WEB}"
    ));
    assert_eq!(
        r.rewrite,
        Some(Rewrite {
            hostname: Some("internal".into()),
            path: Some(PathRewrite::Prefix {
                value: "/v2".into()
            })
        })
    );
    let (r, _) = one_route(&format!(
        "  rules:\n  - matches: [{{path: {{value: /api}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}\n{WEB}"
    ));
    assert_eq!(
        r.rewrite.unwrap().path,
        Some(PathRewrite::Regex {
            pattern: "^/api/*".into(),
            substitution: "/".into()
        })
    );
    let (r, _) = one_route(&format!(
        "  rules:\n  - filters:\n    - type: URLRewrite\n      urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /index.html}}}}\n{WEB}"
    ));
    assert_eq!(
        r.rewrite.unwrap().path,
        Some(PathRewrite::Regex {
            pattern: "^/.*$".into(),
            substitution: "/index.html".into()
        })
    );
}

#[test]
fn request_mirror_with_percent_and_fraction() {
    let (r, _) = one_route(&format!(
        "  rules:\n  - filters:\n    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}, percent: 25}}}}\n    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}, fraction: {{numerator: 1, denominator: 3}}}}}}\n    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}\n{WEB}"
    ));
    let shares: Vec<u32> = r.mirrors.iter().map(|m| m.per_million).collect();
    assert_eq!(shares, vec![250_000, 333_333, 1_000_000]);
    assert!(r.mirrors.iter().all(|m| m.cluster == "default/shadow:80"));
}

#[test]
fn weighted_backends_and_weight_zero() {
    let (r, report) = one_route(
        "  rules:\n  - backendRefs: [{name: web, port: 80, weight: 90}, {name: canary, port: 80, weight: 10}, {name: shadow, port: 80, weight: 0}]\n",
    );
    assert_eq!(
        r.action,
        RouteAction::Forward {
            backends: vec![backend("web", 90), backend("canary", 10)]
        }
    );
    assert!(report.issues.is_empty());
    let (r, _) = one_route("  rules:\n  - backendRefs: [{name: web, port: 80, weight: 0}]\n");
    assert_eq!(r.action, RouteAction::DirectResponse { status: 500 });
}

#[test]
fn invalid_backends_get_500_and_are_reported() {
    let (r, report) = one_route("  rules:\n  - backendRefs: [{name: missing, port: 80}]\n");
    assert_eq!(r.action, RouteAction::DirectResponse { status: 500 });
    assert_eq!(report.issues[0].reason, IssueReason::BackendNotFound);
    assert_eq!(report.issues[0].rule, Some(0));
    assert!(!report.resolved_refs());
    assert!(report.accepted());

    let (r, report) = one_route(
        "  rules:\n  - backendRefs: [{name: web, port: 80, weight: 3}, {name: web, namespace: other, port: 80, weight: 1}, {name: web, kind: Foo, group: x.io, port: 80, weight: 2}]\n",
    );
    assert_eq!(
        r.action,
        RouteAction::Forward {
            backends: vec![
                backend("web", 3),
                WeightedCluster {
                    cluster: INVALID_BACKEND_CLUSTER.into(),
                    weight: 3
                }
            ]
        }
    );
    let reasons: Vec<IssueReason> = report.issues.iter().map(|i| i.reason).collect();
    assert_eq!(
        reasons,
        vec![IssueReason::RefNotPermitted, IssueReason::InvalidKind]
    );
    let (r, _) = one_route("  rules:\n  - {}\n");
    assert_eq!(r.action, RouteAction::DirectResponse { status: 500 });
}

#[test]
fn timeouts_become_proto_durations() {
    let (r, report) = one_route(&format!(
        "  rules:\n  - timeouts: {{request: 1m30s, backendRequest: 500ms}}\n{WEB}"
    ));
    assert_eq!(
        r.timeouts,
        Timeouts {
            request: Some("90s".into()),
            backend_request: Some("0.5s".into())
        }
    );
    assert!(report.issues.is_empty());
    let (r, report) = one_route(&format!(
        "  rules:\n  - timeouts: {{request: forever}}\n{WEB}"
    ));
    assert_eq!(r.timeouts.request, None);
    assert_eq!(report.issues[0].reason, IssueReason::UnsupportedValue);
}

#[test]
fn unsupported_filters_answer_500_and_are_reported_per_rule() {
    let t = translate_yaml(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &format!(
            "  rules:\n  - matches: [{{path: {{value: /ok}}}}]\n{WEB}  - matches: [{{path: {{value: /ext}}}}]\n    filters: [{{type: ExtensionRef, extensionRef: {{group: x.io, kind: Auth, name: a}}}}]\n{WEB}"
        ),
    ));
    let routes = http_routes(&t);
    assert_eq!(routes.len(), 2, "the rule is kept, not dropped");
    let ext = routes.iter().find(|r| r.path.value == "/ext").unwrap();
    assert_eq!(ext.action, RouteAction::DirectResponse { status: 500 });
    let issue = &t.reports[0].issues[0];
    assert_eq!(
        (issue.rule, issue.reason),
        (Some(1), IssueReason::UnsupportedValue)
    );
    assert!(issue.message.contains("ExtensionRef"), "{}", issue.message);
}

#[test]
fn hostnames_intersect_with_the_listener() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [a.example.com, other.org, \"*.example.com\"]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n";
    let t = translate_yaml(route);
    let domains = |name: &str| -> Vec<String> {
        let l = t.context.listeners.iter().find(|l| l.name == name).unwrap();
        l.virtual_hosts
            .iter()
            .flat_map(|v| v.domains.clone())
            .collect()
    };
    assert_eq!(
        domains("http"),
        vec!["*.example.com", "a.example.com", "other.org"]
    );
    assert_eq!(domains("https"), vec!["*.example.com", "a.example.com"]);
    assert_eq!(t.reports[0].attached_listeners, vec!["http", "https"]);

    let t = translate_yaml(
        &route
            .replace(
                "[a.example.com, other.org, \"*.example.com\"]",
                "[other.org]",
            )
            .replace("{name: web}", "{name: web, sectionName: https}"),
    );
    assert!(!t.reports[0].accepted());
    assert_eq!(
        t.reports[0].issues[0].reason,
        IssueReason::NoMatchingListenerHostname
    );
}

#[test]
fn routes_for_other_gateways_or_listeners_are_not_accepted() {
    let route = http_route("r", "2024-01-01T00:00:00Z", &rules(&["{path: {value: /}}"]));
    let t = translate_yaml(&route.replace("{name: web, sectionName: http}", "{name: other}"));
    assert_eq!(t.reports[0].issues[0].reason, IssueReason::NoMatchingParent);
    assert!(!t.reports[0].accepted());
    let t = translate_yaml(&route.replace("sectionName: http", "sectionName: tcp"));
    assert_eq!(
        t.reports[0].issues[0].reason,
        IssueReason::NotAllowedByListeners
    );
}

// ---- precedence, one rule at a time -------------------------------------

fn order(routes: &str) -> Vec<String> {
    http_routes(&translate_yaml(routes))
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn rules(spec: &[&str]) -> String {
    let mut out = String::from("  rules:\n");
    for matches in spec {
        out.push_str(&format!("  - matches: [{matches}]\n{WEB}"));
    }
    out
}

#[test]
fn precedence_exact_path_beats_any_prefix() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{path: {value: /aaaaaaaaaa}}",
            "{path: {type: Exact, value: /a}}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_longer_prefix_first() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{path: {value: /a}}",
            "{path: {value: /a/b}}",
            "{path: {value: /}}",
        ]),
    ));
    assert_eq!(
        names,
        vec![
            "default/r/rule1/match0",
            "default/r/rule0/match0",
            "default/r/rule2/match0"
        ]
    );
}

#[test]
fn precedence_regex_after_prefixes() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{path: {type: RegularExpression, value: /a.*}}",
            "{path: {value: /}}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_method_before_more_headers() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{path: {value: /a}, headers: [{name: a, value: b}, {name: c, value: d}]}",
            "{path: {value: /a}, method: GET}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_more_headers_first() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{headers: [{name: a, value: b}]}",
            "{headers: [{name: a, value: b}, {name: c, value: d}]}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_headers_before_query_params() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{queryParams: [{name: a, value: b}, {name: c, value: d}]}",
            "{headers: [{name: a, value: b}]}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_more_query_params_first() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &rules(&[
            "{queryParams: [{name: a, value: b}]}",
            "{queryParams: [{name: a, value: b}, {name: c, value: d}]}",
        ]),
    ));
    assert_eq!(
        names,
        vec!["default/r/rule1/match0", "default/r/rule0/match0"]
    );
}

#[test]
fn precedence_oldest_route_first() {
    let newer = http_route(
        "aaa",
        "2024-06-01T00:00:00Z",
        &rules(&["{path: {value: /x}}"]),
    );
    let older = http_route(
        "zzz",
        "2024-01-01T00:00:00Z",
        &rules(&["{path: {value: /x}}"]),
    );
    let names = order(&format!("{newer}---\n{older}"));
    assert_eq!(
        names,
        vec!["default/zzz/rule0/match0", "default/aaa/rule0/match0"]
    );
}

#[test]
fn precedence_then_namespace_and_name() {
    let b = http_route(
        "b",
        "2024-01-01T00:00:00Z",
        &rules(&["{path: {value: /x}}"]),
    );
    let a = http_route(
        "a",
        "2024-01-01T00:00:00Z",
        &rules(&["{path: {value: /x}}"]),
    );
    let names = order(&format!("{b}---\n{a}"));
    assert_eq!(
        names,
        vec!["default/a/rule0/match0", "default/b/rule0/match0"]
    );
}

#[test]
fn precedence_then_rule_and_match_order() {
    let names = order(&http_route(
        "r",
        "2024-01-01T00:00:00Z",
        &format!(
            "  rules:\n  - matches: [{{path: {{value: /x}}}}, {{path: {{value: /y}}}}]\n{WEB}  - matches: [{{path: {{value: /x}}}}]\n{WEB}"
        ),
    ));
    // All three tie on the match criteria: rule order, then match order.
    assert_eq!(
        names,
        vec![
            "default/r/rule0/match0",
            "default/r/rule0/match1",
            "default/r/rule1/match0"
        ]
    );
}

// ---- L4 ------------------------------------------------------------------

#[test]
fn tcp_and_udp_routes_and_service_backends() {
    let routes = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: t, namespace: default}\nspec:\n  parentRefs: [{name: web, sectionName: tcp}]\n  rules: [{backendRefs: [{name: db, port: 5432}]}]\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: u, namespace: default}\nspec:\n  parentRefs: [{name: web, port: 53}]\n  rules: [{backendRefs: [{name: dns, port: 53, weight: 1}, {name: dns2, port: 53, weight: 5}]}]\n";
    let t = translate_yaml(routes);
    let listener = |name: &str| {
        t.context
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        listener("tcp").backends,
        vec![WeightedCluster {
            cluster: "default/db:5432".into(),
            weight: 1
        }]
    );
    assert_eq!(
        listener("udp").backends,
        vec![WeightedCluster {
            cluster: "default/dns2:53".into(),
            weight: 5
        }]
    );
    assert_eq!(t.reports[1].issues[0].reason, IssueReason::UnsupportedValue);
    assert_eq!(
        listener("lb").backends,
        vec![WeightedCluster {
            cluster: "default/db:5432".into(),
            weight: 1
        }]
    );
}

#[test]
fn unknown_route_kinds_and_bad_fields_are_errors() {
    let err = Route::from_yaml("kind: GRPCRoute\nmetadata: {name: g}\nspec: {}\n").unwrap_err();
    assert!(matches!(err, RouteParseError::Kind { .. }), "{err}");
    let err = Route::from_yaml("kind: HTTPRoute\nmetadata: {name: g}\nspec: {rules: [{matches: [{path: {type: Bogus}}]}]}\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.rules[0].matches[0].path.type"),
        "{err}"
    );
}

// ---- end to end ----------------------------------------------------------

const FULL_ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: web}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /healthz}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /status}, statusCode: 302}}]
  - matches:
    - path: {type: PathPrefix, value: /api}
      method: GET
      headers: [{name: x-env, value: prod}, {name: x-id, type: RegularExpression, value: "^[0-9]+$"}]
      queryParams: [{name: v, value: "2"}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-gw, value: epic}], remove: [x-internal]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served-by, value: epic}]}}
    - {type: URLRewrite, urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 10}}
    backendRefs: [{name: web, port: 80, weight: 9}, {name: canary, port: 80, weight: 1}, {name: gone, port: 80, weight: 1}]
    timeouts: {request: 10s, backendRequest: 2s}
  - matches: [{path: {type: RegularExpression, value: "/img/.*\\.png"}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /static/img.png}}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /legacy}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443, statusCode: 301}}]
  - backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /cors}}]
    filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]
    backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: web, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
"#;

#[test]
fn translated_gateway_renders_and_envoy_accepts_it() {
    let t = translate_yaml(FULL_ROUTES);
    let mut context = t.context;
    // The https template handles HTTP(S); L4 listeners go to the tcp/udp templates.
    context
        .listeners
        .retain(|l| matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https));
    let rendered = Renderer::new()
        .render("https", &context)
        .unwrap_or_else(|err| panic!("{err}"));
    let resources = rendered.resources;
    assert_eq!(resources.route_configurations.len(), 2);
    EnvoyValidator::from_env()
        .validate(&resources)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(t.reports[0].attached_listeners, vec!["http", "https"]);
    assert!(!t.reports[0].resolved_refs());
}
