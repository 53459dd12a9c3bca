//! Shared test inputs: realistic contexts for each address family.
#![allow(dead_code)]

use std::net::IpAddr;

use epic_templates::*;

/// Address families a gateway can have.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    V4,
    V6,
    Dual,
}

pub const FAMILIES: [Family; 3] = [Family::V4, Family::V6, Family::Dual];

pub fn addresses(family: Family) -> PublicAddresses {
    let v4: IpAddr = "192.0.2.10".parse().unwrap();
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    match family {
        Family::V4 => PublicAddresses::new([v4]),
        Family::V6 => PublicAddresses::new([v6]),
        Family::Dual => PublicAddresses::new([v6, v4]),
    }
}

pub fn cluster(
    namespace: &str,
    name: &str,
    port: u16,
    endpoints: usize,
    family: Family,
) -> ClusterContext {
    let service = ServiceRef {
        namespace: namespace.into(),
        name: name.into(),
        port,
    };
    let endpoints = (0..endpoints)
        .map(|i| {
            let address: IpAddr = match (family, i % 2) {
                (Family::V4, _) | (Family::Dual, 0) => {
                    format!("198.51.100.{}", 1 + i % 250).parse().unwrap()
                }
                _ => format!("2001:db8:1::{:x}", 1 + i).parse().unwrap(),
            };
            EndpointContext {
                address,
                port: 8080,
                ready: i % 5 != 4,
                node: Some(format!("node-{}", i % 3)),
            }
        })
        .collect();
    ClusterContext {
        name: ClusterContext::name_for(&service),
        service,
        endpoints,
    }
}

pub fn gateway() -> GatewayIdentity {
    GatewayIdentity {
        name: "web".into(),
        namespace: "tenant-a".into(),
        tenant: "tenant-a".into(),
        uid: "7f0c7a52-0000-4000-8000-000000000001".into(),
    }
}

pub fn l4_context(protocol: ListenerProtocol, family: Family) -> TemplateContext {
    let a = cluster("default", "app", 5000, 3, family);
    let b = cluster("default", "app-canary", 5000, 2, family);
    TemplateContext {
        version: CONTEXT_VERSION,
        gateway: gateway(),
        addresses: addresses(family),
        listeners: vec![
            ListenerContext {
                name: "l4-5000".into(),
                port: 5000,
                protocol,
                hostname: None,
                tls: None,
                virtual_hosts: vec![],
                backends: vec![
                    WeightedCluster {
                        cluster: a.name.clone(),
                        weight: 90,
                    },
                    WeightedCluster {
                        cluster: b.name.clone(),
                        weight: 10,
                    },
                ],
            },
            ListenerContext {
                name: "l4-5001".into(),
                port: 5001,
                protocol,
                hostname: None,
                tls: None,
                virtual_hosts: vec![],
                backends: vec![WeightedCluster {
                    cluster: a.name.clone(),
                    weight: 1,
                }],
            },
            ListenerContext {
                name: "l4-5002".into(),
                port: 5002,
                protocol,
                hostname: None,
                tls: None,
                virtual_hosts: vec![],
                backends: vec![],
            },
        ],
        clusters: vec![a, b],
        dns_name: "web.tenant-a.gw.example.com".into(),
    }
}

pub fn route(name: &str, path: PathMatch, action: RouteAction) -> RouteContext {
    RouteContext {
        name: format!("default/{name}/rule0/match0"),
        source: format!("default/{name}"),
        rule: 0,
        path,
        method: None,
        headers: vec![],
        query_params: vec![],
        action,
        request_headers: HeaderModifier::default(),
        response_headers: HeaderModifier::default(),
        rewrite: None,
        mirrors: vec![],
        timeouts: Timeouts::default(),
    }
}

