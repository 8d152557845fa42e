//! phase-init: PID 1 of the Phase Boot initramfs.
//!
//! The boot, in order — one console status line per step (the numbered
//! names are `Step::ALL`, in its order; a test in step.rs keeps
//! them equal):
//!
//! ```text
//!  1. mounts    /proc /sys /dev /dev/pts /dev/shm securityfs /run, then
//!               the console: /dev/kmsg and every active console
//!  2. cmdline   the phase.* parameters (typos warn, then defaults); the
//!               libraries' warnings become console lines (phase.debug)
//!  3. modules   coldplug: modules.always, then the modules whose aliases
//!               match a device's modalias, rescanned after each round
//!  4. loader    which systemd-boot entry booted us (efivarfs)
//!  5. platform  secureboot on|off|setup, lockdown none|integrity|...
//!  6. clock     the boot time expiry checks use (never behind the build)
//!  7. trust     the baked trusted root, verified; its key fingerprint
//! stage 1 (phase.stage=boot):
//!  8. identity  (private mode) a fresh peer id and random MACs
//!  9. network   wired links up, DHCPv4 in parallel, IPv6 link-local
//! 10. cache     the PHASE-CACHE partition (read-only: phase.nowrite, private)
//! 11. discover  peers: mDNS (local mode), the DHT (internet mode)
//! 12. tor       (private mode, no phase.socks5) the embedded Tor client
//! 13. fetch     TUF refresh and the verified kernel, initramfs, rootfs of
//!               (channel, arch); no peer delivered: again after a backoff
//!               (phase.retry; a key press opens the rescue shell)
//! 14. grace     (metadata expired offline) what phase.grace allows, loudly
//!               then `phase-init: ready mode=<mode> channel=<channel>`
//! 15. artifact  phase.test=kexec (instead of 10-14): /etc/phase/test-artifacts
//! 16. private   (private mode) nothing listens, no disk is writable
//! 17. measure   one event per fact of the verified boot into TPM PCR 23,
//!               the log into boot.json (no TPM: `tpm none`)
//! 18. route     kexec, or (phase.kexec=auto) go on as stage 2 when the
//!               verified kernel and initramfs are the ones that booted
//! 19. payload   kexec: target initramfs ++ payload cpio (rootfs, CAS,
//!               boot.json); direct: /phase in place, objects bound read-only
//! 20. kexec     kexec_file_load, then reboot(KEXEC); the hand-over is
//!               committed: the release is kept on a writable cache as
//!               the one to fall back to (either route)
//! 21. fallback  (kexec refused the kernel's signature) the release kept
//!               on the cache, its signed metadata and objects verified
//!               again; then measure, payload, kexec once more for it
//! stage 2 (phase.stage=target, or stage 1 going on directly), after the
//! ready line and what stage 1 measured (PCR 23, boot.json's log):
//! 22. rootfs    squashfs via loop (and dm-verity) + OverlayFS, tmpfs upper
//! 23. move      /proc /sys /dev /run and the payload into the new root
//! 24. switch    switch_root (the initramfs contents are freed)
//! 25. identity  (private mode) the MACs of boot.json again
//! 26. services  exec mode: the supervisor (systemd mode: exec /sbin/init)
//! on failure: the rescue shell; phase.test=panic panics after trust
//! ```
//!
//! PID 1 never exits: a panic anywhere in the boot lands in the rescue shell.
#![forbid(unsafe_code)]
// PID 1 never panics: no unwrap, expect or panic outside the tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use phase_init::cmdline::{Config, Mode, Stage, TestAction};
use phase_init::console::console;
use phase_init::step::{run, Step};
use phase_init::{bootfetch, cachepart, clock, discover, fetchloop, handoff, kernel, loader};
use phase_init::{measure, modules, mounts, net, platform, power, private_boot, ready_line};
use phase_init::{rescue, route, stage2, status, supervisor, trust};

fn main() {
    if !phase_init::is_pid1() {
        // `phase-init status` in the rescue shell (the kernel's init is
        // always PID 1, so its arguments never get here).
        let args: Vec<String> = std::env::args().collect();
        std::process::exit(status::command(&args));
    }
    phase_init::panic::install_hook();
    if panic::catch_unwind(AssertUnwindSafe(boot)).is_err() {
        console().line("boot: phase-init panicked (message above); dropping to the rescue shell");
    }
    rescue::shell_forever()
}

