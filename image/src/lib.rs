//! Build the Phase Boot disk image without root, loop devices or mounts.
//!
//! This crate owns:
//! * [`deb`]: Debian packages into the build cache (`apt-get download`,
//!   unpacked under a build directory, never installed on the host), with a
//!   separate apt configuration for suites and components the machine's
//!   apt sources lack;
//! * [`kernel`]: Debian's kernel package;
//! * [`firmware`]: the firmware files the carried modules name, from
//!   Debian's firmware packages;
//! * [`modules`]: reading each module's ELF `.modinfo` section and computing
//!   the dependency closure, load order and device aliases of the modules
//!   the initramfs carries;
//! * [`cpio`]: a deterministic cpio "newc" archive writer (sorted entries,
//!   fixed owners and times), zstd-compressed;
//! * [`stage1`]: the stage-1 initramfs layout that `phase-init` expects;
//! * [`esp`]: the ESP contents (shim and systemd-boot, loader entries from templates);
//! * [`signed`]: the Secure Boot chain's signed binaries from Debian's packages;
//! * [`authenticode`]: whether a PE image (EFI binary, EFI-stub kernel) is
//!   signed, and signing one with `sbsign`;
//! * [`mok`]: signing the ESP's systemd-boot and kernel with a site's own
//!   key, and its certificate on the ESP for enrolment;
//! * [`disk`]: the GPT disk image (ESP FAT32 + `PHASE-CACHE` ext4) and the
//!   qcow2 conversion.
//!
//! It does not own TUF verification (the `verifier` crate) nor the console:
//! it never prints, it emits `tracing` events and returns typed errors.
#![forbid(unsafe_code)]

pub mod authenticode;
pub mod cpio;
pub mod deb;
pub mod disk;
pub mod elf;
pub mod esp;
pub mod firmware;
pub mod kernel;
pub mod libs;
pub mod modules;
pub mod mok;
pub mod signed;
pub mod stage1;

mod util;

pub use disk::{DiskLayout, DiskSpec};
pub use kernel::Kernel;
pub use util::CommandError;
