//! The finalizer sinks of the cluster controller: every served `Service`
//! carries [`LOAD_BALANCER_FINALIZER`], so deleting it waits until its
//! platform gateway is gone (its address released), as the cloud
//! providers' service controllers do.
//!
//! [`AddFinalizers`] runs first in a round; [`ReleaseFinalizers`] runs
//! after the mirror sink, once no platform gateway mirrors the Service.

use std::convert::Infallible;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::round::ClusterRound;
use crate::{K8sError, api_error, is_not_found};
use epic_engine::mirror::{MirrorConfig, SOURCE_ANNOTATION};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::Gateway;

/// The finalizer on every `Service` the controller serves (the name the
/// Kubernetes service controller uses for the same purpose).
pub const LOAD_BALANCER_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Whether `svc` is a `Service` this controller serves.
pub(crate) fn served(svc: &Service, config: &MirrorConfig) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer")
            && s.load_balancer_class.as_deref() == Some(config.load_balancer_class.as_str())
    })
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == LOAD_BALANCER_FINALIZER))
}

fn key(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Sets a Service's finalizers, conditional on the resourceVersion read.
async fn patch_finalizers(
    user: &Client,
    svc: &Service,
    finalizers: Vec<String>,
) -> Result<(), K8sError> {
    let (ns, name) = key(svc);
    let api: Api<Service> = Api::namespaced(user.clone(), &ns);
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": svc.metadata.resource_version,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_error(format!(
            "patch finalizers of Service {ns}/{name}"
        ))(e)),
    }
}

/// Adds the finalizer to every served Service that lacks it.
pub struct AddFinalizers {
    user: Client,
    config: MirrorConfig,
}

impl AddFinalizers {
    /// A sink patching Services through `user`, serving what `config` says.
    pub fn new(user: Client, config: MirrorConfig) -> Self {
        AddFinalizers { user, config }
    }

    async fn add(&self, round: &mut ClusterRound) {
        let missing = round
            .cluster
            .services
            .iter()
            .filter(|s| served(s, &self.config) && !has_finalizer(s));
        for svc in missing {
            let (ns, name) = key(svc);
            let mut finalizers = svc.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(LOAD_BALANCER_FINALIZER.to_owned());
            match patch_finalizers(&self.user, svc, finalizers).await {
                Ok(()) => round.done.finalized.push(format!("{ns}/{name}")),
                Err(e) => round.done.errors.push(e.to_string()),
            }
        }
    }
}

impl Sink<ClusterRound, Infallible> for AddFinalizers {
    fn name(&self) -> &'static str {
        "add finalizers"
    }

    fn apply<'a>(&'a mut self, round: &'a mut ClusterRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            self.add(round).await;
            Ok(())
        })
    }
}

/// Removes the finalizer from Services that are being deleted or no
/// longer served, once no platform gateway mirrors them.
pub struct ReleaseFinalizers {
    user: Client,
    config: MirrorConfig,
}

/// Whether platform gateway `g` mirrors the Service named by `source`
/// (`Service/<namespace>/<name>`).
fn mirrors(g: &Gateway, source: &str) -> bool {
    g.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_ANNOTATION))
        .is_some_and(|s| s == source)
}

impl ReleaseFinalizers {
    /// A sink patching Services through `user`, serving what `config` says.
    pub fn new(user: Client, config: MirrorConfig) -> Self {
        ReleaseFinalizers { user, config }
    }

    async fn release(&self, round: &mut ClusterRound) {
        let unserved = round
            .cluster
            .services
            .iter()
            .filter(|s| !served(s, &self.config));
        let candidates = round
            .deleting
            .iter()
            .chain(unserved)
            .filter(|s| has_finalizer(s));
        for svc in candidates {
            let (ns, name) = key(svc);
            let source = format!("Service/{ns}/{name}");
            let still_there = round
                .mirrored
                .gateways
                .state()
                .iter()
                .any(|g| mirrors(g, &source))
                || round.wanted.gateways.iter().any(|g| mirrors(g, &source));
            if still_there {
                continue;
            }
            let finalizers: Vec<String> = svc
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != LOAD_BALANCER_FINALIZER)
                .cloned()
                .collect();
            match patch_finalizers(&self.user, svc, finalizers).await {
                Ok(()) => round.done.released.push(format!("{ns}/{name}")),
                Err(e) => round.done.errors.push(e.to_string()),
            }
        }
    }
}

impl Sink<ClusterRound, Infallible> for ReleaseFinalizers {
    fn name(&self) -> &'static str {
        "release finalizers"
    }

    fn apply<'a>(&'a mut self, round: &'a mut ClusterRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            self.release(round).await;
            Ok(())
        })
    }
}
