//! `epic-core`: the EPIC-RS domain model and reconcile engine.
//!
//! - [`model`]: the custom resources (`Tenant`, `AddressPool`,
//!   `GatewayTemplate`, `Gateway`, `Route`, `BackendSet`) as Rust types;
//!   the CRDs are generated from them ([`model::crds`]).
//! - [`plan`]: the engine, a pure function from desired state and recorded
//!   state to a [`plan::Plan`] — addresses (`epic-ipam`), Envoy snapshots
//!   (`epic-templates` → `epic-xds`), tunnels and data-path endpoints,
//!   announcements, status.
//! - [`admission`]: which pod and node addresses a tenant's endpoints may
//!   use (never the platform's own).
//! - [`source`]: desired state from a YAML file of those resources
//!   (standalone mode); [`k8s`] (feature `k8s`, on by default): from the
//!   Kubernetes API, with the status writer and the proxy `StatefulSet`s.
//! - [`publish`]: a plan's snapshots to the xDS server, in both worlds.
//! - [`mirror`]: the user-cluster side — `Service`s of type
//!   `LoadBalancer`, Gateway API gateways and routes, `EndpointSlice`s —
//!   as the platform's resources, and the platform's status back.
//! - [`local`]: the standalone sinks — a local Envoy child process and the
//!   public addresses on a local interface.
//!
//! ```
//! use epic_core::plan::{plan, Recorded};
//! use epic_core::source::parse_resources;
//!
//! let inputs = parse_resources(r#"
//! apiVersion: epic-gateway.org/v1alpha1
//! kind: Tenant
//! metadata: {name: acme}
//! spec: {namespace: acme, id: 1}
//! ---
//! apiVersion: epic-gateway.org/v1alpha1
//! kind: AddressPool
//! metadata: {name: public}
//! spec: {addresses: [192.0.2.0/28]}
//! ---
//! apiVersion: epic-gateway.org/v1alpha1
//! kind: Gateway
//! metadata: {name: web, namespace: acme}
//! spec:
//!   template: tcp
//!   listeners: [{name: web, port: 80, protocol: TCP,
//!                backends: [{namespace: default, name: web, port: 80}]}]
//! "#).unwrap();
//! let plan = plan(&inputs, &Recorded::default());
//! let web = plan.gateway("acme", "web").unwrap();
//! assert!(web.programmed());
//! assert_eq!(web.status.addresses[0].to_string(), "192.0.2.0");
//! assert_eq!(web.status.proxies, ["acme/web/proxy-0"]);
//! ```
#![deny(missing_docs)]

pub mod admission;
pub mod conditions;
pub mod grace;
#[cfg(feature = "k8s")]
pub mod k8s;
#[cfg(feature = "local")]
pub mod local;
pub mod mirror;
pub mod model;
pub mod plan;
pub mod publish;
pub mod render;
pub mod source;
pub mod tunnel_ids;
