//! Shared helpers of the discovery network tests: LANs of network
//! namespaces (testkit's netns guard), nodes that advertise and browse by
//! mDNS inside them, and child-process handling.
//!
//! Node code runs on a thread that `setns`es itself into its namespace
//! (`in_ns`; threads it spawns, such as the mDNS responder's, inherit the
//! namespace), so every socket a node opens lives in its namespace and
//! nothing binds on the host's own interfaces.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

pub use testkit::netns::Lan;

/// A bridge LAN of `n` node namespaces (testkit); `ipv4` gives node `i`
/// 198.18.0.(10+i)/24, otherwise only IPv6 link-local (a LAN without DHCP).
pub fn lan(n: usize, ipv4: bool) -> Lan {
    Lan::new(n, ipv4).unwrap_or_else(|e| panic!("cannot build the test LAN: {e}"))
}

/// Runs `f` on a new thread inside network namespace `ns`, on a tokio
/// current-thread runtime.
pub fn in_ns<T, F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    testkit::netns::in_ns(ns, 0, f)
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
