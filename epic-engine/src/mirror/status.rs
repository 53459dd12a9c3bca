//! The platform's gateway status written back as user-cluster status: a
//! `Service`'s `loadBalancer.ingress`, a Gateway API `Gateway`'s addresses
//! and conditions.

use epic_model as model;
use epic_model::conditions::{ConditionType, Reason};
use gateway_api::gateways as gw;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, PortStatus, ServicePort, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The `Service` status for a platform gateway's status: one
/// `loadBalancer.ingress` per address (`ipMode: VIP`), with the DNS name
/// as `hostname` when there is one, and the Service's `ports` on each —
/// with the platform's `Programmed` reason as the `error` of every port
/// while the gateway is not programmed (Kubernetes asks for a CamelCase
/// reason there).
pub fn service_status(platform: &model::GatewayStatus, ports: &[ServicePort]) -> ServiceStatus {
    let ports = ingress_ports(platform, ports);
    let mut ingress: Vec<LoadBalancerIngress> = platform
        .addresses
        .iter()
        .map(|a| LoadBalancerIngress {
            ip: Some(a.to_string()),
            hostname: platform.dns_name.clone(),
            ip_mode: Some("VIP".into()),
            ports: ports.clone(),
        })
        .collect();
    if ingress.is_empty()
        && let Some(dns) = &platform.dns_name
    {
        ingress.push(LoadBalancerIngress {
            hostname: Some(dns.clone()),
            ports,
            ..Default::default()
        });
    }
    ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        }),
        conditions: None,
    }
}

/// The `ports` of each ingress: every Service port, with the reason the
/// gateway is not programmed as its `error` (none while it is).
fn ingress_ports(
    platform: &model::GatewayStatus,
    ports: &[ServicePort],
) -> Option<Vec<PortStatus>> {
    let programmed = platform
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Programmed.as_str());
    let error = match programmed {
        Some(c) if c.is_true() => None,
        Some(c) => Some(c.reason.clone()),
        // Not planned yet (the Gateway API's reason for it).
        None => Some("Pending".to_owned()),
    };
    let ports: Vec<PortStatus> = ports
        .iter()
        .map(|p| PortStatus {
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            error: error.clone(),
        })
        .collect();
    (!ports.is_empty()).then_some(ports)
}

/// Gateway API reasons of `Accepted`.
const ACCEPTED_REASONS: [&str; 6] = [
    "Accepted",
    "ListenersNotValid",
    "Pending",
    "UnsupportedAddress",
    "InvalidParameters",
    "NotReady",
];
/// Gateway API reasons of `Programmed`.
const PROGRAMMED_REASONS: [&str; 6] = [
    "Programmed",
    "Invalid",
    "Pending",
    "NoResources",
    "AddressNotAssigned",
    "AddressNotUsable",
];

