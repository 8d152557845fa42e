//! How a peer URL maps to the peer protocol.
//!
//! * `http://host:port` (no path): a Phase peer (`phase serve`, a booted
//!   node). Its TUF repository is at `/tuf/` and objects at `/cas/sha256/`.
//! * `http://host/some/path/`: a static mirror of a TUF repository
//!   directory (nginx, any web server): `metadata/` and `targets/` below it.

use url::Url;

use crate::digest::Sha256Digest;
use crate::fetch::Source;

/// A peer to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A Phase peer at this origin.
    Phase(Url),
    /// A static mirror whose repository base is this URL.
    Mirror(Url),
}

/// A peer URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Not a URL.
    #[error("invalid peer URL {0:?}")]
    Parse(String, #[source] url::ParseError),
    /// Not plain HTTP (TUF, not TLS, judges the bytes).
    #[error("peer URL {0:?} is not http://")]
    Scheme(String),
}

fn with_slash(u: &Url) -> Url {
    let mut b = u.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b
}

impl Peer {
    /// Parses a peer URL (see the module docs).
    pub fn parse(s: &str) -> Result<Self, PeerError> {
        let u = Url::parse(s).map_err(|e| PeerError::Parse(s.to_string(), e))?;
        if u.scheme() != "http" {
            return Err(PeerError::Scheme(s.to_string()));
        }
        Ok(if u.path() == "/" || u.path().is_empty() {
            Peer::Phase(u)
        } else {
            Peer::Mirror(with_slash(&u))
        })
    }

    /// A static mirror at `s` even if its path is `/`.
    pub fn mirror(s: &str) -> Result<Self, PeerError> {
        match Self::parse(s)? {
            Peer::Phase(u) | Peer::Mirror(u) => Ok(Peer::Mirror(with_slash(&u))),
        }
    }

    /// The base URL of the peer's TUF repository (holds `metadata/`, `targets/`).
    pub fn repo_base(&self) -> Url {
        match self {
            // Joining a constant relative path onto an http origin cannot fail.
            Peer::Phase(u) => with_slash(u).join("tuf/").unwrap_or_else(|_| u.clone()),
            Peer::Mirror(u) => u.clone(),
        }
    }

    /// How reports name the peer.
    pub fn label(&self) -> String {
        match self {
            Peer::Phase(u) | Peer::Mirror(u) => u.to_string(),
        }
    }

    /// Where this peer serves the object `d`, whose repository path (below
    /// `targets/`) is `target_path`.
    pub fn source(&self, d: &Sha256Digest, target_path: &str) -> Result<Source, url::ParseError> {
        let mut s = match self {
            Peer::Phase(u) => Source::phase_peer(u, d)?,
            Peer::Mirror(u) => Source::mirror(u, target_path)?,
        };
        s.label = self.label();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_kinds() {
        let p = Peer::parse("http://10.0.0.1:7070").unwrap();
        assert_eq!(p.repo_base().as_str(), "http://10.0.0.1:7070/tuf/");
        let d = Sha256Digest::of(b"x");
        assert_eq!(
            p.source(&d, "a/b").unwrap().object_url.as_str(),
            format!("http://10.0.0.1:7070/cas/sha256/{d}")
        );
        let m = Peer::parse("http://mirror/repo").unwrap();
        assert_eq!(m.repo_base().as_str(), "http://mirror/repo/");
        assert_eq!(
            m.source(&d, "stable/x86_64/abc.kernel")
                .unwrap()
                .object_url
                .as_str(),
            "http://mirror/repo/targets/stable/x86_64/abc.kernel"
        );
        assert!(Peer::parse("https://x/").is_err());
        assert!(Peer::parse("not a url").is_err());
    }
}
