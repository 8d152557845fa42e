//! The data plane of Phase Boot.
//!
//! * [`cas`]: the content-addressed store (`<cache>/cas/sha256/<2>/<64>`),
//!   atomic visibility, concurrent writers, resumable partial objects, gc;
//!   [`cas::layout`] spells the names inside a cache directory;
//! * [`targets`]: verified TUF targets to objects on disk, the entry point
//!   of the binaries: local CAS, then read-only caches, then the peers;
//! * [`fetch`]: one object from many peers at once over HTTP `Range`,
//!   verified chunk by chunk against the signed chunk list;
//! * [`server`]: the read-only peer HTTP server (`phase serve`, every booted
//!   node), with [`attest`]: the rules of its `GET /attest` (nonce,
//!   rate limit, status codes; the quote comes from the binary's
//!   [`Attestor`]);
//! * [`tor`]: the route of the HTTP client (direct, SOCKS5, embedded Tor);
//! * [`peer`] and [`transport`]: peer URLs, and the TUF client's transport
//!   over them (implements `verifier::Transport`);
//! * [`wire`]: the pure parsers of what a peer or a client sends (`/chunks`
//!   answers, `Range` headers), fuzzed on their own (`fuzz/`).
//!
//! What it does not own: TUF (the `verifier` crate decides which digests are
//! trusted; the engine only takes a `(sha256, length, chunks)` triple, which
//! [`targets`] reads from a target the verifier already accepted), peer
//! discovery (the `discovery` crate), and the console (callers draw progress).
#![forbid(unsafe_code)]

pub mod attest;
pub mod body;
pub mod cas;
pub mod digest;
pub mod fetch;
pub mod object;
pub mod peer;
pub mod server;
pub mod targets;
pub mod tor;
pub mod transport;
pub mod wire;

pub use attest::{AttestError, Attestor};
pub use body::{read_body, BodyError, BodyLimits};
pub use cas::{Cas, CasError, GcReport, Stored};
pub use digest::Sha256Digest;
pub use fetch::{
    ChunkMemory, FetchError, FetchOptions, FetchReport, Fetcher, PeerReport, Progress, ProgressFn,
    Source, SourceFeed,
};
pub use object::{ChunkList, ObjectSpec, DEFAULT_CHUNK_SIZE};
pub use peer::{Peer, PeerError};
pub use server::{serve, ServerConfig, ServerError};
pub use targets::{Found, Lookup, Origin, SpecProblem, TargetObject, TargetSpecError};
pub use transport::{
    Attempt, DroppedPeer, PeerTransport, RefreshError, RefreshReport, TransportLimits,
};
