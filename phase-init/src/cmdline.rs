//! The `phase.*` kernel command-line parameters (ARCHITECTURE.md section 5).
//!
//! Every parameter is one row of [`PARAMS`]: its name, the values it takes and
//! how it sets [`Config`]. Parsing never fails: an unknown `phase.*` name or a
//! malformed value becomes a [`Warning`] naming the parameter and the value in
//! effect (the default unless an earlier valid occurrence set one), so a typo
//! cannot brick a boot. Parameters outside the `phase.` namespace belong to the
//! kernel and are ignored. When a parameter appears twice the last valid
//! occurrence wins, as for kernel parameters; `phase.peers` accumulates.
//!
//! Also compiled on its own by the fuzz targets (`fuzz/`, docs/fuzzing.md):
//! it uses `std` and [`crate::retry`] (compiled there too), no other
//! `crate::` item.

use std::fmt;

/// Where peers are looked for and what may be written (section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// DHT + HTTP mirrors + cache; writes the cache partition.
    #[default]
    Internet,
    /// mDNS on the LAN + cache; never leaves the LAN.
    Local,
    /// Cache read-only + Tor; writes nothing, announces nothing.
    Private,
}

/// Whether the cache partition is used at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cache {
    #[default]
    Enabled,
    Disabled,
}

/// Which role this PID 1 plays: stage 1 on the stick, or stage 2 after kexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Boot,
    Target,
}

/// `phase.kexec`: whether stage 1 may skip the second kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kexec {
    /// Go on as stage 2 directly when the verified target kernel and
    /// initramfs are the running ones; kexec otherwise.
    #[default]
    Auto,
    /// Always start the target kernel with kexec.
    Always,
}

/// `phase.tpm`: what stage 1 does when there is no TPM to measure into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TpmPolicy {
    /// Measure when there is a TPM; without one, say `tpm none` and boot.
    #[default]
    Auto,
    /// No TPM, or one that fails: stop before the hand-over (rescue shell).
    Require,
}

/// Test hooks: what to do right after the `ready` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAction {
    /// Sync and power the machine off (QEMU with `-no-reboot` then exits).
    Poweroff,
    /// Panic on purpose before the ready line, to test that a panic lands
    /// in the rescue shell.
    Panic,
    /// Kexec the artifacts in `/etc/phase/test-artifacts/` (a boot test of
    /// kexec, the payload and stage 2 without the network).
    Kexec,
}

impl TestAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TestAction::Poweroff => "poweroff",
            TestAction::Panic => "panic",
            TestAction::Kexec => "kexec",
        }
    }
}

/// An extra peer named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `http://host:port` or `https://...`: an HTTP mirror / peer.
    Url(String),
    /// `/ip4/.../tcp/.../p2p/...`: a libp2p multiaddr (DHT bootstrap).
    Multiaddr(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Url(s) | Peer::Multiaddr(s) => f.write_str(s),
        }
    }
}

/// The boot configuration the command line selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub channel: String,
    pub cache: Cache,
    /// As given on the command line; see [`Config::nowrite`] for the effective value.
    pub nowrite: bool,
    pub peers: Vec<Peer>,
    pub stage: Stage,
    pub debug: bool,
    pub test: Option<TestAction>,
    /// `phase.discover_timeout`: seconds stage 1 looks for peers (bootnet).
    pub discover_timeout: u32,
    /// `phase.fetch_timeout`: seconds one peer gets for the whole TUF
    /// metadata refresh before the next peer is tried.
    pub fetch_timeout: u32,
    /// `phase.grace`: offline, metadata that expired at most this long ago
    /// may boot the newest cached trusted target (logged loudly). `None`
    /// (the default): expired metadata refuses the boot.
    pub grace: Option<std::time::Duration>,
    /// `phase.socks5=HOST:PORT`: fetch through this SOCKS5 proxy (a Tor
    /// daemon's SocksPort); private mode's only way to network peers.
    pub socks5: Option<String>,
    /// `phase.tor_timeout`: seconds private mode's embedded Tor client may
    /// take to bootstrap (stage 1 only).
    pub tor_timeout: u32,
    /// `phase.dhcp_timeout`: seconds stage 1's network step waits for
    /// DHCPv4 leases; 0 asks for none (a LAN of IPv6 link-local peers).
    pub dhcp_timeout: u32,
    /// `phase.persist=PARTNAME`: the GPT partition whose ext4 file system
    /// keeps the target's changes (the overlay's upper) across boots; only
    /// when writes are allowed (stage 2, `stage2::upper_for`). `None` (the
    /// default): a tmpfs upper, nothing is kept.
    pub persist: Option<String>,
    /// `phase.retry`: how many attempts a stage-1 fetch gets when no peer
    /// delivered (`forever`, the default: fleets power on in any order).
    pub retry: crate::retry::Retry,
    /// `phase.kexec`: `auto` (the default) goes on as stage 2 without a
    /// second kernel when the verified target kernel and initramfs are the
    /// ones the boot loader started (`direct.rs`); `always` kexecs.
    pub kexec: Kexec,
    /// `phase.tpm`: whether stage 1 may hand over unmeasured.
    pub tpm: TpmPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            channel: DEFAULT_CHANNEL.to_owned(),
            cache: Cache::default(),
            nowrite: false,
            peers: Vec::new(),
            stage: Stage::default(),
            debug: false,
            test: None,
            discover_timeout: DEFAULT_DISCOVER_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            grace: None,
            socks5: None,
            tor_timeout: DEFAULT_TOR_TIMEOUT,
            dhcp_timeout: DEFAULT_DHCP_TIMEOUT,
            persist: None,
            retry: crate::retry::Retry::Forever,
            kexec: Kexec::default(),
            tpm: TpmPolicy::Auto,
        }
    }
}

