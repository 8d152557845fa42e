//! One module per subcommand: an `Args` struct (clap) and `run(Args)`.
pub mod attest;
pub mod cache;
pub mod common;
pub mod discover;
pub mod fetch;
pub mod image;
pub mod keygen;
pub mod publish;
pub mod rotate;
pub mod serve;
pub mod sign;
pub mod signer;
pub mod tuf_client;
pub mod verify;
