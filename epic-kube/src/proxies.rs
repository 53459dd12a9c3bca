//! The proxy sink: one Envoy `StatefulSet` (and its bootstrap `ConfigMap`)
//! per programmed gateway, owned by the gateway (`ownerReferences`, so the
//! garbage collector removes them with it even while no controller runs),
//! applied only when what the controller wants differs from what is there
//! (a hash of the wanted object in [`APPLIED_HASH_ANNOTATION`]).

use std::collections::{BTreeMap, BTreeSet};

use epic_xds::identity::{ProxyTlsFiles, XdsAuthority};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Secret,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use sha2::{Digest, Sha256};

use std::convert::Infallible;
use std::sync::Arc;

use crate::index::ByKey;
use crate::round::PlatformRound;
use crate::xds_identity::{IDENTITY_MOUNT, proxy_identities, proxy_secret_name};
use crate::{
    FIELD_MANAGER, GATEWAY_LABEL, GATEWAY_NODE_LABEL, K8sError, MANAGED_BY, SinkReport, api_error,
    is_not_found,
};
use epic_engine::plan::{DesiredInputs, GatewayPlan, Plan};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::Gateway;

/// Annotation holding the SHA-256 of the object as the controller last
/// applied it: equal means nothing to apply.
pub const APPLIED_HASH_ANNOTATION: &str = "epic-gateway.org/applied-hash";

/// The proxy objects that exist (this controller's, by its managed-by label).
#[derive(Debug, Clone, Default)]
pub struct ProxyObjects {
    /// The proxy `StatefulSet`s.
    pub sets: Vec<StatefulSet>,
    /// The bootstrap `ConfigMap`s.
    pub maps: Vec<ConfigMap>,
}

impl ProxyObjects {
    /// Read from the reflectors' stores.
    pub fn from_stores(sets: &Store<StatefulSet>, maps: &Store<ConfigMap>) -> Self {
        ProxyObjects {
            sets: crate::reflect::sorted(sets),
            maps: crate::reflect::sorted(maps),
        }
    }

    /// Read with one LIST per kind (for one-shot tools and tests).
    pub async fn list(client: &Client) -> Result<Self, K8sError> {
        let selector =
            ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
        let sets = Api::<StatefulSet>::all(client.clone())
            .list(&selector)
            .await
            .map_err(api_error("list StatefulSet"))?
            .items;
        let maps = Api::<ConfigMap>::all(client.clone())
            .list(&selector)
            .await
            .map_err(api_error("list ConfigMap"))?
            .items;
        Ok(ProxyObjects { sets, maps })
    }
}

/// The [`APPLIED_HASH_ANNOTATION`] of `object`, if any.
fn applied_hash<K: kube::Resource>(object: Option<&K>) -> Option<String> {
    object?
        .meta()
        .annotations
        .as_ref()?
        .get(APPLIED_HASH_ANNOTATION)
        .cloned()
}

/// Sets [`APPLIED_HASH_ANNOTATION`] on `object` to the hash of the object
/// without it; returns the hash.
fn annotate_hash<K: kube::Resource + serde::Serialize>(object: &mut K) -> String {
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(APPLIED_HASH_ANNOTATION);
    }
    let bytes = serde_json::to_vec(&*object).unwrap_or_default();
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
    hash
}

