//! phase-init: PID 1 of the Phase Boot initramfs.
//!
//! The boot, in order — one console status line per step:
//!
//! ```text
//!  1. mounts    /proc /sys /dev /dev/pts /dev/shm securityfs /run
//!  2. console   attach /dev/kmsg and every active console
//!  3. cmdline   the phase.* parameters; typos warn, then defaults; from
//!               here on the libraries' warnings are console lines
//!               (phase.debug=true: their debug events too)
//!  4. modules   /etc/phase/modules.order via finit_module
//!  5. loader    which systemd-boot entry booted us (efivarfs)
//!  6. platform  secureboot on|off|setup, lockdown none|integrity|...
//!  7. clock     the boot time expiry checks use (never behind the build)
//!  8. trust     the baked trusted root, verified; its key fingerprint
//! stage 1 (phase.stage=boot):
//!  9. identity  (private mode) a fresh peer id and random MACs
//! 10. network   wired links up, DHCPv4 in parallel, IPv6 link-local
//! 11. cache     (no test hook) the PHASE-CACHE partition, ext4,
//!               read-write unless phase.nowrite / private mode
//! 12. discover  peers: mDNS in local mode, the DHT (phase.peers
//!               multiaddrs) in internet mode (phase.discover_timeout)
//! 13. tor       (private mode, network peers) the embedded Tor client
//! 14. fetch     TUF refresh (peers, then the cache) and the verified kernel,
//!               initramfs, rootfs of (channel, arch); when no peer
//!               delivered, discover + fetch again after a backoff with a
//!               countdown (phase.retry, default forever; a key press on
//!               the console stops it for the rescue shell); `grace` when
//!               phase.grace allows an offline expired boot
//! 15. ready     `phase-init: ready mode=<mode> channel=<channel>`
//! 16. payload   (private: the pre-kexec check first) target initramfs ++
//!               payload cpio (rootfs, CAS, boot.json); kexec_file_load +
//!               reboot(KEXEC)
//!               phase.test=kexec: the artifacts in /etc/phase/test-artifacts
//!               phase.test=poweroff: power off after the ready line
//! stage 2 (phase.stage=target):
//! 17. rootfs    squashfs via loop + OverlayFS with a tmpfs upper
//!     move      /proc /sys /dev /run and the payload into the new root
//!     switch    switch_root (the initramfs contents are freed)
//!     identity  (private mode) the MACs of boot.json again
//!     services  systemd (exec /sbin/init) or the services supervisor
//! on failure: the rescue shell
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

use std::os::unix::process::CommandExt;

use phase_init::cmdline::{self, Config, Stage, TestAction};
use phase_init::console::console;
use phase_init::step::{self, chain, Status};
use phase_init::{
    bootfetch, cachepart, discover, handoff, kexec, keywatch, loader, modules, mounts, net, power,
    private, rescue, retry, services, stage2, supervisor, trust,
};
use phase_init::{clock, failure};

fn main() {
    if !phase_init::is_pid1() {
        // `phase-init status` in the rescue shell (the kernel's init is
        // always PID 1, so its arguments never get here).
        let args: Vec<String> = std::env::args().collect();
        std::process::exit(phase_init::status::command(&args));
    }
    phase_init::panic::install_hook();
    if panic::catch_unwind(AssertUnwindSafe(boot)).is_err() {
        console().line("boot: phase-init panicked (message above); dropping to the rescue shell");
    }
    rescue::shell_forever()
}

