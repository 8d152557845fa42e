//! The fetcher integration tests, in one test binary: one link, and one
//! harness that runs their tests side by side (`--test-threads`).
//! `chunks_bomb` and `server_flood` stay binaries of their own: they
//! measure the peak RSS of their process.

mod bad_peer_flipped_bytes;
mod cas_atomic_visibility;
mod cas_concurrent_writers;
mod chunk_memory_bound;
#[path = "../common/mod.rs"]
mod common;
mod connection_reset;
mod direct_writes;
mod disk_full;
mod duplicate_sources;
mod garbage_metadata_peer_first;
mod gc;
mod lookup_order;
mod metadata_transport;
mod nginx_mirror;
mod one_hash_pass;
mod only_peer_is_slow;
mod partial_peer;
mod peer_killed_mid_transfer;
mod raw_http;
mod redirects;
mod resume_after_crash;
mod server_safety;
mod server_slots_many_addresses;
mod slow_metadata_peers;
mod slow_peer_tbf;
mod swarm_partial_client;
mod symlinks_in_cache;
mod trickling_peer;
mod withheld_until_hashed;
mod withholding_metadata_peer;
