//! The GatewayClass status sink of the cluster controller: each
//! `GatewayClass` whose `controllerName` is this controller's gets
//! `Accepted` and `SupportedVersion` ([`gateway_class_conditions`]), from
//! the bundle version of the installed Gateway API CRDs (the
//! [`BUNDLE_VERSION_ANNOTATION`] of the `GatewayClass` CRD, read once).
//! A status is written only where it differs; a condition's
//! `lastTransitionTime` moves only when its status does.

use std::convert::Infallible;

use gateway_api::gatewayclasses::GatewayClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::Api;
use serde_json::json;

use crate::cluster::patch_user_status;
use crate::round::ClusterRound;
use crate::{K8sError, api_error};
use epic_engine::mirror::{gateway_class_conditions, keep_transition_times};
use epic_engine::runtime::{Sink, SinkFuture};

/// The annotation of the Gateway API CRDs naming their release.
pub const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";

/// The CRD whose annotation is read.
const CLASS_CRD: &str = "gatewayclasses.gateway.networking.k8s.io";

/// The sink: the controller name it serves, the bundle version once read.
pub struct GatewayClassStatusSink {
    user: Client,
    controller_name: String,
    /// `Some(version)` once read (`Some(None)`: not annotated).
    bundle_version: Option<Option<String>>,
}

impl std::fmt::Debug for GatewayClassStatusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClassStatusSink")
            .field("controller_name", &self.controller_name)
            .field("bundle_version", &self.bundle_version)
            .finish_non_exhaustive()
    }
}

impl GatewayClassStatusSink {
    /// A sink writing the classes of `controller_name` through `user`.
    pub fn new(user: Client, controller_name: impl Into<String>) -> Self {
        GatewayClassStatusSink {
            user,
            controller_name: controller_name.into(),
            bundle_version: None,
        }
    }

    /// The installed Gateway API bundle version (read once).
    async fn bundle_version(&mut self) -> Result<Option<String>, K8sError> {
        if let Some(version) = &self.bundle_version {
            return Ok(version.clone());
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.user.clone());
        let crd = crds.get(CLASS_CRD).await.map_err(api_error(format!(
            "get CustomResourceDefinition {CLASS_CRD}"
        )))?;
        let version = crd
            .metadata
            .annotations
            .and_then(|mut a| a.remove(BUNDLE_VERSION_ANNOTATION));
        self.bundle_version = Some(version.clone());
        Ok(version)
    }

    /// Writes the status of every class of this controller in `classes`
    /// where it differs; returns how many were written.
    pub async fn write(&mut self, classes: &[GatewayClass]) -> Result<usize, Vec<K8sError>> {
        let ours: Vec<&GatewayClass> = classes
            .iter()
            .filter(|c| c.spec.controller_name == self.controller_name)
            .collect();
        if ours.is_empty() {
            return Ok(0);
        }
        let version = self.bundle_version().await.map_err(|e| vec![e])?;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let (mut written, mut failed) = (0, Vec::new());
        for class in ours {
            match write_class(&self.user, class, version.as_deref(), &now).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            Ok(written)
        } else {
            Err(failed)
        }
    }
}

/// Writes `class`'s conditions if they differ from its status.
async fn write_class(
    user: &Client,
    class: &GatewayClass,
    version: Option<&str>,
    now: &Time,
) -> Result<bool, K8sError> {
    let previous = class
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut next = gateway_class_conditions(class.metadata.generation, version, now);
    keep_transition_times(&previous, &mut next);
    let same = next.iter().all(|c| previous.contains(c));
    if same {
        return Ok(false);
    }
    let api: Api<GatewayClass> = Api::all(user.clone());
    let status = json!({"conditions": next});
    patch_user_status(api, "GatewayClass", &class.metadata, status).await
}

impl Sink<ClusterRound, Infallible> for GatewayClassStatusSink {
    fn name(&self) -> &'static str {
        "GatewayClass status"
    }

    fn apply<'a>(&'a mut self, round: &'a mut ClusterRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            match self.write(&round.cluster.gateway_classes).await {
                Ok(n) => round.done.written_back += n,
                Err(failed) => round
                    .done
                    .errors
                    .extend(failed.iter().map(ToString::to_string)),
            }
            Ok(())
        })
    }
}
