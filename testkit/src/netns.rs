//! Network-namespace guards for multi-host tests (model: aya's
//! `test/integration-test/src/netns.rs`).
//!
//! [`Lan`]: one "hub" namespace holding a bridge `br0`, and N node
//! namespaces each joined to it by a veth pair (`eth0` in the node, `p<i>`
//! on the bridge). Node `i` gets `198.18.0.(10+i)/24` when asked (addresses
//! only from 198.18.0.0/15) and always an IPv6 link-local address (DAD off,
//! usable at once). Nothing is created in the host's own namespace, and
//! everything is deleted on drop, also when a test panics.
//!
//! QEMU guests join the same bridge through tap devices: [`Lan::add_tap`]
//! creates `tap<k>` inside the hub namespace (never in the host's), attached
//! to `br0`, and [`crate::qemu::Qemu::tap`] runs QEMU under `ip netns exec
//! <hub>` with a virtio NIC on it. Long-running programs in a node (`phase
//! serve --mdns`) go through [`spawn`], whose guard kills them on drop.
//!
//! Run code inside a node with [`in_ns`] (a thread that `setns`es itself,
//! then runs a tokio runtime: every socket it opens lives in the node), or a
//! program with [`command`] (`ip netns exec`). Traffic shaping and firewall
//! rules (`tc`, `nft`) go inside a node with [`exec`], so they never touch
//! the host.

use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A failure setting up or using a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not be started (iproute2/nftables missing?).
    #[error("cannot run {cmd} (iproute2 and nftables are test prerequisites)")]
    Spawn {
        /// The command.
        cmd: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its stderr.
        stderr: String,
    },
    /// An address did not become usable in time.
    #[error("no IPv6 link-local address on eth0 in {0} after 10 s")]
    NoLinkLocal(String),
}

fn run(program: &str, args: &[&str]) -> Result<Output, NetnsError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Runs `ip args...` in the host namespace (only namespace management).
pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    run("ip", args).map(|_| ())
}

/// Runs `cmd` inside namespace `ns` and returns its output (error if it fails).
pub fn exec(ns: &str, cmd: &[&str]) -> Result<Output, NetnsError> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    run("ip", &args)
}

/// A `Command` that runs `program` inside namespace `ns`.
pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// A bridge LAN of node namespaces; deleted on drop.
#[derive(Debug)]
pub struct Lan {
    /// The namespace holding the bridge.
    pub hub: String,
    /// The node namespaces.
    pub nodes: Vec<String>,
    /// The tap devices made by [`Lan::add_tap`] (they live in `hub`).
    pub taps: Vec<Tap>,
}

/// A tap device on the LAN's bridge, for one QEMU NIC
/// ([`crate::qemu::Qemu::tap`]). It lives in the hub namespace and goes
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// The namespace that holds the device (the LAN's hub).
    pub ns: String,
    /// The device name, `tap<k>`.
    pub ifname: String,
    /// The MAC address to give the guest's NIC: `52:54:00:18:00:<k>`.
    pub mac: String,
}

impl Tap {
    /// The guest's IPv6 link-local address (EUI-64 from [`Tap::mac`], which
    /// is what the Linux kernel assigns by default).
    pub fn guest_link_local(&self) -> std::net::Ipv6Addr {
        let b: Vec<u8> = self
            .mac
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap_or(0))
            .collect();
        let w = |hi: u8, lo: u8| (u16::from(hi) << 8) | u16::from(lo);
        std::net::Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            w(b[0] ^ 0x02, b[1]),
            w(b[2], 0xff),
            w(0xfe, b[3]),
            w(b[4], b[5]),
        )
    }
}

