//! Errors that say where: template and position, or resource and field path.

use std::fmt;

/// The kind of Envoy resource a rendered entry is decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `envoy.config.listener.v3.Listener`, under the `listeners` key.
    Listener,
    /// `envoy.config.cluster.v3.Cluster`, under the `clusters` key.
    Cluster,
    /// `envoy.config.route.v3.RouteConfiguration`, under `route_configurations`.
    RouteConfiguration,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment`, under `cluster_load_assignments`.
    ClusterLoadAssignment,
}

impl ResourceKind {
    /// Every kind, in the order a template lists them.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Listener,
        ResourceKind::Cluster,
        ResourceKind::RouteConfiguration,
        ResourceKind::ClusterLoadAssignment,
    ];

    /// The top-level key of the rendered document that holds this kind.
    pub fn key(self) -> &'static str {
        match self {
            ResourceKind::Listener => "listeners",
            ResourceKind::Cluster => "clusters",
            ResourceKind::RouteConfiguration => "route_configurations",
            ResourceKind::ClusterLoadAssignment => "cluster_load_assignments",
        }
    }

    /// The fully qualified protobuf message name.
    pub fn message_name(self) -> &'static str {
        match self {
            ResourceKind::Listener => "envoy.config.listener.v3.Listener",
            ResourceKind::Cluster => "envoy.config.cluster.v3.Cluster",
            ResourceKind::RouteConfiguration => "envoy.config.route.v3.RouteConfiguration",
            ResourceKind::ClusterLoadAssignment => "envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The xDS type URL (`type.googleapis.com/...`).
    pub fn type_url(self) -> String {
        format!("type.googleapis.com/{}", self.message_name())
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message_name())
    }
}

/// Why a template could not be compiled or rendered into Envoy resources.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// No template of that name is known (neither built-in nor added).
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    /// The name belongs to a built-in template or partial (`tcp`, `udp`,
    /// `http`, `https`, anything under `epic/`): a custom template may not
    /// replace it for everyone who includes it.
    #[error(
        "template name {0:?} is reserved for the built-in templates (no custom template may be named tcp, udp, http, https or epic/...)"
    )]
    ReservedName(String),
    /// The template source does not parse (minijinja syntax).
    #[error("template {template}: syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// Template name.
        template: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser reported.
        message: String,
    },
    /// Rendering failed: an undefined variable (strict mode), a bad filter
    /// argument, or `fail()` called by the template.
    #[error("template {template}: render error at line {line}: {message}")]
    Render {
        /// Template name (the included/imported one if the error is there).
        template: String,
        /// 1-based line, 0 if unknown.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// The rendered text is not valid YAML.
    #[error(
        "template {template}: rendered output is not valid YAML at line {line}, column {column}: {message} (rendered line: {snippet:?})"
    )]
    Yaml {
        /// Template name.
        template: String,
        /// 1-based line of the rendered output.
        line: usize,
        /// 1-based column of the rendered output.
        column: usize,
        /// What the YAML parser reported.
        message: String,
        /// The offending rendered line.
        snippet: String,
    },
    /// The rendered document does not have the expected shape (a mapping of
    /// the four resource lists).
    #[error("template {template}: {path}: {message}")]
    Shape {
        /// Template name.
        template: String,
        /// Where in the document (`listeners`, `<root>`).
        path: String,
        /// What was expected.
        message: String,
    },
    /// A resource does not map onto its Envoy message: unknown field, wrong
    /// type, out-of-range value, unknown `@type`.
    #[error("template {template}: {resource} at {path}: {message}")]
    Field {
        /// Template name.
        template: String,
        /// The resource kind being decoded.
        resource: ResourceKind,
        /// Field path from the document root, e.g. `listeners[0].filter_chains[0].filters[0].typed_config.foo`.
        path: String,
        /// What the protobuf JSON mapping reported.
        message: String,
    },
    /// The rendered DNS name is not a valid DNS name.
    #[error("template {template}: DNS name {name:?} is invalid: {reason}")]
    InvalidDnsName {
        /// Template name.
        template: String,
        /// The rendered name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
}
