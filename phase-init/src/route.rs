//! Stage 1's hand-over of verified artifacts, steps `private` to
//! `fallback` of `main.rs`: measure, the route (kexec, or stage 2 in this
//! kernel), the payload, `kexec_file_load` and `reboot(KEXEC)`, and after
//! a refusal of the kernel's signature the release the cache keeps
//! ([`crate::fallback`]).
//!
//! [`hand_over`] is the one path for a verified fetch and for the boot
//! test's baked artifacts (`phase.test=kexec`). A started kernel never
//! returns here; every failure is said on the console before it returns,
//! and the caller goes to the rescue shell (never a retry loop: the same
//! kernel is never tried twice).

use std::path::Path;

use crate::cachepart::Mounted;
use crate::cmdline::{Config, Mode};
use crate::console::console;
use crate::direct::Route;
use crate::handoff::{self, Artifacts, Provenance};
use crate::kexec::{self, KexecError};
use crate::step::{chain, run, Step};
use crate::{direct, fallback, measure, platform, private, private_boot, trust};

/// Measure, the route, the payload, then kexec_file_load and
/// reboot(KEXEC). `Some(config)`: the direct route laid `/phase` out, and
/// stage 2 goes on in this kernel with `config`. `None`: the hand-over
/// failed (said on the console). A kernel refused for its signature is
/// followed by the release `cache` keeps (the `fallback` step), by kexec
/// only. A committed hand-over keeps its release in `cache`.
pub fn hand_over(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<Provenance>,
    identity: Option<&private::Identity>,
    baked: Option<&trust::BakedRoot>,
    cache: Option<&Mounted>,
) -> Option<Config> {
    if config.mode == Mode::Private {
        run(Step::Private, private_boot::check_step);
    }
    let events = measure::events(artifacts, config, provenance.as_ref(), baked);
    let device = Path::new(::measure::TPM_DEVICE);
    let log = run(Step::Measure, || {
        measure::step(device, config.tpm, &[], &events)
    })?;
    let tuf = provenance.as_ref().map(|(tuf, _)| tuf.clone());
    // Only a verified fetch (with its TUF versions) is kept, never the
    // boot test's baked artifacts.
    let keep = || {
        if let Some(tuf) = &tuf {
            fallback::keep(cache, artifacts, tuf, config);
        }
    };
    let route = run(Step::Route, || direct::step(config, artifacts));
    if route.is_direct() {
        let lay_out = || direct::lay_out_step(artifacts, config, provenance, identity, &route, log);
        let target_config = run(Step::Payload, lay_out)?;
        keep();
        direct::announce(&target_config);
        return Some(target_config);
    }
    let refused = match load(artifacts, config, provenance, identity, &route, log.clone())? {
        Ok(()) => {
            keep();
            start_loaded();
            return None;
        }
        Err(e) => e,
    };
    if !refused.is_signature_refusal(platform::locked_down(&platform::current())) {
        return None;
    }
    // The running kernel refused the verified kernel's signature: the
    // release this machine booted last, if the cache keeps one, verified
    // again; never the direct route.
    let older = run(Step::Fallback, || {
        fallback::step(cache, artifacts, tuf.as_ref(), &refused, config)
    })?;
    let more = measure::events(&older.artifacts, config, Some(&older.provenance), baked);
    let more_log = run(Step::Measure, || {
        measure::step(device, config.tpm, &events, &more)
    })?;
    let log = log.into_iter().chain(more_log).collect();
    let route = Route::Fallback(older.refused);
    let provenance = Some(older.provenance);
    if load(&older.artifacts, config, provenance, identity, &route, log)?.is_ok() {
        start_loaded();
    }
    None
}

/// The payload for `route`, then kexec_file_load. `None`: the payload
/// failed; `Some(Err)`: the kernel refused the target.
fn load(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<Provenance>,
    identity: Option<&private::Identity>,
    route: &Route,
    log: Vec<handover::Measurement>,
) -> Option<Result<(), KexecError>> {
    let payload = || handoff::payload_step(artifacts, config, provenance, identity, route, log);
    let target = run(Step::Payload, payload)?;
    Some(run(Step::Kexec, || kexec::step(&target)))
}

/// reboot(KEXEC) into the loaded target kernel; returns only on failure.
fn start_loaded() {
    console().line("kexec: starting the target kernel");
    let e = kexec::exec();
    console().line(&format!("kexec: {}", chain(&e)));
}
