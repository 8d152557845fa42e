//! Metadata JSON of every role through the verifier's parse and shape checks
//! (`verifier::trusted::parse`), as bytes from any peer or mirror arrive.
//! Oracle: no panic; what parses has canonical bytes that are a fixed point
//! of canonical encoding.
use verifier::metadata::{Metadata, Root, Snapshot, Targets, Timestamp};
use verifier::trusted::parse;

fn check<T: Metadata>(role: &str, data: &[u8]) {
    if let Ok(p) = parse::<T>(role, data) {
        let v = crate::read_canonical(&p.canonical).expect("canonical bytes are JSON");
        let again = verifier::cjson::to_canonical(&v).expect("canonical bytes re-encode");
        assert_eq!(again, p.canonical, "canonical form is not a fixed point");
        if let Some(t) = serde_json::to_value(&p.signed)
            .ok()
            .and_then(|v| serde_json::from_value::<Targets>(v).ok())
        {
            for r in t.delegations.iter().flat_map(|d| &d.roles) {
                let _ = r.matches("stable/x86_64/kernel");
            }
        }
    }
}

/// One input.
pub fn run(data: &[u8]) {
    check::<Root>("root", data);
    check::<Timestamp>("timestamp", data);
    check::<Snapshot>("snapshot", data);
    check::<Targets>("targets", data);
}
