//! The redirect rule of every HTTP client of this crate.

use reqwest::Url;

/// Most redirects a web mirror may answer in a row.
pub const MAX_REDIRECTS: usize = 3;

/// Whether `url` is a request to a Phase peer (`phase serve`, a booted
/// node): its object and metadata paths. Such peers never redirect.
fn is_peer_request(url: &Url) -> bool {
    let p = url.path();
    p.contains("/cas/sha256/") || p.contains("/tuf/metadata/") || p.contains("/tuf/targets/")
}

/// The redirect rule of every client here. A Phase peer never redirects,
/// so none is followed for its requests. A web mirror (`--mirror`, a plain
/// TUF repository) may move a path on its own host: at most
/// [`MAX_REDIRECTS`] hops, each to the same scheme, host and port as the
/// first URL. A redirect to any other host is not followed (the caller
/// sees the 3xx answer as a failure of that source), so a source on the
/// LAN cannot send the client off it.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let next = attempt.url();
        let same_origin = first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        if attempt.previous().len() > MAX_REDIRECTS || !same_origin || is_peer_request(first) {
            tracing::warn!(from = %first, to = %next, "redirect not followed");
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}
