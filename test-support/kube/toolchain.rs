// Where the real Kubernetes test dependencies live, in one place.
//
// This file is compiled twice: as a module of `xtask` (whose `setup` builds
// the binaries from the Go module next to this file and takes the Gateway API
// CRDs from their Go module) and as a module of `epic-test-support` (whose
// control plane runs them). The versions come from `go.mod` beside this file,
// so the cache is keyed on exactly what was built. It uses only `std`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The Gateway API release whose CRDs the user-cluster control plane gets
/// (the release the `gateway-api` crate tracks).
pub const GATEWAY_API_VERSION: &str = "v1.5.1";
/// The Go module that holds the Gateway API CRDs.
pub const GATEWAY_API_MODULE: &str = "sigs.k8s.io/gateway-api";
/// The binaries built from this Go module (each `cmd/<name>`).
pub const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The versions of `k8s.io/kubernetes` and etcd that `go_mod` requires.
pub fn versions(go_mod: &str) -> Result<(String, String), String> {
    let find = |module: &str| {
        go_mod
            .lines()
            .map(str::trim)
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(module)).then(|| words.next().map(str::to_owned))?
            })
            .ok_or_else(|| format!("go.mod requires no {module}"))
    };
    Ok((
        find("k8s.io/kubernetes")?,
        find("go.etcd.io/etcd/server/v3")?,
    ))
}

/// The directory of the Go module, from the repository root.
pub fn module_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("test-support").join("kube")
}

/// The cache directory of the binaries built from `go_mod`.
pub fn bin_dir(cache_root: &Path, go_mod: &str) -> Result<PathBuf, String> {
    let (kubernetes, etcd) = versions(go_mod)?;
    Ok(cache_root
        .join("kube")
        .join(format!("kubernetes-{kubernetes}-etcd-{etcd}"))
        .join("bin"))
}

/// The cache directory of the Gateway API CRDs: `standard/` and
/// `experimental/` (a superset: every kind, TCPRoute and UDPRoute included),
/// each holding the release's CRD manifests.
pub fn gateway_api_crds_dir(cache_root: &Path) -> PathBuf {
    cache_root.join(format!("gateway-api-{GATEWAY_API_VERSION}"))
}
