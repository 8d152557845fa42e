//! A small private Tor network for tests, from Debian's `tor` package:
//! three directory authorities (also relays), two middle relays and one exit,
//! each a `tor` process in its own network namespace on a [`Lan`] (addresses
//! 198.18.0.10+i), in `TestingTorNetwork` mode with the shortest voting
//! intervals, so the first consensus exists about 10-30 s after start.
//!
//! The torrc files are written here (there is no chutney on any registry):
//! `tor-gencert` makes each authority's v3 identity, `tor --list-fingerprint`
//! its relay identity (RSA and ed25519, read back from the data directory).
//! [`TorNet::arti_config`] describes the network to arti: authorities,
//! fallback caches, and the test-network exceptions (relays on one /24:
//! `ipv4_subnet_family_prefix = 32`; peers on 198.18/15 count as "local"
//! addresses to arti: `allow_local_addrs`).
//!
//! The network has no route anywhere but its own /24, so nothing it does
//! leaves the machine. Every wait is bounded; every process is killed and
//! every namespace deleted on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{self, Daemon, Lan, NetnsError};

/// Authorities in the network.
pub const AUTHORITIES: usize = 3;
/// Tor processes in the network (authorities, two middle relays, an exit).
pub const RELAYS: usize = 6;
/// Every relay's ORPort (each lives in its own namespace).
pub const OR_PORT: u16 = 5000;
/// Every relay's DirPort.
pub const DIR_PORT: u16 = 7000;
/// The SOCKS port of [`TorNet::socks_client`].
pub const SOCKS_PORT: u16 = 9050;

