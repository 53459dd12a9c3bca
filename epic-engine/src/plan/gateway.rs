//! Planning one gateway: admitted, given addresses, translated, its used
//! endpoints kept (those whose tunnels are not verified yet held back from
//! its configuration), rendered. The phases are in their own files; this one
//! runs them in order on the state the gateways share.

use std::collections::BTreeMap;

use epic_ipam::Allocator;

use super::admit::TenantUsage;
use super::catalog::Catalog;
use super::claim::Admitted;
use super::verified::hold_unverified;
use super::{GatewayPlan, name_of, namespace_of, owner_of, proxy_node_id, set_condition};
use crate::render::Templates;
use epic_model::conditions::{ConditionType, Reason};
use epic_model::{Condition, Gateway, Tenant};

/// What the gateways of one plan share, in plan order: the tenants and
/// indexed inputs (read), the templates and their renderings, the
/// allocator and what each tenant uses so far (written).
pub(super) struct Pass<'a, 't> {
    /// The valid tenants by namespace.
    pub tenants: &'t BTreeMap<&'a str, &'a Tenant>,
    /// The inputs, indexed.
    pub catalog: &'t Catalog<'a>,
    /// The templates, compiled, and the render cache.
    pub templates: Templates<'t>,
    /// The address allocator.
    pub ipam: Allocator,
    /// What the tenants' gateways use so far.
    pub usage: TenantUsage,
}

impl<'a> Pass<'a, '_> {
    /// The gateways in plan order: those holding addresses first, then by
    /// namespace and name.
    pub fn plan_order<'g>(&self, gateways: &'g [Gateway]) -> Vec<&'g Gateway> {
        let mut order: Vec<&Gateway> = gateways.iter().collect();
        order.sort_by_cached_key(|g| {
            (
                self.ipam.allocation(&owner_of(g)).is_none(),
                namespace_of(&g.metadata).to_owned(),
                name_of(&g.metadata).to_owned(),
            )
        });
        order
    }

    /// Plans gateway `g` into `gp`; `Err` is the condition that stops it
    /// (it then holds no addresses).
    pub fn plan_gateway(
        &mut self,
        g: &Gateway,
        gp: &mut GatewayPlan,
    ) -> Result<Admitted<'a>, Box<Condition>> {
        let owner = owner_of(g);
        let placed = self.admit(g, gp).and_then(|(tenant, template)| {
            let announcements = self.allocate(g, &owner, tenant, &template, gp)?;
            Ok((tenant, template, announcements))
        });
        let (tenant, template, announcements) = match placed {
            Ok(placed) => placed,
            Err(condition) => {
                self.ipam.release(&owner);
                return Err(condition);
            }
        };
        let (mut translation, candidates) = self.translate(g, tenant, &owner, gp);
        let inputs = self.catalog.inputs;
        hold_unverified(
            &mut translation.context,
            &candidates,
            &gp.tenant,
            &inputs.gateway_nodes,
            inputs.verified_tunnels.as_ref(),
        );
        let admitted = Admitted::used(&translation.context, candidates);
        set_condition(gp, admitted.condition());
        gp.status.proxies = (0..template.replicas)
            .map(|i| proxy_node_id(&gp.tenant, &gp.name, i))
            .collect();
        gp.announcements = announcements;
        self.render(&template.render_name, &translation.context, gp);
        Ok(admitted)
    }

    /// Renders the gateway's configuration. One that does not render, is
    /// inconsistent or is refused as a snapshot leaves the last good one
    /// serving: the gateway keeps its proxies, addresses, tunnels and
    /// endpoints; `Programmed` says why.
    fn render(
        &mut self,
        template: &str,
        context: &epic_templates::TemplateContext,
        gp: &mut GatewayPlan,
    ) {
        match self.templates.render(template, context) {
            Ok((dns_name, snapshot)) => {
                if !dns_name.is_empty() {
                    gp.status.dns_name = Some(dns_name);
                }
                gp.snapshot = Some(snapshot);
                set_condition(
                    gp,
                    ConditionType::Programmed.condition(true, Reason::Programmed, ""),
                );
            }
            Err(message) => set_condition(
                gp,
                ConditionType::Programmed.condition(false, Reason::Invalid, message),
            ),
        }
    }
}
