//! Proxy identities for mutual TLS on the ADS port: a private certificate
//! authority ([`XdsAuthority`]) issues each proxy a client certificate whose
//! only name is the URI [`identity_uri`]`(node id)`, and the server a
//! certificate for [`SERVER_NAME`]; [`AdsServer::with_tls`] then admits a
//! stream only if its client certificate chains to the authority and names
//! exactly the node id of the stream's first request.
//!
//! ```
//! use epic_xds::identity::{XdsAuthority, identity_uri, node_ids_of};
//!
//! let ca = XdsAuthority::generate()?;
//! let proxy = ca.issue_proxy("acme/web/proxy-0")?;
//! assert_eq!(node_ids_of(&proxy.cert_der()?)?, ["acme/web/proxy-0"]);
//! assert_eq!(
//!     identity_uri("acme/web/proxy-0"),
//!     "spiffe://epic-gateway.org/proxy/acme/web/proxy-0"
//! );
//! // The authority survives restarts through its PEM (keep the key 0600).
//! let again = XdsAuthority::from_pem(&ca.cert_pem(), ca.key_pem())?;
//! assert_eq!(again.cert_pem(), ca.cert_pem());
//! # Ok::<(), epic_xds::identity::IdentityError>(())
//! ```
//!
//! [`AdsServer::with_tls`]: crate::AdsServer::with_tls

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The URI prefix of a proxy identity; the node id follows it.
pub const IDENTITY_PREFIX: &str = "spiffe://epic-gateway.org/proxy/";

/// The DNS name in the ADS server's certificate, which proxies verify
/// (and send as SNI), whatever address they reach the server at.
pub const SERVER_NAME: &str = "xds.epic-gateway.org";

/// The identity URI of the proxy with node id `node_id`.
pub fn identity_uri(node_id: &str) -> String {
    format!("{IDENTITY_PREFIX}{node_id}")
}

/// Why an identity could not be made, loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Generating or signing a key or certificate failed.
    #[error("cannot {what}: {source}")]
    Certificate {
        /// What was attempted.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A node id that cannot be a proxy identity (empty, or with
    /// characters a URI does not allow unescaped).
    #[error("node id {node_id:?} cannot be a proxy identity: {reason}")]
    InvalidNodeId {
        /// The node id.
        node_id: String,
        /// Why not.
        reason: &'static str,
    },
    /// A certificate (PEM or DER) did not parse.
    #[error("certificate does not parse: {0}")]
    Unreadable(String),
}

fn certificate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> IdentityError {
    move |source| IdentityError::Certificate { what, source }
}

/// A certificate and its private key, both PEM. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8): a secret.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate as DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, IdentityError> {
        der_of(&self.cert_pem)
    }
}

/// The DER contents of a PEM certificate.
fn der_of(cert_pem: &str) -> Result<Vec<u8>, IdentityError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    Ok(pem.contents)
}

/// The private certificate authority of the ADS port.
pub struct XdsAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// The CA certificate as DER, parsed once (every identity check needs it).
    cert_der: Vec<u8>,
    key_pem: String,
}

