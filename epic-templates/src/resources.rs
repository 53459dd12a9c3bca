//! Rendered Envoy resources: decoding the rendered document with the proto3
//! JSON mapping, and encoding typed resources back to JSON.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};
use serde::Serialize;

use crate::descriptors;
use crate::error::{ResourceKind, TemplateError};

/// The typed Envoy resources one template renders for one gateway.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyResources {
    /// Listeners (LDS).
    pub listeners: Vec<Listener>,
    /// Clusters (CDS).
    pub clusters: Vec<Cluster>,
    /// Route configurations (RDS).
    pub route_configurations: Vec<RouteConfiguration>,
    /// Endpoint assignments (EDS).
    pub cluster_load_assignments: Vec<ClusterLoadAssignment>,
}

impl EnvoyResources {
    /// Decodes rendered template text (YAML or JSON): a mapping with up to
    /// four resource lists, as [`from_json`](Self::from_json) describes.
    /// YAML errors carry the rendered line and column, decoding errors the
    /// field path.
    ///
    /// Documents in the subset of YAML and of the proto3 JSON mapping that
    /// templates produce are decoded by a single-pass fast path (straight to
    /// the protobuf encoding); anything else, and every error, is decided
    /// by the reference path (`serde_yaml_ng`, then prost-reflect), so the
    /// result is the same either way.
    pub fn from_text(template: &str, text: &str) -> Result<Self, TemplateError> {
        match crate::fast::decode(text) {
            Some(resources) => Ok(resources),
            None => Self::from_text_reference(template, text),
        }
    }

    /// Only the fast path of [`from_text`](Self::from_text): `None` when the
    /// text is outside its subset or does not decode. For tests that check
    /// the built-in templates stay on the fast path.
    #[doc(hidden)]
    pub fn from_text_fast(text: &str) -> Option<Self> {
        crate::fast::decode(text)
    }

    /// [`from_text`](Self::from_text) without the fast path: `serde_yaml_ng`
    /// into a JSON value, then [`from_json`](Self::from_json). For
    /// differential tests and fuzzing.
    #[doc(hidden)]
    pub fn from_text_reference(template: &str, text: &str) -> Result<Self, TemplateError> {
        let document = crate::render::parse_document(template, text)?;
        Self::from_json(template, &document)
    }

