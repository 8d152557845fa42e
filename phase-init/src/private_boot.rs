//! Private mode's boot steps: a fresh identity (stage 1), the route every
//! request to a network peer takes (Tor, and the `tor` step that starts the
//! embedded client), the check right before kexec, and the identity again
//! in the target. The rules themselves are [`crate::private`]'s, a module
//! the fuzz crate compiles on its own (no `crate::` item), so its steps
//! live here.

use std::path::Path;

use fetcher::tor::Route;

use crate::bootfetch::Places;
use crate::cmdline::{self, Config};
use crate::console::console;
use crate::private::{self, Identity};
use crate::step::{chain, Status};

/// The stage-1 `identity` step: this boot's ephemeral identity
/// (`identity ephemeral <id>`).
pub fn identity_step() -> (Option<Identity>, Status) {
    match private::fresh_identity() {
        Ok(id) => {
            let detail = id.to_string();
            (Some(id), Status::ok(detail))
        }
        Err(e) => (
            None,
            Status::fail(format!("no random bytes for an ephemeral identity: {e}")),
        ),
    }
}

/// The `private` step, right before kexec: nothing listens (TCP listeners,
/// unconnected bound UDP sockets) and no disk is mounted writable, as the
/// kernel reports them (`/proc/net/*`, `/proc/self/mounts`).
pub fn check_step() -> ((), Status) {
    let mut problems = Vec::new();
    let disks = match std::fs::read_to_string("/proc/self/mounts") {
        Ok(text) => {
            let rw = private::writable_disks(&text);
            problems.extend(
                rw.iter()
                    .map(|m| format!("{m} is mounted read-write (private mode writes no disk)")),
            );
            let ro = private::disk_mounts(&text).len() - rw.len();
            format!("{ro} disk mount(s), all read-only")
        }
        Err(e) => {
            problems.push(format!("cannot read /proc/self/mounts: {e}"));
            "disk mounts unknown".to_owned()
        }
    };
    match private::listening(Path::new("/proc/net")) {
        Ok(l) => problems.extend(
            l.iter()
                .map(|x| format!("listening: {x} (private mode must not listen)")),
        ),
        Err(e) => problems.push(e),
    }
    let detail = if problems.is_empty() {
        format!("no listening sockets; {disks}; trusted state in RAM")
    } else {
        disks
    };
    ((), Status::with_problems(detail, problems))
}

/// The target's `identity` step: stage 1's identity from `boot.json` (a
/// fresh one if it has none), and its random MACs on the NICs before any
/// service brings a link up (kexec gave them their burnt-in MACs back).
pub fn target_identity_step() -> ((), Status) {
    let from_boot = std::fs::read(handover::BOOT_JSON)
        .ok()
        .and_then(|b| handover::BootJson::from_json(&b).ok())
        .and_then(|b| b.identity);
    let (id, whence) = match from_boot {
        Some(id) => (id, "from boot.json"),
        None => match private::fresh_identity() {
            Ok(id) => (id, "fresh (boot.json has none)"),
            Err(e) => {
                return (
                    (),
                    Status::fail(format!("no random bytes for an ephemeral identity: {e}")),
                )
            }
        },
    };
    match crate::net::apply_private_macs(&id) {
        Ok(lines) if lines.is_empty() => ((), Status::ok(format!("{id} {whence}; no wired NICs"))),
        Ok(lines) => {
            let problems = lines
                .iter()
                .filter(|l| l.contains("keeps its own"))
                .cloned()
                .collect();
            (
                (),
                Status::with_problems(format!("{id} {whence}; {}", lines.join(", ")), problems),
            )
        }
        Err(e) => ((), Status::fail(chain(&e))),
    }
}

#[cfg(feature = "tor")]
type EmbeddedTor = crate::torboot::Embedded;
#[cfg(not(feature = "tor"))]
type EmbeddedTor = std::convert::Infallible;

/// How this boot reaches network peers; an embedded Tor client, if one was
/// started, runs until [`Transport::close`] (before the pre-kexec check).
#[derive(Debug)]
pub struct Transport(Option<EmbeddedTor>);

impl Transport {
    /// Stops the embedded Tor client, if any: every circuit closed.
    pub fn close(self) {
        #[cfg(feature = "tor")]
        if let Some(tor) = self.0 {
            tor.stop();
        }
        #[cfg(not(feature = "tor"))]
        if let Some(never) = self.0 {
            match never {}
        }
    }
}

/// Sets `places.route`. Private mode never connects directly: requests to
/// network peers go through Tor, a `phase.socks5` proxy or else the
/// embedded arti client (the `tor` step); a seeded stick needs no
/// connection. Other modes: direct. `None`: private mode has peers but no
/// way to reach them through Tor; the line saying so is printed and
/// recorded (the boot goes to the rescue shell).
pub fn transport(config: &Config, places: &mut Places) -> Option<Transport> {
    match route(config, places) {
        Ok((r, tor)) => {
            places.route = r;
            Some(Transport(tor))
        }
        Err(line) => {
            let line = format!("fetch: {line}");
            crate::status::record_failure(&line);
            console().line(&line);
            None
        }
    }
}

fn route(config: &Config, places: &Places) -> Result<(Route, Option<EmbeddedTor>), String> {
    if config.mode != cmdline::Mode::Private {
        return Ok((Route::Direct, None));
    }
    let peers = places.discovered.peers.len()
        + config
            .peers
            .iter()
            .filter(|p| matches!(p, cmdline::Peer::Url(_)))
            .count();
    let how = match &config.socks5 {
        Some(a) => Some(format!("the SOCKS5 proxy {a}, phase.socks5")),
        None if cfg!(feature = "tor") => Some("the embedded client, arti".to_string()),
        None => None,
    };
    match private::transport_check(peers, how)? {
        private::Route::CacheOnly => {
            console().line("fetch: private mode, no network peers: the stick's read-only cache only (no connection)");
            Ok((Route::Direct, None))
        }
        private::Route::Tor(how) => {
            console().line(&format!(
                "fetch: private mode, every request through Tor ({how})"
            ));
            match &config.socks5 {
                Some(a) => Ok((Route::Socks5(a.clone()), None)),
                None => start_embedded_tor(config),
            }
        }
    }
}

/// The `tor` step: arti bootstrapped in RAM, or one line saying why not
/// (never a fall-back to a direct connection).
#[cfg(feature = "tor")]
fn start_embedded_tor(config: &Config) -> Result<(Route, Option<EmbeddedTor>), String> {
    match crate::step::run(crate::step::Step::Tor, || crate::torboot::step(config)) {
        Some(t) => Ok((t.route(), Some(t))),
        None => Err("the embedded Tor client did not bootstrap (see the tor step above); private mode never connects directly".into()),
    }
}

#[cfg(not(feature = "tor"))]
fn start_embedded_tor(_: &Config) -> Result<(Route, Option<EmbeddedTor>), String> {
    Err("this phase-init has no embedded Tor client (built without feature `tor`); set phase.socks5=HOST:PORT".into())
}