/// A context exercising every route feature the http template supports.
pub fn http_context(family: Family, https: bool) -> TemplateContext {
    let web = cluster("default", "web", 80, 4, family);
    let canary = cluster("default", "web-canary", 80, 2, family);
    let mirror = cluster("default", "shadow", 80, 1, family);
    let forward = |backends: Vec<WeightedCluster>| RouteAction::Forward { backends };
    let mut full = route(
        "full",
        PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/api".into(),
        },
        forward(vec![
            WeightedCluster {
                cluster: web.name.clone(),
                weight: 80,
            },
            WeightedCluster {
                cluster: canary.name.clone(),
                weight: 20,
            },
            WeightedCluster {
                cluster: INVALID_BACKEND_CLUSTER.into(),
                weight: 1,
            },
        ]),
    );
    full.method = Some("GET".into());
    full.headers = vec![
        ValueMatch {
            name: "x-env".into(),
            kind: ValueMatchKind::Exact,
            value: "prod".into(),
        },
        ValueMatch {
            name: "x-user".into(),
            kind: ValueMatchKind::Regex,
            value: "^[a-z]+$".into(),
        },
    ];
    full.query_params = vec![
        ValueMatch {
            name: "v".into(),
            kind: ValueMatchKind::Exact,
            value: "2".into(),
        },
        ValueMatch {
            name: "q".into(),
            kind: ValueMatchKind::Regex,
            value: ".*".into(),
        },
    ];
    full.request_headers = HeaderModifier {
        set: vec![HeaderValue {
            name: "x-set".into(),
            value: "1".into(),
        }],
        add: vec![HeaderValue {
            name: "x-add".into(),
            value: "2".into(),
        }],
        remove: vec!["x-remove".into()],
    };
    full.response_headers = full.request_headers.clone();
    full.rewrite = Some(Rewrite {
        hostname: Some("internal.example.com".into()),
        path: Some(PathRewrite::Prefix {
            value: "/v2".into(),
        }),
    });
    full.mirrors = vec![Mirror {
        cluster: mirror.name.clone(),
        per_million: 500_000,
    }];
    full.timeouts = Timeouts {
        request: Some("10s".into()),
        backend_request: Some("2.500s".into()),
    };
    let mut regex_rewrite = route(
        "rewrite",
        PathMatch {
            kind: PathMatchKind::Exact,
            value: "/old".into(),
        },
        forward(vec![WeightedCluster {
            cluster: web.name.clone(),
            weight: 1,
        }]),
    );
    regex_rewrite.rewrite = Some(Rewrite {
        hostname: None,
        path: Some(PathRewrite::Regex {
            pattern: "^/.*$".into(),
            substitution: "/new".into(),
        }),
    });
    let redirect = route(
        "redirect",
        PathMatch {
            kind: PathMatchKind::Regex,
            value: "/r/[0-9]+".into(),
        },
        RouteAction::Redirect {
            scheme: Some("https".into()),
            hostname: Some("www.example.com".into()),
            port: Some(8443),
            path: Some(PathRewrite::Prefix {
                value: "/new".into(),
            }),
            response_code: "MOVED_PERMANENTLY".into(),
        },
    );
    let error = route(
        "broken",
        PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/broken".into(),
        },
        RouteAction::DirectResponse { status: 500 },
    );
    let root = route(
        "root",
        PathMatch {
            kind: PathMatchKind::Prefix,
            value: "/".into(),
        },
        forward(vec![WeightedCluster {
            cluster: web.name.clone(),
            weight: 1,
        }]),
    );
    let hosts = vec![
        VirtualHostContext {
            name: "www.example.com".into(),
            domains: vec!["www.example.com".into()],
            routes: vec![regex_rewrite, full, redirect, error, root.clone()],
        },
        VirtualHostContext {
            name: "*.example.com".into(),
            domains: vec!["*.example.com".into()],
            routes: vec![root],
        },
    ];
    let mut listeners = vec![ListenerContext {
        name: "http".into(),
        port: 80,
        protocol: ListenerProtocol::Http,
        hostname: None,
        tls: None,
        virtual_hosts: hosts.clone(),
        backends: vec![],
    }];
    if https {
        listeners.push(ListenerContext {
            name: "https".into(),
            port: 443,
            protocol: ListenerProtocol::Https,
            hostname: Some("*.example.com".into()),
            tls: Some(TlsContext {
                secret_name: "tenant-a/web-cert".into(),
            }),
            virtual_hosts: hosts,
            backends: vec![],
        });
        listeners.push(ListenerContext {
            name: "https-empty".into(),
            port: 8443,
            protocol: ListenerProtocol::Https,
            hostname: None,
            tls: Some(TlsContext {
                secret_name: "tenant-a/other-cert".into(),
            }),
            virtual_hosts: vec![],
            backends: vec![],
        });
    }
    TemplateContext {
        version: CONTEXT_VERSION,
        gateway: gateway(),
        addresses: addresses(family),
        listeners,
        clusters: vec![web, canary, mirror],
        dns_name: "web.tenant-a.gw.example.com".into(),
    }
}
