//! `/etc/phase/services.toml` (phase-init's services.rs), read from the
//! rootfs. Oracle: no panic; an accepted list starts every service in
//! exactly one wave, after all it depends on, in every mode.
use std::collections::BTreeMap;

use crate::services::{parse, Services};

fn check_waves(s: &Services) {
    let mut wave_of = BTreeMap::new();
    for (i, wave) in s.waves().iter().enumerate() {
        for n in wave {
            assert!(wave_of.insert(n.clone(), i).is_none(), "{n} twice");
        }
    }
    assert_eq!(wave_of.len(), s.services.len(), "a service in no wave");
    for (n, svc) in &s.services {
        for d in &svc.after {
            assert!(wave_of[d] < wave_of[n], "{n} starts with or before {d}");
        }
        for k in [0, 1, 20, 63, u32::MAX] {
            assert!(svc.backoff(k) <= crate::services::MAX_BACKOFF);
        }
    }
}

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = parse(text, "services.toml") else {
        return;
    };
    check_waves(&s);
    for mode in ["internet", "local", "private"] {
        check_waves(&s.for_mode(mode).0);
    }
}