/// The owner reference that ties a proxy object to its gateway.
fn owned_by(gateway: &Gateway) -> Option<Vec<OwnerReference>> {
    Some(vec![OwnerReference {
        api_version: "epic-gateway.org/v1alpha1".into(),
        kind: "Gateway".into(),
        name: gateway.metadata.name.clone()?,
        uid: gateway.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

/// How proxies are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Envoy image, unless the template names one.
    pub image: String,
    /// The ADS server as proxies reach it (`host:port`).
    pub xds: String,
    /// Further Envoy images a `GatewayTemplate` may name (`image` always
    /// may); a template naming any other is not accepted.
    pub other_images: Vec<String>,
}

impl ProxySettings {
    /// Every image a template may name: `image` and `other_images`.
    pub fn allowed_images(&self) -> Vec<String> {
        let mut all = vec![self.image.clone()];
        all.extend(self.other_images.iter().cloned());
        all
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            image: "envoyproxy/envoy:v1.40.0".into(),
            xds: "epic-gateway-controller.epic-system.svc:18000".into(),
            other_images: Vec::new(),
        }
    }
}

/// The name of a gateway's proxy `StatefulSet` and `ConfigMap`.
pub fn proxy_name(gateway: &str) -> String {
    format!("{gateway}-proxy")
}

/// The Envoy bootstrap proxy `identity` (its index) of a gateway of tenant
/// scope `scope` starts from: ADS over gRPC to `settings.xds` — over mutual
/// TLS with the proxy's own identity from [`IDENTITY_MOUNT`] if `identity`
/// is given ([`crate::xds_identity`]) — and upstream sockets marked with
/// `scope` ([`epic_engine::plan::upstream_mark`]); the node id comes from the
/// command line.
pub fn proxy_bootstrap(
    settings: &ProxySettings,
    scope: u32,
    identity: Option<usize>,
) -> serde_json::Value {
    let (host, port) = settings
        .xds
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse::<u16>().unwrap_or(18000)))
        .unwrap_or_else(|| (settings.xds.clone(), 18000));
    let mut bootstrap = json!({
        "cluster_manager": epic_engine::plan::upstream_mark(scope),
        // Port 0: proxies share the host network of a gateway node.
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "epic-xds"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "epic-xds",
            "type": "STRICT_DNS",
            "connect_timeout": "2s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "epic-xds", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}
            }]}]}
        }]}
    });
    if let Some(index) = identity {
        let mount = std::path::Path::new(IDENTITY_MOUNT);
        let files = ProxyTlsFiles {
            ca: mount.join("ca.crt"),
            cert: mount.join(format!("proxy-{index}.crt")),
            key: mount.join(format!("proxy-{index}.key")),
        };
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] =
            files.envoy_transport_socket();
    }
    bootstrap
}

/// Where a proxy pod mounts its gateway's bootstrap `ConfigMap`
/// (`bootstrap-<i>.json` for proxy `i`).
pub const BOOTSTRAP_MOUNT: &str = "/etc/epic/bootstrap";