/// The common steps, then stage 1 or stage 2. Returning means: go to the
/// rescue shell.
fn boot() {
    let root = Path::new("/");
    run(Step::Mounts, mounts::step);
    status::persist_to(status::STEPS_FILE);
    console().attach();
    console().line(&format!(
        "phase-init {} (pid 1, kernel {})",
        env!("CARGO_PKG_VERSION"),
        kernel::release()
    ));
    let config = run(Step::Cmdline, kernel::cmdline_step);
    phase_init::logging::install(config.debug);
    run(Step::Modules, || modules::step(root, config.debug));
    run(Step::Loader, loader::step);
    run(Step::Platform, platform::step);
    // The boot time every expiry check uses: never behind the image's build
    // time (and, once the cache is mounted, the last verified boot).
    let clock = run(Step::Clock, || clock::step(root));
    let baked = run(Step::Trust, || trust::step(root, clock.now));
    if config.test == Some(TestAction::Panic) {
        test_panic();
    }
    match config.stage {
        Stage::Boot => stage1(&config, clock, baked),
        Stage::Target => {
            console().raw(&ready_line(&config));
            target(&config);
        }
    }
}

/// Stage 1: network, the verified fetch, the ready line, then the
/// hand-over (`route.rs`, steps 16-21): kexec, or stage 2 in this kernel.
fn stage1(config: &Config, clock: clock::BootClock, baked: Option<trust::BakedRoot>) {
    // Private mode: a fresh identity (random MACs, peer id) before any packet.
    let private = config.mode == Mode::Private;
    let mut identity = private
        .then(|| run(Step::Identity, private_boot::identity_step))
        .flatten();
    if private && identity.is_none() {
        console().line("network: private mode without a fresh identity: every link stays down (the stick's cache only)");
    } else {
        let dhcp_timeout = std::time::Duration::from_secs(u64::from(config.dhcp_timeout));
        run(Step::Network, || net::step(identity.as_mut(), dhcp_timeout));
    }
    if let Some(test) = config.test {
        console().raw(&ready_line(config));
        test_hook(test, config, baked.as_ref());
        return;
    }
    let Some(baked) = baked else {
        console().line("boot: no valid trusted root, nothing can be verified; rebuild the image");
        return;
    };
    let cache = run(Step::Cache, || cachepart::step(config));
    let now = clock::raise_to_cache(clock, cache.as_ref()).now;
    let discovered = run(Step::Discover, || discover::step(config, &baked));
    let mut places = bootfetch::Places::new(cache, discovered);
    let Some(transport) = private_boot::transport(config, &mut places) else {
        return;
    };
    let fetched = fetchloop::fetch(config, &baked, &mut places, now);
    let cache = places.cache.clone();
    // Every circuit closed before the pre-kexec checks (and kexec).
    drop(places);
    transport.close();
    let Some(f) = fetched else { return };
    console().raw(&ready_line(config));
    let provenance = Some((f.tuf, f.peers));
    let (id, baked) = (identity.as_ref(), Some(&baked));
    if let Some(target_config) =
        route::hand_over(&f.artifacts, config, provenance, id, baked, cache.as_ref())
    {
        target(&target_config);
    }
}

/// Stage 2: the payload's rootfs becomes `/`, then systemd or the
/// supervisor takes over. Returns on failure (rescue shell).
fn target(config: &Config) {
    measure::show_stage1(Path::new(::measure::TPM_DEVICE));
    let (upper, set_aside) = stage2::upper_for(config);
    if let Some(line) = set_aside {
        console().warn(&line);
    }
    if !run(Step::Rootfs, || stage2::rootfs_step(&upper))
        || !run(Step::Move, stage2::move_step)
        || !run(Step::Switch, stage2::switch_step)
    {
        return;
    }
    if config.mode == Mode::Private {
        run(Step::TargetIdentity, private_boot::target_identity_step);
    }
    match stage2::handover(Path::new("/")) {
        stage2::Handover::Systemd(init) => stage2::exec_systemd(&init),
        stage2::Handover::Exec => {
            if let Some(list) = run(Step::Services, || supervisor::step(config)) {
                supervisor::serve(&list, config);
            }
        }
    }
}

/// Stage 1's test hooks (`phase.test=`), after the network and the ready
/// line (`panic` is earlier, after the trust step). `kexec`: hand over the
/// test's baked artifacts as after a verified fetch. Returns on failure.
fn test_hook(test: TestAction, config: &Config, baked: Option<&trust::BakedRoot>) {
    match test {
        TestAction::Kexec => {
            let a = run(Step::Artifact, || handoff::artifact_step(config));
            if let Some(c) = a.and_then(|a| route::hand_over(&a, config, None, None, baked, None)) {
                target(&c);
            }
        }
        TestAction::Poweroff => {
            console().line("phase.test=poweroff: powering off");
            let e = power::power_off();
            console().line(&format!("power off failed: {e}"));
        }
        TestAction::Panic => {}
    }
}

/// `phase.test=panic`: a panic anywhere lands in the rescue shell.
#[allow(clippy::panic)]
fn test_panic() {
    panic!("phase.test=panic: panicking on purpose");
}
