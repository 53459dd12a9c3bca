//! Addresses: the allocator restored from the records (owners that are
//! gone released, what they free held back for the grace period), and each
//! admitted gateway's addresses, kept or allocated, within the tenant's
//! address limit.

use std::collections::BTreeSet;

use epic_ipam::{AllocationRequest, Allocator, PoolSet, PortSpec};

use super::admit::ResolvedTemplate;
use super::gateway::Pass;
use super::{
    Announcement, DesiredInputs, GatewayPlan, Problem, Recorded, name_of, namespace_of, owner_of,
};
use epic_model::conditions::{ConditionType, Reason};
use epic_model::{Condition, Gateway, GatewayTemplate, ListenerProtocol, ReleasedAddress, Tenant};

/// The declared pools; none if they are inconsistent (a problem says why).
pub(super) fn pools(inputs: &DesiredInputs, problems: &mut Vec<Problem>) -> PoolSet {
    let specs: Vec<_> = inputs
        .pools
        .iter()
        .map(|p| p.spec.to_pool_spec(name_of(&p.metadata)))
        .collect();
    PoolSet::new(specs).unwrap_or_else(|e| {
        problems.push(Problem {
            object: "AddressPool".into(),
            message: e.to_string(),
        });
        PoolSet::new(Vec::new()).unwrap_or_else(|_| unreachable!("an empty pool set is valid"))
    })
}

/// The allocator over `pools` with the recorded allocations, the owners
/// that are gone released, and the released addresses still held back.
pub(super) fn restore(
    inputs: &DesiredInputs,
    recorded: &Recorded,
    pools: PoolSet,
    problems: &mut Vec<Problem>,
) -> (Allocator, Vec<ReleasedAddress>) {
    let (mut ipam, report) = Allocator::with_records(pools, recorded.allocations.iter());
    for c in report.conflicts {
        problems.push(Problem {
            object: format!("allocation of {}", c.owner),
            message: format!("not restored: {}", c.error),
        });
    }
    let owners: BTreeSet<String> = inputs.gateways.iter().map(owner_of).collect();
    let before = ipam.records();
    for record in &before {
        if !owners.contains(&record.owner) {
            ipam.release(&record.owner);
        }
    }
    let held_back = crate::grace::hold_back(
        &mut ipam,
        &before,
        &recorded.released,
        inputs.now,
        inputs.address_grace,
    );
    (ipam, held_back)
}

/// The sharing key a gateway's addresses are allocated with: its
/// `sharingKey`, if its template allows sharing (built-in templates do not).
pub fn sharing_key_of(g: &Gateway, templates: &[GatewayTemplate]) -> Option<String> {
    let allowed = templates.iter().any(|t| {
        namespace_of(&t.metadata) == namespace_of(&g.metadata)
            && name_of(&t.metadata) == g.spec.template
            && t.spec.allow_sharing
    });
    g.spec.sharing_key.clone().filter(|_| allowed)
}

fn not_programmed(message: String) -> Box<Condition> {
    Box::new(ConditionType::Programmed.condition(false, Reason::AddressNotAssigned, message))
}

/// What gateway `g` asks the allocator for.
fn request_of(
    g: &Gateway,
    owner: &str,
    tenant: &str,
    template: &ResolvedTemplate,
    templates: &[GatewayTemplate],
) -> AllocationRequest {
    let mut request = AllocationRequest::new(owner, tenant, template.families.into());
    if let Some(pool) = &template.pool {
        request = request.in_pool(pool);
    }
    for a in &g.spec.addresses {
        request = request.with_address(*a);
    }
    if let Some(key) = sharing_key_of(g, templates) {
        request = request.with_sharing_key(key);
    }
    request.with_ports(g.spec.listeners.iter().map(|l| match l.protocol {
        ListenerProtocol::Udp => PortSpec::udp(l.port),
        _ => PortSpec::tcp(l.port),
    }))
}

impl Pass<'_, '_> {
    /// Gateway `g`'s addresses: its allocation if it still has every
    /// address it asks for, else a new one (held-back addresses of its
    /// tenant reclaimed first); the prefixes to announce.
    pub fn allocate(
        &mut self,
        g: &Gateway,
        owner: &str,
        tenant: &Tenant,
        template: &ResolvedTemplate,
        gp: &mut GatewayPlan,
    ) -> Result<Vec<Announcement>, Box<Condition>> {
        let tenant_name = name_of(&tenant.metadata);
        let wanted = &g.spec.addresses;
        let allocation = match self.ipam.allocation(owner) {
            Some(a)
                if wanted
                    .iter()
                    .all(|x| a.addresses.iter().any(|y| y.address == *x)) =>
            {
                a
            }
            _ => {
                self.ipam.release(owner);
                crate::grace::reclaim(
                    &mut self.ipam,
                    &mut self.usage.held_back,
                    tenant_name,
                    wanted,
                );
                let templates = &self.catalog.inputs.templates;
                let request = request_of(g, owner, tenant_name, template, templates);
                self.ipam
                    .allocate(&request)
                    .map_err(|e| not_programmed(e.to_string()))?
            }
        };
        // Held-back addresses are the tenant's in the allocator, not in its limit.
        let held = crate::grace::held_for(&self.usage.held_back, tenant_name);
        if let Some(limit) = tenant.spec.limits.addresses
            && self
                .ipam
                .tenant_address_count(tenant_name)
                .saturating_sub(held)
                > limit as usize
        {
            return Err(not_programmed(format!(
                "tenant {tenant_name} may hold at most {limit} addresses"
            )));
        }
        gp.status.addresses = allocation.addresses.iter().map(|a| a.address).collect();
        Ok(allocation
            .addresses
            .iter()
            .map(|a| Announcement {
                address: a.address,
                prefix_len: a.prefix.prefix_len(),
            })
            .collect())
    }
}
