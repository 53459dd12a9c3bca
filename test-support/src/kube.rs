//! A real Kubernetes control plane for tests: etcd and kube-apiserver, and
//! on request kube-controller-manager and kube-scheduler, as child processes
//! on loopback (feature `kube`).
//!
//! The binaries are the upstream ones, built from the Go module in
//! `test-support/kube` by `cargo xtask setup` into the cache keyed on their
//! versions. [`ControlPlane::start`] generates a CA, the API server's serving
//! certificate and service-account key, and an admin identity
//! (`system:masters`), starts the processes on free loopback ports with
//! `--authorization-mode=Node,RBAC`, and waits until `/readyz` answers.
//! [`ControlPlane::identity`] mints a client certificate for any user and
//! groups, so a test can act as a tenant. Dropping the control plane kills
//! every process and removes its directory, also when the test panics.
//!
//! ```no_run
//! # async fn example() -> Result<(), epic_test_support::kube::Error> {
//! use epic_test_support::kube::{ControlPlane, Options};
//!
//! let platform = ControlPlane::start("platform", Options::default()).await?;
//! let admin = platform.client().await?;
//! let tenant = platform.client_as("tenant-acme", &["epic:tenants"]).await?;
//! # let _ = (admin, tenant); Ok(()) }
//! ```

use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[path = "../../epic-bpf/ebpf_toolchain.rs"]
mod ebpf_toolchain;
#[path = "../kube/toolchain.rs"]
mod toolchain;

mod manifests;

pub use manifests::{
    apply_manifests, ensure_namespace, gateway_api_crds, render_chart, tenant_platform,
};

/// What goes wrong starting or using a control plane.
#[derive(Debug)]
pub enum Error {
    /// A binary of the control plane is not in the cache.
    MissingBinary(PathBuf),
    /// A file of the control plane could not be written or read.
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A process could not be started.
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Generating a certificate or key failed.
    Certificate(String),
    /// The API server did not become ready in time.
    NotReady {
        /// What was waited for.
        what: String,
        /// The tail of the process logs.
        logs: String,
    },
    /// A client could not be built or a request failed.
    Client(String),
    /// A manifest could not be read or applied.
    Manifest(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingBinary(path) => write!(
                f,
                "{} is missing: run `cargo xtask setup`, which builds the Kubernetes test binaries",
                path.display()
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Spawn { program, source } => write!(f, "cannot start {program}: {source}"),
            Error::Certificate(e) => write!(f, "generating certificates: {e}"),
            Error::NotReady { what, logs } => write!(f, "{what} did not become ready:\n{logs}"),
            Error::Client(e) => write!(f, "Kubernetes client: {e}"),
            Error::Manifest(e) => write!(f, "manifest: {e}"),
        }
    }
}

impl std::error::Error for Error {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

/// Which optional components a control plane runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run kube-controller-manager (EndpointSlices, StatefulSets,
    /// ServiceAccounts, garbage collection, ...).
    pub controller_manager: bool,
    /// Run kube-scheduler (Pods get nodes).
    pub scheduler: bool,
}

/// The cache directory holding the control plane's binaries.
pub fn bin_dir() -> Result<PathBuf, Error> {
    let module = toolchain::module_dir(&repo_root());
    let go_mod_path = module.join("go.mod");
    let go_mod = std::fs::read_to_string(&go_mod_path).map_err(io(&go_mod_path))?;
    let cache = ebpf_toolchain::cache_root().map_err(Error::Client)?;
    toolchain::bin_dir(&cache, &go_mod).map_err(Error::Client)
}

/// The cache directory of the Gateway API CRDs (`standard/`, `experimental/`).
pub fn gateway_api_crds_dir() -> Result<PathBuf, Error> {
    let cache = ebpf_toolchain::cache_root().map_err(Error::Client)?;
    Ok(toolchain::gateway_api_crds_dir(&cache))
}

