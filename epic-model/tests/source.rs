//! Reading resources from YAML: every error names the document, object and field.

use epic_model::crds;
use epic_model::source::{SourceError, parse_resources};

fn err(text: &str) -> String {
    parse_resources(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_document_object_and_field() {
    let tenant = "apiVersion: epic-gateway.org/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec: {namespace: acme, id: 1}\n";
    assert_eq!(
        err(&format!("{tenant}---\n{tenant}")),
        "document 2: Tenant acme is defined twice"
    );
    assert_eq!(
        err("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"),
        "document 1: Service: apiVersion \"v1\" is not \"epic-gateway.org/v1alpha1\""
    );
    assert_eq!(
        err("apiVersion: epic-gateway.org/v1alpha1\nkind: Widget\nmetadata: {name: x}\n"),
        "document 1: unknown kind \"Widget\" (known: Tenant, AddressPool, GatewayTemplate, Gateway, Route, BackendSet)"
    );
    assert_eq!(
        err(
            "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {name: web}\nspec: {template: tcp, listeners: []}\n"
        ),
        "document 1 (Gateway web): metadata.namespace: required"
    );
    assert_eq!(
        err(
            "apiVersion: epic-gateway.org/v1alpha1\nkind: AddressPool\nmetadata: {name: p, namespace: x}\nspec: {addresses: []}\n"
        ),
        "document 1 (AddressPool p): metadata.namespace: AddressPool is cluster-scoped"
    );
    let bad_port = "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {name: web, namespace: acme}\nspec:\n  template: tcp\n  listeners: [{name: a, port: 70000, protocol: TCP}]\n";
    let e = err(bad_port);
    assert!(
        e.starts_with("document 1 (Gateway acme/web): spec.listeners[0].port: invalid value"),
        "{e}"
    );
    let typo = "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {name: web, namespace: acme}\nspec: {template: tcp, listners: []}\n";
    let e = err(typo);
    assert!(
        e.contains("spec.listners: unknown field `listners`, expected one of"),
        "{e}"
    );
    assert!(matches!(
        parse_resources("a: [").unwrap_err(),
        SourceError::Yaml { document: 1, .. }
    ));
    assert_eq!(
        err("- 1\n"),
        "document 1: expected a mapping with apiVersion, kind, metadata, spec"
    );
    // Empty documents are skipped.
    assert_eq!(parse_resources("---\n---\n").unwrap().tenants.len(), 0);
}

#[test]
fn crds_are_generated_for_every_kind() {
    let crds = crds();
    let names: Vec<String> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "tenants.epic-gateway.org",
            "addresspools.epic-gateway.org",
            "gatewaytemplates.epic-gateway.org",
            "gateways.epic-gateway.org",
            "routes.epic-gateway.org",
            "backendsets.epic-gateway.org",
        ]
    );
    let gateway = &crds[3];
    assert_eq!(gateway.spec.scope, "Namespaced");
    assert_eq!(crds[0].spec.scope, "Cluster");
    let version = &gateway.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let schema = serde_json::to_string(&version.schema).unwrap();
    assert!(
        schema.contains("listeners") && schema.contains("sharingKey"),
        "{schema}"
    );
}
