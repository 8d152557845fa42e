//! The image integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod common;
mod disk_image_checks;
mod hardware_modules;
mod initramfs_contents;
mod kernel_cache;
mod kernel_config_fragments;
mod module_closure;
mod qcow2_output;
mod reproducible_builds;
mod site_key_signing;
