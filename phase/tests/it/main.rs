//! The phase integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod attest_verify;
mod cache_verify;
mod external_signer_exits_nonzero;
mod external_signer_hangs_past_timeout;
mod external_signer_key_types;
mod external_signer_prints_garbage;
mod image_seed;
mod image_site_key;
mod offline_root_online_timestamp;
mod publish_job;
mod publish_kernel_signature;
mod publish_verity;
mod serve_fetch;
mod signer_support;
mod silent_metadata_server;
mod threshold_signing_staged_root;
mod trust_cli;
mod trust_interop;
mod trust_support;
mod trust_tuf_client;
