//! Scenario: a kernel command line whose `phase.grace` value ends in a
//! character of more than one byte (`phase.grace=1é`).
//!
//! The grace parser took the last *byte* as the unit and split the value
//! there, inside the two bytes of `é`: a panic in PID 1, which ended the boot
//! in the rescue shell. A command line must never stop a boot: the value is
//! malformed, the warning names it, and grace stays off.

use phase_init::cmdline::{parse, parse_bytes, Config, Warning};

#[test]
fn grace_with_a_multibyte_last_character_is_a_warning_not_a_panic() {
    let p = parse("console=ttyS0 phase.grace=1é phase.mode=local");
    assert_eq!(p.config.grace, None);
    // The words around it still count.
    assert_eq!(p.config.mode, phase_init::cmdline::Mode::Local);
    let lines: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec!["phase.grace=1é: expected a duration up to 90d such as 12h or 7d, or off; using off"]
    );
}

#[test]
fn every_unit_position_of_a_multibyte_character_is_malformed() {
    // A multibyte character as the unit, before the unit, and alone.
    for v in [
        "é",
        "1é",
        "é1d",
        "1éd",
        "7dé",
        "1\u{1F600}",
        "\u{1F600}",
        "1٣d",
        "１d",
    ] {
        let p = parse(&format!("phase.grace={v}"));
        assert_eq!(p.config.grace, None, "{v}");
        assert!(
            matches!(
                &p.warnings[..],
                [Warning::Malformed {
                    name: "phase.grace",
                    ..
                }]
            ),
            "{v}: {:?}",
            p.warnings
        );
    }
    // A valid grace after a bad one is still taken.
    let p = parse("phase.grace=1é phase.grace=2d");
    assert_eq!(
        p.config.grace,
        Some(std::time::Duration::from_secs(2 * 86400))
    );
}

#[test]
fn the_same_bytes_from_proc_cmdline_give_the_same_answer() {
    let line = "phase.grace=1é\n";
    assert_eq!(parse_bytes(line.as_bytes()), parse(line));
    assert_eq!(parse_bytes(b"phase.grace=1\xc3").config, Config::default());
}
