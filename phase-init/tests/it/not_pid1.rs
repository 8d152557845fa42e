//! Run by mistake on a host (not as PID 1), phase-init does not boot: with
//! no arguments it says what it is for and exits 2 before it touches
//! anything (no mounts, no modules, no power-off); an unknown command is
//! named in one line.

use std::process::Command;

fn phase_init(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phase-init"))
        .args(args)
        .output()
        .expect("run the phase-init binary")
}

#[test]
fn refuses_to_boot_unless_pid_1() {
    let out = phase_init(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "phase-init: as a command it takes `status`; as PID 1 it boots (it mounts, loads modules and powers off)"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_command_is_named() {
    let out = phase_init(&["bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "phase-init: unknown command \"bogus\"; try `phase-init status`"
    );
}