/// A Gateway API condition for the platform's condition of `type_`.
fn gateway_condition(
    type_: &str,
    platform: Option<&model::Condition>,
    standard: &[&str],
    fallback: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = match platform {
        Some(c) if standard.contains(&c.reason.as_str()) => {
            (c.status.clone(), c.reason.clone(), c.message.clone())
        }
        Some(c) => {
            let message = if c.message.is_empty() {
                c.reason.clone()
            } else {
                format!("{}: {}", c.reason, c.message)
            };
            (c.status.clone(), fallback.to_owned(), message)
        }
        None => (
            "Unknown".to_owned(),
            "Pending".to_owned(),
            "waiting for the gateway platform".to_owned(),
        ),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        reason,
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The Gateway API `Gateway` status for a platform gateway's status:
/// addresses (`IPAddress`, then the DNS name as `Hostname`) and the
/// `Accepted` and `Programmed` conditions, with Gateway API reasons (a
/// platform-only reason becomes `InvalidParameters` / `Invalid`, kept at
/// the front of the message). A gateway the platform has not accepted is
/// `Programmed=False`, reason `Invalid`; one it has not seen yet is
/// `Unknown`, reason `Pending`. Every condition gets `observedGeneration`
/// = `generation` and `lastTransitionTime` = `now` (see
/// [`keep_transition_times`]).
pub fn gateway_status(
    platform: &model::GatewayStatus,
    generation: Option<i64>,
    now: Time,
) -> gw::GatewayStatus {
    let find = |t: ConditionType| platform.conditions.iter().find(|c| c.type_ == t.as_str());
    let accepted = find(ConditionType::Accepted);
    let not_accepted = accepted.filter(|c| !c.is_true()).map(|c| {
        ConditionType::Programmed.condition(
            false,
            Reason::Invalid,
            format!("not accepted: {}", c.message),
        )
    });
    let programmed = find(ConditionType::Programmed).or(not_accepted.as_ref());
    let mut addresses: Vec<gw::GatewayStatusAddresses> = platform
        .addresses
        .iter()
        .map(|a| gw::GatewayStatusAddresses {
            r#type: Some("IPAddress".into()),
            value: a.to_string(),
        })
        .collect();
    if let Some(dns) = &platform.dns_name {
        addresses.push(gw::GatewayStatusAddresses {
            r#type: Some("Hostname".into()),
            value: dns.clone(),
        });
    }
    gw::GatewayStatus {
        addresses: (!addresses.is_empty()).then_some(addresses),
        attached_listener_sets: None,
        conditions: Some(vec![
            gateway_condition(
                "Accepted",
                accepted,
                &ACCEPTED_REASONS,
                "InvalidParameters",
                generation,
                &now,
            ),
            gateway_condition(
                "Programmed",
                programmed,
                &PROGRAMMED_REASONS,
                "Invalid",
                generation,
                &now,
            ),
        ]),
        listeners: None,
    }
}

/// Keeps `lastTransitionTime` of each condition in `next` whose type and
/// status are unchanged from `previous` (Kubernetes convention: the time
/// moves only when the status does).
pub fn keep_transition_times(previous: &[Condition], next: &mut [Condition]) {
    for c in next {
        if let Some(old) = previous
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

/// The Gateway API minor versions (of major version 1) whose CRDs the
/// mirror understands: v1.0 to v1.5.
pub const SUPPORTED_GATEWAY_API_MINORS: std::ops::RangeInclusive<u32> = 0..=5;

/// Whether Gateway API bundle version `version` (the CRDs'
/// `gateway.networking.k8s.io/bundle-version` annotation, `v1.5.1`) is one
/// the mirror understands.
///
/// ```
/// use epic_engine::mirror::supported_gateway_api_version;
/// assert!(supported_gateway_api_version("v1.5.1"));
/// assert!(supported_gateway_api_version("v1.0.0"));
/// assert!(!supported_gateway_api_version("v2.0.0"));
/// assert!(!supported_gateway_api_version("v1.9.0"));
/// assert!(!supported_gateway_api_version("latest"));
/// ```
pub fn supported_gateway_api_version(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    major == "1"
        && minor
            .parse::<u32>()
            .is_ok_and(|m| SUPPORTED_GATEWAY_API_MINORS.contains(&m))
}

/// The conditions of a `GatewayClass` this controller serves, as the
/// Gateway API asks: `Accepted` and `SupportedVersion`, both `True` when
/// the installed CRDs' bundle version (`None`: not annotated) is
/// supported; with an unsupported version both are `False`, reason
/// `UnsupportedVersion`, naming it.
pub fn gateway_class_conditions(
    generation: Option<i64>,
    bundle_version: Option<&str>,
    now: &Time,
) -> Vec<Condition> {
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match bundle_version {
        Some(v) if !supported_gateway_api_version(v) => {
            let message = format!(
                "Gateway API {v} is not supported: EPIC-RS understands v1.{}–v1.{}",
                SUPPORTED_GATEWAY_API_MINORS.start(),
                SUPPORTED_GATEWAY_API_MINORS.end()
            );
            vec![
                condition("Accepted", false, "UnsupportedVersion", message.clone()),
                condition("SupportedVersion", false, "UnsupportedVersion", message),
            ]
        }
        version => vec![
            condition("Accepted", true, "Accepted", "served by EPIC-RS".into()),
            condition(
                "SupportedVersion",
                true,
                "SupportedVersion",
                match version {
                    Some(v) => format!("Gateway API {v} is supported"),
                    None => "the Gateway API CRDs carry no bundle version".into(),
                },
            ),
        ],
    }
}
