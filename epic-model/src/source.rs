//! Desired state from YAML: a stream of EPIC-RS resources (`---`
//! separated), as standalone mode reads them from its file and as
//! `kubectl get -o yaml` would print them.
//!
//! Every problem names the document (1-based), the object and the field:
//!
//! ```
//! use epic_model::source::parse_resources;
//! let err = parse_resources(r#"
//! apiVersion: epic-gateway.org/v1alpha1
//! kind: Tenant
//! metadata: {name: acme}
//! spec: {namespace: acme, id: "one"}
//! "#).unwrap_err();
//! assert_eq!(err.to_string(), "document 1 (Tenant acme): spec.id: invalid type: string \"one\", expected u32");
//! ```

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::DesiredInputs;
use crate::{API_VERSION, AddressPool, BackendSet, Gateway, GatewayTemplate, Route, Tenant};

/// Why a resource stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The text is not YAML.
    #[error("document {document}: not valid YAML: {message}")]
    Yaml {
        /// 1-based document number.
        document: usize,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A document is not a resource of ours.
    #[error("document {document}: {message}")]
    NotAResource {
        /// 1-based document number.
        document: usize,
        /// What is missing or unknown.
        message: String,
    },
    /// A resource does not match its kind's schema.
    #[error("document {document} ({kind} {name}): {path}: {message}")]
    Invalid {
        /// 1-based document number.
        document: usize,
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// The field (`spec.listeners[0].port`), `.` for the whole object.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The same object appears twice.
    #[error("document {document}: {kind} {name} is defined twice")]
    Duplicate {
        /// 1-based document number of the second definition.
        document: usize,
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
    },
}

/// Parses a YAML stream of resources into desired inputs (without gateway
/// nodes, which come from the runtime's own configuration).
pub fn parse_resources(text: &str) -> Result<DesiredInputs, SourceError> {
    let mut inputs = DesiredInputs::default();
    let mut seen = BTreeSet::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| SourceError::Yaml {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        let not = |message: String| SourceError::NotAResource { document, message };
        let Some(map) = value.as_mapping() else {
            return Err(not(
                "expected a mapping with apiVersion, kind, metadata, spec".into(),
            ));
        };
        let field = |f: &str| map.get(f).and_then(Value::as_str);
        let kind = field("kind")
            .ok_or_else(|| not("missing `kind`".into()))?
            .to_owned();
        let kind = kind.as_str();
        let api_version = field("apiVersion").map(str::to_owned);
        match api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(not(format!(
                    "{kind}: apiVersion {other:?} is not {API_VERSION:?}"
                )));
            }
            None => return Err(not(format!("{kind}: missing `apiVersion`"))),
        }
        let meta = map.get("metadata").and_then(Value::as_mapping);
        let meta_str = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        let name = meta_str("name").unwrap_or_default().to_owned();
        let namespace = meta_str("namespace").map(str::to_owned);
        let namespaced = matches!(kind, "GatewayTemplate" | "Gateway" | "Route" | "BackendSet");
        let display = match &namespace {
            Some(ns) if namespaced => format!("{ns}/{name}"),
            _ => name.clone(),
        };
        let invalid = |path: &str, message: String| SourceError::Invalid {
            document,
            kind: kind.to_owned(),
            name: display.clone(),
            path: path.to_owned(),
            message,
        };
        if name.is_empty() {
            return Err(invalid("metadata.name", "required".into()));
        }
        match (namespaced, &namespace) {
            (true, None) => return Err(invalid("metadata.namespace", "required".into())),
            (false, Some(_)) => {
                return Err(invalid(
                    "metadata.namespace",
                    format!("{kind} is cluster-scoped"),
                ));
            }
            _ => {}
        }
        if !seen.insert((kind.to_owned(), display.clone())) {
            return Err(SourceError::Duplicate {
                document,
                kind: kind.to_owned(),
                name: display,
            });
        }
        fn decode<T: DeserializeOwned>(
            value: Value,
            invalid: impl Fn(&str, String) -> SourceError,
        ) -> Result<T, SourceError> {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                invalid(&path, e.into_inner().to_string())
            })
        }
        match kind {
            "Tenant" => inputs.tenants.push(decode::<Tenant>(value, invalid)?),
            "AddressPool" => inputs.pools.push(decode::<AddressPool>(value, invalid)?),
            "GatewayTemplate" => inputs
                .templates
                .push(decode::<GatewayTemplate>(value, invalid)?),
            "Gateway" => inputs.gateways.push(decode::<Gateway>(value, invalid)?),
            "Route" => inputs.routes.push(decode::<Route>(value, invalid)?),
            "BackendSet" => inputs
                .backend_sets
                .push(decode::<BackendSet>(value, invalid)?),
            other => {
                return Err(not(format!(
                    "unknown kind {other:?} (known: Tenant, AddressPool, GatewayTemplate, Gateway, Route, BackendSet)"
                )));
            }
        }
    }
    Ok(inputs)
}
