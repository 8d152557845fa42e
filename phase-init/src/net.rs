//! Network bring-up for stage 1: every wired interface up, DHCPv4 on all
//! of them in parallel (mozim, applied with rtnetlink), IPv6 link-local
//! (the kernel's own, once the link is up), DNS servers from the leases
//! into `/etc/resolv.conf`.
//!
//! A LAN without a DHCP server still works over IPv6 link-local (local
//! mode): a missing lease is a warning, not a failure. The lease is not
//! renewed — stage 1 kexecs long before it runs out.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use mozim::{DhcpV4Client, DhcpV4Config, DhcpV4State};

use crate::step::Status;

/// The DHCPv4 options private mode asks for: subnet mask (1), router (3),
/// DNS servers (6), MTU (26) — nothing about names (host name 12, domain
/// 15, search 119) or time (NTP 42).
pub const PRIVATE_DHCP_OPTIONS: [u8; 4] = [1, 3, 6, 26];

/// A wired interface found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// The kernel driver bound to its device (`device/driver`, e.g.
    /// `e1000e`, `r8169`, `cdc_ether`), `None` for a virtual interface.
    pub driver: Option<String>,
}

/// What one interface ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceReport {
    pub name: String,
    pub driver: Option<String>,
    pub ipv4: Result<Lease4, String>,
    pub ipv6_link_local: Option<Ipv6Addr>,
    /// Private mode: the random MAC the NIC got, or why the driver kept
    /// its own. `None` in the other modes.
    pub random_mac: Option<Result<[u8; 6], String>>,
}

/// The parts of a DHCPv4 lease we apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease4 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
}

