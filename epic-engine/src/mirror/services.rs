//! `Service`s of type `LoadBalancer` as platform gateways: one `TCP`/`UDP`
//! listener per service port, whose default backend is that port.

use epic_model as model;
use k8s_openapi::api::core::v1::{Service, ServicePort};

use super::names::{NameClaim, key_of, sharing_key, uid_of};
use super::{GatewayDraft, MirrorConfig, Skipped};

/// `port` as a port number; `None` for 0 or out of range.
pub(super) fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// A Kubernetes port protocol (default `TCP`) as a platform port protocol.
pub(super) fn port_protocol(protocol: Option<&str>) -> Result<model::PortProtocol, String> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Ok(model::PortProtocol::Tcp),
        "UDP" => Ok(model::PortProtocol::Udp),
        other => Err(format!(
            "protocol {other} is not supported (TCP and UDP are)"
        )),
    }
}

/// The platform gateway for `svc`, if it is a `LoadBalancer` of our class
/// with a port to serve.
pub(super) fn service_gateway(
    svc: &Service,
    cluster: &str,
    config: &MirrorConfig,
    skipped: &mut Vec<Skipped>,
) -> Option<GatewayDraft> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref() != Some(config.load_balancer_class.as_str())
    {
        return None;
    }
    let (ns, name) = key_of(&svc.metadata);
    let object = format!("Service {ns}/{name}");
    let mut listeners = Vec::new();
    for p in spec.ports.iter().flatten() {
        match service_listener(p, &object, &ns, &name) {
            Ok(l) => listeners.push(l),
            Err(s) => skipped.push(s),
        }
    }
    if listeners.is_empty() {
        skipped.push(Skipped {
            object,
            reason: "no TCP or UDP port to serve".into(),
        });
        return None;
    }
    let template = service_template(&listeners, config);
    Some(GatewayDraft {
        claim: NameClaim::new(
            "Service",
            "svc-",
            &ns,
            &name,
            &svc.metadata.creation_timestamp,
        ),
        spec: model::GatewaySpec {
            template: template.clone(),
            client: model::ClientRef {
                cluster: cluster.to_owned(),
                namespace: ns,
                name,
                uid: uid_of(&svc.metadata).to_owned(),
            },
            listeners,
            sharing_key: sharing_key(&svc.metadata),
            addresses: Vec::new(),
        },
        user_gateway: None,
    })
}

/// The listener for service port `p` of the Service `ns/name` (`object`):
/// named `<protocol>-<port>`, its default backend that same port.
fn service_listener(
    p: &ServicePort,
    object: &str,
    ns: &str,
    name: &str,
) -> Result<model::Listener, Skipped> {
    let what = format!("{object} port {}", p.port);
    let protocol = port_protocol(p.protocol.as_deref()).map_err(|reason| Skipped {
        object: what.clone(),
        reason,
    })?;
    let Some(port) = port_u16(p.port) else {
        return Err(Skipped {
            object: what,
            reason: "port is out of range".into(),
        });
    };
    let (lower, listener_protocol) = match protocol {
        model::PortProtocol::Tcp => ("tcp", model::ListenerProtocol::Tcp),
        model::PortProtocol::Udp => ("udp", model::ListenerProtocol::Udp),
    };
    Ok(model::Listener {
        name: format!("{lower}-{port}"),
        port,
        protocol: listener_protocol,
        hostname: None,
        tls_secret: None,
        backends: vec![model::BackendRef {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            port,
            weight: 1,
        }],
    })
}

/// The template of a Service gateway: UDP when every listener is UDP.
fn service_template<'c>(listeners: &[model::Listener], config: &'c MirrorConfig) -> &'c String {
    if listeners
        .iter()
        .all(|l| l.protocol == model::ListenerProtocol::Udp)
    {
        &config.template_for_udp
    } else {
        &config.template_for_service
    }
}