/// Stage 1 up to the ready line and what follows it. Returning means: go to
/// the rescue shell.
fn boot() {
    let root = Path::new("/");
    step::run("mounts", early_mounts);
    phase_init::status::persist_to(phase_init::status::STEPS_FILE);
    console().attach();
    console().line(&format!(
        "phase-init {} (pid 1, kernel {})",
        env!("CARGO_PKG_VERSION"),
        kernel_release()
    ));
    let config = step::run("cmdline", read_cmdline);
    phase_init::logging::install(config.debug);
    step::run("modules", || load_modules(root, config.debug));
    step::run("loader", boot_entry);
    step::run("platform", || {
        let p = phase_init::platform::current();
        ((), Status::ok(p.to_string()))
    });
    // The boot time every expiry check uses: never behind the image's build
    // time (and, once the cache is mounted, the last verified boot).
    let clock = step::run("clock", || boot_clock(root));
    let now = clock.now;
    let baked = step::run("trust", || trusted_root(root, now));
    if config.test == Some(TestAction::Panic) {
        test_panic();
    }
    // Private mode: a fresh identity before any packet leaves (random MACs,
    // an ephemeral peer id; see private.rs).
    let mut identity = (config.stage == Stage::Boot && config.mode == cmdline::Mode::Private)
        .then(|| step::run("identity", fresh_identity))
        .flatten();
    if config.stage == Stage::Boot {
        if config.mode == cmdline::Mode::Private && identity.is_none() {
            console().line("network: private mode without a fresh identity: every link stays down (the stick's cache only)");
        } else {
            step::run("network", || network(identity.as_mut()));
        }
    }
    let mut fetched = None;
    if config.stage == Stage::Boot && config.test.is_none() {
        let Some(baked) = baked else {
            console()
                .line("boot: no valid trusted root, nothing can be verified; rebuild the image");
            return;
        };
        let cache = step::run("cache", || mount_cache(&config));
        let now = raise_clock(clock, cache.as_ref()).now;
        let discovered = step::run("discover", || discover::step(&config, &baked));
        let mut places = bootfetch::Places {
            cache,
            ram_cas: bootfetch::RAM_CAS.into(),
            discovered,
            route: fetcher::tor::Route::Direct,
        };
        let tor = match private_route(&config, &places) {
            Ok((route, tor)) => {
                places.route = route;
                tor
            }
            Err(line) => {
                let line = format!("fetch: {line}");
                phase_init::status::record_failure(&line);
                console().line(&line);
                return;
            }
        };
        let f = fetch_with_retries(&config, &baked, &mut places, now);
        // Every circuit closed before the pre-kexec checks (and kexec).
        drop(places);
        if let Some(tor) = tor {
            stop_tor(tor);
        }
        let Some(f) = f else {
            return;
        };
        fetched = Some(f);
    }
    console().raw(&phase_init::ready_line(&config));
    if let Some(f) = fetched {
        hand_over(
            &f.artifacts,
            &config,
            Some((f.tuf, f.peers)),
            identity.as_ref(),
        );
        return;
    }
    if config.stage == Stage::Target {
        target(&config);
        return;
    }
    if config.test == Some(TestAction::Kexec) {
        kexec_test_artifacts(&config);
        return;
    }
    if config.test == Some(TestAction::Poweroff) {
        console().line("phase.test=poweroff: powering off");
        let e = power::power_off();
        console().line(&format!("power off failed: {e}"));
    }
}

/// Stage 2: the payload's rootfs becomes `/`, then systemd or the
/// supervisor takes over. Returns on failure (rescue shell).
fn target(config: &Config) {
    let step_result = |r: Result<String, stage2::Stage2Error>| match r {
        Ok(detail) => (true, Status::ok(detail)),
        Err(e) => (false, Status::fail(chain(&e))),
    };
    let (upper, set_aside) = stage2::upper_for(config);
    if let Some(line) = set_aside {
        console().warn(&line);
    }
    let mounted = step::run("rootfs", || match stage2::mount_root(&upper) {
        Ok((detail, problems)) => (true, Status::with_problems(detail, problems)),
        Err(e) => (false, Status::fail(chain(&e))),
    });
    if !mounted {
        return;
    }
    if !step::run("move", || step_result(stage2::move_mounts())) {
        return;
    }
    if !step::run("switch", || step_result(stage2::switch_root())) {
        return;
    }
    if config.mode == cmdline::Mode::Private {
        step::run("identity", target_identity);
    }
    match stage2::handover(Path::new("/")) {
        stage2::Handover::Systemd(init) => {
            console().line(&format!("handover: systemd mode, exec {}", init.display()));
            let e = std::process::Command::new(&init).exec();
            console().line(&format!("handover: cannot exec {}: {e}", init.display()));
        }
        stage2::Handover::Exec => {
            let file = Path::new(services::SERVICES_FILE);
            let Some(list) = step::run("services", || match services::load(file) {
                Ok(s) => {
                    let (s, left_out) = s.for_mode(config.mode.as_str());
                    for name in left_out {
                        console().line(&format!(
                            "service {name}: not started in {} mode (its `modes` leave it out)",
                            config.mode
                        ));
                    }
                    let waves: Vec<String> = s.waves().iter().map(|w| w.join(" ")).collect();
                    let detail = format!(
                        "exec mode: {} service(s), start order: {}",
                        s.services.len(),
                        waves.join(" | ")
                    );
                    (Some(s), Status::ok(detail))
                }
                Err(e) => (None, Status::fail(chain(&e))),
            }) else {
                return;
            };
            let how = supervisor::run(&list, &supervisor::boot_env(config));
            let e = match how {
                supervisor::Shutdown::PowerOff => {
                    console().line("supervisor: powering off");
                    power::power_off()
                }
                supervisor::Shutdown::Reboot => {
                    console().line("supervisor: rebooting");
                    power::reboot()
                }
            };
            console().line(&format!("supervisor: shutdown failed: {e}"));
        }
    }
}

