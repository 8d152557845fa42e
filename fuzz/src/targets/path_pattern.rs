//! Delegation path patterns (the verifier's fnmatch.rs, through
//! `DelegatedRole::matches`, the way the target search uses them): the
//! pattern comes from a delegator's metadata, the path from a targets
//! request. Input: target, 0xFF, pattern. Oracle: no panic or hang; a pattern without wildcards
//! matches exactly itself; `*` matches every single segment.
use verifier::metadata::DelegatedRole;

fn path_matches(target: &str, pattern: &str) -> bool {
    DelegatedRole {
        name: "fuzz".into(),
        keyids: Vec::new(),
        threshold: 1,
        terminating: false,
        paths: Some(vec![pattern.to_owned()]),
        path_hash_prefixes: None,
    }
    .matches(target)
}

/// One input.
pub fn run(data: &[u8]) {
    let parts = crate::split_parts(data, 2);
    let (Ok(target), Ok(pattern)) = (
        std::str::from_utf8(parts[0]),
        std::str::from_utf8(parts.get(1).copied().unwrap_or_default()),
    ) else {
        return;
    };
    let m = path_matches(target, pattern);
    if !pattern.contains(['*', '?', '[']) {
        assert_eq!(m, target == pattern, "{target:?} {pattern:?}");
    }
    if !target.contains('/') {
        assert!(path_matches(target, "*"), "{target:?}");
    }
    if !target.contains(['*', '?', '[']) {
        assert!(path_matches(target, target), "{target:?}");
    }
}
