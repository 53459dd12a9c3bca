//! Gateway API references, whatever the route kind: one view of a
//! `parentRef` and one of a `backendRef` (and of a `RequestMirror`
//! filter's backend), with the defaults the specification gives them.
//! The user-cluster mirror, the translation and the plan read routes only
//! through these, so the rules exist once.
//!
//! ```
//! use epic_templates::refs::RouteRefs;
//! use gateway_api::httproutes::HttpRouteSpec;
//!
//! let spec: HttpRouteSpec = serde_json::from_value(serde_json::json!({
//!     "parentRefs": [{"name": "web"}],
//!     "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]
//! }))?;
//! let parents = spec.parent_refs();
//! assert!(parents[0].is_gateway());
//! assert_eq!(parents[0].namespace_or("team-a"), "team-a");
//! let backends = spec.all_backend_refs();
//! assert_eq!(backends[0].service("team-a"), Some(("team-a".into(), "shop".into())));
//! # Ok::<(), serde_json::Error>(())
//! ```

use gateway_api::experimental::tcproutes::TcpRouteSpec;
use gateway_api::experimental::udproutes::UdpRouteSpec;
use gateway_api::httproutes::{HttpRouteRules, HttpRouteSpec};

/// The Gateway API group, the default of a `parentRef`'s group.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// A reference's own namespace, or the route's when unset or empty.
fn own_or<'a>(own: Option<&'a str>, route_namespace: &'a str) -> &'a str {
    own.filter(|n| !n.is_empty()).unwrap_or(route_namespace)
}

/// A `parentRef`, whatever the route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentRef<'r> {
    /// `group` (default: the Gateway API group).
    pub group: Option<&'r str>,
    /// `kind` (default: `Gateway`).
    pub kind: Option<&'r str>,
    /// `namespace` (default: the route's).
    pub namespace: Option<&'r str>,
    /// `name`.
    pub name: &'r str,
    /// `sectionName`: one listener, by name.
    pub section_name: Option<&'r str>,
    /// `port`: the listeners on this port.
    pub port: Option<i32>,
}

impl<'r> ParentRef<'r> {
    /// Whether it names a Gateway (group and kind left out mean one).
    pub fn is_gateway(&self) -> bool {
        self.group.unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
            && self.kind.unwrap_or("Gateway") == "Gateway"
    }

    /// The Gateway's namespace: its own, or the route's when unset or empty.
    pub fn namespace_or<'a>(&self, route_namespace: &'a str) -> &'a str
    where
        'r: 'a,
    {
        own_or(self.namespace, route_namespace)
    }
}

/// A `backendRef` (or a `RequestMirror` filter's backend), whatever the
/// route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendRef<'r> {
    /// `group` (default: the core group).
    pub group: Option<&'r str>,
    /// `kind` (default: `Service`).
    pub kind: Option<&'r str>,
    /// `namespace` (default: the route's).
    pub namespace: Option<&'r str>,
    /// `name`.
    pub name: &'r str,
    /// `port`.
    pub port: Option<i32>,
    /// `weight` (none for a mirror).
    pub weight: Option<i32>,
    /// It carries filters of its own (HTTP `backendRefs` only).
    pub has_filters: bool,
}

impl<'r> BackendRef<'r> {
    /// Whether it names a core `Service` (group and kind left out mean one).
    pub fn is_service(&self) -> bool {
        matches!(self.group, None | Some("") | Some("core"))
            && self.kind.unwrap_or("Service") == "Service"
    }

    /// The backend's namespace: its own, or the route's when unset or empty.
    pub fn namespace_or<'a>(&self, route_namespace: &'a str) -> &'a str
    where
        'r: 'a,
    {
        own_or(self.namespace, route_namespace)
    }

    /// The Service it names, as `(namespace, name)`; `None` for another kind.
    pub fn service(&self, route_namespace: &str) -> Option<(String, String)> {
        self.is_service().then(|| {
            (
                self.namespace_or(route_namespace).to_owned(),
                self.name.to_owned(),
            )
        })
    }
}

/// The references of a route spec, whatever its kind.
pub trait RouteRefs {
    /// Its `parentRefs`, in order.
    fn parent_refs(&self) -> Vec<ParentRef<'_>>;
    /// Each rule's `backendRefs`, in order.
    fn rule_backend_refs(&self) -> Vec<Vec<BackendRef<'_>>>;
    /// The backends of its `RequestMirror` filters (of rules and of
    /// backendRefs).
    fn mirror_refs(&self) -> Vec<BackendRef<'_>> {
        Vec::new()
    }
    /// Every backend it sends or mirrors to.
    fn all_backend_refs(&self) -> Vec<BackendRef<'_>> {
        let mut all: Vec<BackendRef<'_>> = self.rule_backend_refs().into_iter().flatten().collect();
        all.extend(self.mirror_refs());
        all
    }
}