/// Seconds stage 1 looks for peers unless `phase.discover_timeout` says
/// otherwise (it stops early once peers answer).
pub const DEFAULT_DISCOVER_TIMEOUT: u32 = 4;

/// Seconds one peer gets for the TUF metadata refresh unless
/// `phase.fetch_timeout` says otherwise (a silent or trickling peer costs
/// at most this; metadata is kilobytes).
pub const DEFAULT_FETCH_TIMEOUT: u32 = 20;

/// Seconds the embedded Tor client may take to bootstrap unless
/// `phase.tor_timeout` says otherwise: seconds on hardware and the public
/// network, minutes on a slow link or an emulated CPU.
pub const DEFAULT_TOR_TIMEOUT: u32 = 300;

/// Seconds the network step waits for DHCPv4 leases (all interfaces
/// together) unless `phase.dhcp_timeout` says otherwise.
pub const DEFAULT_DHCP_TIMEOUT: u32 = 10;

/// The channel booted when `phase.channel` is absent or malformed.
pub const DEFAULT_CHANNEL: &str = "stable";

impl Config {
    /// Effective "never write any disk": `phase.nowrite`, forced on in private mode.
    pub fn nowrite(&self) -> bool {
        self.nowrite || self.mode == Mode::Private
    }

    /// One line for the console: every value in effect.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "mode={} channel={} cache={} nowrite={} stage={}",
            self.mode.as_str(),
            self.channel,
            self.cache.as_str(),
            self.nowrite(),
            self.stage.as_str()
        );
        if !self.peers.is_empty() {
            s.push_str(&format!(" peers={}", self.peers.len()));
        }
        if self.debug {
            s.push_str(" debug");
        }
        if let Some(t) = self.test {
            s.push_str(&format!(" test={}", t.as_str()));
        }
        if let Some(g) = self.grace {
            s.push_str(&format!(" grace={}", grace_words(g)));
        }
        if let Some(p) = &self.persist {
            s.push_str(&format!(" persist={p}"));
        }
        if self.retry != crate::retry::Retry::Forever {
            s.push_str(&format!(" retry={}", self.retry.word()));
        }
        if self.kexec != Kexec::default() {
            s.push_str(&format!(" kexec={}", self.kexec));
        }
        if self.dhcp_timeout != DEFAULT_DHCP_TIMEOUT {
            s.push_str(&format!(" dhcp_timeout={}", self.dhcp_timeout));
        }
        if self.tpm != TpmPolicy::Auto {
            s.push_str(&format!(" tpm={}", self.tpm));
        }
        s
    }

    /// The command-line words that select this configuration (the inverse of
    /// [`parse`]; used by tests and, later, by kexec to hand the mode on).
    pub fn to_cmdline(&self) -> String {
        let mut words = vec![
            format!("phase.mode={}", self.mode.as_str()),
            format!("phase.channel={}", self.channel),
            format!("phase.cache={}", self.cache.as_str()),
            format!("phase.nowrite={}", self.nowrite),
            format!("phase.stage={}", self.stage.as_str()),
            format!("phase.debug={}", self.debug),
        ];
        if !self.peers.is_empty() {
            let list: Vec<String> = self.peers.iter().map(Peer::to_string).collect();
            words.push(format!("phase.peers={}", list.join(",")));
        }
        if let Some(t) = self.test {
            words.push(format!("phase.test={}", t.as_str()));
        }
        if let Some(g) = self.grace {
            words.push(format!("phase.grace={}", grace_words(g)));
        }
        if let Some(a) = &self.socks5 {
            words.push(format!("phase.socks5={a}"));
        }
        if let Some(p) = &self.persist {
            words.push(format!("phase.persist={p}"));
        }
        if self.retry != crate::retry::Retry::Forever {
            words.push(format!("phase.retry={}", self.retry.word()));
        }
        if self.kexec != Kexec::default() {
            words.push(format!("phase.kexec={}", self.kexec));
        }
        if self.tpm != TpmPolicy::Auto {
            words.push(format!("phase.tpm={}", self.tpm));
        }
        words.join(" ")
    }
}

