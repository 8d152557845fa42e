//! The kernel command line (`phase.*`, phase-init's cmdline.rs), as raw
//! `/proc/cmdline` bytes. Oracle: never a panic; every value in effect is
//! one the parser takes back unchanged; every warning is one line.
use crate::cmdline::{parse, parse_bytes};

/// One input.
pub fn run(data: &[u8]) {
    let p = parse_bytes(data);
    let line = p.config.to_cmdline();
    let again = parse(&line);
    assert!(again.warnings.is_empty(), "{line:?}: {:?}", again.warnings);
    assert_eq!(again.config.to_cmdline(), line);
    for w in &p.warnings {
        let w = w.to_string();
        assert!(w.starts_with("phase."), "{w:?}");
        assert!(!w.chars().any(char::is_control), "{w:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(parse(text), p);
    }
}
