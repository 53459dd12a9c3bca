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

use crate::API_VERSION;
use crate::DesiredInputs;

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
        let header = Header::read(document, &value)?;
        if !seen.insert((header.kind.clone(), header.display.clone())) {
            return Err(SourceError::Duplicate {
                document,
                kind: header.kind,
                name: header.display,
            });
        }
        header.decode_into(value, &mut inputs)?;
    }
    Ok(inputs)
}

/// What identifies one document's resource: its kind and name, checked.
struct Header {
    document: usize,
    kind: String,
    /// `namespace/name` or `name`.
    display: String,
}

impl Header {
    /// The `apiVersion`, `kind` and `metadata` of document `document`,
    /// each checked: a known version, a name, a namespace exactly when the
    /// kind is namespaced.
    fn read(document: usize, value: &Value) -> Result<Header, SourceError> {
        let not = |message: String| SourceError::NotAResource { document, message };
        let Some(map) = value.as_mapping() else {
            return Err(not(
                "expected a mapping with apiVersion, kind, metadata, spec".into(),
            ));
        };
        let field = |f: &str| map.get(f).and_then(Value::as_str);
        let kind = field("kind").ok_or_else(|| not("missing `kind`".into()))?;
        match field("apiVersion") {
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
        let name = meta_str("name").unwrap_or_default();
        let namespace = meta_str("namespace");
        let namespaced = matches!(kind, "GatewayTemplate" | "Gateway" | "Route" | "BackendSet");
        let display = match namespace {
            Some(ns) if namespaced => format!("{ns}/{name}"),
            _ => name.to_owned(),
        };
        let header = Header {
            document,
            kind: kind.to_owned(),
            display,
        };
        if name.is_empty() {
            return Err(header.invalid("metadata.name", "required".into()));
        }
        match (namespaced, namespace) {
            (true, None) => Err(header.invalid("metadata.namespace", "required".into())),
            (false, Some(_)) => {
                Err(header.invalid("metadata.namespace", format!("{kind} is cluster-scoped")))
            }
            _ => Ok(header),
        }
    }

    /// An invalid field of this resource.
    fn invalid(&self, path: &str, message: String) -> SourceError {
        SourceError::Invalid {
            document: self.document,
            kind: self.kind.clone(),
            name: self.display.clone(),
            path: path.to_owned(),
            message,
        }
    }

    /// `value` decoded as this resource's kind; a field that does not
    /// decode is named by its path.
    fn decode<T: DeserializeOwned>(&self, value: Value) -> Result<T, SourceError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            self.invalid(&path, e.into_inner().to_string())
        })
    }

    /// Decodes `value` and adds it to `inputs`.
    fn decode_into(&self, value: Value, inputs: &mut DesiredInputs) -> Result<(), SourceError> {
        match self.kind.as_str() {
            "Tenant" => inputs.tenants.push(self.decode(value)?),
            "AddressPool" => inputs.pools.push(self.decode(value)?),
            "GatewayTemplate" => inputs.templates.push(self.decode(value)?),
            "Gateway" => inputs.gateways.push(self.decode(value)?),
            "Route" => inputs.routes.push(self.decode(value)?),
            "BackendSet" => inputs.backend_sets.push(self.decode(value)?),
            other => {
                return Err(SourceError::NotAResource {
                    document: self.document,
                    message: format!(
                        "unknown kind {other:?} (known: Tenant, AddressPool, GatewayTemplate, Gateway, Route, BackendSet)"
                    ),
                });
            }
        }
        Ok(())
    }
}
