//! The discovery integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod cli_serve_fetch_discover;
mod common;
mod dht_five_nodes;
mod dht_republish;
mod mdns_bridge_lan;
mod mdns_malformed_packets;
mod mdns_other_root_ignored;
mod root_tag_multibyte;
mod zeroconf_interop;