/// `phase.test=kexec`: hand over to the artifacts baked into the test's
/// initramfs, exactly as after a verified fetch. Returns on failure.
fn kexec_test_artifacts(config: &Config) {
    let dir = Path::new(handoff::TEST_ARTIFACTS);
    let Some(artifacts) = step::run("artifact", || {
        match handoff::test_artifacts(dir, &config.channel) {
            Ok(a) => {
                let detail = format!(
                    "kernel {} B, initramfs {} B, rootfs {} B from {}",
                    a.kernel.length,
                    a.initramfs.length,
                    a.rootfs.length,
                    dir.display()
                );
                (Some(a), Status::ok(detail))
            }
            Err(e) => (None, Status::fail(chain(&e))),
        }
    }) else {
        return;
    };
    hand_over(&artifacts, config, None, None);
}

/// Payload, kexec_file_load, reboot(KEXEC). Returns only on failure, after
/// saying why; the caller goes to the rescue shell (never a retry loop).
fn hand_over(
    artifacts: &handoff::Artifacts,
    config: &Config,
    provenance: Option<(handover::TufVersions, Vec<handover::PeerBytes>)>,
    identity: Option<&private::Identity>,
) {
    if config.mode == cmdline::Mode::Private {
        step::run("private", private_check);
    }
    let cmdline = handoff::target_cmdline(&artifacts.cmdline, config);
    let out = Path::new(handoff::INITRD_OUT);
    let Some(target) = step::run("payload", || {
        let mut boot = handoff::boot_json(artifacts, config, &cmdline);
        if let Some((tuf, peers)) = provenance {
            boot.tuf = tuf;
            boot.peers = peers;
        }
        boot.identity = identity.cloned();
        match handoff::prepare(artifacts, &boot, out) {
            Ok((t, size)) => (Some(t), Status::ok(format!("{} ({size} B)", out.display()))),
            Err(e) => (None, Status::fail(chain(&e))),
        }
    }) else {
        return;
    };
    let loaded = step::run("kexec", || match kexec::load(&target) {
        Ok(()) => (
            true,
            Status::ok(format!("loaded; cmdline: {}", target.cmdline)),
        ),
        Err(e) => (false, Status::fail(chain(&e))),
    });
    if !loaded {
        return;
    }
    console().line("kexec: starting the target kernel");
    let e = kexec::exec();
    console().line(&format!("kexec: {}", chain(&e)));
}

/// Every wired interface up, DHCPv4 in parallel, IPv6 link-local; in
/// private mode each with a random MAC first.
fn network(identity: Option<&mut private::Identity>) -> ((), Status) {
    match net::bring_up(net::DHCP_TIMEOUT, identity) {
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
                    Some(match r.ipv6_link_local {
                        Some(_) => format!("{}: {e}; IPv6 link-local only", r.name),
                        None => format!("{}: {e}; and no IPv6 link-local address", r.name),
                    })
                })
                .collect();
            ((), Status::with_problems(detail, problems))
        }
        Err(e) => ((), Status::fail(chain(&e))),
    }
}

