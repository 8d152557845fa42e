//! Test helpers shared by the workspace's integration tests: the QEMU/OVMF
//! boot runner (`qemu`), the network-namespace guard (`netns`) and the boot
//! tests' fixtures (`fixtures`), and a private Tor test network (`tornet`).
//! Test-only: nothing in a shipped binary depends on this crate.
pub mod fixtures;
pub mod netns;
pub mod qemu;
pub mod tornet;
