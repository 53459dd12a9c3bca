//! xDS identities in Kubernetes mode: the authority lives in the `Secret`
//! [`AUTHORITY_SECRET`] of the controller's namespace (created by the first
//! replica that finds none; every replica loads the same), and each
//! programmed gateway's proxies get their identities in the `Secret`
//! [`proxy_secret_name`] of the gateway's namespace, owned by the gateway:
//! `ca.crt`, and `proxy-<i>.crt` / `proxy-<i>.key` for proxy `i`, whose
//! certificate names exactly its node id `<tenant>/<gateway>/proxy-<i>`.
//! Identities are issued once and kept while they stay valid for the
//! authority; keys never reach a status, an event or a log.

use std::collections::BTreeMap;

use epic_xds::identity::{XdsAuthority, key_matches};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{K8sError, MANAGED_BY, api_error};

/// The `Secret` (in the controller's namespace) holding the authority:
/// `ca.crt` and `ca.key`.
pub const AUTHORITY_SECRET: &str = "epic-xds-ca";

/// Where a proxy pod mounts its gateway's identity `Secret`.
pub const IDENTITY_MOUNT: &str = "/etc/epic/xds";

/// The identity `Secret` of `gateway`'s proxies: `<gateway>-proxy-xds`.
pub fn proxy_secret_name(gateway: &str) -> String {
    format!("{}-xds", crate::proxies::proxy_name(gateway))
}

fn key(name: &str, value: &str) -> (String, ByteString) {
    (name.to_owned(), ByteString(value.as_bytes().to_vec()))
}

fn text<'a>(secret: &'a Secret, name: &str) -> Option<&'a str> {
    let bytes = secret.data.as_ref()?.get(name)?;
    std::str::from_utf8(&bytes.0).ok()
}

/// The authority in `namespace`, created there if it has none. Two
/// replicas racing to create it both end with the one that was stored.
pub async fn authority(client: &Client, namespace: &str) -> Result<XdsAuthority, K8sError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("xDS authority Secret {namespace}/{AUTHORITY_SECRET}");
    for _ in 0..2 {
        match api
            .get_opt(AUTHORITY_SECRET)
            .await
            .map_err(api_error(&what))?
        {
            Some(secret) => return authority_of(&secret, &what),
            None => {
                let fresh = XdsAuthority::generate().map_err(|e| identity_error(&what, e))?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(AUTHORITY_SECRET.into()),
                        namespace: Some(namespace.into()),
                        labels: Some(managed_by()),
                        ..Default::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(
                        [
                            key("ca.crt", &fresh.cert_pem()),
                            key("ca.key", fresh.key_pem()),
                        ]
                        .into_iter()
                        .collect(),
                    ),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok(fresh),
                    // Another replica was first: load its authority.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(api_error(&what)(e)),
                }
            }
        }
    }
    Err(K8sError::Identity {
        what,
        message: "created and deleted again while it was read".into(),
    })
}

fn authority_of(secret: &Secret, what: &str) -> Result<XdsAuthority, K8sError> {
    let (Some(cert), Some(key)) = (text(secret, "ca.crt"), text(secret, "ca.key")) else {
        return Err(K8sError::Identity {
            what: what.to_owned(),
            message: "ca.crt or ca.key is missing".into(),
        });
    };
    XdsAuthority::from_pem(cert, key).map_err(|e| identity_error(what, e))
}

