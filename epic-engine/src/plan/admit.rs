//! Admission of a gateway: its tenant, its template (and whether the
//! tenant may use it), its listeners, the tenant's gateway limit. An
//! admitted gateway is `Accepted`; a refused one gets `Accepted=False` with
//! the reason and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use super::gateway::Pass;
use super::{GatewayPlan, MAX_REPLICAS, Problem, name_of, set_condition};
use crate::admission::{AdmittedPort, EndpointRefusal};
use epic_model::conditions::{ConditionType, Reason};
use epic_model::{Condition, Gateway, Listener, ListenerProtocol, Tenant};

/// The valid tenants by namespace, and the problems of the others: in
/// name order, a tenant with id 0, an id already used, or a namespace
/// already claimed is refused. Every consumer of tenants (the plan, the
/// Kubernetes records) resolves them with this one function.
pub fn tenants_by_namespace(tenants: &[Tenant]) -> (BTreeMap<&str, &Tenant>, Vec<Problem>) {
    let mut by_namespace: BTreeMap<&str, &Tenant> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut ids: BTreeMap<u32, &str> = BTreeMap::new();
    let mut sorted: Vec<&Tenant> = tenants.iter().collect();
    sorted.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    for t in sorted {
        let name = name_of(&t.metadata);
        let object = format!("Tenant {name}");
        let refused = if t.spec.id == 0 {
            Some("id 0 is reserved".to_owned())
        } else if t.spec.id > epic_gue::maps::MAX_TENANT_ID {
            Some(format!(
                "id {} is too large: tenant ids are 1 to {} (a socket mark carries them)",
                t.spec.id,
                epic_gue::maps::MAX_TENANT_ID
            ))
        } else if let Some(other) = ids.get(&t.spec.id) {
            Some(format!(
                "id {} is already used by tenant {other}",
                t.spec.id
            ))
        } else {
            by_namespace.get(t.spec.namespace.as_str()).map(|other| {
                format!(
                    "namespace {} already belongs to tenant {}",
                    t.spec.namespace,
                    name_of(&other.metadata)
                )
            })
        };
        match refused {
            Some(message) => problems.push(Problem { object, message }),
            None => {
                ids.insert(t.spec.id, name);
                by_namespace.insert(t.spec.namespace.as_str(), t);
            }
        }
    }
    (by_namespace, problems)
}

/// What the tenants planned so far use, for their limits.
#[derive(Debug, Default)]
pub(super) struct TenantUsage {
    /// Gateways accepted, by tenant namespace.
    pub gateways: BTreeMap<String, u32>,
    /// Endpoints admitted, by tenant namespace.
    pub endpoints: BTreeMap<String, u32>,
    /// Released addresses held back ([`crate::grace`]).
    pub held_back: Vec<epic_model::ReleasedAddress>,
}

impl TenantUsage {
    /// Nothing used yet; `held_back` addresses still held.
    pub fn with_held_back(held_back: Vec<epic_model::ReleasedAddress>) -> Self {
        TenantUsage {
            held_back,
            ..Default::default()
        }
    }

