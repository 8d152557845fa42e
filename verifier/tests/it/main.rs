//! The verifier integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod arbitrary_installation;
mod bad_key_material;
mod cached_role_reached_through_another_delegator;
mod consistent_snapshots;
mod delegation_cycles;
mod duplicate_signatures;
mod endless_data;
mod fast_forward_recovery;
mod indefinite_freeze;
mod kept_release;
mod malformed_metadata;
mod mix_and_match;
mod path_traversal;
mod rollback_attack;
mod root_rotation;
mod support;
mod threshold_not_met;
mod threshold_zero;
mod trusted_state_persistence;
mod unicode_canonical_form;