fn identity_error(what: &str, e: epic_xds::identity::IdentityError) -> K8sError {
    K8sError::Identity {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

fn managed_by() -> BTreeMap<String, String> {
    [(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    )]
    .into_iter()
    .collect()
}

/// Whether `secret` holds a valid identity of `node_id` under `authority`
/// at index `index`.
fn holds_identity(secret: &Secret, authority: &XdsAuthority, index: usize, node_id: &str) -> bool {
    let cert = text(secret, &format!("proxy-{index}.crt"));
    let key = text(secret, &format!("proxy-{index}.key"));
    matches!((cert, key), (Some(cert), Some(key))
        if authority.is_identity_of(cert, node_id) && key_matches(cert, key))
}

/// The identity `Secret` data for `proxies` (node ids, in index order):
/// `existing`'s entries that are still valid, fresh ones for the rest.
/// `None` if `existing` already holds exactly what is wanted.
pub fn proxy_identities(
    authority: &XdsAuthority,
    proxies: &[String],
    existing: Option<&Secret>,
) -> Result<Option<BTreeMap<String, ByteString>>, epic_xds::identity::IdentityError> {
    let ca = authority.cert_pem();
    let mut data = BTreeMap::from([key("ca.crt", &ca)]);
    let mut changed = existing.is_none_or(|s| text(s, "ca.crt") != Some(ca.as_str()));
    for (index, node_id) in proxies.iter().enumerate() {
        let (cert_key, key_key) = (format!("proxy-{index}.crt"), format!("proxy-{index}.key"));
        match existing.filter(|s| holds_identity(s, authority, index, node_id)) {
            Some(secret) => {
                for k in [&cert_key, &key_key] {
                    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(k)) {
                        data.insert(k.clone(), v.clone());
                    }
                }
            }
            None => {
                let issued = authority.issue_proxy(node_id)?;
                data.extend([
                    key(&cert_key, &issued.cert_pem),
                    key(&key_key, &issued.key_pem),
                ]);
                changed = true;
            }
        }
    }
    let extra = existing
        .and_then(|s| s.data.as_ref())
        .is_some_and(|d| d.keys().any(|k| !data.contains_key(k)));
    Ok((changed || extra).then_some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn identities_are_issued_once_kept_while_valid_and_trimmed() {
        let ca = XdsAuthority::generate().unwrap();
        let two = ["t/g/proxy-0".to_owned(), "t/g/proxy-1".to_owned()];
        let first = proxy_identities(&ca, &two, None).unwrap().expect("issued");
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            [
                "ca.crt",
                "proxy-0.crt",
                "proxy-0.key",
                "proxy-1.crt",
                "proxy-1.key"
            ]
        );
        let stored = secret(first.clone());
        // Nothing to do while they are valid.
        assert_eq!(proxy_identities(&ca, &two, Some(&stored)).unwrap(), None);
        // One replica fewer: the other's identity goes, the first's stays.
        let one = proxy_identities(&ca, &two[..1], Some(&stored))
            .unwrap()
            .expect("trimmed");
        assert_eq!(one.len(), 3);
        assert_eq!(one["proxy-0.crt"], first["proxy-0.crt"]);
        // A certificate of another authority (or another node) is replaced.
        let other = XdsAuthority::generate().unwrap();
        let foreign = proxy_identities(&other, &two, None).unwrap().unwrap();
        let replaced = proxy_identities(&ca, &two, Some(&secret(foreign.clone())))
            .unwrap()
            .expect("reissued");
        assert_ne!(replaced["proxy-0.crt"], foreign["proxy-0.crt"]);
        let cert = std::str::from_utf8(&replaced["proxy-1.crt"].0).unwrap();
        assert!(ca.is_identity_of(cert, "t/g/proxy-1"));
        // A certificate without its key (swapped) is replaced too.
        let mut swapped = first.clone();
        swapped.insert("proxy-0.key".into(), first["proxy-1.key"].clone());
        let fixed = proxy_identities(&ca, &two, Some(&secret(swapped)))
            .unwrap()
            .unwrap();
        let cert = std::str::from_utf8(&fixed["proxy-0.crt"].0).unwrap();
        let key = std::str::from_utf8(&fixed["proxy-0.key"].0).unwrap();
        assert!(ca.is_identity_of(cert, "t/g/proxy-0") && key_matches(cert, key));
        assert_eq!(fixed["proxy-1.crt"], first["proxy-1.crt"]);
    }
}