/// The repository root: the nearest ancestor of the running test's package
/// directory (`CARGO_MANIFEST_DIR` at run time, which cargo sets) that holds
/// `test-support/`, else the parent of `test-support/` as it was built. A
/// test binary kept from a build in another clone must not look there.
pub fn repo_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives inside the repository")
        .to_path_buf();
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| {
            dir.ancestors()
                .find(|a| a.join("test-support/Cargo.toml").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or(built)
}

/// The certificate authority of one control plane: signs the API server's
/// serving certificate and every client identity.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("epic-test-ca-{name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(cert_error)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(cert_error)?;
        Ok(Authority { issuer })
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and key (both PEM) for `names` (DNS names or IPs).
    fn serving(&self, names: &[&str]) -> Result<(String, String), Error> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(cert_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate and key (both PEM): user `user`, groups `groups`.
    fn client(&self, user: &str, groups: &[&str]) -> Result<(String, String), Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<(String, String), Error> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A kubeconfig file for one identity against one API server.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The path of the kubeconfig file (client certificate embedded).
    pub kubeconfig: PathBuf,
    /// The user name the API server sees.
    pub user: String,
}

impl Identity {
    /// A client acting as this identity.
    pub async fn client(&self) -> Result<Client, Error> {
        client_from(&self.kubeconfig).await
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Result<Client, Error> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

/// One running process of the control plane, killed on drop.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The loopback ports handed to control planes: below Linux's default
/// ephemeral range (32768–60999), so no outgoing connection of this or any
/// other process is given one of them between the check and the bind.
const PORTS: std::ops::Range<u16> = 20000..32000;

/// A free TCP port on loopback from [`PORTS`], never the same twice in one
/// process; processes start at different offsets (by pid).
fn free_port() -> Result<u16, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut last = None;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + offset as u16;
        match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Spawn {
        program: format!("a loopback listener in {PORTS:?}"),
        source: last.unwrap_or_else(|| std::io::Error::other("no port tried")),
    })
}

fn unique_dir(name: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "epic-kube-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// A running control plane: etcd and kube-apiserver (plus the optional
/// components), its CA and an admin identity. Everything stops and its
/// directory is removed on drop.
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    authority: Authority,
    url: String,
    admin: Identity,
    // Dropped in reverse start order: controllers, then the API server, then etcd.
    processes: Vec<Process>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        if std::env::var_os("EPIC_KEEP_KUBE").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How often [`ControlPlane::start`] tries again when a port it chose was
/// taken before etcd or the API server could bind it.
const START_ATTEMPTS: u32 = 3;

/// The service CIDR of every test control plane: a benchmarking range, never
/// routed, large enough (65,534 cluster IPs) for the 10,000-Service scenario.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and what `options` asks for) and
    /// waits until the API server is ready. `name` tells two control planes
    /// of one test apart (e.g. `platform`, `user`).
    pub async fn start(name: &str, options: Options) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::start_once(name, options.clone()).await {
                Err(Error::NotReady { logs, .. })
                    if attempt < START_ATTEMPTS && logs.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(name: &str, options: Options) -> Result<Self, Error> {
        let bin = bin_dir()?;
        for binary in toolchain::BINARIES {
            if !bin.join(binary).is_file() {
                return Err(Error::MissingBinary(bin.join(binary)));
            }
        }
        let dir = unique_dir(name)?;
        let authority = Authority::new(name)?;
        let mut plane = ControlPlane {
            name: name.to_owned(),
            url: String::new(),
            admin: Identity {
                kubeconfig: PathBuf::new(),
                user: String::new(),
            },
            dir,
            authority,
            processes: Vec::new(),
        };
        let etcd_url = plane.start_etcd(&bin)?;
        plane.start_apiserver(&bin, &etcd_url)?;
        plane.admin = plane.identity("epic-test-admin", &["system:masters"])?;
        plane.wait_ready().await?;
        if options.controller_manager {
            plane.start_controller_manager(&bin)?;
        }
        if options.scheduler {
            plane.start_scheduler(&bin)?;
        }
        Ok(plane)
    }

    /// The API server's URL, e.g. `https://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin identity (`system:masters`).
    pub fn admin(&self) -> &Identity {
        &self.admin
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> Result<Client, Error> {
        self.admin.client().await
    }

    /// A new identity: a client certificate for `user` in `groups`, in a
    /// kubeconfig file of its own.
    pub fn identity(&self, user: &str, groups: &[&str]) -> Result<Identity, Error> {
        let (cert, key) = self.authority.client(user, groups)?;
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("kubeconfig-{safe}"));
        self.write_kubeconfig(&path, &cert, &key)?;
        Ok(Identity {
            kubeconfig: path,
            user: user.to_owned(),
        })
    }

    /// A client acting as `user` in `groups`.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        self.identity(user, groups)?.client().await
    }

    /// The directory this control plane keeps its files in (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_kubeconfig(&self, path: &Path, cert: &str, key: &str) -> Result<(), Error> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: user\ncurrent-context: {name}\n",
            name = self.name,
            url = self.url,
            ca = b64(&self.authority.pem()),
            cert = b64(cert),
            key = b64(key),
        );
        std::fs::write(path, text).map_err(io(path))
    }

    fn write(&self, file: &str, contents: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(file);
        std::fs::write(&path, contents).map_err(io(&path))?;
        Ok(path)
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) -> Result<(), Error> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io(&log))?;
        let err = out.try_clone().map_err(io(&log))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    fn start_etcd(&mut self, bin: &Path) -> Result<String, Error> {
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = self.dir.join("etcd");
        let args = [
            "--name=default".to_owned(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        self.spawn("etcd", &bin.join("etcd"), &args)?;
        Ok(client_url)
    }

    fn start_apiserver(&mut self, bin: &Path, etcd_url: &str) -> Result<(), Error> {
        let port = free_port()?;
        self.url = format!("https://127.0.0.1:{port}");
        let ca = self.write("ca.crt", &self.authority.pem())?;
        let (cert, key) =
            self.authority
                .serving(&["127.0.0.1", "localhost", "kubernetes.default.svc"])?;
        let cert = self.write("apiserver.crt", &cert)?;
        let key = self.write("apiserver.key", &key)?;
        let sa = KeyPair::generate().map_err(cert_error)?;
        let sa_key = self.write("service-account.key", &sa.serialize_pem())?;
        let sa_pub = self.write("service-account.pub", &sa.public_key_pem())?;
        let p = |path: &Path| path.display().to_string();
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", p(&self.dir.join("certs"))),
            format!("--tls-cert-file={}", p(&cert)),
            format!("--tls-private-key-file={}", p(&key)),
            format!("--client-ca-file={}", p(&ca)),
            format!("--service-account-key-file={}", p(&sa_pub)),
            format!("--service-account-signing-key-file={}", p(&sa_key)),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        self.spawn("kube-apiserver", &bin.join("kube-apiserver"), &args)
    }

    fn component_kubeconfig(&self, user: &str) -> Result<PathBuf, Error> {
        Ok(self.identity(user, &["system:masters"])?.kubeconfig)
    }

    fn start_controller_manager(&mut self, bin: &Path) -> Result<(), Error> {
        let kubeconfig = self.component_kubeconfig("system:kube-controller-manager")?;
        let p = |path: &Path| path.display().to_string();
        let args = vec![
            format!("--kubeconfig={}", p(&kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&kubeconfig)),
            format!("--root-ca-file={}", p(&self.dir.join("ca.crt"))),
            format!(
                "--service-account-private-key-file={}",
                p(&self.dir.join("service-account.key"))
            ),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--leader-elect=false".to_owned(),
            "--use-service-account-credentials=false".to_owned(),
            "--secure-port=0".to_owned(),
            "--controllers=*,-node-lifecycle-controller,-node-ipam-controller".to_owned(),
            "--concurrent-gc-syncs=5".to_owned(),
            "--v=1".to_owned(),
        ];
        self.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &args,
        )
    }

    fn start_scheduler(&mut self, bin: &Path) -> Result<(), Error> {
        let kubeconfig = self.component_kubeconfig("system:kube-scheduler")?;
        let p = |path: &Path| path.display().to_string();
        let args = vec![
            format!("--kubeconfig={}", p(&kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&kubeconfig)),
            "--leader-elect=false".to_owned(),
            "--secure-port=0".to_owned(),
            "--v=1".to_owned(),
        ];
        self.spawn("kube-scheduler", &bin.join("kube-scheduler"), &args)
    }

    /// The last lines of every process log, for error messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for process in &self.processes {
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- {} ({})\n",
                process.name,
                process.log.display()
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Waits (at most 90 s) until `/readyz` answers `ok` to the admin.
    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            for process in &mut self.processes {
                if let Ok(Some(status)) = process.child.try_wait() {
                    return Err(Error::NotReady {
                        what: format!("{} (exited with {status})", process.name),
                        logs: self.logs(),
                    });
                }
            }
            match self.readyz().await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::NotReady {
            what: format!("kube-apiserver at {} ({last})", self.url),
            logs: self.logs(),
        })
    }

    async fn readyz(&self) -> Result<String, Error> {
        let client = self.client().await?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Client(e.to_string()))?;
        client
            .request_text(request)
            .await
            .map_err(|e| Error::Client(e.to_string()))
    }
}
