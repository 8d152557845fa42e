//! The bodies of the fuzz targets; each `fuzz_targets/<name>.rs` binary
//! only hands its input to `<name>::run`. Kept in the library so the
//! parsers' generic code is compiled once, not once per binary.

pub mod boot_json;
pub mod canonical_json;
pub mod chunks_json;
pub mod cmdline;
pub mod firmware_log;
pub mod http_range;
pub mod keys_signatures;
pub mod mdns_txt;
pub mod path_pattern;
pub mod services_toml;
pub mod tuf_metadata;
pub mod tuf_verify;