macro_rules! keyword_enum {
    ($ty:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        impl $ty {
            /// The command-line spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
            fn from_word(word: &str) -> Option<Self> {
                match word { $($word => Some($ty::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
keyword_enum!(Mode { Internet = "internet", Local = "local", Private = "private" });
keyword_enum!(Cache { Enabled = "enabled", Disabled = "disabled" });
keyword_enum!(Stage { Boot = "boot", Target = "target" });
keyword_enum!(Kexec { Auto = "auto", Always = "always" });
keyword_enum!(TpmPolicy { Auto = "auto", Require = "require" });

/// A problem with one parameter; the boot goes on with the value in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `phase.<name>` is not a parameter of ours (a typo, usually).
    Unknown { name: String },
    /// A known parameter with a value it does not take.
    Malformed {
        name: &'static str,
        value: Option<String>,
        expected: &'static str,
        using: String,
    },
    /// One entry of `phase.peers` is neither a URL nor a multiaddr.
    BadPeer { entry: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Unknown { name } => write!(
                f,
                "{}: unknown parameter, ignored (known: {})",
                Shown(name),
                known_names()
            ),
            Warning::Malformed {
                name,
                value: Some(value),
                expected,
                using,
            } => write!(
                f,
                "{name}={}: expected {expected}; using {using}",
                Shown(value)
            ),
            Warning::Malformed {
                name,
                value: None,
                expected,
                using,
            } => write!(f, "{name}: needs a value ({expected}); using {using}"),
            Warning::BadPeer { entry } => write!(
                f,
                "phase.peers: {entry:?} is neither an http(s):// URL nor a /multiaddr; skipped"
            ),
        }
    }
}

/// Text from the command line as a warning shows it: control characters
/// (a quoted word may hold a newline or an escape sequence) are escaped, so a
/// warning stays one line and cannot drive the console.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The outcome of parsing: the configuration in effect and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Sets a parameter's value on the config; may add warnings (for list
/// entries); `Err(())` = malformed.
type ApplyFn = fn(&mut Config, Option<&str>, &mut Vec<Warning>) -> Result<(), ()>;

/// One row of the parameter table.
#[derive(Debug)]
pub struct Param {
    /// Full name, e.g. `phase.mode`.
    pub name: &'static str,
    /// The values it takes, as shown in warnings and docs.
    pub expected: &'static str,
    /// Applies a value (`None` for a bare `phase.x` without `=`); `Err(())`
    /// means malformed and leaves the configuration unchanged.
    apply: ApplyFn,
    /// The value in effect, for the warning text.
    current: fn(&Config) -> String,
}

/// Every `phase.*` parameter (ARCHITECTURE.md section 5, plus `phase.test`).
pub const PARAMS: &[Param] = &[
    Param {
        name: "phase.mode",
        expected: "internet|local|private",
        apply: |c, v, _| keyword(v, Mode::from_word).map(|m| c.mode = m),
        current: |c| c.mode.to_string(),
    },
    Param {
        name: "phase.channel",
        expected: "a name of letters, digits, '.', '_', '-' (e.g. stable, testing)",
        apply: |c, v, _| channel(v).map(|ch| c.channel = ch),
        current: |c| c.channel.clone(),
    },
    Param {
        name: "phase.cache",
        expected: "enabled|disabled",
        apply: |c, v, _| keyword(v, Cache::from_word).map(|x| c.cache = x),
        current: |c| c.cache.to_string(),
    },
    Param {
        name: "phase.nowrite",
        expected: "true|false",
        apply: |c, v, _| boolean(v).map(|b| c.nowrite = b),
        current: |c| c.nowrite.to_string(),
    },
    Param {
        name: "phase.peers",
        expected: "a comma list of http(s):// URLs or /multiaddrs",
        apply: peers,
        current: |c| format!("{} peer(s)", c.peers.len()),
    },
    Param {
        name: "phase.stage",
        expected: "boot|target",
        apply: |c, v, _| keyword(v, Stage::from_word).map(|s| c.stage = s),
        current: |c| c.stage.to_string(),
    },
    Param {
        name: "phase.debug",
        expected: "true|false",
        apply: |c, v, _| boolean(v).map(|b| c.debug = b),
        current: |c| c.debug.to_string(),
    },
    // bootnet: discovery parameters.
    Param {
        name: "phase.discover_timeout",
        expected: "seconds, 1..=60",
        apply: |c, v, _| seconds(v, 1..=60).map(|n| c.discover_timeout = n),
        current: |c| c.discover_timeout.to_string(),
    },
    Param {
        name: "phase.fetch_timeout",
        expected: "seconds, 1..=600",
        apply: |c, v, _| seconds(v, 1..=600).map(|n| c.fetch_timeout = n),
        current: |c| c.fetch_timeout.to_string(),
    },
    Param {
        name: "phase.test",
        expected: "poweroff|panic|kexec",
        apply: |c, v, _| {
            let t = match v {
                Some("poweroff") => TestAction::Poweroff,
                Some("panic") => TestAction::Panic,
                Some("kexec") => TestAction::Kexec,
                _ => return Err(()),
            };
            c.test = Some(t);
            Ok(())
        },
        current: |c| c.test.map_or("none", TestAction::as_str).to_owned(),
    },
    // private: the Tor route (docs/threat-model.md).
    Param {
        name: "phase.socks5",
        expected: "HOST:PORT of a SOCKS5 proxy (a Tor SocksPort)",
        apply: |c, v, _| socks5(v).map(|a| c.socks5 = Some(a)),
        current: |c| c.socks5.clone().unwrap_or_else(|| "none".to_owned()),
    },
    Param {
        name: "phase.tor_timeout",
        expected: "seconds, 5..=3600",
        apply: |c, v, _| seconds(v, 5..=3600).map(|n| c.tor_timeout = n),
        current: |c| c.tor_timeout.to_string(),
    },
    Param {
        name: "phase.dhcp_timeout",
        expected: "seconds, 0..=120 (0: no DHCPv4)",
        apply: |c, v, _| seconds(v, 0..=120).map(|n| c.dhcp_timeout = n),
        current: |c| c.dhcp_timeout.to_string(),
    },
    Param {
        name: "phase.grace",
        expected: "a duration up to 90d such as 12h or 7d, or off",
        apply: |c, v, _| grace(v).map(|g| c.grace = g),
        current: |c| c.grace.map_or("off".to_owned(), grace_words),
    },
    Param {
        name: "phase.retry",
        expected: "forever, or a number of fetch attempts 1..=1000",
        apply: |c, v, _| {
            let r = v.and_then(crate::retry::Retry::from_word).ok_or(())?;
            c.retry = r;
            Ok(())
        },
        current: |c| c.retry.word(),
    },
    Param {
        name: "phase.kexec",
        expected: "auto|always",
        apply: |c, v, _| keyword(v, Kexec::from_word).map(|k| c.kexec = k),
        current: |c| c.kexec.to_string(),
    },
    // measured boot (docs/attestation.md).
    Param {
        name: "phase.tpm",
        expected: "auto|require",
        apply: |c, v, _| keyword(v, TpmPolicy::from_word).map(|t| c.tpm = t),
        current: |c| c.tpm.to_string(),
    },
    // stage 2: where the target's changes are kept (docs/boot-flow.md).
    Param {
        name: "phase.persist",
        expected:
            "a GPT partition name of 1-36 letters, digits, '.', '_', '-' (e.g. PHASE-CACHE), or off",
        apply: |c, v, _| partition_name(v).map(|p| c.persist = p),
        current: |c| c.persist.clone().unwrap_or_else(|| "off".to_owned()),
    },
];

/// `phase.persist=`: a GPT partition name (at most 36 characters, as GPT
/// allows) of letters, digits, '.', '_', '-', or `off` for none.
fn partition_name(value: Option<&str>) -> Result<Option<String>, ()> {
    let v = value.ok_or(())?;
    if v == "off" {
        return Ok(None);
    }
    is_name(v, 36).then(|| Some(v.to_owned())).ok_or(())
}

/// 1 to `max` bytes of ASCII letters, digits, '.', '_', '-'.
fn is_name(v: &str, max: usize) -> bool {
    (1..=max).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The longest `phase.grace` accepted: a stick offline for more than a
/// quarter needs a peer or a reseed, not a longer freeze window.
pub const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(90 * 86400);

/// `phase.grace=`: `<N>s|m|h|d` up to [`MAX_GRACE`], or `0`/`off` for none.
fn grace(value: Option<&str>) -> Result<Option<std::time::Duration>, ()> {
    let v = value.ok_or(())?;
    if v == "0" || v == "off" {
        return Ok(None);
    }
    // The unit is the last character, not the last byte: `1é` must be a
    // malformed value, not a split inside a UTF-8 sequence.
    let unit = v.chars().next_back().ok_or(())?;
    let num = &v[..v.len() - unit.len_utf8()];
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let n: u64 = num.parse().map_err(|_| ())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86400),
        _ => None,
    }
    .ok_or(())?;
    let d = std::time::Duration::from_secs(secs);
    if d > MAX_GRACE {
        return Err(());
    }
    Ok((secs > 0).then_some(d))
}

/// A whole number of seconds within `range`.
fn seconds(value: Option<&str>, range: std::ops::RangeInclusive<u32>) -> Result<u32, ()> {
    value
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| range.contains(n))
        .ok_or(())
}

/// `phase.socks5=`: `host:port` with a port number and a host of letters,
/// digits, '.', '-' or an `[IPv6]` literal.
fn socks5(value: Option<&str>) -> Result<String, ()> {
    let v = value.ok_or(())?;
    let (host, port) = v.rsplit_once(':').ok_or(())?;
    port.parse::<u16>().ok().filter(|p| *p > 0).ok_or(())?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }
    };
    host_ok.then(|| v.to_owned()).ok_or(())
}

/// A grace period as `phase.grace` spells it: the largest whole unit.
pub fn grace_words(d: std::time::Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

fn known_names() -> String {
    PARAMS
        .iter()
        .map(|p| p.name.trim_start_matches("phase."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn keyword<T>(value: Option<&str>, from: fn(&str) -> Option<T>) -> Result<T, ()> {
    value.and_then(from).ok_or(())
}

fn boolean(value: Option<&str>) -> Result<bool, ()> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(()),
    }
}

/// A channel becomes a path element of target names (`<channel>/<arch>/kernel`),
/// so it is kept to a conservative alphabet.
fn channel(value: Option<&str>) -> Result<String, ()> {
    let v = value.ok_or(())?;
    if is_name(v, 64) && !v.starts_with('.') {
        Ok(v.to_owned())
    } else {
        Err(())
    }
}

fn peers(c: &mut Config, value: Option<&str>, warnings: &mut Vec<Warning>) -> Result<(), ()> {
    let list = value.filter(|v| !v.is_empty()).ok_or(())?;
    for entry in list.split(',').filter(|e| !e.is_empty()) {
        match parse_peer(entry) {
            Some(peer) => c.peers.push(peer),
            None => warnings.push(Warning::BadPeer {
                entry: entry.to_owned(),
            }),
        }
    }
    Ok(())
}

fn parse_peer(entry: &str) -> Option<Peer> {
    let printable = entry.bytes().all(|b| b.is_ascii_graphic());
    if !printable {
        return None;
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = entry.strip_prefix(scheme) {
            let host = rest.split('/').next().unwrap_or("");
            return (!host.is_empty()).then(|| Peer::Url(entry.to_owned()));
        }
    }
    // A multiaddr is /proto/value pairs: at least one protocol with a value.
    let parts: Vec<&str> = entry.split('/').collect();
    let is_multiaddr =
        parts.len() >= 3 && parts[0].is_empty() && parts[1..].iter().all(|p| !p.is_empty());
    is_multiaddr.then(|| Peer::Multiaddr(entry.to_owned()))
}

/// Splits a kernel command line into words the way the kernel does: on
/// ASCII whitespace, except inside double quotes, which are removed. Works on
/// bytes: `/proc/cmdline` is whatever the boot loader passed, not
/// necessarily UTF-8.
pub fn words(cmdline: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut in_word = false;
    for &b in cmdline {
        match b {
            b'"' => {
                quoted = !quoted;
                in_word = true;
            }
            // The kernel's separators; a NUL ends nothing here (the kernel
            // never puts one in /proc/cmdline) and stays in the word.
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            b => {
                cur.push(b);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Parses a whole kernel command line given as text.
pub fn parse(cmdline: &str) -> Parsed {
    parse_bytes(cmdline.as_bytes())
}

/// Parses a whole kernel command line: the bytes of `/proc/cmdline`.
///
/// Total: any bytes give a configuration and warnings, never a panic. A
/// `phase.*` word that is not UTF-8 is never applied: it gets a warning that
/// shows it with U+FFFD in place of the bad bytes, and the value in effect
/// stays. Other words are the kernel's and are not looked at.
pub fn parse_bytes(cmdline: &[u8]) -> Parsed {
    let mut config = Config::default();
    let mut warnings = Vec::new();
    for raw in words(cmdline) {
        if !raw.starts_with(b"phase.") {
            continue;
        }
        let word = String::from_utf8_lossy(&raw);
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word.as_ref(), None),
        };
        let Some(param) = PARAMS.iter().find(|p| p.name == name) else {
            warnings.push(Warning::Unknown {
                name: name.to_owned(),
            });
            continue;
        };
        let before = config.clone();
        // Lossy text is shown, never used: U+FFFD stands for bytes we did not get.
        let utf8 = matches!(word, std::borrow::Cow::Borrowed(_));
        if !utf8 || (param.apply)(&mut config, value, &mut warnings).is_err() {
            config = before;
            warnings.push(Warning::Malformed {
                name: param.name,
                value: value.map(str::to_owned),
                expected: param.expected,
                using: (param.current)(&config),
            });
        }
    }
    Parsed { config, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_without_phase_parameters() {
        let p = parse("BOOT_IMAGE=/vmlinuz root=/dev/sda1 console=ttyS0,115200 quiet");
        assert_eq!(p, Parsed::default());
        assert_eq!(p.config.mode, Mode::Internet);
        assert_eq!(p.config.channel, "stable");
        assert!(!p.config.nowrite());
    }

    #[test]
    fn every_parameter_of_the_table() {
        let p = parse(
            "console=tty0 phase.mode=local phase.channel=testing phase.cache=disabled \
             phase.nowrite=true phase.peers=http://198.18.0.2:8080,/ip4/198.18.0.3/tcp/4001 \
             phase.stage=target phase.debug phase.test=poweroff",
        );
        assert_eq!(p.warnings, vec![]);
        let c = p.config;
        assert_eq!(c.mode, Mode::Local);
        assert_eq!(c.channel, "testing");
        assert_eq!(c.cache, Cache::Disabled);
        assert!(c.nowrite);
        assert_eq!(
            c.peers,
            vec![
                Peer::Url("http://198.18.0.2:8080".into()),
                Peer::Multiaddr("/ip4/198.18.0.3/tcp/4001".into())
            ]
        );
        assert_eq!(c.stage, Stage::Target);
        assert!(c.debug);
        assert_eq!(c.test, Some(TestAction::Poweroff));
    }

    #[test]
    fn private_mode_forces_nowrite() {
        let c = parse("phase.mode=private phase.nowrite=false").config;
        assert!(!c.nowrite);
        assert!(c.nowrite());
    }

    #[test]
    fn misspelled_name_warns_and_keeps_default() {
        let p = parse("phase.mdoe=local");
        assert_eq!(p.config, Config::default());
        assert_eq!(
            p.warnings,
            vec![Warning::Unknown {
                name: "phase.mdoe".into()
            }]
        );
        let line = p.warnings[0].to_string();
        assert!(line.starts_with("phase.mdoe: unknown parameter"), "{line}");
    }

    #[test]
    fn misspelled_value_warns_names_parameter_and_default() {
        let p = parse("phase.mode=lcoal");
        assert_eq!(p.config.mode, Mode::Internet);
        assert_eq!(
            p.warnings[0].to_string(),
            "phase.mode=lcoal: expected internet|local|private; using internet"
        );
    }

    #[test]
    fn malformed_value_keeps_earlier_valid_one() {
        let p = parse("phase.mode=local phase.mode=lcoal");
        assert_eq!(p.config.mode, Mode::Local);
        assert!(p.warnings[0].to_string().ends_with("using local"));
    }

    #[test]
    fn last_valid_occurrence_wins() {
        assert_eq!(
            parse("phase.mode=local phase.mode=private").config.mode,
            Mode::Private
        );
    }

    #[test]
    fn bare_value_parameters() {
        let p = parse("phase.mode phase.nowrite phase.debug=maybe");
        assert_eq!(p.config.mode, Mode::Internet);
        assert!(p.config.nowrite);
        assert!(!p.config.debug);
        let lines: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "phase.mode: needs a value (internet|local|private); using internet",
                "phase.debug=maybe: expected true|false; using false",
            ]
        );
    }

    #[test]
    fn channel_must_be_a_safe_path_element() {
        for bad in ["../etc", "a/b", "", ".hidden", "sp ace"] {
            let p = parse(&format!("\"phase.channel={bad}\""));
            assert_eq!(p.config.channel, "stable", "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
        }
        assert_eq!(
            parse("phase.channel=beta-2.x_y").config.channel,
            "beta-2.x_y"
        );
    }

    #[test]
    fn fetch_timeout_is_bounded_seconds() {
        assert_eq!(parse("phase.fetch_timeout=45").config.fetch_timeout, 45);
        for bad in ["0", "601", "-1", "x", ""] {
            let p = parse(&format!("phase.fetch_timeout={bad}"));
            assert_eq!(p.config.fetch_timeout, DEFAULT_FETCH_TIMEOUT, "{bad}");
            assert!(
                p.warnings
                    .iter()
                    .any(|w| w.to_string().contains("phase.fetch_timeout")),
                "{bad}: {:?}",
                p.warnings
            );
        }
    }

    #[test]
    fn discover_timeout_is_bounded_seconds() {
        assert_eq!(parse("phase.discover_timeout=9").config.discover_timeout, 9);
        for bad in ["0", "61", "2s", ""] {
            let p = parse(&format!("phase.discover_timeout={bad}"));
            assert_eq!(p.config.discover_timeout, DEFAULT_DISCOVER_TIMEOUT, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
        }
    }

    #[test]
    fn bad_peer_entries_are_skipped_one_by_one() {
        let p = parse("phase.peers=http://198.18.0.9,ftp://x,/ip4,/dns/peer.example/tcp/80");
        assert_eq!(p.config.peers.len(), 2);
        let lines: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("\"ftp://x\""), "{}", lines[0]);
        assert!(lines[1].contains("\"/ip4\""), "{}", lines[1]);
        assert_eq!(parse("phase.peers=").warnings.len(), 1);
    }

    #[test]
    fn quotes_group_words_like_the_kernel() {
        let w = |s: &str| -> Vec<String> {
            words(s.as_bytes())
                .into_iter()
                .map(|w| String::from_utf8(w).expect("ASCII in, ASCII out"))
                .collect()
        };
        assert_eq!(w("a \"b c\" d=\"e f\"  g"), vec!["a", "b c", "d=e f", "g"]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert_eq!(w("\"\""), vec![""]);
        assert_eq!(w("a\tb\nc\r\x0bd\x0ce"), vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn other_namespaces_are_not_ours() {
        assert_eq!(
            parse("phase=1 phased.mode=x xphase.mode=y").warnings,
            vec![]
        );
    }

    fn arb_config() -> impl Strategy<Value = Config> {
        let mode = prop_oneof![Just(Mode::Internet), Just(Mode::Local), Just(Mode::Private)];
        let cache = prop_oneof![Just(Cache::Enabled), Just(Cache::Disabled)];
        let stage = prop_oneof![Just(Stage::Boot), Just(Stage::Target)];
        let peer = prop_oneof![
            "[a-z0-9.]{1,12}(:[0-9]{1,5})?".prop_map(|h| Peer::Url(format!("http://{h}"))),
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"
                .prop_map(|ip| Peer::Multiaddr(format!("/ip4/{ip}/tcp/4001"))),
        ];
        (
            mode,
            "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
            cache,
            any::<bool>(),
            proptest::collection::vec(peer, 0..4),
            stage,
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some(TestAction::Poweroff)),
                Just(Some(TestAction::Panic)),
                Just(Some(TestAction::Kexec))
            ],
            prop_oneof![
                Just(None),
                (1u64..=90 * 86400).prop_map(|s| Some(std::time::Duration::from_secs(s)))
            ],
            proptest::option::of(
                "[A-Za-z0-9._-]{1,36}".prop_filter("off means none", |p| p != "off"),
            ),
            prop_oneof![
                Just(crate::retry::Retry::Forever),
                (1u32..=crate::retry::Retry::MAX_ATTEMPTS).prop_map(crate::retry::Retry::Attempts)
            ],
            (
                prop_oneof![Just(Kexec::Auto), Just(Kexec::Always)],
                prop_oneof![Just(TpmPolicy::Auto), Just(TpmPolicy::Require)],
            ),
        )
            .prop_map(
                |(
                    mode,
                    channel,
                    cache,
                    nowrite,
                    peers,
                    stage,
                    debug,
                    test,
                    grace,
                    persist,
                    retry,
                    (kexec, tpm),
                )| {
                    Config {
                        mode,
                        channel,
                        cache,
                        nowrite,
                        peers,
                        stage,
                        debug,
                        test,
                        grace,
                        discover_timeout: DEFAULT_DISCOVER_TIMEOUT,
                        fetch_timeout: DEFAULT_FETCH_TIMEOUT,
                        socks5: None,
                        tor_timeout: DEFAULT_TOR_TIMEOUT,
                        dhcp_timeout: DEFAULT_DHCP_TIMEOUT,
                        persist,
                        retry,
                        kexec,
                        tpm,
                    }
                },
            )
    }

    #[test]
    fn kexec_is_auto_unless_always_and_a_bad_value_warns() {
        assert_eq!(parse("").config.kexec, Kexec::Auto);
        let p = parse("phase.kexec=always");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.kexec, Kexec::Always);
        assert!(p.config.to_cmdline().contains("phase.kexec=always"));
        assert!(p.config.summary().ends_with(" kexec=always"));
        assert!(!parse("phase.kexec=auto")
            .config
            .to_cmdline()
            .contains("kexec"));
        let bad = parse("phase.kexec=never");
        assert_eq!(bad.config.kexec, Kexec::Auto);
        let w: Vec<String> = bad.warnings.iter().map(ToString::to_string).collect();
        assert!(
            w.len() == 1 && w[0].contains("phase.kexec") && w[0].contains("auto|always"),
            "{w:?}"
        );
    }

    #[test]
    fn persist_names_a_partition_or_is_off_and_is_handed_on() {
        let p = parse("phase.persist=PHASE-CACHE");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.persist.as_deref(), Some("PHASE-CACHE"));
        assert!(p.config.to_cmdline().contains("phase.persist=PHASE-CACHE"));
        assert!(p.config.summary().ends_with("persist=PHASE-CACHE"));
        assert_eq!(parse("phase.persist=off").config.persist, None);
        let long = "x".repeat(37);
        for bad in ["", "a:b", "../x", "vda2/", long.as_str()] {
            let p = parse(&format!("phase.persist={bad}"));
            assert_eq!(p.config.persist, None, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
            let w = p.warnings[0].to_string();
            assert!(
                w.starts_with("phase.persist") && w.ends_with("using off"),
                "{w}"
            );
        }
    }

    #[test]
    fn retry_is_forever_by_default_or_a_bounded_count() {
        use crate::retry::Retry;
        assert_eq!(parse("").config.retry, Retry::Forever);
        let p = parse("phase.retry=3");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.retry, Retry::Attempts(3));
        assert!(p.config.summary().ends_with("retry=3"));
        assert_eq!(parse("phase.retry=forever").config.retry, Retry::Forever);
        for bad in ["0", "1001", "x", "", "3é"] {
            let p = parse(&format!("phase.retry={bad}"));
            assert_eq!(p.config.retry, Retry::Forever, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
        }
    }

    #[test]
    fn tpm_is_auto_by_default_or_require_and_a_bad_value_warns() {
        assert_eq!(parse("").config.tpm, TpmPolicy::Auto);
        let p = parse("phase.tpm=require");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.tpm, TpmPolicy::Require);
        assert!(p.config.summary().ends_with("tpm=require"));
        assert!(p.config.to_cmdline().ends_with("phase.tpm=require"));
        assert_eq!(parse("phase.tpm=auto").config.tpm, TpmPolicy::Auto);
        for bad in ["yes", "", "Require"] {
            let p = parse(&format!("phase.tpm={bad}"));
            assert_eq!(p.config.tpm, TpmPolicy::Auto, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
            let w = p.warnings[0].to_string();
            assert!(
                w.starts_with("phase.tpm") && w.ends_with("using auto"),
                "{w}"
            );
        }
        let p = parse("phase.tpm");
        assert_eq!(p.config.tpm, TpmPolicy::Auto);
        assert_eq!(
            p.warnings[0].to_string(),
            "phase.tpm: needs a value (auto|require); using auto"
        );
    }

    #[test]
    fn dhcp_timeout_is_bounded_seconds_zero_means_none_and_stays_in_stage_1() {
        assert_eq!(parse("").config.dhcp_timeout, DEFAULT_DHCP_TIMEOUT);
        assert!(!parse("").config.summary().contains("dhcp_timeout"));
        for (word, want) in [("0", 0), ("3", 3), ("120", 120)] {
            let p = parse(&format!("phase.dhcp_timeout={word}"));
            assert!(p.warnings.is_empty(), "{word}: {:?}", p.warnings);
            assert_eq!(p.config.dhcp_timeout, want);
            assert!(p
                .config
                .summary()
                .ends_with(&format!(" dhcp_timeout={want}")));
            assert!(!p.config.to_cmdline().contains("dhcp_timeout"));
        }
        for bad in ["121", "-1", "x", ""] {
            let p = parse(&format!("phase.dhcp_timeout={bad}"));
            assert_eq!(p.config.dhcp_timeout, DEFAULT_DHCP_TIMEOUT, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
            let w = p.warnings[0].to_string();
            assert!(
                w.contains("phase.dhcp_timeout")
                    && w.contains("0..=120")
                    && w.ends_with("using 10"),
                "{w}"
            );
        }
    }

    #[test]
    fn tor_timeout_is_bounded_seconds_and_stays_in_stage_1() {
        let p = parse("phase.mode=private phase.tor_timeout=40");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.config.tor_timeout, 40);
        assert!(!p.config.to_cmdline().contains("tor_timeout"));
        for bad in ["0", "4", "3601", "x", ""] {
            let p = parse(&format!("phase.tor_timeout={bad}"));
            assert_eq!(p.config.tor_timeout, DEFAULT_TOR_TIMEOUT, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
            let w = p.warnings[0].to_string();
            assert!(
                w.contains("phase.tor_timeout") && w.contains("5..=3600"),
                "{w}"
            );
        }
    }

    #[test]
    fn socks5_takes_host_and_port_and_is_handed_on() {
        let s = |v: &str| parse(&format!("phase.mode=private phase.socks5={v}"));
        for good in ["198.18.0.1:9050", "tor-gw.lan:9050", "[fe80::1]:9050"] {
            let p = s(good);
            assert!(p.warnings.is_empty(), "{good}: {:?}", p.warnings);
            assert_eq!(p.config.socks5.as_deref(), Some(good));
            assert_eq!(parse(&p.config.to_cmdline()).config, p.config);
        }
        for bad in [
            "9050",
            "host:",
            "host:0",
            "host:99999",
            "a b:1",
            "[nope]:1",
            "",
        ] {
            let p = s(bad);
            assert_eq!(p.config.socks5, None, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
            assert!(
                p.warnings[0].to_string().starts_with("phase.socks5"),
                "{bad}"
            );
        }
    }

    #[test]
    fn grace_takes_a_bounded_duration_or_off() {
        let g = |v: &str| parse(&format!("phase.grace={v}"));
        let day = std::time::Duration::from_secs(86400);
        assert_eq!(g("7d").config.grace, Some(7 * day));
        assert_eq!(g("12h").config.grace, Some(day / 2));
        assert_eq!(g("90d").config.grace, Some(90 * day));
        assert_eq!(g("off").config.grace, None);
        assert_eq!(g("0").config.grace, None);
        for bad in ["91d", "7", "d", "-1d", "7w", "", "1e3d"] {
            let p = g(bad);
            assert_eq!(p.config.grace, None, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
            let w = p.warnings[0].to_string();
            assert!(
                w.starts_with("phase.grace") && w.ends_with("using off"),
                "{w}"
            );
        }
        assert_eq!(grace_words(7 * day), "7d");
        assert_eq!(grace_words(std::time::Duration::from_secs(90)), "90s");
        assert!(parse("phase.grace=36h")
            .config
            .summary()
            .ends_with("grace=36h"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn round_trips_every_valid_config(c in arb_config(), pre in "[a-z=,. ]{0,30}") {
            // Kernel words around ours do not matter (none start with "phase.").
            let line = format!("{} {} {}", pre.replace("phase", "x"), c.to_cmdline(), "quiet");
            let p = parse(&line);
            prop_assert_eq!(p.warnings, vec![]);
            prop_assert_eq!(p.config, c);
        }

        #[test]
        fn junk_phase_parameters_warn_and_keep_a_valid_config(
            name in "[a-z]{1,8}", value in "[!-~]{0,16}"
        ) {
            let p = parse(&format!("phase.{name}={value}"));
            if PARAMS.iter().all(|q| q.name != format!("phase.{name}")) {
                prop_assert_eq!(&p.config, &Config::default());
                prop_assert_eq!(p.warnings.len(), 1);
            }
            for w in &p.warnings {
                let line = w.to_string();
                prop_assert!(line.starts_with("phase."), "{}", line);
                prop_assert!(!line.contains('\n'));
            }
            prop_assert!(channel(Some(&p.config.channel)).is_ok());
        }
    }
}
