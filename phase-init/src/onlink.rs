//! Whether an address is on this machine's LAN, i.e. reached without a
//! router.
//!
//! `local` mode never leaves the LAN (ARCHITECTURE.md section 5). Peers
//! found by mDNS are on it by construction (multicast DNS does not cross
//! routers); a `phase.peers` URL is checked here. Its address must match a
//! route without a gateway: a directly connected subnet (the DHCP lease's),
//! an on-link IPv6 prefix, or IPv6 link-local. The lookup is the kernel's
//! own longest-prefix match over its routes, read from `/proc/net/route`
//! and `/proc/net/ipv6_route` after the network step.

use std::net::{IpAddr, Ipv6Addr};

/// `RTF_UP`, `RTF_GATEWAY`, `RTF_REJECT` from `<linux/route.h>`.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

/// One route: destination prefix and whether it goes through a router (or
/// nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route<T> {
    dest: T,
    prefix: u32,
    routed: bool,
}

/// The kernel's IPv4 and IPv6 routes (only those that are up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    v4: Vec<Route<u32>>,
    v6: Vec<Route<u128>>,
}

impl Routes {
    /// The routes of the running kernel (none where a file cannot be read).
    pub fn read() -> Routes {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Routes::parse(&text("/proc/net/route"), &text("/proc/net/ipv6_route"))
    }

    /// Parses the text of `/proc/net/route` and `/proc/net/ipv6_route`;
    /// lines that do not parse are skipped.
    pub fn parse(v4: &str, v6: &str) -> Routes {
        let v4 = v4
            .lines()
            .skip(1)
            .filter_map(|l| {
                // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
                let f: Vec<&str> = l.split_whitespace().collect();
                let hex = |s: &str| u32::from_str_radix(s, 16).ok();
                // The kernel prints the network-order words in host order.
                let addr = |s: &str| hex(s).map(|x| u32::from_be_bytes(x.to_le_bytes()));
                let (dest, flags, mask) = (addr(f.get(1)?)?, hex(f.get(3)?)?, addr(f.get(7)?)?);
                (mask.leading_ones() + mask.trailing_zeros() == 32).then_some(())?;
                up(flags).then(|| Route {
                    dest: dest & mask,
                    prefix: mask.leading_ones(),
                    routed: routed(flags),
                })
            })
            .collect();
        let v6 = v6
            .lines()
            .filter_map(|l| {
                // dest plen src splen nexthop metric refcnt use flags iface
                let f: Vec<&str> = l.split_whitespace().collect();
                let dest = u128::from_str_radix(f.first()?, 16).ok()?;
                let prefix = u32::from_str_radix(f.get(1)?, 16)
                    .ok()
                    .filter(|p| *p <= 128)?;
                let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
                up(flags).then(|| Route {
                    dest: dest & mask128(prefix),
                    prefix,
                    routed: routed(flags),
                })
            })
            .collect();
        Routes { v4, v6 }
    }

    /// Whether `ip` is reached without a router: loopback and IPv6
    /// link-local always; otherwise the longest matching route has no
    /// gateway (no matching route: not on the LAN).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a.is_loopback() || best(&self.v4, u32::from(a), mask32) == Some(false),
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.on_link(IpAddr::V4(v4));
                }
                a.is_loopback()
                    || is_link_local(&a)
                    || best(&self.v6, u128::from(a), mask128) == Some(false)
            }
        }
    }
}

fn up(flags: u32) -> bool {
    flags & RTF_UP != 0
}

fn routed(flags: u32) -> bool {
    flags & (RTF_GATEWAY | RTF_REJECT) != 0
}

fn mask32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// `routed` of the longest-prefix route matching `addr`, if any.
fn best<T>(routes: &[Route<T>], addr: T, mask: fn(u32) -> T) -> Option<bool>
where
    T: Copy + PartialEq + std::ops::BitAnd<Output = T>,
{
    routes
        .iter()
        .filter(|r| addr & mask(r.prefix) == r.dest)
        .max_by_key(|r| r.prefix)
        .map(|r| r.routed)
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An IPv4 address as `/proc/net/route` prints it.
    fn proc_hex(a: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_le_bytes(a.octets()))
    }

    /// A DHCP lease 192.168.1.23/24 with a router at .1 (as /proc shows it).
    fn lan_with_router() -> String {
        let l = |dest: [u8; 4], gw: [u8; 4], flags: &str, mask: [u8; 4]| {
            format!(
                "eth0\t{}\t{}\t{flags}\t0\t0\t0\t{}\t0\t0\t0\n",
                proc_hex(dest.into()),
                proc_hex(gw.into()),
                proc_hex(mask.into())
            )
        };
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            .to_owned()
            + &l([0, 0, 0, 0], [192, 168, 1, 1], "0003", [0, 0, 0, 0])
            + &l([192, 168, 1, 0], [0, 0, 0, 0], "0001", [255, 255, 255, 0])
    }

    #[test]
    fn the_lease_subnet_is_on_link_and_the_rest_goes_through_the_router() {
        // The kernel's own spelling of 192.168.1.0 and /24.
        assert!(lan_with_router().contains("0001A8C0"));
        assert!(lan_with_router().contains("00FFFFFF"));
        let r = Routes::parse(&lan_with_router(), "");
        let on = |s: &str| r.on_link(s.parse().expect("ip"));
        assert!(on("192.168.1.50"));
        assert!(on("192.168.1.255"));
        assert!(!on("192.168.2.1"), "another subnet: through the router");
        assert!(!on("198.51.100.7"), "the internet: through the router");
        assert!(on("127.0.0.1"), "loopback never leaves the machine");
        assert!(on("::ffff:192.168.1.9"), "IPv4-mapped follows IPv4");
    }

    #[test]
    fn without_a_router_only_the_lease_subnet_is_reachable() {
        let only_link: String = lan_with_router()
            .lines()
            .filter(|l| !l.contains("\t00000000\t0003"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = Routes::parse(&only_link, "");
        assert!(r.on_link("192.168.1.7".parse().expect("ip")));
        assert!(
            !r.on_link("10.0.0.1".parse().expect("ip")),
            "no route at all"
        );
    }

    #[test]
    fn ipv6_link_local_and_on_link_prefixes_but_not_the_default_route() {
        let v6 = "\
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
20010db8000000010000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let r = Routes::parse("", v6);
        let on = |s: &str| r.on_link(s.parse().expect("ip"));
        assert!(on("fe80::5054:ff:fe12:3456"));
        assert!(on("2001:db8:0:1::42"), "the SLAAC prefix is on-link");
        assert!(!on("2001:db8:0:2::42"), "beyond it: through the router");
        assert!(!on("2606:4700::1111"));
        assert!(on("::1"));
        // Without any route, link-local is still on the link.
        assert!(Routes::default().on_link("fe80::1".parse().expect("ip")));
        assert!(!Routes::default().on_link(IpAddr::V6("2001:db8::1".parse().expect("ip"))));
    }

    #[test]
    fn junk_lines_are_skipped() {
        let r = Routes::parse(
            "header\neth0 zz 0 1 0 0 0 00FFFFFF\neth0 0001A8C0\n",
            "nothing here\n",
        );
        assert_eq!(r, Routes::default());
        // A mask that is not a prefix is not a route.
        let holes = "h\neth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FF00FF\t0\t0\t0\n";
        assert_eq!(Routes::parse(holes, ""), Routes::default());
    }
}
