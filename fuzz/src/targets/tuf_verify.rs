//! The client workflow's verify path (`verifier::TrustedSet`) with a fixed
//! trusted root: the first input byte picks the stage the rest is offered at
//! (0 initial root, 1 root rotation, 2 timestamp, 3 snapshot, 4 targets,
//! 5 the delegated role `apps`); the earlier stages get the fixture's valid
//! files (phase_fuzz::fixture).
//!
//! Oracle: no panic, and a rejected update leaves the trusted set as it was:
//! the fixture's own file for that stage is still accepted after it.
//!
//! `PHASE_FUZZ_WRITE_SEEDS=<dir>` writes the fixture as seeds (mk/fuzz.mk).
use std::sync::OnceLock;

use crate::fixture::{self, Fixture};
use verifier::TrustedSet;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(Fixture::build)
}

/// The trusted set after the valid stages before `stage`.
fn build_before(f: &Fixture, stage: u8) -> TrustedSet {
    let mut t = TrustedSet::new(&f.root, fixture::now()).expect("fixture root");
    if stage > 2 {
        t.update_timestamp(&f.timestamp).expect("fixture timestamp");
    }
    if stage > 3 {
        t.update_snapshot(&f.snapshot, false)
            .expect("fixture snapshot");
    }
    if stage > 4 {
        t.update_targets("targets", "root", &f.targets)
            .expect("fixture targets");
    }
    t
}

/// [`build_before`] for every stage, verified once per process; each input
/// gets a clone (signature checks of the earlier stages would otherwise
/// take most of the time).
fn trusted_before(f: &Fixture, stage: u8) -> TrustedSet {
    static SETS: OnceLock<Vec<TrustedSet>> = OnceLock::new();
    SETS.get_or_init(|| (0..6).map(|s| build_before(f, s)).collect())[usize::from(stage)].clone()
}

/// Offers `bytes` at `stage`.
fn offer(t: &mut TrustedSet, stage: u8, bytes: &[u8]) -> Result<(), verifier::Error> {
    match stage {
        1 => t.update_root(bytes),
        2 => t.update_timestamp(bytes).map(|_| ()),
        3 => t.update_snapshot(bytes, false),
        4 => t.update_targets("targets", "root", bytes),
        _ => t.update_targets("apps", "targets", bytes),
    }
}

/// Writes the seeds when `PHASE_FUZZ_WRITE_SEEDS` names a directory.
pub fn init() {
    if let Some(dir) = std::env::var_os("PHASE_FUZZ_WRITE_SEEDS") {
        fixture::write_seeds(std::path::Path::new(&dir)).expect("write the fixture seeds");
    }
}

/// One input.
pub fn run(data: &[u8]) {
    let Some((&stage, bytes)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let stage = stage % 6;
    if stage == 0 {
        if let Ok(mut t) = TrustedSet::new(bytes, fixture::now()) {
            let _ = t.update_timestamp(&f.timestamp);
        }
        return;
    }
    let mut t = trusted_before(f, stage);
    if let Err(e) = offer(&mut t, stage, bytes) {
        // One line for the operator, whatever the bytes were.
        let line = e.to_string();
        assert!(!line.is_empty());
        // The set is unchanged: the honest file is accepted next.
        let honest = match stage {
            1 => &f.root2,
            2 => &f.timestamp,
            3 => &f.snapshot,
            4 => &f.targets,
            _ => &f.apps,
        };
        if let Err(e) = offer(&mut t, stage, honest) {
            panic!("stage {stage}: a rejected update changed the trusted set: {e}");
        }
    }
}
