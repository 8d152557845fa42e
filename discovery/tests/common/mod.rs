//! Shared helpers of the discovery network tests.
//!
//! `Lan`: a private network-namespace guard (until testkit's netns guard
//! exists): one "hub" namespace holding a bridge, and N node namespaces each
//! joined to it by a veth pair. Node `i` has `eth0` with 198.18.0.(10+i)/24
//! (optional) and an IPv6 link-local address (DAD disabled so it is usable
//! at once), `lo` up and a multicast route. Everything is deleted on drop,
//! also when a test panics.
//!
//! `in_ns`: runs a closure on a fresh thread that first moves itself into a
//! node namespace (setns is per thread, and threads it spawns, such as the
//! mDNS responder's and a tokio runtime's, inherit the namespace), so every
//! socket a node opens lives in its namespace and nothing binds on the
//! host's own interfaces.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is a test prerequisite): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn in_netns(ns: &str, cmd: &[&str]) {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    ip(&args);
}

/// A bridge LAN of `n` node namespaces.
pub struct Lan {
    pub hub: String,
    pub nodes: Vec<String>,
}

impl Lan {
    /// `ipv4`: give each node an address in 198.18.0.0/24; without it the
    /// nodes only have IPv6 link-local addresses (a LAN with no DHCP).
    pub fn new(n: usize, ipv4: bool) -> Self {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("phd-{tag}-hub");
        let mut lan = Self {
            hub: hub.clone(),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &hub]);
        in_netns(
            &hub,
            &[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        in_netns(&hub, &["ip", "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("phd-{tag}-n{i}");
            ip(&["netns", "add", &ns]);
            lan.nodes.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            in_netns(&hub, &["ip", "link", "set", &port, "master", "br0"]);
            in_netns(&hub, &["ip", "link", "set", &port, "up"]);
            in_netns(
                &ns,
                &["sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0"],
            );
            in_netns(
                &ns,
                &["sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=0"],
            );
            in_netns(&ns, &["ip", "link", "set", "lo", "up"]);
            if ipv4 {
                let addr = format!("198.18.0.{}/24", 10 + i);
                in_netns(&ns, &["ip", "addr", "add", &addr, "dev", "eth0"]);
            }
            in_netns(&ns, &["ip", "link", "set", "eth0", "up"]);
            if ipv4 {
                in_netns(&ns, &["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            }
        }
        for ns in &lan.nodes {
            lan.wait_link_local(ns);
        }
        lan
    }

    /// The IPv4 address of node `i` (when created with IPv4).
    pub fn ipv4(&self, i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(198, 18, 0, 10 + i as u8)
    }

    /// Waits (bounded) until `eth0` in `ns` has a usable fe80:: address.
    fn wait_link_local(&self, ns: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link",
                ])
                .output()
                .expect("ip");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("fe80::") && !text.contains("tentative") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no IPv6 link-local address on eth0 in {ns} after 10 s");
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and so the
        // pair. Errors are ignored: the namespace may already be gone.
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns` (with a tokio
/// current-thread runtime), returning its join handle.
pub fn in_ns<T, F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
}

/// Joins a node thread, re-raising its panic with the node's name.
pub fn join<T>(name: &str, h: std::thread::JoinHandle<T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("node {name} failed: {msg}");
        }
    }
}

/// A trust-root fingerprint for tests.
pub fn root(byte: u8) -> discovery::RootTag {
    discovery::RootTag::from_fingerprint(&[byte; 32])
}

/// One mDNS node of a LAN test.
#[derive(Clone)]
pub struct MdnsNode {
    pub ns: String,
    pub id: String,
    pub root: discovery::RootTag,
    pub channel: String,
    pub http_port: u16,
    pub ipv4: bool,
    /// Stop browsing once this many peers are found (or at the deadline).
    pub want: usize,
    pub deadline: Duration,
}

/// What a node saw.
pub struct Seen {
    pub id: String,
    pub peers: Vec<discovery::Peer>,
    pub stats: discovery::mdns::BrowseStats,
    /// Greeting read over TCP from each found peer's first address.
    pub greetings: Vec<String>,
}

/// Starts a node: a tiny TCP "HTTP" listener on `http_port` that greets with
/// `phase <id>`, an mDNS advertisement, and a browse. After browsing, the node
/// connects to every peer it found, then keeps advertising until every node
/// of the test is done (`done` reaches `total`, bounded to 30 s).
pub fn spawn_mdns_node(
    node: MdnsNode,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    total: usize,
) -> std::thread::JoinHandle<Seen> {
    let ns = node.ns.clone();
    in_ns(&ns, move || async move {
        use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("::", node.http_port))
            .await
            .expect("bind greeter");
        let greeting = format!("phase {}\n", node.id);
        let greeter = tokio::spawn(async move {
            for _ in 0..64 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let _ = s.write_all(greeting.as_bytes()).await;
            }
        });
        let config = MdnsConfig {
            interfaces: vec!["eth0".into()],
            ipv4: node.ipv4,
            ipv6: true,
            allow_loopback: false,
        };
        let mdns = Mdns::new(&config).expect("mdns");
        let txt = discovery::PeerTxt {
            version: 1,
            id: node.id.clone(),
            root: node.root,
            timestamp_version: 7,
            channel: node.channel.clone(),
            port: Some(node.http_port),
        };
        let _ad = mdns.advertise(&txt, node.http_port).expect("advertise");
        let filter = BrowseFilter {
            root: Some(node.root),
            channel: Some(node.channel.clone()),
            self_id: Some(node.id.clone()),
        };
        let mut browser = mdns.browse(filter, node.deadline).expect("browse");
        let mut peers = Vec::new();
        while peers.len() < node.want {
            match browser.next().await {
                Some(p) => peers.push(p),
                None => break,
            }
        }
        let stats = browser.stats().clone();
        drop(browser);
        let mut greetings = Vec::new();
        for p in &peers {
            let addr = p.addrs[0];
            let mut s =
                tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| panic!("connect to {addr} ({}) timed out", p.id))
                    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            let mut buf = String::new();
            tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut buf))
                .await
                .expect("greeting timed out")
                .expect("read greeting");
            greetings.push(buf.trim().to_owned());
        }
        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let start = Instant::now();
        while done.load(std::sync::atomic::Ordering::SeqCst) < total
            && start.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        greeter.abort();
        Seen {
            id: node.id,
            peers,
            stats,
            greetings,
        }
    })
}

/// Runs `nodes` together and returns what each saw.
pub fn run_mdns_nodes(nodes: Vec<MdnsNode>) -> Vec<Seen> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = nodes.len();
    let handles: Vec<_> = nodes
        .into_iter()
        .map(|n| (n.id.clone(), spawn_mdns_node(n, done.clone(), total)))
        .collect();
    handles.into_iter().map(|(id, h)| join(&id, h)).collect()
}

/// Nodes `node-0..n` on `lan`, all with root `root(1)`, channel `stable`.
pub fn lan_nodes(lan: &Lan, ipv4: bool) -> Vec<MdnsNode> {
    lan.nodes
        .iter()
        .enumerate()
        .map(|(i, ns)| MdnsNode {
            ns: ns.clone(),
            id: format!("node-{i}"),
            root: root(1),
            channel: "stable".into(),
            http_port: 8080,
            ipv4,
            want: lan.nodes.len() - 1,
            deadline: Duration::from_secs(15),
        })
        .collect()
}

/// Stops a child started as `ip netns exec NS timeout N CMD...`: SIGTERM to
/// `timeout` (which passes it on to CMD), bounded wait, then SIGKILL.
pub fn stop_child(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
