//! Whether an address is on this machine's LAN, i.e. reached without a
//! router.
//!
//! `local` mode never leaves the LAN (ARCHITECTURE.md section 5): a
//! `phase.peers` URL and each address an mDNS peer announces (anyone can
//! announce any address) are checked here. The kernel answers: a
//! route get (`RTM_GETROUTE` for the address, what `ip route get` sends)
//! returns the route a packet to it would take, after policy rules and
//! every table. The address is on the LAN when that route delivers
//! without a gateway (a directly connected subnet such as the DHCP
//! lease's, an on-link IPv6 prefix, this machine itself); IPv6 link-local
//! and loopback always are.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::route::{RouteAttribute, RouteType};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Asks the routing of this machine's network namespace (the one of the
/// thread that called [`Routes::read`]).
#[derive(Debug)]
pub struct Routes {
    /// A `NETLINK_ROUTE` socket; `None` when it cannot be opened (then only
    /// loopback and link-local are on the link).
    socket: Option<Socket>,
    seq: AtomicU32,
}

impl Routes {
    /// The routing of the running kernel, asked per address by
    /// [`Routes::on_link`].
    pub fn read() -> Routes {
        let socket = Socket::new(NETLINK_ROUTE).ok().filter(|s| {
            // The kernel answers a route get while the request is sent, so
            // the reply is queued when `send_to` returns: reading without
            // blocking never waits, and never hangs PID 1.
            s.set_non_blocking(true).is_ok()
        });
        Routes {
            socket,
            seq: AtomicU32::new(1),
        }
    }

    /// Whether `ip` is reached without a router: loopback and IPv6
    /// link-local always; otherwise the kernel's route to it has no
    /// gateway and delivers (no route, or an unreachable, prohibit or
    /// blackhole route: not on the LAN).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a.is_loopback() || self.direct(ip),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.on_link(IpAddr::V4(v4)),
                None => a.is_loopback() || a.is_unicast_link_local() || self.direct(ip),
            },
        }
    }

    /// The kernel's route to `ip` delivers it without a gateway.
    fn direct(&self, ip: IpAddr) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let Ok(query) =
            rtnetlink::RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip, prefix)
        else {
            return false;
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(query.build()));
        req.header.flags = NLM_F_REQUEST;
        req.header.sequence_number = seq;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        if socket.send_to(&buf, &SocketAddr::new(0, 0), 0).is_err() {
            return false;
        }
        // Replies to earlier questions that were not read are skipped by
        // their sequence number.
        loop {
            let mut reply = Vec::with_capacity(8192);
            if socket.recv_from(&mut reply, 0).is_err() {
                return false;
            }
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply) else {
                return false;
            };
            if msg.header.sequence_number != seq {
                continue;
            }
            return match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    let delivers = matches!(
                        route.header.kind,
                        RouteType::Unicast
                            | RouteType::Local
                            | RouteType::Broadcast
                            | RouteType::Anycast
                            | RouteType::Multicast
                    );
                    let routed = route.attributes.iter().any(|a| {
                        matches!(
                            a,
                            RouteAttribute::Gateway(_)
                                | RouteAttribute::Via(_)
                                | RouteAttribute::MultiPath(_)
                        )
                    });
                    delivers && !routed
                }
                // An error (no route: ENETUNREACH) or anything else.
                _ => false,
            };
        }
    }
}