    /// Decodes a rendered document (a mapping with the four resource lists,
    /// each optional) with the canonical proto3 JSON mapping. Unknown keys,
    /// unknown fields, wrong types, out-of-range numbers and unknown `@type`
    /// URLs are errors that carry the field path.
    pub fn from_json(template: &str, document: &serde_json::Value) -> Result<Self, TemplateError> {
        let shape = |path: &str, message: &str| TemplateError::Shape {
            template: template.to_owned(),
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let map = match document {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => return Ok(Self::default()),
            _ => {
                return Err(shape(
                    "<root>",
                    "expected a mapping with listeners, clusters, route_configurations and cluster_load_assignments",
                ));
            }
        };
        if let Some(key) = map.keys().find(|key| {
            !ResourceKind::ALL
                .iter()
                .any(|kind| kind.key() == key.as_str())
        }) {
            return Err(shape(
                key,
                "unknown key (expected listeners, clusters, route_configurations or cluster_load_assignments)",
            ));
        }
        let mut resources = Self::default();
        for kind in ResourceKind::ALL {
            let items = match map.get(kind.key()) {
                None | Some(serde_json::Value::Null) => continue,
                Some(serde_json::Value::Array(items)) => items,
                Some(_) => return Err(shape(kind.key(), "expected a list of resources")),
            };
            for (index, item) in items.iter().enumerate() {
                let message = decode_dynamic(template, kind, index, item)?;
                let converted = match kind {
                    ResourceKind::Listener => {
                        message.transcode_to().map(|m| resources.listeners.push(m))
                    }
                    ResourceKind::Cluster => {
                        message.transcode_to().map(|m| resources.clusters.push(m))
                    }
                    ResourceKind::RouteConfiguration => message
                        .transcode_to()
                        .map(|m| resources.route_configurations.push(m)),
                    ResourceKind::ClusterLoadAssignment => message
                        .transcode_to()
                        .map(|m| resources.cluster_load_assignments.push(m)),
                };
                converted.map_err(|err| TemplateError::Field {
                    template: template.to_owned(),
                    resource: kind,
                    path: format!("{}[{index}]", kind.key()),
                    message: format!("does not decode into the envoy-types message: {err}"),
                })?;
            }
        }
        Ok(resources)
    }

    /// Encodes the resources as the rendered document shape (proto3 JSON
    /// with the proto field names, `@type` on every `Any`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert(
            ResourceKind::Listener.key().into(),
            self.listeners
                .iter()
                .map(|m| message_to_json(ResourceKind::Listener, m))
                .collect(),
        );
        map.insert(
            ResourceKind::Cluster.key().into(),
            self.clusters
                .iter()
                .map(|m| message_to_json(ResourceKind::Cluster, m))
                .collect(),
        );
        map.insert(
            ResourceKind::RouteConfiguration.key().into(),
            self.route_configurations
                .iter()
                .map(|m| message_to_json(ResourceKind::RouteConfiguration, m))
                .collect(),
        );
        map.insert(
            ResourceKind::ClusterLoadAssignment.key().into(),
            self.cluster_load_assignments
                .iter()
                .map(|m| message_to_json(ResourceKind::ClusterLoadAssignment, m))
                .collect(),
        );
        serde_json::Value::Object(map)
    }

    /// Every resource as `(type URL, name, protobuf Any)`, ready for an xDS cache.
    pub fn to_any(&self) -> Vec<(ResourceKind, String, prost_types::Any)> {
        use prost::Message;
        let any = |kind: ResourceKind, bytes: Vec<u8>| prost_types::Any {
            type_url: kind.type_url(),
            value: bytes,
        };
        let mut out = Vec::new();
        for m in &self.listeners {
            out.push((
                ResourceKind::Listener,
                m.name.clone(),
                any(ResourceKind::Listener, m.encode_to_vec()),
            ));
        }
        for m in &self.clusters {
            out.push((
                ResourceKind::Cluster,
                m.name.clone(),
                any(ResourceKind::Cluster, m.encode_to_vec()),
            ));
        }
        for m in &self.route_configurations {
            out.push((
                ResourceKind::RouteConfiguration,
                m.name.clone(),
                any(ResourceKind::RouteConfiguration, m.encode_to_vec()),
            ));
        }
        for m in &self.cluster_load_assignments {
            out.push((
                ResourceKind::ClusterLoadAssignment,
                m.cluster_name.clone(),
                any(ResourceKind::ClusterLoadAssignment, m.encode_to_vec()),
            ));
        }
        out
    }
}

/// Decodes one JSON value into a dynamic message of `kind`, reporting the
/// field path on error.
fn decode_dynamic(
    template: &str,
    kind: ResourceKind,
    index: usize,
    item: &serde_json::Value,
) -> Result<DynamicMessage, TemplateError> {
    let desc = descriptors::message(kind.message_name()).expect("resource types are in the pool");
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(item, &mut track);
    DynamicMessage::deserialize_with_options(desc, deserializer, &options).map_err(|err| {
        let mut inner = track.path().to_string();
        let message = err.to_string();
        // An unknown field is reported before its value is read, so the
        // tracked path ends at the parent: add the field name.
        if let Some(field) = message
            .strip_prefix("unrecognized field name '")
            .and_then(|rest| rest.strip_suffix('\''))
        {
            inner = if inner == "." || inner.is_empty() {
                field.to_owned()
            } else {
                format!("{inner}.{field}")
            };
        }
        let path = if inner == "." || inner.is_empty() {
            format!("{}[{index}]", kind.key())
        } else if inner.starts_with('[') {
            format!("{}[{index}]{inner}", kind.key())
        } else {
            format!("{}[{index}].{inner}", kind.key())
        };
        TemplateError::Field {
            template: template.to_owned(),
            resource: kind,
            path,
            message,
        }
    })
}

/// Encodes a typed message as proto3 JSON with proto field names.
pub(crate) fn message_to_json<M: prost::Message>(
    kind: ResourceKind,
    message: &M,
) -> serde_json::Value {
    let desc = descriptors::message(kind.message_name()).expect("resource types are in the pool");
    dynamic_to_json(desc, message)
}

/// Encodes any prost message (by its descriptor) as proto3 JSON with proto
/// field names.
pub(crate) fn dynamic_to_json<M: prost::Message>(
    desc: prost_reflect::MessageDescriptor,
    message: &M,
) -> serde_json::Value {
    let bytes = message.encode_to_vec();
    let dynamic = DynamicMessage::decode(desc, bytes.as_slice())
        .expect("an envoy-types message decodes with its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a dynamic message serializes to JSON")
}

/// Serializes a value as YAML (helper for callers printing resources).
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_yaml_ng::to_string(value).expect("JSON values serialize as YAML")
}
