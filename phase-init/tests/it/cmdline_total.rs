//! Scenario: a hostile or broken boot loader hands PID 1 an arbitrary
//! `/proc/cmdline`: any bytes, UTF-8 or not, quotes, control characters, for
//! every `phase.*` parameter.
//!
//! Parsing is total: every input gives a configuration whose every value is
//! one the parameter accepts, plus one-line warnings; never a panic. A word
//! that is not UTF-8 is never applied.

use phase_init::cmdline::{parse, parse_bytes, Config, Parsed, Warning, MAX_GRACE, PARAMS};
use proptest::prelude::*;

/// What must hold for any parse result.
fn check_invariants(p: &Parsed) -> Result<(), TestCaseError> {
    let c = &p.config;
    prop_assert!((1..=60).contains(&c.discover_timeout));
    prop_assert!((5..=3600).contains(&c.tor_timeout));
    prop_assert!(c
        .grace
        .is_none_or(|g| g > std::time::Duration::ZERO && g <= MAX_GRACE));
    // Every value handed on is one the parser takes back unchanged.
    let again = parse(&c.to_cmdline());
    prop_assert_eq!(&again.warnings, &vec![], "{}", c.to_cmdline());
    prop_assert_eq!(again.config.to_cmdline(), c.to_cmdline());
    for w in &p.warnings {
        let line = w.to_string();
        prop_assert!(line.starts_with("phase."), "{}", line);
        prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
    }
    Ok(())
}

/// Bytes of every kind: ASCII, multibyte UTF-8, bytes no UTF-8 holds,
/// quotes, whitespace, control characters, `=` and `,`.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[ -~]{0,6}".prop_map(String::into_bytes),
        2 => "\\PC{0,4}".prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..6),
        1 => prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\x1b[2J".to_vec()),
            Just(b"\xc3".to_vec()),
            Just(b"\xff\xfe".to_vec()),
            Just(b"=,".to_vec()),
            Just("é".as_bytes().to_vec()),
        ],
        2 => prop_oneof![Just("1"), Just("7d"), Just("off"), Just("local"), Just("true"),
            Just("http://198.18.0.2:8080"), Just("/ip4/198.18.0.3/tcp/4001"),
            Just("198.18.0.1:9050"), Just("PHASE-CACHE"), Just("stable"), Just("poweroff")]
            .prop_map(|s| s.as_bytes().to_vec()),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Each parameter with any value, bare or `=`, alone or quoted.
    #[test]
    fn every_parameter_takes_any_bytes(
        which in 0..PARAMS.len(),
        value in value_bytes(),
        bare in any::<bool>(),
        quoted in any::<bool>(),
    ) {
        let name = PARAMS[which].name;
        let mut word = name.as_bytes().to_vec();
        if !bare {
            word.push(b'=');
            word.extend_from_slice(&value);
        }
        if quoted {
            word.insert(0, b'"');
            word.push(b'"');
        }
        let mut line = b"BOOT_IMAGE=/vmlinuz console=ttyS0 ".to_vec();
        line.extend_from_slice(&word);
        line.extend_from_slice(b" quiet\n");
        let p = parse_bytes(&line);
        check_invariants(&p)?;
        if !bare && std::str::from_utf8(&value).is_err() && !value.iter().any(|b| b.is_ascii_whitespace() || *b == b'"') {
            // One word that is not UTF-8: nothing of it is applied.
            prop_assert_eq!(&p.config, &Config::default());
            prop_assert!(
                p.warnings.iter().any(|w| matches!(w, Warning::Malformed { name: n, .. } if *n == name)),
                "{:?}", p.warnings
            );
        }
    }

    /// Whole command lines of arbitrary bytes, with `phase.` words mixed in.
    #[test]
    fn any_bytes_parse(
        parts in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..24),
                (0..PARAMS.len(), value_bytes()).prop_map(|(i, v)| {
                    let mut w = format!(" {}=", PARAMS[i].name).into_bytes();
                    w.extend_from_slice(&v);
                    w
                }),
            ],
            0..8,
        )
    ) {
        let line = parts.concat();
        let p = parse_bytes(&line);
        check_invariants(&p)?;
        // Text and bytes agree where both exist.
        if let Ok(text) = std::str::from_utf8(&line) {
            prop_assert_eq!(parse(text), p);
        }
    }

    /// Arbitrary Unicode text (any scalar value, not only printable).
    #[test]
    fn any_text_parses(s in "(phase\\.[a-z_]{0,16}=)?\\PC{0,40}|.{0,40}", pre in 0..PARAMS.len()) {
        let line = format!("{}={s} {s}", PARAMS[pre].name);
        check_invariants(&parse(&line))?;
    }
}
