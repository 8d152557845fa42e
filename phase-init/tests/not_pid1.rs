//! Run by mistake on a host (not as PID 1), phase-init refuses before it
//! touches anything: no mounts, no modules, no power-off.

use std::process::Command;

#[test]
fn refuses_to_run_unless_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_phase-init"))
        .output()
        .expect("run the phase-init binary");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "phase-init: must run as PID 1 (it mounts, loads modules and powers off); refusing"
    );
    assert!(out.stdout.is_empty());
}
