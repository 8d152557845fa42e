//! phase-init: PID 1 of the Phase Boot initramfs (placeholder until issue 5 lands).
fn main() {}