/// A [`ParentRef`] of any generated parentRef type (they share field names).
macro_rules! parent_ref {
    ($p:expr) => {
        ParentRef {
            group: $p.group.as_deref(),
            kind: $p.kind.as_deref(),
            namespace: $p.namespace.as_deref(),
            name: &$p.name,
            section_name: $p.section_name.as_deref(),
            port: $p.port,
        }
    };
}

/// The [`ParentRef`]s of any route spec (an optional list of parentRefs).
macro_rules! parent_refs {
    ($spec:expr) => {
        $spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| parent_ref!(p))
            .collect()
    };
}

/// A [`BackendRef`] of any generated backendRef type, with its weight.
macro_rules! backend_ref {
    ($b:expr, $weight:expr, $has_filters:expr) => {
        BackendRef {
            group: $b.group.as_deref(),
            kind: $b.kind.as_deref(),
            namespace: $b.namespace.as_deref(),
            name: &$b.name,
            port: $b.port,
            weight: $weight,
            has_filters: $has_filters,
        }
    };
}

/// The `backendRefs` of one HTTP rule.
pub fn http_rule_backend_refs(rule: &HttpRouteRules) -> Vec<BackendRef<'_>> {
    rule.backend_refs
        .iter()
        .flatten()
        .map(|b| {
            backend_ref!(
                b,
                b.weight,
                b.filters.as_ref().is_some_and(|f| !f.is_empty())
            )
        })
        .collect()
}

impl RouteRefs for HttpRouteSpec {
    fn parent_refs(&self) -> Vec<ParentRef<'_>> {
        parent_refs!(self)
    }

    fn rule_backend_refs(&self) -> Vec<Vec<BackendRef<'_>>> {
        self.rules
            .iter()
            .flatten()
            .map(http_rule_backend_refs)
            .collect()
    }

    fn mirror_refs(&self) -> Vec<BackendRef<'_>> {
        let mut out = Vec::new();
        for rule in self.rules.iter().flatten() {
            for f in rule.filters.iter().flatten() {
                if let Some(m) = &f.request_mirror {
                    out.push(backend_ref!(m.backend_ref, None, false));
                }
            }
            for b in rule.backend_refs.iter().flatten() {
                for f in b.filters.iter().flatten() {
                    if let Some(m) = &f.request_mirror {
                        out.push(backend_ref!(m.backend_ref, None, false));
                    }
                }
            }
        }
        out
    }
}

/// The two L4 route specs have the same shape over distinct generated types.
macro_rules! l4_route_refs {
    ($spec:ty) => {
        impl RouteRefs for $spec {
            fn parent_refs(&self) -> Vec<ParentRef<'_>> {
                parent_refs!(self)
            }

            fn rule_backend_refs(&self) -> Vec<Vec<BackendRef<'_>>> {
                self.rules
                    .iter()
                    .map(|r| {
                        r.backend_refs
                            .iter()
                            .map(|b| backend_ref!(b, b.weight, false))
                            .collect()
                    })
                    .collect()
            }
        }
    };
}

l4_route_refs!(TcpRouteSpec);
l4_route_refs!(UdpRouteSpec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_other_kinds() {
        let spec: HttpRouteSpec = serde_json::from_value(serde_json::json!({
            "parentRefs": [
                {"name": "web", "namespace": "", "sectionName": "http", "port": 80},
                {"name": "other", "group": "example.com", "kind": "Proxy"}
            ],
            "rules": [{
                "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "copy", "port": 9}}}],
                "backendRefs": [
                    {"name": "shop", "namespace": "store", "port": 80, "weight": 3,
                     "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 9}}}]},
                    {"name": "bucket", "group": "storage.example.com", "kind": "Bucket"}
                ]
            }]
        }))
        .unwrap();
        let parents = spec.parent_refs();
        assert!(parents[0].is_gateway() && !parents[1].is_gateway());
        assert_eq!(
            parents[0].namespace_or("team"),
            "team",
            "empty means the route's"
        );
        assert_eq!(
            (parents[0].section_name, parents[0].port),
            (Some("http"), Some(80))
        );
        let rules = spec.rule_backend_refs();
        assert_eq!(rules[0][0].weight, Some(3));
        assert!(rules[0][0].has_filters && !rules[0][1].has_filters);
        let services: Vec<_> = spec
            .all_backend_refs()
            .iter()
            .filter_map(|b| b.service("team"))
            .collect();
        assert_eq!(
            services,
            [
                ("store".to_string(), "shop".to_string()),
                ("team".to_string(), "copy".to_string()),
                ("team".to_string(), "audit".to_string())
            ]
        );
        let tcp: TcpRouteSpec = serde_json::from_value(serde_json::json!({
            "parentRefs": [{"name": "db"}],
            "rules": [{"backendRefs": [{"name": "pg", "port": 5432}]}]
        }))
        .unwrap();
        assert_eq!(tcp.parent_refs()[0].name, "db");
        assert_eq!(tcp.all_backend_refs()[0].port, Some(5432));
    }
}