/// A test LAN: one node namespace on 198.18.0.0/24 (its address
/// 198.18.0.10, `eth0`), with the commands `setup` run in it, and the
/// [`Routes`] of that namespace (the socket stays in it; the host's routes
/// are never touched). Tests run as root.
#[cfg(test)]
pub(crate) fn test_lan(setup: &[&[&str]]) -> (testkit::netns::Lan, Routes) {
    use testkit::netns;
    let lan = netns::Lan::new(1, true).expect("netns (tests run as root)");
    for cmd in setup {
        netns::exec(lan.node(0), cmd).expect("set up routes");
    }
    let routes = netns::in_ns(lan.node(0), 0, || async { Routes::read() })
        .join()
        .expect("routes");
    (lan, routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(r: &Routes, s: &str) -> bool {
        r.on_link(s.parse().expect("ip"))
    }

    #[test]
    fn loopback_is_on_link_here() {
        // Only asks the host's kernel; changes nothing.
        let r = Routes::read();
        assert!(on(&r, "127.0.0.1"));
        assert!(on(&r, "::1"));
        assert!(on(&r, "::ffff:127.0.0.1"), "IPv4-mapped follows IPv4");
    }

    #[test]
    fn the_lease_subnet_is_on_link_and_the_rest_goes_through_the_router() {
        let (_lan, r) = test_lan(&[&["ip", "route", "add", "default", "via", "198.18.0.1"]]);
        assert!(on(&r, "198.18.0.50"));
        assert!(on(&r, "198.18.0.255"));
        assert!(on(&r, "198.18.0.10"), "this machine");
        assert!(!on(&r, "198.19.0.1"), "another subnet: through the router");
        assert!(!on(&r, "198.51.100.7"), "the internet: through the router");
        assert!(on(&r, "127.0.0.1"), "loopback never leaves the machine");
        assert!(on(&r, "::ffff:198.18.0.9"), "IPv4-mapped follows IPv4");
        assert!(!on(&r, "::ffff:198.51.100.7"));
    }

    #[test]
    fn without_a_router_only_the_lease_subnet_is_reachable() {
        let (_lan, r) = test_lan(&[]);
        assert!(on(&r, "198.18.0.7"));
        assert!(!on(&r, "10.0.0.1"), "no route at all");
        assert!(!on(&r, "2001:db8::1"), "no IPv6 route at all");
    }

    #[test]
    fn ipv6_link_local_and_on_link_prefixes_but_not_the_default_route() {
        let (lan, r) = test_lan(&[
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:0:1::10/64",
                "dev",
                "eth0",
                "nodad",
            ],
            &[
                "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
            ],
        ]);
        let own = lan.link_local(0).expect("link-local").to_string();
        assert!(on(&r, &own));
        assert!(on(&r, "fe80::5054:ff:fe12:3456"));
        assert!(on(&r, "2001:db8:0:1::42"), "the SLAAC prefix is on-link");
        assert!(!on(&r, "2001:db8:0:2::42"), "beyond it: through the router");
        assert!(!on(&r, "2606:4700::1111"));
        assert!(on(&r, "::1"));
    }

    #[test]
    fn policy_rules_and_reject_routes_are_the_kernels_answer() {
        let (_lan, r) = test_lan(&[
            &["ip", "route", "add", "default", "via", "198.18.0.1"],
            // 198.19.5.0/24 is on eth0 by a rule's table (the main table
            // says router), 198.18.0.128/25 is unreachable.
            &[
                "ip",
                "route",
                "add",
                "198.19.5.0/24",
                "dev",
                "eth0",
                "table",
                "100",
            ],
            &["ip", "rule", "add", "to", "198.19.5.0/24", "lookup", "100"],
            &["ip", "route", "add", "unreachable", "198.18.0.128/25"],
        ]);
        assert!(on(&r, "198.19.5.5"));
        assert!(!on(&r, "198.19.6.5"));
        assert!(!on(&r, "198.18.0.200"));
        assert!(on(&r, "198.18.0.20"));
    }

    #[test]
    fn without_any_route_link_local_is_still_on_the_link() {
        let r = Routes {
            socket: None,
            seq: AtomicU32::new(1),
        };
        assert!(on(&r, "fe80::1"));
        assert!(on(&r, "127.0.0.1"));
        assert!(!on(&r, "2001:db8::1"));
        assert!(!on(&r, "198.18.0.1"));
    }
}
