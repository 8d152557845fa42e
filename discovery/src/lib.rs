//! Phase Boot peer discovery.
//!
//! Owns: finding peers that serve Phase Boot content, never the content
//! itself. On the local link by mDNS/DNS-SD ([`mdns`], service
//! `_phase._tcp.local.` with the TXT record of [`txt`]); beyond it through
//! provider records in a libp2p Kademlia DHT ([`dht`]). Both yield
//! [`Peer`]s: an id and HTTP addresses to fetch from. A [`Session`]
//! merges every source (and peers the operator named,
//! [`peer::static_peer`]), gives each peer out once (by id and by
//! address) and chooses its address by one rule ([`session::choose_addr`]).
//!
//! Does not own: fetching, verification or trust. Everything a peer or the
//! network tells us here is untrusted and only used to open a connection;
//! the trust root enters only as a tag ([`RootTag`]) taken from the caller.
#![forbid(unsafe_code)]

#[cfg(feature = "dht")]
pub mod dht;
pub mod mdns;
pub mod peer;
pub mod session;
pub mod txt;

pub use peer::{Peer, Source};
pub use session::{Event, Found, Session, SessionOptions};
pub use txt::{PeerTxt, RootTag, TxtError};
