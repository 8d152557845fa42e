//! Private mode (`phase.mode=private`): what this boot shows the
//! world, and the checks that it shows nothing more.
//!
//! * A fresh identity per boot ([`fresh_identity`]): a random ephemeral
//!   peer id, printed on the console (`identity ephemeral <id>`) and
//!   recorded in `boot.json`, and a random locally administered unicast
//!   MAC for every wired NIC, set before the link comes up
//!   ([`crate::net`]), so neither
//!   the LAN nor a DHCP server sees the machine's burnt-in address. DHCP
//!   sends no host name and a client identifier made of the random MAC.
//!   The target (after kexec the NIC comes back with its burnt-in MAC)
//!   applies the same MACs again from `boot.json` before any service runs.
//! * No listening sockets: [`listening`] reads `/proc/net/{tcp,tcp6,udp,
//!   udp6}`; stage 1 checks it right before kexec and says what it found.
//! * No writes: the cache partition is mounted `ro,noload` or not at all
//!   ([`crate::cachepart`]), trusted state lives in RAM
//!   ([`crate::bootfetch`]), the target gets `phase.nowrite=true`.
//! * No direct connection: a fetch from network peers needs a Tor transport
//!   ([`transport_check`]); without one the step fails with one line. A
//!   seeded stick needs no fetch at all.
//!
//! docs/threat-model.md says what this hides, from whom, and what it does not.
//!
//! Also compiled on its own by the fuzz targets (`fuzz/`, docs/fuzzing.md):
//! it uses only `std`, `hex` and the `handover` crate, and no `crate::` item.

use std::fmt;
use std::path::Path;

/// This boot's identity in private mode, as `boot.json` records it.
pub use handover::Identity;

/// A fresh identity: a random peer id, no MACs yet.
pub fn fresh_identity() -> std::io::Result<Identity> {
    let mut id = [0u8; 16];
    random(&mut id)?;
    Ok(Identity {
        kind: "ephemeral".into(),
        peer_id: hex::encode(id),
        macs: Vec::new(),
    })
}

/// The MAC `identity` records for interface `name`.
pub fn mac_for(identity: &Identity, name: &str) -> Option<[u8; 6]> {
    identity
        .macs
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, m)| parse_mac(m))
}

/// Fills `buf` from the kernel's random pool (`/dev/urandom`: devtmpfs
/// has it from the first mount; after the kernel's pool is initialised,
/// which a virtio-rng or the CPU's RDRAND makes immediate).
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Turns 6 random bytes into a locally administered (bit 1 of the first
/// octet set) unicast (bit 0 clear) MAC: never a vendor's address.
pub fn local_mac(mut b: [u8; 6]) -> [u8; 6] {
    b[0] = (b[0] & 0xfc) | 0x02;
    b
}

/// A fresh random locally administered unicast MAC.
pub fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut b = [0u8; 6];
    random(&mut b)?;
    Ok(local_mac(b))
}

/// `02:ab:..`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads `aa:bb:cc:dd:ee:ff` (sysfs `address`, `boot.json`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A socket that accepts traffic from anyone: a TCP listener, or a UDP
/// socket bound to a port and not connected to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `tcp`, `tcp6`, `udp`, `udp6`.
    pub proto: &'static str,
    /// The local port.
    pub port: u16,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} port {}", self.proto, self.port)
    }
}

/// The listeners in one `/proc/net/<proto>` table (`text`).
pub fn parse_table(proto: &'static str, text: &str) -> Vec<Listener> {
    const TCP_LISTEN: &str = "0A";
    const UDP_UNCONNECTED: &str = "07";
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let port = |addr: &str| {
            addr.rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        let (Some(local), Some(remote)) = (port(f[1]), port(f[2])) else {
            continue;
        };
        let listening = if proto.starts_with("tcp") {
            f[3] == TCP_LISTEN
        } else {
            f[3] == UDP_UNCONNECTED && remote == 0 && local != 0
        };
        if listening {
            out.push(Listener { proto, port: local });
        }
    }
    out
}

/// Every listening socket of this network namespace, from `proc_net`
/// (`/proc/net`). A table that cannot be read is an error naming it: a
/// check that cannot look must not say "none".
pub fn listening(proc_net: &Path) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let path = proc_net.join(proto);
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_table(proto, &text)),
            // No IPv6 in this kernel: no IPv6 sockets either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && proto.ends_with('6') => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    Ok(out)
}

/// The mounts of block devices (`/dev/...` sources) in `/proc/self/mounts`
/// text, as `device on dir (options)`; with their `rw`/`ro` flag.
pub fn disk_mounts(mounts: &str) -> Vec<(String, bool)> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || !f[0].starts_with("/dev/") {
                return None;
            }
            let rw = f[3].split(',').any(|o| o == "rw");
            Some((format!("{} on {} ({})", f[0], f[1], f[2]), rw))
        })
        .collect()
}

