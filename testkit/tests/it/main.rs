//! The testkit integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod boot_dht;
mod boot_fail;
mod boot_fail_common;
mod boot_from_peer;
mod boot_from_peer_common;
mod boot_image;
mod boot_kexec;
mod boot_late_seed;
mod boot_network;
mod boot_offline;
mod boot_private;
mod boot_python_tuf_repo;
mod boot_rollback;
mod boot_tampered_peer;
mod boot_wasm;
mod fleet_of_three;
mod target_common;
mod tor_fetch;
mod write_usb;
