//! `epic-engine`: the EPIC-RS reconcile engine, pure.
//!
//! It reads the resource model (`epic-model`) and writes nothing: the
//! runtimes (`epic-standalone`, `epic-kube`) read a source, call the engine
//! and hand its output to their sinks.
//!
//! - [`plan`]: a pure function from desired state and recorded state to a
//!   [`plan::Plan`] — addresses (`epic-ipam`), Envoy snapshots
//!   (`epic-templates` → `epic-xds`), tunnels and data-path endpoints,
//!   announcements, status; one file per phase.
//! - [`render`]: the render phase and its cache of rendered snapshots.
//! - [`admission`]: which pod and node addresses a tenant's endpoints may
//!   use (never the platform's own).
//! - [`grace`]: released addresses held back before another tenant gets
//!   them. [`tunnel_ids`]: tunnel ids that cannot be guessed.
//! - [`publish`]: a plan's snapshots to the xDS cache, in both worlds.
//! - [`mirror`]: the user-cluster side — `Service`s of type
//!   `LoadBalancer`, Gateway API gateways and routes, `EndpointSlice`s —
//!   as the platform's resources, and the platform's status back.
//! - [`runtime`]: the [`runtime::Source`] and [`runtime::Sink`] traits the
//!   runtimes are built from.
//!
//! ```
//! use epic_engine::plan::{plan, Recorded};
//! use epic_model::source::parse_resources;
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
pub mod grace;
pub mod mirror;
pub mod plan;
pub mod publish;
pub mod render;
pub mod runtime;
pub mod tunnel_ids;
