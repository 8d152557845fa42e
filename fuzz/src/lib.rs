//! Shared code of the fuzz targets (docs/fuzzing.md).
//!
//! The network and disk parsers live in crates whose dependency trees are
//! large (phase-init: libp2p, rtnetlink, arti; fetcher: hyper, reqwest). The
//! parser modules themselves are pure, so they are compiled here from their
//! own source files: the exact code the product runs, without building those
//! trees with coverage instrumentation. Each such file says at its top that
//! it must stay self-contained (std, serde and the crates listed in
//! Cargo.toml, no `crate::` item); if one grows a dependency, this crate
//! stops building and `make fuzz-smoke` says so.
//!
//! The trust core (`verifier`) and the `boot.json` schema (`handover`) are
//! light crates and are used as dependencies.
#![forbid(unsafe_code)]

/// `phase.*` kernel parameters (phase-init).
#[path = "../../phase-init/src/cmdline.rs"]
pub mod cmdline;

/// `phase.retry`'s policy (phase-init), a [`cmdline::Config`] field.
#[path = "../../phase-init/src/retry.rs"]
pub mod retry;

/// `/etc/phase/services.toml` (phase-init).
#[path = "../../phase-init/src/services.rs"]
pub mod services;

/// Private mode (phase-init): the MACs of `boot.json`'s identity.
#[path = "../../phase-init/src/private.rs"]
pub mod private;

/// The `_phase._tcp` TXT record (discovery).
#[path = "../../discovery/src/txt.rs"]
pub mod txt;

/// `/chunks` answers and `Range` headers (fetcher).
#[path = "../../fetcher/src/wire.rs"]
pub mod wire;

/// The firmware's TCG event log, from a node's `/attest` answer (measure).
#[path = "../../measure/src/firmware.rs"]
pub mod firmware;

pub mod fixture;
pub mod targets;

/// Splits fuzz input into `n` parts at 0xFF bytes (a separator no UTF-8
/// text holds), so one input can carry several strings.
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0xff).collect()
}

/// Reads canonical JSON back. OLPC canonical JSON writes control characters
/// inside strings raw (only `"` and `\` are escaped), which strict JSON
/// forbids; outside strings it has no whitespace, so every byte below 0x20
/// is inside a string and becomes a `\u00XX` escape before parsing.
pub fn read_canonical(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    let mut strict = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b < 0x20 {
            strict.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            strict.push(b);
        }
    }
    serde_json::from_slice(&strict)
}
