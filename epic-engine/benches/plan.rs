//! The engine's cost: planning N TCP gateways (each with 10 endpoints on 5
//! nodes) from scratch and again from its own records, against a baseline
//! in the same group — rendering the same N gateways' templates alone, the
//! part of planning that is not the engine's own bookkeeping.
//!
//! `replan`: after one gateway's endpoints change, a full plan against
//! the incremental plan (a `RenderCache` kept between plans: only the
//! changed gateway renders), at 1,000 and 10,000 gateways.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use epic_engine::plan::{
    DesiredInputs, GatewayNode, Recorded, RenderCache, plan, plan_incremental,
};
use epic_model::source::parse_resources;
use epic_templates::Renderer;
use epic_templates::translate::{GatewayInputs, translate};
use std::hint::black_box;

fn inputs(n: usize) -> DesiredInputs {
    let mut text = String::from(
        "apiVersion: epic-gateway.org/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec: {namespace: acme, id: 1}\n\
         ---\napiVersion: epic-gateway.org/v1alpha1\nkind: AddressPool\nmetadata: {name: public}\nspec: {addresses: [198.18.0.0/16]}\n",
    );
    for i in 0..n {
        let endpoints: Vec<String> = (0..10)
            .map(|e| {
                format!(
                    "{{address: 198.19.{}.{}, port: 8080, node: n{}}}",
                    i % 250,
                    e + 1,
                    e % 5
                )
            })
            .collect();
        let nodes: Vec<String> = (0..5)
            .map(|k| format!("{{name: n{k}, address: 192.0.2.{}}}", k + 1))
            .collect();
        text.push_str(&format!(
            "---\napiVersion: epic-gateway.org/v1alpha1\nkind: BackendSet\nmetadata: {{name: s{i}, namespace: acme}}\n\
             spec: {{cluster: c1, namespace: default, service: s{i}, ports: [{{port: 80, endpoints: [{}]}}], nodes: [{}]}}\n\
             ---\napiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {{name: g{i}, namespace: acme}}\n\
             spec: {{template: tcp, listeners: [{{name: l, port: 80, protocol: TCP, backends: [{{namespace: default, name: s{i}, port: 80}}]}}]}}\n",
            endpoints.join(", "),
            nodes.join(", ")
        ));
    }
    let mut inputs = parse_resources(&text).expect("generated resources parse");
    inputs.gateway_nodes = vec![GatewayNode {
        name: "gw".into(),
        address: "198.51.100.1".parse().expect("address"),
    }];
    inputs
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(20);
    for n in [10usize, 100] {
        let inputs = inputs(n);
        let first = plan(&inputs, &Recorded::default());
        assert!(first.gateways.iter().all(|g| g.programmed()));
        g.bench_with_input(BenchmarkId::new("from_scratch", n), &inputs, |b, i| {
            b.iter(|| plan(black_box(i), &Recorded::default()))
        });
        g.bench_with_input(BenchmarkId::new("from_records", n), &inputs, |b, i| {
            b.iter(|| plan(black_box(i), &first.recorded))
        });
        // Baseline: translate and render the same gateways, nothing else.
        let contexts: Vec<_> = first
            .gateways
            .iter()
            .map(|gp| {
                let gi: GatewayInputs = serde_json::from_value(serde_json::json!({
                    "gateway": {"name": gp.name, "namespace": "default", "tenant": "acme", "uid": gp.name},
                    "addresses": gp.status.addresses,
                    "listeners": [{"name": "l", "port": 80, "protocol": "TCP",
                                   "backends": [{"namespace": "default", "name": gp.name.replace('g', "s"), "port": 80}]}],
                    "backends": [{"namespace": "default", "name": gp.name.replace('g', "s"), "port": 80,
                                  "endpoints": (1..=10).map(|e| serde_json::json!({"address": format!("198.19.0.{e}"), "port": 8080, "ready": true})).collect::<Vec<_>>()}]
                }))
                .expect("gateway inputs");
                translate(&gi, &[]).context
            })
            .collect();
        let renderer = Renderer::new();
        g.bench_with_input(BenchmarkId::new("render_only", n), &contexts, |b, cs| {
            b.iter(|| {
                for ctx in cs {
                    black_box(renderer.render("tcp", ctx).expect("renders"));
                }
            })
        });
    }
    g.finish();
}

/// `inputs` with the first backend set's first endpoint moved to `port`.
fn changed(inputs: &DesiredInputs, port: u16) -> DesiredInputs {
    let mut next = inputs.clone();
    next.backend_sets[0].spec.ports[0].endpoints[0].port = port;
    next
}

fn replan(c: &mut Criterion) {
    let mut g = c.benchmark_group("replan");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let a = inputs(n);
        let b = changed(&a, 8081);
        let first = plan(&a, &Recorded::default());
        let recorded = first.recorded.clone();
        // Both ways give the same plan.
        let mut cache = RenderCache::new();
        let _ = plan_incremental(&a, &recorded, &mut cache);
        let incremental = plan_incremental(&b, &recorded, &mut cache);
        let full = plan(&b, &recorded);
        assert_eq!(incremental.gateways.len(), full.gateways.len());
        for (x, y) in incremental.gateways.iter().zip(&full.gateways) {
            assert_eq!(x.status, y.status);
            assert_eq!(
                x.snapshot.as_ref().map(|s| s.version()),
                y.snapshot.as_ref().map(|s| s.version())
            );
        }
        let mut flip = false;
        g.bench_function(BenchmarkId::new("full", n), |bench| {
            bench.iter(|| {
                flip = !flip;
                plan(black_box(if flip { &a } else { &b }), &recorded)
            })
        });
        g.bench_function(BenchmarkId::new("incremental", n), |bench| {
            bench.iter(|| {
                flip = !flip;
                plan_incremental(black_box(if flip { &a } else { &b }), &recorded, &mut cache)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, replan);
criterion_main!(benches);
