//! Scenario (found by the `mdns_txt` fuzz target, docs/fuzzing.md): a root
//! tag or fingerprint string of the right length in bytes whose 16th byte is
//! inside a multibyte character, e.g. 15 hex digits, `é`, 47 hex digits.
//!
//! `RootTag::from_str` sliced the first 16 bytes before checking that they
//! were hex digits, and panicked at the character boundary. It must refuse
//! the string as "not hex", like any other non-hex input.

use discovery::txt::{RootTag, TxtError};

#[test]
fn a_multibyte_character_at_the_tag_boundary_is_not_hex() {
    let fingerprint = format!("{}é{}", "a".repeat(15), "a".repeat(47));
    assert_eq!(fingerprint.len(), 64);
    let tag = format!("{}é", "0".repeat(14));
    assert_eq!(tag.len(), 16);
    for s in [
        fingerprint.as_str(),
        tag.as_str(),
        "ééééééééééééééééééééééééééééééé\u{7f}a",
    ] {
        let e = s.parse::<RootTag>().unwrap_err();
        assert_eq!(
            e,
            TxtError::Invalid {
                key: "root",
                why: "not hex"
            },
            "{s}"
        );
        assert!(e.to_string().contains("root"), "{e}");
    }
}

#[test]
fn hex_tags_and_fingerprints_still_parse() {
    let fp = format!("{}{}", "0123456789ABCDEF", "f".repeat(48));
    let tag: RootTag = fp.parse().unwrap();
    assert_eq!(tag.to_string(), "0123456789abcdef");
    assert_eq!("0123456789abcdef".parse::<RootTag>().unwrap(), tag);
    // A non-hex digit after the first 16 still refuses the fingerprint.
    let bad = format!("{}g{}", "0".repeat(16), "0".repeat(47));
    assert!(bad.parse::<RootTag>().is_err());
}
