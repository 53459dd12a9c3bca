//! Standalone mode's xDS identities: the authority kept in the state
//! directory (`xds/ca.crt`, `xds/ca.key`, the key 0600 and checked on
//! read), and each proxy's certificate and key written to its Envoy
//! directory, so the ADS server serves only the proxies `epic run` started,
//! each as its own node id.

use std::path::Path;

use epic_xds::ServerTls;
use epic_xds::identity::{ProxyTlsFiles, XdsAuthority};

use crate::config::{StandaloneError, file_error};
use crate::files::{read_private, write_atomically, write_private};

/// The authority of `state_dir`, created on first use.
pub(crate) fn authority(state_dir: &Path) -> Result<XdsAuthority, StandaloneError> {
    let dir = state_dir.join("xds");
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if let Some(key) = read_private("xDS CA key", &key_path)? {
        let cert = std::fs::read_to_string(&cert_path)
            .map_err(file_error("xDS CA certificate", &cert_path))?;
        return XdsAuthority::from_pem(&cert, &key).map_err(|e| StandaloneError::Corrupt {
            path: key_path,
            message: e.to_string(),
        });
    }
    let authority = XdsAuthority::generate()?;
    // The certificate first: a key without it would be unusable.
    write_private(
        "xDS CA certificate",
        &cert_path,
        authority.cert_pem().as_bytes(),
    )?;
    write_private("xDS CA key", &key_path, authority.key_pem().as_bytes())?;
    Ok(authority)
}

/// The ADS server's TLS under `authority` (a fresh server key each start).
pub(crate) fn server_tls(authority: &XdsAuthority) -> Result<ServerTls, StandaloneError> {
    Ok(ServerTls {
        ca_pem: authority.cert_pem(),
        server: authority.issue_server()?,
    })
}

/// Issues proxy `node_id` its identity and writes it into its Envoy
/// directory `dir` (`xds-ca.crt`, `xds.crt`, `xds.key` 0600).
pub(crate) fn proxy_files(
    authority: &XdsAuthority,
    node_id: &str,
    dir: &Path,
) -> Result<ProxyTlsFiles, StandaloneError> {
    let issued = authority.issue_proxy(node_id)?;
    let files = ProxyTlsFiles {
        ca: dir.join("xds-ca.crt"),
        cert: dir.join("xds.crt"),
        key: dir.join("xds.key"),
    };
    write_atomically(
        "xDS CA certificate",
        &files.ca,
        authority.cert_pem().as_bytes(),
    )?;
    write_atomically("proxy certificate", &files.cert, issued.cert_pem.as_bytes())?;
    write_private("proxy key", &files.key, issued.key_pem.as_bytes())?;
    Ok(files)
}