impl Lan {
    /// `n` nodes; `ipv4` gives node `i` the address 198.18.0.(10+i)/24.
    pub fn new(n: usize, ipv4: bool) -> Result<Self, NetnsError> {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("phase-{tag}-hub");
        ip(&["netns", "add", &hub])?;
        let mut lan = Self {
            hub: hub.clone(),
            nodes: Vec::new(),
            taps: Vec::new(),
        };
        exec(
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
        )?;
        exec(&hub, &["ip", "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("phase-{tag}-n{i}");
            ip(&["netns", "add", &ns])?;
            lan.nodes.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            exec(&hub, &["ip", "link", "set", &port, "master", "br0"])?;
            exec(&hub, &["ip", "link", "set", &port, "up"])?;
            exec(
                &ns,
                &["sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0"],
            )?;
            exec(&ns, &["ip", "link", "set", "lo", "up"])?;
            if ipv4 {
                let addr = format!("{}/24", Self::ipv4_of(i));
                exec(&ns, &["ip", "addr", "add", &addr, "dev", "eth0"])?;
            }
            exec(&ns, &["ip", "link", "set", "eth0", "up"])?;
            if ipv4 {
                exec(&ns, &["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            }
        }
        for ns in &lan.nodes {
            wait_link_local(ns)?;
        }
        Ok(lan)
    }

    fn ipv4_of(i: usize) -> std::net::Ipv4Addr {
        // Node counts stay far below 245 in tests.
        std::net::Ipv4Addr::new(198, 18, 0, 10u8.saturating_add(i as u8))
    }

    /// The IPv4 address of node `i` (when created with `ipv4`).
    pub fn ipv4(&self, i: usize) -> std::net::Ipv4Addr {
        Self::ipv4_of(i)
    }

    /// The namespace name of node `i`.
    pub fn node(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// The IPv6 link-local address of node `i`'s `eth0` (for a URL it needs
    /// the zone: `http://[fe80::..%eth0]:port` from inside another node).
    pub fn link_local(&self, i: usize) -> Result<std::net::Ipv6Addr, NetnsError> {
        let out = exec(
            self.node(i),
            &[
                "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| NetnsError::NoLinkLocal(self.node(i).to_owned()))
    }

    /// A new tap device `tap<k>` in the hub namespace, attached to `br0`
    /// and up, for a QEMU guest ([`crate::qemu::Qemu::tap`]). Deleted with
    /// the LAN.
    pub fn add_tap(&mut self) -> Result<Tap, NetnsError> {
        let k = self.taps.len();
        let ifname = format!("tap{k}");
        exec(
            &self.hub,
            &["ip", "tuntap", "add", "dev", &ifname, "mode", "tap"],
        )?;
        exec(&self.hub, &["ip", "link", "set", &ifname, "master", "br0"])?;
        exec(&self.hub, &["ip", "link", "set", &ifname, "up"])?;
        let tap = Tap {
            ns: self.hub.clone(),
            ifname,
            // Guests count far below 256 in tests.
            mac: format!("52:54:00:18:00:{:02x}", k as u8),
        };
        self.taps.push(tap.clone());
        Ok(tap)
    }
}

fn wait_link_local(ns: &str) -> Result<(), NetnsError> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let out = exec(
            ns,
            &["ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("fe80::") && !text.contains("tentative") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(NetnsError::NoLinkLocal(ns.to_string()))
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends and so the pairs.
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A program started by [`spawn`]; killed (SIGKILL) and reaped on drop,
/// also when the test panics.
#[derive(Debug)]
pub struct Daemon {
    /// The running program (`ip netns exec` execs it: this is its pid).
    pub child: std::process::Child,
}

impl Daemon {
    /// Whether it is still running (`Some(status)` once it exited).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (built with [`command`], so it runs in a node) and returns
/// a guard that kills it on drop.
pub fn spawn(cmd: &mut Command) -> Result<Daemon, NetnsError> {
    let child = cmd.spawn().map_err(|source| NetnsError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    Ok(Daemon { child })
}

/// Runs `f` on a new thread inside namespace `ns`, with a tokio runtime of
/// `workers` threads (0: current-thread). Threads the runtime spawns
/// inherit the namespace.
pub fn in_ns<T, F, Fut>(ns: &str, workers: usize, f: F) -> std::thread::JoinHandle<T>
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
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        }
        .expect("tokio runtime");
        let out = rt.block_on(f());
        rt.shutdown_background();
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_guest_link_local_is_the_eui64_of_its_mac() {
        let tap = |mac: &str| Tap {
            ns: "x".into(),
            ifname: "tap0".into(),
            mac: mac.into(),
        };
        assert_eq!(
            tap("52:54:00:18:00:00").guest_link_local().to_string(),
            "fe80::5054:ff:fe18:0"
        );
        assert_eq!(
            tap("52:54:00:12:34:56").guest_link_local().to_string(),
            "fe80::5054:ff:fe12:3456"
        );
    }
}