/// A failure building or running the network.
#[derive(Debug, thiserror::Error)]
pub enum TorNetError {
    /// Namespace trouble.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tor tool failed or printed something unexpected.
    #[error("{0}")]
    Tool(String),
    /// The network did not come up in time.
    #[error("{0}")]
    Timeout(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TorNetError {
    let what = what.into();
    move |source| TorNetError::Io { what, source }
}

/// One relay of the network.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Its nickname.
    pub nick: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// RSA identity fingerprint (40 hex digits).
    pub rsa: String,
    /// ed25519 identity (unpadded base64).
    pub ed: String,
    /// Authority v3 identity (40 hex digits), for authorities.
    pub v3ident: Option<String>,
    /// Its data directory.
    pub dir: PathBuf,
}

/// The running network; torn down on drop.
#[derive(Debug)]
pub struct TorNet {
    /// The LAN: nodes `0..RELAYS` are the relays, the rest are the test's.
    pub lan: Lan,
    /// The relays (authorities first, the exit last).
    pub relays: Vec<Relay>,
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
}

fn tor_cmd(ns: &str) -> Command {
    let mut c = netns::command(ns, "tor");
    c.stdin(Stdio::null());
    c
}

fn check(out: std::io::Result<std::process::Output>, what: &str) -> Result<String, TorNetError> {
    let out = out.map_err(io(format!("cannot run {what} (apt: tor)")))?;
    if !out.status.success() {
        return Err(TorNetError::Tool(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_field_after_nick(path: &Path) -> Result<String, TorNetError> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| {
            TorNetError::Tool(format!("{}: unexpected contents {text:?}", path.display()))
        })
}

impl TorNet {
    /// Builds and starts the network with `extra` more namespaces on the
    /// LAN for the test (client, peer...): [`TorNet::node`]`(k)`.
    pub fn start(extra: usize) -> Result<Self, TorNetError> {
        let lan = Lan::new(RELAYS + extra, true)?;
        let dir = tempfile::Builder::new()
            .prefix("phase-tornet-")
            .tempdir()
            .map_err(io("temporary directory"))?;
        let empty = dir.path().join("empty-defaults");
        std::fs::write(&empty, "").map_err(io("write defaults torrc"))?;
        let mut relays = Vec::new();
        for i in 0..RELAYS {
            let nick = if i < AUTHORITIES {
                format!("auth{i}")
            } else if i == RELAYS - 1 {
                "exit".to_string()
            } else {
                format!("relay{i}")
            };
            let ip = lan.ipv4(i);
            let ns = lan.node(i).to_string();
            let d = dir.path().join(&nick);
            std::fs::create_dir_all(d.join("keys")).map_err(io("create data directory"))?;
            set_mode(&d, 0o700)?;
            let mut v3ident = None;
            if i < AUTHORITIES {
                let mut child = Command::new("tor-gencert")
                    .current_dir(&d)
                    .args(["--create-identity-key", "-m", "12", "-a"])
                    .arg(format!("{ip}:{DIR_PORT}"))
                    .args([
                        "-i",
                        "keys/authority_identity_key",
                        "-s",
                        "keys/authority_signing_key",
                        "-c",
                        "keys/authority_certificate",
                        "--passphrase-fd",
                        "0",
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(io("cannot run tor-gencert (apt: tor)"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    use std::io::Write;
                    let _ = stdin.write_all(b"\n");
                }
                check(child.wait_with_output(), "tor-gencert")?;
                let cert = std::fs::read_to_string(d.join("keys/authority_certificate"))
                    .map_err(io("read authority certificate"))?;
                v3ident = cert
                    .lines()
                    .find_map(|l| l.strip_prefix("fingerprint "))
                    .map(|f| f.trim().to_string());
                if v3ident.is_none() {
                    return Err(TorNetError::Tool(
                        "authority certificate has no fingerprint".into(),
                    ));
                }
            }
            check(
                tor_cmd(&ns)
                    .arg("--defaults-torrc")
                    .arg(&empty)
                    .args(["-f"])
                    .arg(&empty)
                    .args(["--list-fingerprint", "--DataDirectory"])
                    .arg(&d)
                    .args([
                        "--ORPort",
                        &OR_PORT.to_string(),
                        "--Address",
                        &ip.to_string(),
                    ])
                    .args(["--Nickname", &nick, "--Log", "err stderr"])
                    // A placeholder authority: keys only, nothing is contacted.
                    .args([
                        "--DirAuthority",
                        "x orport=1 no-v2 127.0.0.1:1 FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                    ])
                    .output(),
                "tor --list-fingerprint",
            )?;
            let rsa = first_field_after_nick(&d.join("fingerprint"))?;
            let ed = first_field_after_nick(&d.join("fingerprint-ed25519"))?;
            relays.push(Relay {
                nick,
                ns,
                ip,
                rsa,
                ed,
                v3ident,
                dir: d,
            });
        }
        let mut net = Self {
            lan,
            relays,
            daemons: Vec::new(),
            dir,
        };
        for i in 0..RELAYS {
            let torrc = net.torrc(i);
            let path = net.relays[i].dir.join("torrc");
            std::fs::write(&path, torrc).map_err(io("write torrc"))?;
            let r = &net.relays[i];
            let mut cmd = tor_cmd(&r.ns);
            cmd.arg("--defaults-torrc")
                .arg(&empty)
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            net.daemons.push(netns::spawn(&mut cmd)?);
        }
        Ok(net)
    }

    fn dir_authority_lines(&self) -> String {
        let mut s = String::new();
        for r in self.relays.iter().filter(|r| r.v3ident.is_some()) {
            s.push_str(&format!(
                "DirAuthority {} orport={OR_PORT} no-v2 v3ident={} {}:{DIR_PORT} {}\n",
                r.nick,
                r.v3ident.as_deref().unwrap_or(""),
                r.ip,
                r.rsa
            ));
        }
        s
    }

    fn common(&self, dir: &Path, nick: &str) -> String {
        // Flags are voted, strictly, by role, so that every consensus is
        // usable whatever its bandwidth-weight case:
        // * Guard: the authorities only. Arti picks the guard before the
        //   exit (tor-circmgr path.rs); were the only exit a Guard, a client
        //   whose primary guard it became could build no exit circuit.
        // * Exit: the exit only. Relays flagged Guard and Exit share one
        //   weight class whose middle weight (Wmd) young networks
        //   sometimes vote 0, leaving arti no middle relay for a minute.
        // * the plain relays (neither flag) are middles with weight Wmm,
        //   which is never 0; onion-service circuits need two of them
        //   (guard, middle, stem end, target).
        let guards: Vec<String> = self.relays[..AUTHORITIES]
            .iter()
            .map(|r| format!("${}", r.rsa))
            .collect();
        let exit = format!("${}", self.relays[RELAYS - 1].rsa);
        format!(
            "TestingTorNetwork 1\n\
             DataDirectory {dir}\n\
             Nickname {nick}\n\
             RunAsDaemon 0\n\
             ShutdownWaitLength 0\n\
             Log notice file {dir}/notice.log\n\
             SafeLogging 0\n\
             AssumeReachable 1\n\
             PathsNeededToBuildCircuits 0.25\n\
             TestingDirAuthVoteExit {exit}\n\
             TestingDirAuthVoteExitIsStrict 1\n\
             TestingDirAuthVoteGuard {guards}\n\
             TestingDirAuthVoteGuardIsStrict 1\n\
             TestingDirAuthVoteHSDir *\n\
             TestingMinExitFlagThreshold 0\n\
             V3AuthNIntervalsValid 2\n\
             ServerDNSDetectHijacking 0\n\
             ServerDNSAllowBrokenConfig 1\n\
             {}",
            self.dir_authority_lines(),
            dir = dir.display(),
            guards = guards.join(","),
            exit = exit
        )
    }

    fn torrc(&self, i: usize) -> String {
        let r = &self.relays[i];
        let mut s = self.common(&r.dir, &r.nick);
        s.push_str(&format!(
            "SocksPort 0\nORPort {OR_PORT}\nDirPort {DIR_PORT}\nAddress {}\nContactInfo {}@test.invalid\n",
            r.ip, r.nick
        ));
        if i < AUTHORITIES {
            // Every relay is voted Stable at once (the Stable guarantee
            // needs no uptime): onion-service circuits use Stable relays
            // only and need four distinct ones, and a young network would
            // give the flag to its authorities alone.
            s.push_str(
                "AuthoritativeDirectory 1\n\
                 V3AuthoritativeDirectory 1\n\
                 TestingV3AuthInitialVotingInterval 5\n\
                 V3AuthVotingInterval 10\n\
                 TestingV3AuthInitialVoteDelay 2\n\
                 V3AuthVoteDelay 2\n\
                 TestingV3AuthInitialDistDelay 2\n\
                 V3AuthDistDelay 2\n\
                 AuthDirVoteStableGuaranteeMinUptime 0\n\
                 AuthDirVoteStableGuaranteeMTBF 0\n",
            );
        }
        if i == RELAYS - 1 {
            // The microdescriptor policy summary must accept the port "for
            // most of the internet" or clients think the exit cannot exit;
            // the namespaces route nowhere but the test /24 anyway.
            s.push_str("ExitRelay 1\nExitPolicyRejectPrivate 0\nExitPolicyRejectLocalInterfaces 0\nExitPolicy accept *:*\n");
        } else {
            s.push_str("ExitRelay 0\nExitPolicy reject *:*\n");
        }
        s
    }

    /// The namespace of the test's `k`-th extra node.
    pub fn node(&self, k: usize) -> &str {
        self.lan.node(RELAYS + k)
    }

    /// The address of the test's `k`-th extra node.
    pub fn node_ip(&self, k: usize) -> Ipv4Addr {
        self.lan.ipv4(RELAYS + k)
    }

    /// Every relay's address (a client's only legitimate destinations).
    pub fn relay_ips(&self) -> Vec<Ipv4Addr> {
        self.relays.iter().map(|r| r.ip).collect()
    }

    /// Waits (at most `timeout`) until an authority holds a consensus
    /// listing every relay, with the exit flagged Exit, and every relay
    /// has bootstrapped.
    pub fn wait_consensus(&mut self, timeout: Duration) -> Result<Duration, TorNetError> {
        let start = Instant::now();
        let path = self.relays[0].dir.join("cached-microdesc-consensus");
        let exit_rsa = self.relays[RELAYS - 1].rsa.clone();
        loop {
            for (i, d) in self.daemons.iter_mut().enumerate() {
                if let Some(st) = d.exited() {
                    let log = std::fs::read_to_string(self.relays[i].dir.join("notice.log"))
                        .unwrap_or_default();
                    return Err(TorNetError::Tool(format!(
                        "tor {} exited ({st}): {}",
                        self.relays[i].nick,
                        tail(&log, 1500)
                    )));
                }
            }
            // Relays bootstrap as clients too (an exit that has no
            // directory yet refuses streams).
            let relays_ready = self.relays.iter().all(|r| {
                std::fs::read_to_string(r.dir.join("notice.log"))
                    .is_ok_and(|l| l.contains("Bootstrapped 100%"))
            });
            if let Ok(text) = std::fs::read_to_string(&path) {
                if relays_ready && consensus_ready(&text, RELAYS, &exit_rsa) {
                    return Ok(start.elapsed());
                }
            }
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.relays[0].dir.join("notice.log"))
                    .unwrap_or_default();
                return Err(TorNetError::Timeout(format!(
                    "no consensus with all {RELAYS} relays within {} s; auth0 log: {}",
                    timeout.as_secs(),
                    tail(&log, 2000)
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The network as an arti configuration fragment (`--tor-network`).
    pub fn arti_config(&self) -> String {
        let auths: Vec<&Relay> = self.relays.iter().filter(|r| r.v3ident.is_some()).collect();
        let q = |s: &str| format!("\"{s}\"");
        let v3: Vec<String> = auths
            .iter()
            .map(|r| q(r.v3ident.as_deref().unwrap_or("")))
            .collect();
        let dirports: Vec<String> = auths
            .iter()
            .map(|r| format!("[\"{}:{DIR_PORT}\"]", r.ip))
            .collect();
        let fallbacks: Vec<String> = auths
            .iter()
            .map(|r| {
                format!(
                    "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"{}:{OR_PORT}\"] }}",
                    r.rsa, r.ed, r.ip
                )
            })
            .collect();
        format!(
            "# A private test Tor network (testkit::tornet).\n\
             [tor_network]\n\
             fallback_caches = [\n{}\n]\n\n\
             [tor_network.authorities]\n\
             v3idents = [{}]\n\
             uploads = [{}]\n\
             downloads = [{}]\n\
             votes = [{}]\n\n\
             # All relays share one /24: do not treat them as one family.\n\
             [path_rules]\n\
             ipv4_subnet_family_prefix = 32\n\n\
             # Peers live on 198.18.0.0/15, which arti counts as non-global.\n\
             [address_filter]\n\
             allow_local_addrs = true\n",
            fallbacks.join(",\n"),
            v3.join(", "),
            dirports.join(", "),
            dirports.join(", "),
            dirports.join(", "),
        )
    }

    /// Writes [`TorNet::arti_config`] to `path`.
    pub fn write_arti_config(&self, path: &Path) -> Result<(), TorNetError> {
        std::fs::write(path, self.arti_config()).map_err(io("write arti config"))
    }

    /// Starts a Debian `tor` client in the test's node `k`, its SOCKS port
    /// on `127.0.0.1:9050` there; returns once it has bootstrapped (bounded
    /// by `timeout`), with the guard that stops it.
    pub fn socks_client(&self, k: usize, timeout: Duration) -> Result<Daemon, TorNetError> {
        let d = self.dir.path().join(format!("client{k}"));
        std::fs::create_dir_all(&d).map_err(io("create client directory"))?;
        set_mode(&d, 0o700)?;
        let mut torrc = self.common(&d, &format!("client{k}"));
        torrc.push_str(&format!("SocksPort 127.0.0.1:{SOCKS_PORT}\nClientOnly 1\n"));
        let path = d.join("torrc");
        std::fs::write(&path, torrc).map_err(io("write client torrc"))?;
        let empty = self.dir.path().join("empty-defaults");
        let mut cmd = tor_cmd(self.node(k));
        cmd.arg("--defaults-torrc")
            .arg(&empty)
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut daemon = netns::spawn(&mut cmd)?;
        let start = Instant::now();
        let log = d.join("notice.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Bootstrapped 100%") {
                return Ok(daemon);
            }
            if let Some(st) = daemon.exited() {
                return Err(TorNetError::Tool(format!(
                    "tor client exited ({st}): {}",
                    tail(&text, 1500)
                )));
            }
            if start.elapsed() > timeout {
                return Err(TorNetError::Timeout(format!(
                    "tor client not bootstrapped within {} s: {}",
                    timeout.as_secs(),
                    tail(&text, 1500)
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The tail of relay `i`'s notice log (for failure messages).
    pub fn log_tail(&self, i: usize, bytes: usize) -> String {
        let text =
            std::fs::read_to_string(self.relays[i].dir.join("notice.log")).unwrap_or_default();
        tail(&text, bytes).to_string()
    }
}

fn set_mode(d: &Path, mode: u32) -> Result<(), TorNetError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", d.display())))
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// Whether a microdescriptor consensus lists at least `relays` relays, all
/// of them Stable (onion-service circuits need four distinct Stable relays:
/// guard, middle, stem end, target), and the exit (by RSA fingerprint)
/// carries the Exit flag and not the Guard flag (see [`TorNet::common`]).
fn consensus_ready(text: &str, relays: usize, exit_rsa: &str) -> bool {
    // "r NICK IDENTITY-BASE64 ..." lines; IDENTITY is the RSA fingerprint
    // in unpadded base64.
    let exit_b64 = hex_to_b64(exit_rsa);
    let mut count = 0;
    let mut exit_ok = false;
    let mut stable = 0;
    let mut current_is_exit = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("r ") {
            count += 1;
            current_is_exit = rest.split_whitespace().nth(1) == Some(exit_b64.as_str());
        } else if let Some(flags) = line.strip_prefix("s ") {
            let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
            if has("Stable") {
                stable += 1;
            }
            if current_is_exit {
                exit_ok = has("Exit") && !has("Guard");
            }
        }
    }
    count >= relays && stable >= relays && exit_ok
}

fn hex_to_b64(hex: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let chars = c.len() + 1;
        for k in 0..chars {
            out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

impl Drop for TorNet {
    fn drop(&mut self) {
        // Daemons first (their guards kill and reap), then the LAN.
        self.daemons.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_fingerprints_become_consensus_base64() {
        // 20 bytes -> 27 unpadded base64 characters.
        let b = hex_to_b64("19289EE0A403231EF8163386D10C826CEDAB4FF8");
        assert_eq!(b.len(), 27);
        assert_eq!(&b[..4], "GSie");
    }

    #[test]
    fn a_consensus_is_ready_with_all_relays_and_an_exit() {
        let exit = "19289EE0A403231EF8163386D10C826CEDAB4FF8";
        let id = hex_to_b64(exit);
        let text =
            format!("r a AAAA x\ns Fast Guard Stable\nr b BBBB x\ns Fast Stable\nr exit {id} x\ns Exit Fast Stable\n");
        assert!(consensus_ready(&text, 3, exit));
        let unstable = text.replacen("s Fast Stable", "s Fast", 1);
        assert!(!consensus_ready(&unstable, 3, exit));
        assert!(!consensus_ready(&text, 4, exit));
        let no_exit = text.replace("s Exit Fast Stable", "s Fast Stable");
        assert!(!consensus_ready(&no_exit, 3, exit));
        let guard_exit = text.replace("s Exit Fast Stable", "s Exit Fast Guard Stable");
        assert!(!consensus_ready(&guard_exit, 3, exit));
    }
}
