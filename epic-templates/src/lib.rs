//! Gateway templates → validated Envoy resources, and Gateway API route
//! translation.
//!
//! A gateway template holds Envoy resources in their native YAML form (any
//! field of the v3 API, `typed_config` as an `Any` with `@type`) with
//! [minijinja] expressions. [`Renderer::render`] renders it for one
//! gateway's [`TemplateContext`], parses the YAML, and decodes each resource
//! with the canonical proto3 JSON mapping into the `envoy-types` messages
//! (`Listener`, `Cluster`, `RouteConfiguration`, `ClusterLoadAssignment`).
//! [`translate::translate`] builds the context from a gateway's listeners,
//! backends and `HTTPRoute`/`TCPRoute`/`UDPRoute`s; [`validate`] checks the
//! result for internal consistency and, optionally, with real Envoy.
//!
//! ```
//! use epic_templates::translate::{translate, GatewayInputs, Route};
//! use epic_templates::{validate, Renderer};
//!
//! let inputs: GatewayInputs = serde_yaml_ng::from_str(r#"
//! gateway: {name: web, namespace: default, tenant: t1, uid: "1"}
//! addresses: [192.0.2.10, "2001:db8::10"]
//! listeners: [{name: http, port: 80, protocol: HTTP}]
//! backends:
//! - {namespace: default, name: web, port: 80,
//!    endpoints: [{address: 198.51.100.7, port: 8080, ready: true}]}
//! "#).unwrap();
//! let routes = Route::from_yaml(r#"
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: {name: web, namespace: default}
//! spec:
//!   parentRefs: [{name: web}]
//!   rules: [{backendRefs: [{name: web, port: 80}]}]
//! "#).unwrap();
//! let translation = translate(&inputs, &routes);
//! assert!(translation.reports[0].accepted());
//! let rendered = Renderer::new().render("http", &translation.context).unwrap();
//! validate::check_consistency(&rendered.resources).unwrap();
//! assert_eq!(rendered.resources.listeners[0].name, "http");
//! assert_eq!(rendered.resources.cluster_load_assignments[0].cluster_name, "default/web:80");
//! ```
//!
//! # The protobuf schema: `envoy-types`' own descriptor set
//!
//! `envoy-types` has no serde mapping, but its package ships the
//! `FileDescriptorSet` its Rust types were generated from (every Envoy v3
//! message including all extensions and the well-known types). This crate
//! embeds a committed copy of that file, `envoy-descriptors.binpb`, and a
//! [`prost_reflect::DescriptorPool`] decodes it once ([`descriptors`]).
//!
//! Why a committed copy: it is the exact schema the Rust types were made
//! from, it needs no build script (so the crate builds offline, vendored,
//! with any target directory and on a machine whose cargo registry holds
//! only what this package needs) and no proto compilation. It cannot drift
//! silently: the workspace pins `envoy-types` to one exact version, `cargo
//! xtask descriptors` rewrites the copy from the resolved package, and
//! `cargo xtask descriptors --check` (run by `cargo xtask test`) fails when
//! the copy differs from the package of any lock file in the repository.
//! Compiling the `.proto` sources with `protox` was rejected: the sources
//! live inside the `envoy-types` package too, so it would trade one file
//! for 500 and still depend on that package's layout. Dynamic messages are
//! converted to the typed `envoy-types` messages by re-encoding
//! (`transcode_to`).
//!
//! That reference path (YAML → JSON value → `DynamicMessage` → bytes →
//! typed message) is thorough but slow for large gateways, so
//! [`EnvoyResources::from_text`] first tries a single-pass fast path: a
//! parser for the YAML subset templates produce and an encoder that writes
//! the canonical protobuf encoding straight from the descriptors. It only
//! accelerates: on anything outside its subset, and on every error, the
//! reference path decides, so results and errors (YAML line and column,
//! field paths) are identical. The `tests/fast_path.rs` differential tests
//! and the `templates_render` fuzz target check that; rendering the `http`
//! template for 1,000 routes and 100 clusters × 10 endpoints takes ~16 ms
//! (`benches/render.rs`), down from ~85 ms on the reference path alone.
//!
//! # Writing templates
//!
//! - The template renders to one YAML (or JSON) mapping with up to four
//!   lists: `listeners`, `clusters`, `route_configurations`,
//!   `cluster_load_assignments`. Any other key is an error.
//! - Undefined variables are errors (strict mode); `fail("message")` aborts
//!   with a message; `trim_blocks` and `lstrip_blocks` are on, so block tags
//!   may sit on their own lines.
//! - **Every interpolated value is escaped for YAML**, never for HTML:
//!   strings become double-quoted scalars (with `"`, `\`, control characters
//!   and Unicode line separators escaped), lists and maps become flow
//!   collections, numbers and booleans stay as they are, none is `null`. A
//!   hostname or header value holding quotes, newlines, `#`, `]}` or `{{`
//!   stays one value and cannot add configuration. Consequently a value
//!   cannot be glued to literal text: write `{{ l.name ~ "-tls" }}`, not
//!   `{{ l.name }}-tls`; and `{{ port|string }}` where Envoy wants a string.
//!   `|safe` bypasses escaping (macro output is safe too).
//! - Proto3 JSON rules apply: enums by name (`type: EDS`), durations as
//!   `"5s"`, 64-bit integers as numbers or strings, field names in
//!   `snake_case` or `lowerCamelCase`.
//! - The built-in partials can be reused: `{% include "epic/upstreams" %}`
//!   renders one EDS (ADS) cluster and one assignment per context cluster.
//! - A template named `namespace/name` (a tenant's) may include, import or
//!   extend only the built-ins and its own namespace's templates (`part`
//!   means `namespace/part`); another namespace's name leads nowhere. The
//!   built-ins' names (`tcp`, `udp`, `http`, `https`, `epic/...`) are
//!   reserved: no custom template replaces them.
//!
//! A custom template, an L4 proxy with static clusters and a DNS name:
//!
//! ```
//! use epic_templates::{GatewayTemplate, Renderer};
//! # use epic_templates::translate::{translate, GatewayInputs};
//! # let inputs: GatewayInputs = serde_yaml_ng::from_str(r#"
//! # gateway: {name: db, namespace: default, tenant: t1, uid: "1"}
//! # addresses: [192.0.2.20]
//! # listeners: [{name: pg, port: 5432, protocol: TCP, backends: [{namespace: default, name: db, port: 5432}]}]
//! # backends: [{namespace: default, name: db, port: 5432, endpoints: [{address: 198.51.100.9, port: 5432, ready: true}]}]
//! # "#).unwrap();
//! # let context = translate(&inputs, &[]).context;
//! let template = GatewayTemplate {
//!     name: "static-l4".into(),
//!     dns_name: Some("{{ gateway.name }}.{{ gateway.tenant }}.gw.example.com".into()),
//!     envoy: r#"
//! listeners:
//! {% for l in listeners %}
//! - name: {{ l.name }}
//!   address: {socket_address: {address: {{ addresses.all[0] }}, port_value: {{ l.port }}}}
//!   filter_chains:
//!   - filters:
//!     - name: envoy.filters.network.tcp_proxy
//!       typed_config:
//!         "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
//!         stat_prefix: {{ dns_name ~ "/" ~ l.name }}
//!         cluster: {{ l.backends[0].cluster }}
//! {% endfor %}
//! clusters:
//! {% for c in clusters %}
//! - name: {{ c.name }}
//!   type: STATIC
//!   connect_timeout: 2s
//!   load_assignment:
//!     cluster_name: {{ c.name }}
//!     endpoints:
//!     - lb_endpoints:
//! {% for e in c.endpoints if e.ready %}
//!       - endpoint: {address: {socket_address: {address: {{ e.address }}, port_value: {{ e.port }}}}}
//! {% endfor %}
//! {% endfor %}
//! "#.into(),
//! };
//! let mut renderer = Renderer::new();
//! renderer.add_template(&template).unwrap();
//! let rendered = renderer.render("static-l4", &context).unwrap();
//! assert_eq!(rendered.dns_name, "db.t1.gw.example.com");
//! assert_eq!(rendered.resources.clusters[0].name, "default/db:5432");
//! ```
//!
//! # Template variables (context version 1)
//!
//! | variable | type | meaning |
//! | --- | --- | --- |
//! | `version` | int | [`CONTEXT_VERSION`] |
//! | `gateway.name`, `.namespace`, `.tenant`, `.uid` | string | the gateway's identity |
//! | `addresses.ipv4`, `.ipv6` | list of string | public addresses by family |
//! | `addresses.all` | list of string | every public address, IPv4 first |
//! | `dns_name` | string | the rendered DNS name (from the DNS template, else the input) |
//! | `listeners[].name` | string | unique listener name (also its route configuration name) |
//! | `listeners[].port` | int | public port |
//! | `listeners[].protocol` | string | `TCP`, `UDP`, `HTTP`, `HTTPS` |
//! | `listeners[].hostname` | string or none | listener hostname (may be `*.` wildcard) |
//! | `listeners[].tls.secret_name` | string | SDS secret of the certificate (HTTPS; `tls` is none otherwise) |
//! | `listeners[].backends[]` | `{cluster, weight}` | TCP/UDP: weighted clusters (empty: none) |
//! | `listeners[].virtual_hosts[]` | `{name, domains, routes}` | HTTP(S): one per domain |
//! | `…routes[].name`, `.source`, `.rule` | string, string, int | `ns/route/ruleN/matchM`, `ns/route`, rule index |
//! | `…routes[].path` | `{kind, value}` | `kind`: `exact`, `prefix` (path-segment prefix, no trailing `/`), `regex` |
//! | `…routes[].method` | string or none | HTTP method |
//! | `…routes[].headers[]`, `.query_params[]` | `{name, kind, value}` | `kind`: `exact`, `regex`; header names lowercase |
//! | `…routes[].action` | map, by `kind` | `forward` `{backends: [{cluster, weight}]}`; `redirect` `{scheme, hostname, port, path, response_code}`; `direct_response` `{status}` |
//! | `…routes[].request_headers`, `.response_headers` | `{set, add, remove}` | `set`/`add`: `[{name, value}]`, `remove`: names |
//! | `…routes[].rewrite` | `{hostname, path}` or none | `path`: `{kind: prefix, value}` or `{kind: regex, pattern, substitution}` |
//! | `…routes[].mirrors[]` | `{cluster, per_million}` | request mirrors |
//! | `…routes[].timeouts` | `{request, backend_request}` | proto durations or none |
//! | `clusters[].name` | string | `namespace/service:port` |
//! | `clusters[].service` | `{namespace, name, port}` | the backend service port |
//! | `clusters[].endpoints[]` | `{address, port, ready, node}` | pod address and port; `node` may be none |
//!
//! A weighted backend named [`INVALID_BACKEND_CLUSTER`] stands for backend
//! references that did not resolve: it is never defined, and the built-in
//! templates set `cluster_not_found_response_code: INTERNAL_SERVER_ERROR`
//! so that share of requests gets a 500, as the Gateway API requires.
//!
//! # Built-in templates
//!
//! [`BUILTIN_TEMPLATES`]: `tcp` (TCP proxy per listener, weighted),
//! `udp` (UDP proxy per listener, one backend), `http` (one route
//! configuration per listener over RDS, one virtual host per domain),
//! `https` (`http` plus TLS termination with the certificate from the
//! listener's secret over SDS). Listeners bind the first public address and
//! list the others as `additional_addresses` (dual-stack); clusters are EDS
//! over ADS with one endpoint per pod address and port. Their sources are
//! available with [`builtin_source`].
#![deny(missing_docs)]

mod builtin;
pub mod context;
pub mod descriptors;
mod error;
mod fast;
pub mod policy;
pub mod refs;
mod render;
mod resources;
pub mod translate;
pub mod validate;

pub use builtin::{BUILTIN_TEMPLATES, builtin_source};
pub use context::*;
pub use error::{ResourceKind, TemplateError};
pub use render::{GatewayTemplate, RENDER_FUEL, Rendered, Renderer};
pub use resources::{EnvoyResources, to_yaml};
