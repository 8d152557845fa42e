//! Test helpers shared by the workspace's integration tests: the QEMU/OVMF
//! boot runner (`qemu`) and the network-namespace guard (`netns`).
//! Test-only: nothing in a shipped binary depends on this crate.
pub mod netns;
pub mod qemu;
