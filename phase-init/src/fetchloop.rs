//! Stage 1's fetch, tried again while the retry policy (`phase.retry`,
//! [`crate::retry`]) allows it and the failure is one that another attempt
//! can mend ([`crate::failure`]): a node of a fleet may power on before its
//! seed. Each new attempt looks for peers again (the `discover` step);
//! between attempts a console countdown ([`crate::keywatch`]), during which
//! any key stops the retries for the rescue shell. Metadata that expired
//! while offline may still boot under `phase.grace` (the `grace` step).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::bootfetch::{self, Fetched, Places};
use crate::cmdline::{self, Config};
use crate::console::console;
use crate::step::{self, Step};
use crate::trust::BakedRoot;
use crate::{clock, discover, failure, keywatch, net, rescue, retry};

/// The verified fetch with its retries; a node with no network at all tries
/// once. `None`: it failed and said why (the line is in the step log); go
/// to the rescue shell.
pub fn fetch(
    config: &Config,
    baked: &BakedRoot,
    places: &mut Places,
    now: DateTime<Utc>,
) -> Option<Fetched> {
    let policy = if may_find_peers_later(config, places) {
        config.retry
    } else {
        retry::Retry::Attempts(1)
    };
    let mut keys: Option<keywatch::KeyWatch> = None;
    let mut attempt = 0u32;
    let kind = loop {
        attempt = attempt.saturating_add(1);
        if attempt > 1 {
            places.discovered.close();
            places.discovered = step::run(Step::Discover, || discover::step(config, baked));
        }
        let e = match step::run(Step::Fetch, || bootfetch::step(config, baked, places, now)) {
            Ok(f) => {
                remember_verified_time(places, now);
                return Some(f);
            }
            Err(e) => e,
        };
        let kind = failure::classify(&e);
        if failure::expired_offline(&e) {
            if let Some(f) = with_grace(config, baked, places, now) {
                return Some(f);
            }
        }
        if !kind.retry_helps() || !policy.another_after(attempt) {
            break kind;
        }
        let wait = retry::backoff(attempt);
        console().line(&retry::announce(policy, attempt, wait));
        let keys = keys.get_or_insert_with(|| keywatch::KeyWatch::open(&rescue::console_ttys()));
        if keywatch::countdown(wait, keys, |l| console().line(l)) == keywatch::Countdown::KeyPressed
        {
            return fail(&format!(
                "boot: a key was pressed; no more fetch attempts after {attempt}: {}. `phase-init status` shows the steps",
                kind.advice()
            ));
        }
    };
    fail(&format!(
        "boot: no verified boot set; nothing was kexec'd: {}. `phase-init status` shows the steps",
        kind.advice()
    ))
}

/// Records and prints the line that ends the boot.
fn fail(line: &str) -> Option<Fetched> {
    crate::status::record_failure(line);
    console().line(line);
    None
}

/// Whether another attempt could meet a peer: peers were found or named,
/// or (outside private mode, which only reaches what `phase.peers` names)
/// a wired link exists on which one may still appear. A stick with no
/// network at all has only its cache, and retrying cannot change that.
fn may_find_peers_later(config: &Config, places: &Places) -> bool {
    let named = config
        .peers
        .iter()
        .any(|p| matches!(p, cmdline::Peer::Url(_)));
    let wired = config.mode != cmdline::Mode::Private
        && !net::wired_interfaces(Path::new("/sys/class/net")).is_empty();
    !places.discovered.peers.is_empty() || named || wired
}

/// The grace policy (`phase.grace`, docs/boot-flow.md): offline, with
/// metadata that expired, judge expiry `grace` in the past — once, loudly.
/// Signatures, versions and hashes are checked as always.
fn with_grace(
    config: &Config,
    baked: &BakedRoot,
    places: &Places,
    now: DateTime<Utc>,
) -> Option<Fetched> {
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
    step::run(Step::Grace, || {
        bootfetch::grace_step(config, baked, places, at, &words)
    })
}

/// After a verified fetch, the time it verified at becomes the clock's floor
/// for the next boot (written only to a writable cache).
fn remember_verified_time(places: &Places, now: DateTime<Utc>) {
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
