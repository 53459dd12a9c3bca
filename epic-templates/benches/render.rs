//! Rendering the `http` template for a large gateway: 1,000 routes and
//! 100 clusters × 10 endpoints (target ≤ 20 ms).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use epic_templates::*;

fn large_context() -> TemplateContext {
    let clusters: Vec<ClusterContext> = (0..100)
        .map(|c| {
            let service = ServiceRef {
                namespace: "default".into(),
                name: format!("svc-{c}"),
                port: 80,
            };
            let endpoints = (0..10)
                .map(|e| EndpointContext {
                    address: IpAddr::from([198, 18, c as u8, e as u8 + 1]),
                    port: 8080,
                    ready: true,
                    node: Some(format!("node-{e}")),
                })
                .collect();
            ClusterContext {
                name: ClusterContext::name_for(&service),
                service,
                endpoints,
            }
        })
        .collect();
    let routes: Vec<RouteContext> = (0..1000)
        .map(|r| RouteContext {
            name: format!("default/route-{}/rule{}/match0", r / 10, r % 10),
            source: format!("default/route-{}", r / 10),
            rule: r % 10,
            path: PathMatch {
                kind: PathMatchKind::Prefix,
                value: format!("/app/{r}"),
            },
            method: (r % 3 == 0).then(|| "GET".to_owned()),
            headers: vec![ValueMatch {
                name: "x-tenant".into(),
                kind: ValueMatchKind::Exact,
                value: format!("t{r}"),
            }],
            query_params: vec![],
            action: RouteAction::Forward {
                backends: vec![
                    WeightedCluster {
                        cluster: clusters[r % 100].name.clone(),
                        weight: 90,
                    },
                    WeightedCluster {
                        cluster: clusters[(r + 1) % 100].name.clone(),
                        weight: 10,
                    },
                ],
            },
            request_headers: HeaderModifier {
                set: vec![HeaderValue {
                    name: "x-route".into(),
                    value: format!("{r}"),
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
        })
        .collect();
    TemplateContext {
        version: CONTEXT_VERSION,
        gateway: GatewayIdentity {
            name: "big".into(),
            namespace: "tenant-a".into(),
            tenant: "tenant-a".into(),
            uid: "00000000-0000-4000-8000-000000000000".into(),
        },
        addresses: PublicAddresses::new([
            "192.0.2.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ]),
        listeners: vec![ListenerContext {
            name: "http".into(),
            port: 80,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
            virtual_hosts: vec![VirtualHostContext {
                name: "*".into(),
                domains: vec!["*".into()],
                routes,
            }],
            backends: vec![],
        }],
        clusters,
        dns_name: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let renderer = Renderer::new();
    let context = large_context();
    // Warm the descriptor pool outside the measurement.
    let rendered = renderer.render("http", &context).unwrap();
    assert_eq!(
        rendered.resources.route_configurations[0].virtual_hosts[0]
            .routes
            .len(),
        1000
    );
    c.bench_function("render http 1000 routes 100x10 endpoints", |b| {
        b.iter(|| renderer.render("http", black_box(&context)).unwrap())
    });
    c.bench_function("render_text http 1000 routes (minijinja only)", |b| {
        b.iter(|| renderer.render_text("http", black_box(&context)).unwrap())
    });
    // The platform's policy on the same rendered set: its cost next to the
    // render's, in the same run.
    c.bench_function("check_policy http 1000 routes 100x10 endpoints", |b| {
        b.iter(|| policy::check_policy(black_box(&rendered.resources), &context).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