/// The proxies of a programmed gateway: a `StatefulSet` of Envoy on the
/// gateway nodes (host network, so they bind the public addresses the
/// gateway agent puts on the node), one replica per planned proxy. Pod `i`
/// connects as node `<tenant>/<gateway>/proxy-<i>`, as the engine plans.
pub fn proxy_statefulset(
    tenant: &str,
    namespace: &str,
    gateway: &str,
    replicas: i32,
    image: &str,
    identity: bool,
) -> StatefulSet {
    let name = proxy_name(gateway);
    let labels = proxy_labels(gateway);
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    node_selector: Some(
                        [(GATEWAY_NODE_LABEL.to_owned(), "true".to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    containers: vec![envoy_container(tenant, gateway, image, identity)],
                    affinity: Some(one_per_node(gateway)),
                    // A proxy needs no API access.
                    automount_service_account_token: Some(false),
                    volumes: Some(volumes(gateway, identity)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The labels of a gateway's proxy objects and pods.
fn proxy_labels(gateway: &str) -> BTreeMap<String, String> {
    [
        (GATEWAY_LABEL.to_owned(), gateway.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "epic-proxy".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}

/// The label the StatefulSet controller puts on each pod: its ordinal,
/// which is its proxy index.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The Envoy container of a proxy pod: its bootstrap and node id from the
/// pod's ordinal (`$(POD_INDEX)`, expanded by the kubelet from the
/// downward API: no shell, no command line built from names).
///
/// Capabilities: all dropped but `NET_BIND_SERVICE` (listeners on ports
/// below 1024 of the host network) and `NET_RAW` (`SO_MARK` on upstream
/// sockets: the tenant's scope in the data path).
fn envoy_container(tenant: &str, gateway: &str, image: &str, identity: bool) -> Container {
    let args = [
        "-c".to_owned(),
        format!("{BOOTSTRAP_MOUNT}/bootstrap-$(POD_INDEX).json"),
        "--service-cluster".to_owned(),
        format!("{tenant}/{gateway}"),
        "--service-node".to_owned(),
        format!("{tenant}/{gateway}/proxy-$(POD_INDEX)"),
        "--disable-hot-restart".to_owned(),
    ];
    Container {
        name: "envoy".into(),
        image: Some(image.to_owned()),
        command: Some(vec!["envoy".into()]),
        args: Some(args.to_vec()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["NET_BIND_SERVICE".into(), "NET_RAW".into()]),
            }),
            ..Default::default()
        }),
        env: Some(vec![EnvVar {
            name: "POD_INDEX".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{POD_INDEX_LABEL}']"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts(identity)),
        ..Default::default()
    }
}

/// One proxy of a gateway per node: host-network replicas on one node
/// would collide on their listeners' ports.
fn one_per_node(gateway: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(
                        [(GATEWAY_LABEL.to_owned(), gateway.to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The proxy container's mounts: the bootstrap, and the identity if any.
fn mounts(identity: bool) -> Vec<VolumeMount> {
    let mut mounts = vec![VolumeMount {
        name: "bootstrap".into(),
        mount_path: BOOTSTRAP_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if identity {
        mounts.push(VolumeMount {
            name: "xds-identity".into(),
            mount_path: IDENTITY_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

/// The proxy pod's volumes: the bootstrap `ConfigMap`, and the identity
/// `Secret` (files 0400) if any.
fn volumes(gateway: &str, identity: bool) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "bootstrap".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: proxy_name(gateway),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if identity {
        volumes.push(Volume {
            name: "xds-identity".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(proxy_secret_name(gateway)),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes
}

/// The Envoy image of `gateway`'s template, else the default.
fn image_of(gateway: Option<&Gateway>, inputs: &DesiredInputs, settings: &ProxySettings) -> String {
    gateway
        .and_then(|x| {
            inputs.templates.iter().find(|t| {
                t.metadata.namespace == x.metadata.namespace
                    && t.metadata.name.as_deref() == Some(x.spec.template.as_str())
            })
        })
        .and_then(|t| t.spec.envoy_image.clone())
        .unwrap_or_else(|| settings.image.clone())
}

/// The labels of the objects that serve `gateway` beside its proxies (its
/// bootstrap `ConfigMap`, its identity `Secret`): the gateway, and this
/// controller as their manager.
fn gateway_object_labels(gateway: &str) -> BTreeMap<String, String> {
    [
        (GATEWAY_LABEL.to_owned(), gateway.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}

/// The bootstrap `ConfigMap` of gateway `g`'s proxies: `bootstrap-<i>.json`
/// for each proxy `i`.
pub fn proxy_config_map(g: &GatewayPlan, bootstraps: &[String]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(proxy_name(&g.name)),
            namespace: Some(g.namespace.clone()),
            labels: Some(gateway_object_labels(&g.name)),
            ..Default::default()
        },
        data: Some(
            bootstraps
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("bootstrap-{i}.json"), b.clone()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Server-side applies `object` unless its hash equals `existing_hash`;
/// returns whether it applied.
async fn apply_if_changed<K>(
    api: &Api<K>,
    mut object: K,
    existing_hash: Option<String>,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let hash = annotate_hash(&mut object);
    if existing_hash.as_deref() == Some(hash.as_str()) {
        return Ok(false);
    }
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(true)
}

/// Applies the proxies of every programmed gateway (server-side apply of
/// its bootstrap `ConfigMap` and `StatefulSet`, each owned by the gateway,
/// skipped when unchanged), leaves those of accepted gateways whose new
/// configuration was rejected as they are (the last good configuration
/// keeps serving), and deletes the others among `existing`: `done` and
/// `deleted` name them as `namespace/name`.
///
/// With an `authority`, each gateway's proxies also get their xDS
/// identities (the `Secret` [`proxy_secret_name`], owned by the gateway,
/// written only when an identity is missing or no longer valid) and reach
/// the ADS server over mutual TLS.
pub async fn apply_proxies(
    client: &Client,
    plan: &Plan,
    inputs: &DesiredInputs,
    settings: &ProxySettings,
    existing: &ProxyObjects,
    authority: Option<&XdsAuthority>,
) -> SinkReport {
    let mut report = SinkReport::default();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    // An accepted gateway whose new configuration was rejected keeps
    // serving its last one: its proxies stay as they are.
    for g in plan
        .gateways
        .iter()
        .filter(|g| !g.programmed() && !g.status.addresses.is_empty() && g.accepted())
    {
        wanted.insert((g.namespace.clone(), proxy_name(&g.name)));
    }
    let pass = ProxyPass {
        client,
        inputs,
        settings,
        authority,
        gateways: ByKey::new(&inputs.gateways),
        maps_now: ByKey::new(&existing.maps),
        sets_now: ByKey::new(&existing.sets),
    };
    for g in plan.gateways.iter().filter(|g| g.programmed()) {
        // Wanted whether or not this pass can apply it: a failure must not
        // delete what serves.
        wanted.insert((g.namespace.clone(), proxy_name(&g.name)));
        match pass.apply(g).await {
            Ok(Some(what)) => report.done.push(what),
            Ok(None) => {}
            Err(e) => report.failed.push(e),
        }
    }
    delete_unwanted(client, existing, &wanted, &mut report).await;
    report
}

/// What applying the proxies of each programmed gateway shares.
struct ProxyPass<'a> {
    client: &'a Client,
    inputs: &'a DesiredInputs,
    settings: &'a ProxySettings,
    authority: Option<&'a XdsAuthority>,
    gateways: ByKey<'a, Gateway>,
    maps_now: ByKey<'a, ConfigMap>,
    sets_now: ByKey<'a, StatefulSet>,
}

impl ProxyPass<'_> {
    /// Applies the identities, bootstrap `ConfigMap` and `StatefulSet` of
    /// programmed gateway `g`; `Some(namespace/name)` when anything changed.
    async fn apply(&self, g: &GatewayPlan) -> Result<Option<String>, K8sError> {
        let name = proxy_name(&g.name);
        let what = format!("{}/{name}", g.namespace);
        let owner = self.gateways.get(&g.namespace, &g.name);
        let owners = owner.and_then(owned_by);
        if let Some(authority) = self.authority {
            apply_identities(self.client, g, authority, owners.clone()).await?;
        }
        let bootstraps: Vec<String> = (0..g.status.proxies.len())
            .map(|i| {
                let index = self.authority.map(|_| i);
                let bootstrap = proxy_bootstrap(self.settings, g.tenant_id, index);
                serde_json::to_string_pretty(&bootstrap).unwrap_or_default()
            })
            .collect();
        let mut config_map = proxy_config_map(g, &bootstraps);
        config_map.metadata.owner_references = owners.clone();
        let replicas = i32::try_from(g.status.proxies.len()).unwrap_or(i32::MAX);
        let image = image_of(owner, self.inputs, self.settings);
        let identity = self.authority.is_some();
        let mut set =
            proxy_statefulset(&g.tenant, &g.namespace, &g.name, replicas, &image, identity);
        set.metadata.owner_references = owners;
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &g.namespace);
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &g.namespace);
        let map_hash = applied_hash(self.maps_now.get(&g.namespace, &name));
        let set_hash = applied_hash(self.sets_now.get(&g.namespace, &name));
        let map_applied = apply_if_changed(&maps, config_map, map_hash)
            .await
            .map_err(api_error(format!("apply ConfigMap {what}")))?;
        let set_applied = apply_if_changed(&sets, set, set_hash)
            .await
            .map_err(api_error(format!("apply StatefulSet {what}")))?;
        Ok((map_applied || set_applied).then_some(what))
    }
}

/// Writes the identity `Secret` of `g`'s proxies if what is there (one GET)
/// is missing an identity or holds one that is no longer valid.
async fn apply_identities(
    client: &Client,
    g: &GatewayPlan,
    authority: &XdsAuthority,
    owners: Option<Vec<OwnerReference>>,
) -> Result<(), K8sError> {
    let name = proxy_secret_name(&g.name);
    let what = format!("identity Secret {}/{name}", g.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &g.namespace);
    let current = secrets.get_opt(&name).await.map_err(api_error(&what))?;
    let data = proxy_identities(authority, &g.status.proxies, current.as_ref()).map_err(|e| {
        K8sError::Identity {
            what: what.clone(),
            message: e.to_string(),
        }
    })?;
    let Some(data) = data else {
        return Ok(());
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(g.namespace.clone()),
            labels: Some(gateway_object_labels(&g.name)),
            owner_references: owners,
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    crate::apply_secret(&secrets, &name, &secret, FIELD_MANAGER, &what).await
}

/// Deletes the proxy objects among `existing` that no gateway wants.
async fn delete_unwanted(
    client: &Client,
    existing: &ProxyObjects,
    wanted: &BTreeSet<(String, String)>,
    report: &mut SinkReport,
) {
    let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
    for meta in existing
        .sets
        .iter()
        .map(|s| &s.metadata)
        .chain(existing.maps.iter().map(|m| &m.metadata))
    {
        if let (Some(ns), Some(name)) = (&meta.namespace, &meta.name)
            && !wanted.contains(&(ns.clone(), name.clone()))
        {
            gone.insert((ns.clone(), name.clone()));
        }
    }
    for (ns, name) in gone {
        let what = format!("{ns}/{name}");
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = sets.delete(&name, &DeleteParams::background()).await
            && !is_not_found(&e)
        {
            report
                .failed
                .push(api_error(format!("delete StatefulSet {what}"))(e));
            continue;
        }
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = maps.delete(&name, &DeleteParams::background()).await
            && !is_not_found(&e)
        {
            report
                .failed
                .push(api_error(format!("delete ConfigMap {what}"))(e));
            continue;
        }
        // The identities go with the proxies (`<gateway>-proxy-xds`).
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = secrets
            .delete(&format!("{name}-xds"), &DeleteParams::background())
            .await
            && !is_not_found(&e)
        {
            report
                .failed
                .push(api_error(format!("delete identity Secret {what}-xds"))(e));
            continue;
        }
        report.deleted.push(what);
    }
}

/// The proxy sink of the gateway controller: [`apply_proxies`].
#[derive(Clone)]
pub struct ProxySink {
    client: Client,
    settings: ProxySettings,
    authority: Option<Arc<XdsAuthority>>,
}

impl ProxySink {
    /// A sink applying proxies run as `settings` through `client`, with
    /// identities from `authority` (`None`: plaintext xDS).
    pub fn new(
        client: Client,
        settings: ProxySettings,
        authority: Option<Arc<XdsAuthority>>,
    ) -> Self {
        ProxySink {
            client,
            settings,
            authority,
        }
    }
}

impl Sink<PlatformRound, Infallible> for ProxySink {
    fn name(&self) -> &'static str {
        "proxies"
    }

    fn apply<'a>(&'a mut self, round: &'a mut PlatformRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            let report = apply_proxies(
                &self.client,
                &round.plan,
                &round.loaded.inputs,
                &self.settings,
                &round.proxies,
                self.authority.as_deref(),
            )
            .await;
            round.done.proxies = report.done;
            round.done.deleted = report.deleted;
            round.done.record_failures(&report.failed);
            Ok(())
        })
    }
}