    /// Counts the admitted endpoints of `ports` against the tenant's
    /// endpoint limit; those beyond it move to the refused ones.
    pub fn limit_endpoints(&mut self, tenant: &Tenant, ports: &mut [AdmittedPort<'_>]) {
        let used = self
            .endpoints
            .entry(tenant.spec.namespace.clone())
            .or_default();
        let limit = tenant.spec.limits.endpoints;
        for port in ports {
            let room = limit.map_or(usize::MAX, |l| l.saturating_sub(*used) as usize);
            if port.endpoints.len() > room {
                let over = port.endpoints.split_off(room);
                let limit = limit.unwrap_or(u32::MAX);
                port.refused.extend(
                    over.into_iter()
                        .map(|(e, _)| (e, EndpointRefusal::TenantLimit(limit))),
                );
            }
            *used = used.saturating_add(u32::try_from(port.endpoints.len()).unwrap_or(u32::MAX));
        }
    }
}

/// How the template of one gateway resolved.
pub(super) struct ResolvedTemplate {
    /// The name it renders under (`namespace/name`, or a built-in's name).
    pub render_name: String,
    /// The pool its addresses come from, if it names one.
    pub pool: Option<String>,
    /// The address families it asks for.
    pub families: epic_model::AddressFamilies,
    /// Its proxies.
    pub replicas: u32,
}

fn not_accepted(reason: Reason, message: String) -> Box<Condition> {
    Box::new(ConditionType::Accepted.condition(false, reason, message))
}

impl<'a> Pass<'a, '_> {
    /// Admits gateway `g`: its tenant and resolved template, with
    /// `Accepted` set and the tenant's gateway counted.
    pub fn admit(
        &mut self,
        g: &Gateway,
        gp: &mut GatewayPlan,
    ) -> Result<(&'a Tenant, ResolvedTemplate), Box<Condition>> {
        let ns = gp.namespace.as_str();
        let Some(&tenant) = self.tenants.get(ns) else {
            return Err(not_accepted(
                Reason::UnknownTenant,
                format!("namespace {ns:?} belongs to no tenant"),
            ));
        };
        let tenant_name = name_of(&tenant.metadata);
        gp.tenant = tenant_name.to_owned();
        gp.tenant_id = tenant.spec.id;
        let resolved = self.resolve_template(ns, &g.spec.template)?;
        if let Some(allowed) = &tenant.spec.templates
            && !allowed.contains(&g.spec.template)
        {
            return Err(not_accepted(
                Reason::NotAllowed,
                format!(
                    "tenant {tenant_name} may not use template {:?}",
                    g.spec.template
                ),
            ));
        }
        if let Some(problem) = listener_problem(&g.spec.listeners) {
            return Err(not_accepted(Reason::InvalidParameters, problem));
        }
        let count = self
            .usage
            .gateways
            .entry(tenant.spec.namespace.clone())
            .or_default();
        if let Some(limit) = tenant.spec.limits.gateways
            && *count >= limit
        {
            return Err(not_accepted(
                Reason::TenantLimit,
                format!("tenant {tenant_name} may have at most {limit} gateways"),
            ));
        }
        *count += 1;
        set_condition(
            gp,
            ConditionType::Accepted.condition(true, Reason::Accepted, ""),
        );
        Ok((tenant, resolved))
    }

    /// The template `name` of namespace `ns`: a valid `GatewayTemplate`
    /// there, else the built-in template of that name.
    fn resolve_template(&self, ns: &str, name: &str) -> Result<ResolvedTemplate, Box<Condition>> {
        let Some(t) = self.templates.by_key.get(&(ns.to_owned(), name.to_owned())) else {
            if epic_templates::BUILTIN_TEMPLATES.contains(&name) {
                return Ok(ResolvedTemplate {
                    render_name: name.to_owned(),
                    pool: None,
                    families: Default::default(),
                    replicas: 1,
                });
            }
            return Err(not_accepted(
                Reason::InvalidParameters,
                format!("no GatewayTemplate {ns}/{name} and no built-in template of that name"),
            ));
        };
        let key = format!("{ns}/{name}");
        if !(1..=MAX_REPLICAS).contains(&t.spec.replicas) {
            return Err(not_accepted(
                Reason::InvalidParameters,
                format!(
                    "GatewayTemplate {key}: replicas {} is outside 1..={MAX_REPLICAS}",
                    t.spec.replicas
                ),
            ));
        }
        if let (Some(image), Some(allowed)) =
            (&t.spec.envoy_image, &self.catalog.inputs.envoy_images)
            && !allowed.contains(image)
        {
            return Err(not_accepted(
                Reason::NotAllowed,
                format!(
                    "GatewayTemplate {key}: Envoy image {image:?} is not one the platform allows"
                ),
            ));
        }
        if let Some(e) = self.templates.errors.get(&key) {
            return Err(not_accepted(
                Reason::InvalidParameters,
                format!("GatewayTemplate {key}: {e}"),
            ));
        }
        Ok(ResolvedTemplate {
            render_name: key,
            pool: t.spec.pool.clone(),
            families: t.spec.families,
            replicas: t.spec.replicas,
        })
    }
}

/// Why a gateway's listeners cannot be planned, if they cannot.
fn listener_problem(listeners: &[Listener]) -> Option<String> {
    if listeners.is_empty() {
        return Some("a gateway needs at least one listener".into());
    }
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for l in listeners {
        if !names.insert(l.name.as_str()) {
            return Some(format!("listener name {:?} is used twice", l.name));
        }
        let udp = l.protocol == ListenerProtocol::Udp;
        if !ports.insert((l.port, udp)) {
            return Some(format!(
                "port {}/{} is used by two listeners",
                l.port,
                if udp { "udp" } else { "tcp" }
            ));
        }
        if l.port == 0 {
            return Some(format!("listener {:?}: port 0", l.name));
        }
    }
    None
}