impl fmt::Display for IfaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(Ok(m)) = &self.random_mac {
            write!(f, " mac {} (random)", crate::private::format_mac(m))?;
        }
        if let Ok(l) = &self.ipv4 {
            write!(f, " {}/{}", l.addr, l.prefix)?;
            if let Some(gw) = l.gateway {
                write!(f, " gw {gw}")?;
            }
        }
        if let Some(ll) = self.ipv6_link_local {
            write!(f, " {ll}")?;
        }
        if let Some(d) = &self.driver {
            write!(f, " [{d}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot start the network runtime")]
    Runtime(#[source] io::Error),
    #[error("cannot open a netlink socket")]
    Netlink(#[source] io::Error),
    #[error("cannot bring {0} up")]
    LinkUp(String, #[source] rtnetlink::Error),
}

/// Wired interfaces under `sys_class_net` (`/sys/class/net`): Ethernet
/// (`type` 1), not loopback, not wireless, with a 6-byte MAC; by name.
pub fn wired_interfaces(sys_class_net: &Path) -> Vec<Iface> {
    let Ok(dir) = std::fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).map(|s| s.trim().to_owned());
        if name == "lo" || p.join("wireless").exists() || read("type").ok().as_deref() != Some("1")
        {
            continue;
        }
        let (Ok(Ok(index)), Ok(Some(mac))) = (
            read("ifindex").map(|s| s.parse::<u32>()),
            read("address").map(|s| crate::private::parse_mac(&s)),
        ) else {
            continue;
        };
        let driver = std::fs::read_link(p.join("device/driver"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
        out.push(Iface {
            name,
            index,
            mac,
            driver,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The usable (not tentative) IPv6 link-local address of `iface` in
/// `/proc/net/if_inet6` text.
pub fn link_local(if_inet6: &str, iface: &str) -> Option<Ipv6Addr> {
    const IFA_F_TENTATIVE: u32 = 0x40;
    for line in if_inet6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != iface || f[3] != "20" {
            continue; // scope 0x20 = link
        }
        let flags = u32::from_str_radix(f[4], 16).ok()?;
        if flags & IFA_F_TENTATIVE != 0 {
            continue;
        }
        let bits = u128::from_str_radix(f[0], 16).ok()?;
        return Some(Ipv6Addr::from(bits));
    }
    None
}

/// `/etc/resolv.conf` for the DNS servers of all leases (deduplicated).
pub fn resolv_conf(reports: &[IfaceReport]) -> Option<String> {
    let mut servers: Vec<Ipv4Addr> = Vec::new();
    for r in reports {
        if let Ok(l) = &r.ipv4 {
            for d in &l.dns {
                if !servers.contains(d) {
                    servers.push(*d);
                }
            }
        }
    }
    if servers.is_empty() {
        return None;
    }
    let mut s = String::from("# written by phase-init from DHCPv4 leases\n");
    for d in servers {
        s.push_str(&format!("nameserver {d}\n"));
    }
    Some(s)
}

/// Brings every wired interface up and configures it; waits at most
/// `dhcp_timeout` for leases. Returns one report per interface (empty: no
/// wired interface).
///
/// With a private-mode `identity`, every NIC first gets a random locally
/// administered MAC (while its link is still down; recorded in
/// `identity.macs`), and DHCP sends no host name and a client identifier
/// made of that random MAC ([`crate::private`]).
pub fn bring_up(
    dhcp_timeout: Duration,
    identity: Option<&mut crate::private::Identity>,
) -> Result<Vec<IfaceReport>, NetError> {
    let ifaces = wired_interfaces(Path::new("/sys/class/net"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::Runtime)?;
    let reports = rt.block_on(configure(ifaces, dhcp_timeout, identity))?;
    if let Some(text) = resolv_conf(&reports) {
        // Best effort: a failure only costs name resolution.
        let _ = std::fs::create_dir_all("/etc");
        let _ = std::fs::write("/etc/resolv.conf", text);
    }
    Ok(reports)
}

async fn configure(
    mut ifaces: Vec<Iface>,
    dhcp_timeout: Duration,
    identity: Option<&mut crate::private::Identity>,
) -> Result<Vec<IfaceReport>, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Netlink)?;
    tokio::spawn(conn);
    if let Ok(lo) = std::fs::read_to_string("/sys/class/net/lo/ifindex") {
        if let Ok(i) = lo.trim().parse::<u32>() {
            let _ = link_up(&handle, i).await;
        }
    }
    let private = identity.is_some();
    let mut macs: Vec<Option<Result<[u8; 6], String>>> = vec![None; ifaces.len()];
    if let Some(id) = identity {
        for (i, slot) in ifaces.iter_mut().zip(macs.iter_mut()) {
            let r = randomize_mac(&handle, i, crate::private::mac_for(id, &i.name)).await;
            if let Ok(m) = &r {
                i.mac = *m;
                id.macs.retain(|(n, _)| n != &i.name);
                id.macs
                    .push((i.name.clone(), crate::private::format_mac(m)));
            }
            *slot = Some(r);
        }
    }
    // Private mode: a NIC that kept its burnt-in MAC stays down.
    let usable = |m: &Option<Result<[u8; 6], String>>| !matches!(m, Some(Err(_)));
    for (i, m) in ifaces.iter().zip(&macs) {
        if usable(m) {
            link_up(&handle, i.index)
                .await
                .map_err(|e| NetError::LinkUp(i.name.clone(), e))?;
        }
    }
    let leases = futures_util::future::join_all(ifaces.iter().zip(&macs).map(|(i, m)| {
        let up = usable(m);
        let (handle, i) = (handle.clone(), i.clone());
        async move {
            if !up {
                Err("left down".to_owned())
            } else if dhcp_timeout.is_zero() {
                Err(DHCP_OFF.to_owned())
            } else {
                dhcp(handle, i, dhcp_timeout, private).await
            }
        }
    }))
    .await;
    // The kernel assigns the link-local address itself; DAD takes about a
    // second after carrier. Wait for it within the same budget.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reports: Vec<IfaceReport> = Vec::new();
    for ((i, ipv4), random_mac) in ifaces.iter().zip(leases).zip(macs) {
        let ll = loop {
            let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
            if let Some(a) = link_local(&text, &i.name) {
                break Some(a);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        reports.push(IfaceReport {
            name: i.name.clone(),
            driver: i.driver.clone(),
            ipv4,
            ipv6_link_local: ll,
            random_mac,
        });
    }
    Ok(reports)
}

/// Gives `i` the MAC `want` (or a fresh random one) while its link is down,
/// then reads the address back from sysfs: a driver that accepted the call
/// but kept its address counts as a refusal.
async fn randomize_mac(
    handle: &rtnetlink::Handle,
    i: &Iface,
    want: Option<[u8; 6]>,
) -> Result<[u8; 6], String> {
    let mac = match want {
        Some(m) => m,
        None => crate::private::random_mac().map_err(|e| format!("no random bytes: {e}"))?,
    };
    let _ = handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(i.index)
                .down()
                .build(),
        )
        .execute()
        .await;
    handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(i.index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| format!("the driver refused a new MAC: {e}"))?;
    let now = std::fs::read_to_string(format!("/sys/class/net/{}/address", i.name))
        .ok()
        .and_then(|s| crate::private::parse_mac(s.trim()));
    if now != Some(mac) {
        return Err("the driver kept its own MAC".into());
    }
    Ok(mac)
}

/// The target's side of the private identity: every wired NIC gets the MAC
/// stage 1 gave it (`identity.macs`, from `boot.json`; a fresh random one
/// for a NIC not listed), before any service brings a link up. Returns one
/// line per NIC for the console.
pub fn apply_private_macs(identity: &crate::private::Identity) -> Result<Vec<String>, NetError> {
    let ifaces = wired_interfaces(Path::new("/sys/class/net"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::Runtime)?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Netlink)?;
        tokio::spawn(conn);
        let mut out = Vec::new();
        for i in &ifaces {
            let line =
                match randomize_mac(&handle, i, crate::private::mac_for(identity, &i.name)).await {
                    Ok(m) => format!("{} mac {} (random)", i.name, crate::private::format_mac(&m)),
                    Err(e) => format!(
                        "{}: {e}; it keeps its own MAC {}",
                        i.name,
                        crate::private::format_mac(&i.mac)
                    ),
                };
            out.push(line);
        }
        Ok(out)
    })
}

async fn link_up(handle: &rtnetlink::Handle, index: u32) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
}

/// One DHCPv4 exchange on `i`, applied: address, default route. Never a
/// host name option; in private mode the client identifier is the
/// (random) MAC `i` carries now, and the host name is not even requested.
async fn dhcp(
    handle: rtnetlink::Handle,
    i: Iface,
    timeout: Duration,
    private: bool,
) -> Result<Lease4, String> {
    let mut cfg = DhcpV4Config::new(&i.name);
    cfg.set_iface_index(i.index);
    cfg.set_iface_mac_raw(&i.mac).map_err(|e| e.to_string())?;
    if private {
        cfg.use_mac_as_client_id();
        cfg.override_request_dhcp_opts(&PRIVATE_DHCP_OPTIONS);
    }
    cfg.set_timeout_sec(timeout.as_secs().max(1) as u32);
    let got = tokio::time::timeout(timeout, async {
        let mut cli = DhcpV4Client::init(cfg, None)
            .await
            .map_err(|e| e.to_string())?;
        // Bounded by the timeout around this block.
        loop {
            match cli.run().await.map_err(|e| e.to_string())? {
                DhcpV4State::Done(lease) => return Ok::<_, String>(*lease),
                _ => continue,
            }
        }
    })
    .await
    .map_err(|_| format!("no DHCPv4 lease within {} s", timeout.as_secs()))??;
    let lease = Lease4 {
        addr: got.yiaddr,
        prefix: got.prefix_length(),
        gateway: got.gateways.as_ref().and_then(|g| g.first().copied()),
        dns: got.dns_srvs.clone().unwrap_or_default(),
        lease_secs: got.lease_time_sec,
    };
    handle
        .address()
        .add(i.index, IpAddr::V4(lease.addr), lease.prefix)
        .execute()
        .await
        .map_err(|e| format!("cannot add {}/{}: {e}", lease.addr, lease.prefix))?;
    if let Some(gw) = lease.gateway {
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(i.index)
            .build();
        match handle.route().add(route).execute().await {
            Ok(()) => {}
            // Another interface's lease set the default route first: this
            // lease still holds, on its own subnet.
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| c.get()) == Some(-libc::EEXIST) =>
            {
                tracing::debug!(iface = %i.name, %gw, "a default route exists already");
            }
            Err(e) => return Err(format!("cannot add the default route via {gw}: {e}")),
        }
    }
    Ok(lease)
}

/// Why an interface has no lease when `phase.dhcp_timeout=0` asked for none.
const DHCP_OFF: &str = "DHCPv4 off (phase.dhcp_timeout=0)";

/// The `network` boot step: every wired interface up, DHCPv4 in parallel
/// (waiting at most `dhcp_timeout`; zero asks for no lease), IPv6
/// link-local; in private mode each with a random MAC first.
pub fn step(
    identity: Option<&mut crate::private::Identity>,
    dhcp_timeout: Duration,
) -> ((), Status) {
    match bring_up(dhcp_timeout, identity) {
        Ok(r) if r.is_empty() => ((), Status::ok("no wired interfaces")),
        Ok(reports) => {
            let detail = reports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let problems = reports
                .iter()
                .filter_map(|r| {
                    if let Some(Err(e)) = &r.random_mac {
                        return Some(format!("{}: {e}; private mode leaves it down", r.name));
                    }
                    let e = r.ipv4.as_ref().err()?;
                    if dhcp_timeout.is_zero() && r.ipv6_link_local.is_some() {
                        return None; // link-local only, as asked
                    }
                    Some(match r.ipv6_link_local {
                        Some(_) => format!("{}: {e}; IPv6 link-local only", r.name),
                        None => format!("{}: {e}; and no IPv6 link-local address", r.name),
                    })
                })
                .collect();
            ((), Status::with_problems(detail, problems))
        }
        Err(e) => ((), Status::fail(crate::step::chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wired_interfaces_skip_loopback_wireless_and_non_ethernet() {
        let d = tempfile::tempdir().expect("tempdir");
        let mk = |name: &str, ty: &str, idx: &str, mac: &str, wireless: bool| {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("type"), format!("{ty}\n")).expect("write");
            std::fs::write(p.join("ifindex"), format!("{idx}\n")).expect("write");
            std::fs::write(p.join("address"), format!("{mac}\n")).expect("write");
            if wireless {
                std::fs::create_dir_all(p.join("wireless")).expect("mkdir");
            }
        };
        mk("lo", "772", "1", "00:00:00:00:00:00", false);
        mk("eth1", "1", "3", "52:54:00:12:34:57", false);
        mk("eth0", "1", "2", "52:54:00:12:34:56", false);
        mk("wlan0", "1", "4", "52:54:00:12:34:58", true);
        mk("sit0", "776", "5", "00:00:00:00", false);
        mk("bad", "1", "x", "52:54:00:12:34:59", false);
        // eth0's device is bound to e1000e (a link to the driver's directory).
        let drv = d.path().join("drivers/e1000e");
        std::fs::create_dir_all(&drv).expect("mkdir");
        std::fs::create_dir_all(d.path().join("eth0/device")).expect("mkdir");
        std::os::unix::fs::symlink(&drv, d.path().join("eth0/device/driver")).expect("link");
        let got = wired_interfaces(d.path());
        let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(got[0].index, 2);
        assert_eq!(got[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(got[0].driver.as_deref(), Some("e1000e"));
        assert_eq!(got[1].driver, None);
        assert!(wired_interfaces(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn each_entry_of_the_network_line_ends_with_its_driver() {
        let r = IfaceReport {
            name: "eth1".into(),
            driver: Some("e1000e".into()),
            ipv4: Ok(Lease4 {
                addr: Ipv4Addr::new(198, 18, 65, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(198, 18, 65, 2)),
                dns: Vec::new(),
                lease_secs: 3600,
            }),
            ipv6_link_local: Some("fe80::1".parse().expect("addr")),
            random_mac: None,
        };
        assert_eq!(
            r.to_string(),
            "eth1 198.18.65.15/24 gw 198.18.65.2 fe80::1 [e1000e]"
        );
    }

    #[test]
    fn link_local_waits_for_dad() {
        let text = "\
fe80000000000000505400fffe123456 02 40 20 40     eth0
fe80000000000000505400fffe123457 03 40 20 80     eth1
20010db8000000000000000000000001 03 40 00 80     eth1
00000000000000000000000000000001 01 80 10 80       lo
";
        assert_eq!(link_local(text, "eth0"), None, "tentative");
        assert_eq!(
            link_local(text, "eth1"),
            Some("fe80::5054:ff:fe12:3457".parse().expect("addr"))
        );
        assert_eq!(link_local(text, "lo"), None);
    }

    #[test]
    fn resolv_conf_lists_each_server_once() {
        let lease = |dns: Vec<Ipv4Addr>| Lease4 {
            addr: Ipv4Addr::new(198, 18, 0, 10),
            prefix: 24,
            gateway: None,
            dns,
            lease_secs: 3600,
        };
        let a = Ipv4Addr::new(198, 18, 0, 1);
        let b = Ipv4Addr::new(198, 18, 0, 2);
        let reports = vec![
            IfaceReport {
                name: "eth0".into(),
                driver: None,
                ipv4: Ok(lease(vec![a, b])),
                ipv6_link_local: None,
                random_mac: None,
            },
            IfaceReport {
                name: "eth1".into(),
                driver: None,
                ipv4: Ok(lease(vec![b])),
                ipv6_link_local: None,
                random_mac: None,
            },
            IfaceReport {
                name: "eth2".into(),
                driver: None,
                ipv4: Err("no lease".into()),
                ipv6_link_local: None,
                random_mac: None,
            },
        ];
        let text = resolv_conf(&reports).expect("servers");
        assert_eq!(text.matches("nameserver").count(), 2, "{text}");
        assert!(text.contains("nameserver 198.18.0.1\nnameserver 198.18.0.2\n"));
        assert_eq!(resolv_conf(&reports[2..]), None);
        assert_eq!(reports[0].to_string(), "eth0 198.18.0.10/24");
    }
}