impl fmt::Debug for XdsAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl XdsAuthority {
    /// A new authority with a fresh key (ECDSA P-256).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(certificate_error("make the CA certificate"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "epic-rs xDS authority");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(certificate_error("generate the CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(certificate_error("sign the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(XdsAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The authority saved earlier as [`XdsAuthority::cert_pem`] and
    /// [`XdsAuthority::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(certificate_error("read the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(certificate_error("read the CA certificate"))?;
        let cert_der = der_of(cert_pem)?;
        Ok(XdsAuthority {
            issuer,
            cert_der,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate (what both ends trust).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key: a secret; store it only where the controller
    /// alone reads it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Whether `cert_pem` is a certificate this authority signed, valid
    /// now, whose identity is exactly `node_id` (to keep an identity that
    /// was issued before instead of issuing a new one).
    pub fn is_identity_of(&self, cert_pem: &str, node_id: &str) -> bool {
        let Ok(cert) = der_of(cert_pem) else {
            return false;
        };
        let (Ok((_, cert_x)), Ok((_, ca_x))) = (
            X509Certificate::from_der(&cert),
            X509Certificate::from_der(&self.cert_der),
        ) else {
            return false;
        };
        cert_x.verify_signature(Some(ca_x.public_key())).is_ok()
            && cert_x.validity().is_valid()
            && node_ids_of(&cert).is_ok_and(|ids| ids == [node_id])
    }

    /// A client certificate for the proxy with node id `node_id`: its only
    /// name is [`identity_uri`]`(node_id)`, usable for client auth only.
    pub fn issue_proxy(&self, node_id: &str) -> Result<IssuedCert, IdentityError> {
        let uri = identity_uri(check_node_id(node_id)?);
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(certificate_error("make a proxy certificate"))?;
        params.distinguished_name.push(DnType::CommonName, node_id);
        let uri = uri
            .try_into()
            .map_err(certificate_error("name a proxy certificate"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// The ADS server's certificate: DNS name [`SERVER_NAME`], usable for
    /// server auth only.
    pub fn issue_server(&self) -> Result<IssuedCert, IdentityError> {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(certificate_error("make the server certificate"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<IssuedCert, IdentityError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(certificate_error("generate a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(certificate_error("sign a certificate"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `node_id` if it can be the path of an identity URI: non-empty, printable
/// ASCII without spaces, `%`, `?` or `#` (node ids are
/// `<tenant>/<gateway>/<proxy>` of DNS labels).
fn check_node_id(node_id: &str) -> Result<&str, IdentityError> {
    let invalid = |reason| IdentityError::InvalidNodeId {
        node_id: node_id.to_owned(),
        reason,
    };
    if node_id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !node_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'#'))
    {
        return Err(invalid(
            "only printable ASCII without spaces, %, ? or # is allowed",
        ));
    }
    Ok(node_id)
}

/// Where a proxy finds its identity: PEM files it reads at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTlsFiles {
    /// The authority's certificate (to verify the server).
    pub ca: std::path::PathBuf,
    /// The proxy's certificate.
    pub cert: std::path::PathBuf,
    /// The proxy's private key.
    pub key: std::path::PathBuf,
}

impl ProxyTlsFiles {
    /// The Envoy `transport_socket` (JSON, as a bootstrap holds it) of the
    /// cluster that leads to the ADS server: TLS with the proxy's
    /// certificate, the server verified against the authority and its name
    /// [`SERVER_NAME`] (also sent as SNI).
    pub fn envoy_transport_socket(&self) -> serde_json::Value {
        serde_json::json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": SERVER_NAME,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": self.cert},
                        "private_key": {"filename": self.key}
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": self.ca},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}
                        ]
                    }
                }
            }
        })
    }
}

/// Whether `key_pem` is the private key of the certificate `cert_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let (Ok(key), Ok(cert)) = (KeyPair::from_pem(key_pem), der_of(cert_pem)) else {
        return false;
    };
    X509Certificate::from_der(&cert)
        .is_ok_and(|(_, cert)| *cert.public_key().subject_public_key.data == *key.public_key_raw())
}

/// The node ids a (DER) certificate is the identity of: its URI names under
/// [`IDENTITY_PREFIX`], the prefix removed.
pub fn node_ids_of(cert_der: &[u8]) -> Result<Vec<String>, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    Ok(names
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(IDENTITY_PREFIX).map(str::to_owned),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_certificate_names_exactly_its_node_id() {
        let ca = XdsAuthority::generate().unwrap();
        let cert = ca.issue_proxy("t1/web/proxy-1").unwrap();
        assert_eq!(
            node_ids_of(&cert.cert_der().unwrap()).unwrap(),
            ["t1/web/proxy-1"]
        );
        // The server's certificate is no proxy's identity.
        let server = ca.issue_server().unwrap();
        assert!(node_ids_of(&server.cert_der().unwrap()).unwrap().is_empty());
        assert!(ca.is_identity_of(&cert.cert_pem, "t1/web/proxy-1"));
        assert!(!ca.is_identity_of(&cert.cert_pem, "t1/web/proxy-0"));
        assert!(!ca.is_identity_of(&server.cert_pem, "t1/web/proxy-1"));
        let other = XdsAuthority::generate().unwrap();
        assert!(!other.is_identity_of(&cert.cert_pem, "t1/web/proxy-1"));
        assert!(!ca.is_identity_of("garbage", "t1/web/proxy-1"));
        assert!(key_matches(&cert.cert_pem, &cert.key_pem));
        assert!(!key_matches(&cert.cert_pem, &server.key_pem));
        assert!(!key_matches(&cert.cert_pem, "garbage"));
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn node_ids_that_cannot_be_uris_are_refused() {
        let ca = XdsAuthority::generate().unwrap();
        for bad in ["", "t1/web/proxy 0", "t1/web/%2e", "t1/web?x", "t1/wéb/p"] {
            let err = ca.issue_proxy(bad).unwrap_err();
            assert!(
                matches!(err, IdentityError::InvalidNodeId { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            node_ids_of(b"\x30\x03\x02\x01\x00"),
            Err(IdentityError::Unreadable(_))
        ));
        assert!(XdsAuthority::from_pem("not pem", "not pem").is_err());
    }
}
