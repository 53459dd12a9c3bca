//! The built-in templates, compiled into every [`Renderer`](crate::Renderer).

/// Sources of the built-in templates and partials, by name.
pub(crate) const SOURCES: [(&str, &str); 6] = [
    (
        "epic/upstreams",
        include_str!("../templates/upstreams.yaml.j2"),
    ),
    (
        "epic/http-gateway",
        include_str!("../templates/http-gateway.yaml.j2"),
    ),
    ("tcp", include_str!("../templates/tcp.yaml.j2")),
    ("udp", include_str!("../templates/udp.yaml.j2")),
    ("http", include_str!("../templates/http.yaml.j2")),
    ("https", include_str!("../templates/https.yaml.j2")),
];

/// DNS name templates of the built-ins (none: the DNS name comes from the
/// context unless a custom template defines one).
pub(crate) const DNS_SOURCES: [(&str, &str); 0] = [];

/// Names of the built-in templates.
pub const BUILTIN_TEMPLATES: [&str; 4] = ["tcp", "udp", "http", "https"];

/// The source of a built-in template or partial (`tcp`, `udp`, `http`,
/// `https`, `epic/upstreams`, `epic/http-gateway`), to copy as the start of
/// a custom template.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, source)| *source)
}