/// The block-device mounts that are read-write.
pub fn writable_disks(mounts: &str) -> Vec<String> {
    disk_mounts(mounts)
        .into_iter()
        .filter(|(_, rw)| *rw)
        .map(|(m, _)| m)
        .collect()
}

/// How a private-mode fetch from network peers may leave the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Nothing to fetch from the network (no peers): the stick's cache only.
    CacheOnly,
    /// Through Tor, described for the console.
    Tor(String),
}

/// Private mode's rule for fetches: with network peers there must be a Tor
/// transport (`tor`: its description), or the fetch is refused with one
/// line; without peers only the read-only cache is used.
pub fn transport_check(network_peers: usize, tor: Option<String>) -> Result<Route, String> {
    match (network_peers, tor) {
        (0, _) => Ok(Route::CacheOnly),
        (_, Some(t)) => Ok(Route::Tor(t)),
        (n, None) => Err(format!(
            "private mode fetches only over Tor and no Tor transport is available for {n} peer(s); set phase.socks5=HOST:PORT or boot from a seeded stick without phase.peers (never a direct connection)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast_and_differ() {
        for b in [[0xff; 6], [0; 6], [0x01, 2, 3, 4, 5, 6]] {
            let m = local_mac(b);
            assert_eq!(m[0] & 0x02, 0x02, "locally administered: {m:?}");
            assert_eq!(m[0] & 0x01, 0, "unicast: {m:?}");
            assert_eq!(m[1..], b[1..]);
        }
        let a = random_mac().expect("getrandom");
        let b = random_mac().expect("getrandom");
        assert_ne!(a, b, "48 random bits twice the same");
        assert_eq!(parse_mac(&format_mac(&a)), Some(a));
    }

    #[test]
    fn identities_are_fresh_and_round_trip() {
        let mut a = fresh_identity().expect("fresh");
        let b = fresh_identity().expect("fresh");
        assert_ne!(a.peer_id, b.peer_id);
        assert_eq!(a.peer_id.len(), 32);
        assert_eq!(a.to_string(), format!("ephemeral {}", a.peer_id));
        a.macs.push(("eth0".into(), "02:11:22:33:44:55".into()));
        let json = serde_json::to_string(&a).expect("json");
        let back: Identity = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, a);
        assert_eq!(
            mac_for(&back, "eth0"),
            Some([2, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
        assert_eq!(mac_for(&back, "eth1"), None);
    }

    #[test]
    fn listeners_are_tcp_listen_and_unconnected_bound_udp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0A00020F:C350 0A000201:1B9E 01 00000000:00000000 00:00000000 00000000     0        0 2 1
";
        assert_eq!(
            parse_table("tcp", tcp),
            vec![Listener {
                proto: "tcp",
                port: 7070
            }]
        );
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
  11: 00000000000000000000000000000000:D431 0000000000000000FFFF00000A000201:0035 01 00000000:00000000 00:00000000 00000000     0        0 4 2 0 0
";
        let got = parse_table("udp6", udp6);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].to_string(), "udp6 port 5353");
        assert!(parse_table("udp", "header only\n").is_empty());
    }

    #[test]
    fn listening_reads_the_tables_and_names_a_missing_one() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(listening(d.path()).unwrap_err().contains("tcp"));
        std::fs::write(d.path().join("tcp"), "h\n").expect("write");
        std::fs::write(d.path().join("udp"), "h\n").expect("write");
        assert_eq!(listening(d.path()), Ok(vec![]));
        // Our own process: this test binary has none open here, but the
        // real table parses.
        assert!(listening(Path::new("/proc/net")).is_ok());
    }

    #[test]
    fn only_block_device_mounts_count_and_rw_is_found() {
        let text = "\
devtmpfs /dev devtmpfs rw,nosuid,size=100k 0 0
tmpfs /run tmpfs rw,nosuid,nodev 0 0
/dev/vda2 /run/phase/cache ext4 ro,nosuid,nodev,noexec,relatime,norecovery 0 0
/dev/vda1 /boot vfat rw,relatime 0 0
";
        assert_eq!(disk_mounts(text).len(), 2);
        assert_eq!(
            writable_disks(text),
            vec!["/dev/vda1 on /boot (vfat)".to_owned()]
        );
        assert!(writable_disks(&text.replace("/dev/vda1", "none")).is_empty());
    }

    #[test]
    fn private_fetches_need_tor_when_there_are_peers() {
        assert_eq!(transport_check(0, None), Ok(Route::CacheOnly));
        assert_eq!(
            transport_check(2, Some("socks5 198.18.0.1:9050".into())),
            Ok(Route::Tor("socks5 198.18.0.1:9050".into()))
        );
        let e = transport_check(1, None).unwrap_err();
        assert!(e.contains("only over Tor") && !e.contains('\n'), "{e}");
    }
}