/// The target in private mode: stage 1's identity from `boot.json` (a fresh
/// one if it has none), and its random MACs on the NICs before any service
/// brings a link up (kexec gave them their burnt-in MACs back).
fn target_identity() -> ((), Status) {
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
    match net::apply_private_macs(&id) {
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

/// Private mode's identity for this boot (`identity ephemeral <id>`).
fn fresh_identity() -> (Option<private::Identity>, Status) {
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

/// Private mode, right before kexec: nothing listens (TCP listeners,
/// unconnected bound UDP sockets) and no disk is mounted writable, as the
/// kernel reports them (`/proc/net/*`, `/proc/self/mounts`).
fn private_check() -> ((), Status) {
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

/// Private mode never connects directly: requests to network peers go
/// through Tor, a `phase.socks5` proxy or else the embedded arti client
/// (started here); a seeded stick needs no connection. Other modes: direct.
/// The embedded client, if started, is returned to be stopped before kexec.
fn private_route(
    config: &Config,
    places: &bootfetch::Places,
) -> Result<(fetcher::tor::Route, Option<EmbeddedTor>), String> {
    use fetcher::tor::Route;
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

#[cfg(feature = "tor")]
type EmbeddedTor = phase_init::torboot::Embedded;
#[cfg(not(feature = "tor"))]
type EmbeddedTor = std::convert::Infallible;

/// The `tor` step: arti bootstrapped in RAM, or one line saying why not
/// (never a fall-back to a direct connection).
#[cfg(feature = "tor")]
fn start_embedded_tor(
    config: &Config,
) -> Result<(fetcher::tor::Route, Option<EmbeddedTor>), String> {
    use phase_init::torboot;
    let tor = step::run("tor", || {
        match torboot::Embedded::start(
            Path::new(torboot::NETWORK_FILE),
            Path::new(torboot::STATE_DIR),
            std::time::Duration::from_secs(u64::from(config.tor_timeout)),
        ) {
            Ok(t) => {
                let detail = format!("bootstrapped on {}; state in RAM", t.network);
                (Some(t), Status::ok(detail))
            }
            Err(e) => (None, Status::fail(e)),
        }
    });
    match tor {
        Some(t) => Ok((t.route(), Some(t))),
        None => Err("the embedded Tor client did not bootstrap (see the tor step above); private mode never connects directly".into()),
    }
}

#[cfg(feature = "tor")]
fn stop_tor(tor: EmbeddedTor) {
    tor.stop();
}

#[cfg(not(feature = "tor"))]
fn stop_tor(tor: EmbeddedTor) {
    match tor {}
}

#[cfg(not(feature = "tor"))]
fn start_embedded_tor(_: &Config) -> Result<(fetcher::tor::Route, Option<EmbeddedTor>), String> {
    Err("this phase-init has no embedded Tor client (built without feature `tor`); set phase.socks5=HOST:PORT".into())
}

fn early_mounts() -> ((), Status) {
    let r = mounts::mount_all(mounts::EARLY_MOUNTS);
    let problems = r
        .failed
        .iter()
        .map(|(target, e)| format!("mount {target}: {e}"))
        .collect();
    ((), Status::with_problems(r.summary(), problems))
}

fn read_cmdline() -> (Config, Status) {
    // Bytes, not text: a boot loader may pass anything, and one non-UTF-8
    // byte must cost only the word it is in (cmdline::parse_bytes).
    match std::fs::read("/proc/cmdline") {
        Ok(bytes) => {
            let parsed = cmdline::parse_bytes(&bytes);
            let problems = parsed.warnings.iter().map(ToString::to_string).collect();
            let detail = parsed.config.summary();
            (parsed.config, Status::with_problems(detail, problems))
        }
        Err(e) => (
            Config::default(),
            Status::fail(format!(
                "cannot read /proc/cmdline: {e}; using the defaults"
            )),
        ),
    }
}

fn boot_entry() -> ((), Status) {
    let r = mounts::mount_all(mounts::AFTER_MODULES);
    let efi = Path::new(phase_init::platform::EFIVARS);
    let detail = match loader::describe(efi) {
        Some(entry) => entry,
        None if !r.skipped.is_empty() => {
            "no UEFI variables (direct kernel boot or BIOS)".to_owned()
        }
        None => "no boot loader entry in the UEFI variables".to_owned(),
    };
    let problems = r
        .failed
        .iter()
        .map(|(target, e)| format!("mount {target}: {e} (is efivarfs.ko in the module list?)"))
        .collect();
    ((), Status::with_problems(detail, problems))
}

fn load_modules(root: &Path, debug: bool) -> ((), Status) {
    let plan = match modules::read_plan(root) {
        Ok(plan) => plan,
        Err(e) => return ((), Status::fail(chain(&e))),
    };
    let report = modules::load_all(&plan);
    if debug {
        for (module, outcome, took) in &report.each {
            console().line(&format!(
                "  module {module}: {outcome} ({} ms)",
                took.as_millis()
            ));
        }
    }
    let mut problems: Vec<String> = Vec::new();
    let running = kernel_release();
    if plan.kernel_release != running {
        problems.push(format!(
            "modules are for kernel {} but {running} is running",
            plan.kernel_release
        ));
    }
    problems.extend(
        report
            .failed
            .iter()
            .map(|e| format!("{}; continuing", chain(e))),
    );
    ((), Status::with_problems(report.summary(), problems))
}

fn trusted_root(
    root: &Path,
    now: chrono::DateTime<chrono::Utc>,
) -> (Option<trust::BakedRoot>, Status) {
    match trust::load(root, now) {
        Ok(r) => {
            let detail = format!("root v{} fingerprint {}", r.version, r.fingerprint);
            (Some(r), Status::ok(detail))
        }
        Err(e) => (None, Status::fail(chain(&e))),
    }
}

/// The cache partition, unless `phase.cache=disabled`; read-only when
/// writes are not allowed. A missing partition is a warning: the peers may
/// still have everything.
fn mount_cache(config: &Config) -> (Option<cachepart::Mounted>, Status) {
    if config.cache == phase_init::cmdline::Cache::Disabled {
        return (None, Status::ok("disabled (phase.cache=disabled)"));
    }
    match cachepart::mount_cache(!config.nowrite(), cachepart::WAIT) {
        Ok(m) => {
            let detail = format!(
                "{} at {} {}",
                m.device.display(),
                m.dir.display(),
                if m.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            );
            (Some(m), Status::ok(detail))
        }
        Err(e) => (
            None,
            Status::with_problems(
                "none",
                vec![format!("{}; continuing with peers only", chain(&e))],
            ),
        ),
    }
}

/// The verified fetch, tried again while the retry policy (`phase.retry`,
/// default forever) allows it and the failure is one that another attempt
/// can mend: a node of a fleet may power on before its seed. Each new
/// attempt looks for peers again; between attempts a console countdown,
/// during which any key stops the retries for the rescue shell. A node with
/// no network at all tries once. `None`: it failed and said why; go to the
/// rescue shell.
fn fetch_with_retries(
    config: &Config,
    baked: &trust::BakedRoot,
    places: &mut bootfetch::Places,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<bootfetch::Fetched> {
    let policy = if may_find_peers_later(config, places) {
        config.retry
    } else {
        retry::Retry::Attempts(1)
    };
    let mut keys: Option<keywatch::KeyWatch> = None;
    let mut kind = failure::Kind::Other;
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        if attempt > 1 {
            places.discovered.close();
            places.discovered = step::run("discover", || discover::step(config, baked));
        }
        let mut grace_allowed = false;
        let r = step::run("fetch", || {
            match bootfetch::run(config, baked, places, now) {
                Ok(f) => {
                    let detail = format!(
                        "tuf root v{} timestamp v{} targets v{}; {} from {}",
                        f.tuf.root.unwrap_or(0),
                        f.tuf.timestamp.unwrap_or(0),
                        f.tuf.targets.unwrap_or(0),
                        f.artifacts.names.join(" "),
                        f.peers
                            .iter()
                            .map(|p| format!("{}={}", p.peer, p.bytes))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    (Some(f), Status::ok(detail))
                }
                Err(e) => {
                    kind = failure::classify(&e);
                    grace_allowed = failure::expired_offline(&e);
                    (None, Status::fail(chain(&e)))
                }
            }
        });
        if r.is_some() {
            remember_verified_time(places, now);
            return r;
        }
        if grace_allowed {
            if let Some(f) = fetch_with_grace(config, baked, places, now) {
                return Some(f);
            }
        }
        if !kind.retry_helps() || !policy.another_after(attempt) {
            break;
        }
        let wait = retry::backoff(attempt);
        console().line(&retry::announce(policy, attempt, wait));
        let keys = keys.get_or_insert_with(|| keywatch::KeyWatch::open(&rescue::console_ttys()));
        if keywatch::countdown(wait, keys, |l| console().line(l)) == keywatch::Countdown::KeyPressed
        {
            let line = format!(
                "boot: a key was pressed; no more fetch attempts after {attempt}: {}. `phase-init status` shows the steps",
                kind.advice()
            );
            phase_init::status::record_failure(&line);
            console().line(&line);
            return None;
        }
    }
    let line = format!(
        "boot: no verified boot set; nothing was kexec'd: {}. `phase-init status` shows the steps",
        kind.advice()
    );
    phase_init::status::record_failure(&line);
    console().line(&line);
    None
}

/// Whether another attempt could meet a peer: peers were found or named,
/// or (outside private mode, which only reaches what `phase.peers` names)
/// a wired link exists on which one may still appear. A stick with no
/// network at all has only its cache, and retrying cannot change that.
fn may_find_peers_later(config: &Config, places: &bootfetch::Places) -> bool {
    let named = config
        .peers
        .iter()
        .any(|p| matches!(p, phase_init::cmdline::Peer::Url(_)));
    let wired = config.mode != cmdline::Mode::Private
        && !net::wired_interfaces(Path::new("/sys/class/net")).is_empty();
    !places.discovered.peers.is_empty() || named || wired
}

/// The grace policy (`phase.grace`, docs/boot-flow.md): offline, with
/// metadata that expired, judge expiry `grace` in the past — once, loudly.
/// Signatures, versions and hashes are checked as always.
fn fetch_with_grace(
    config: &Config,
    baked: &trust::BakedRoot,
    places: &bootfetch::Places,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<bootfetch::Fetched> {
    let Some(grace) = config.grace else {
        console().line(
            "grace: metadata expired while offline and phase.grace is not set; refusing (the default)",
        );
        return None;
    };
    let words = cmdline::grace_words(grace);
    let at = clock::grace_time(now, grace);
    console().line(&format!(
        "WARNING grace: metadata expired while offline; phase.grace={words} allows booting the newest cached trusted target, judging expiry at {} instead of {}",
        at.format("%Y-%m-%dT%H:%M:%SZ"),
        now.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    step::run("grace", || {
        match bootfetch::run(config, baked, places, at) {
            Ok(f) => {
                let detail = format!(
                "UNFRESH boot allowed by phase.grace={words}: tuf timestamp v{} targets v{}; {}",
                f.tuf.timestamp.unwrap_or(0),
                f.tuf.targets.unwrap_or(0),
                f.artifacts.names.join(" ")
            );
                (Some(f), Status::with_problems(detail, vec![format!(
                "booting metadata that expired less than {words} ago without a fresh verification; connect a peer to refresh it"
            )]))
            }
            Err(e) => (
                None,
                Status::fail(format!("even with phase.grace={words}: {}", chain(&e))),
            ),
        }
    })
}

/// After a verified fetch, the time it verified at becomes the clock's floor
/// for the next boot (written only to a writable cache).
fn remember_verified_time(places: &bootfetch::Places, now: chrono::DateTime<chrono::Utc>) {
    let Some(c) = places.cache.as_ref().filter(|c| c.writable) else {
        return;
    };
    if let Err(e) = clock::store_last_verified(&c.dir, now) {
        console().warn(&format!(
            "clock: cannot record the verified time in {}: {e}; continuing",
            c.dir.display()
        ));
    }
}

/// The boot clock from the RTC and the image's build time.
fn boot_clock(root: &Path) -> (clock::BootClock, Status) {
    let c = clock::BootClock::new(
        chrono::Utc::now(),
        &[(
            clock::Source::BuildTime,
            clock::build_time(&root.join(trust::ROOT_FILE)),
        )],
    );
    (c, Status::ok(c.describe()))
}

/// The clock raised to the last verified time the cache recorded.
fn raise_clock(c: clock::BootClock, cache: Option<&cachepart::Mounted>) -> clock::BootClock {
    let raised = c.raise(
        clock::Source::LastVerified,
        cache.and_then(|m| clock::last_verified(&m.dir)),
    );
    if raised.now != c.now {
        console().line(&format!("clock: {}", raised.describe()));
    }
    raised
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// `phase.test=panic`: the test hook that proves a panic anywhere in the
/// boot lands in the rescue shell.
#[allow(clippy::panic)]
fn test_panic() {
    panic!("phase.test=panic: panicking on purpose");
}
