//! The names inside a cache directory, relative to it: the one place that
//! spells the CAS layout. [`crate::Cas`] joins them onto its directory;
//! code that writes a cache somewhere else (phase-init's payload cpio, a
//! read-only cache partition, `phase image seed`) uses the same names.
//!
//! | name | what |
//! |---|---|
//! | `cas/sha256/<2 hex>/<64 hex>` | a complete, verified object |
//! | `cas/sha256/<2 hex>/<64 hex>.chunks` | the chunk-list record of an object stored on the strength of its chunks |
//! | `cas/locks/<64 hex>` | a writer's lock |
//! | `cas/quarantine/` | objects that failed a check, moved aside |
//! | `tuf/` | the trusted TUF state (`verifier::DirStorage`) |
//! | `tuf/metadata/` | verified metadata under the repository's names |
//!
//! Pure (`std` only) and free of `crate::` items: the fuzz crate compiles
//! it from this file for the payload writer (`fuzz/src/lib.rs`).

/// The CAS directory.
pub const CAS: &str = "cas";
/// Complete objects, in shards named by the first two hex digits.
pub const OBJECTS: &str = "cas/sha256";
/// Writers' lock files.
pub const LOCKS: &str = "cas/locks";
/// Objects that failed a check, moved aside (made when first needed).
pub const QUARANTINE: &str = "cas/quarantine";
/// The suffix of an object's chunk-list record, beside the object.
pub const RECORD_SUFFIX: &str = ".chunks";
/// The trusted TUF state.
pub const TUF: &str = "tuf";
/// Verified metadata under the repository's names (what a peer serves at
/// `/tuf/metadata/`).
pub const METADATA: &str = "tuf/metadata";

/// Every directory of an empty cache, parents first.
pub const DIRS: [&str; 5] = [CAS, OBJECTS, LOCKS, TUF, METADATA];

/// The shard of an object: the first two digits of its lowercase hex
/// SHA-256 (the whole string if it is shorter).
pub fn shard_name(hex: &str) -> &str {
    hex.get(..2).unwrap_or(hex)
}

/// `cas/sha256/<2 hex>`: the directory holding the object `hex`.
pub fn shard(hex: &str) -> String {
    format!("{OBJECTS}/{}", shard_name(hex))
}

/// `cas/sha256/<2 hex>/<64 hex>`: the object `hex`.
pub fn object(hex: &str) -> String {
    format!("{OBJECTS}/{}/{hex}", shard_name(hex))
}

/// `cas/sha256/<2 hex>/<64 hex>.chunks`: the chunk-list record of the
/// object `hex`.
pub fn record(hex: &str) -> String {
    format!("{}{RECORD_SUFFIX}", object(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let hex = "ab".repeat(32);
        assert_eq!(shard(&hex), "cas/sha256/ab");
        assert_eq!(object(&hex), format!("cas/sha256/ab/{hex}"));
        assert_eq!(record(&hex), format!("cas/sha256/ab/{hex}.chunks"));
        assert_eq!(shard("a"), "cas/sha256/a");
        // Not a char boundary at 2: no panic.
        assert_eq!(shard_name("aé"), "aé");
    }
}
