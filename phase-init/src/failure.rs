//! Why a stage-1 fetch failed, whether trying again can help, and what the
//! user can do: the last line the console shows before the rescue shell.
//!
//! The cause is read from the error chain (the verifier's [`verifier::Rule`]
//! for metadata, the fetch layer for the rest), so the wording stays with
//! the layer that knows it and this module only adds the advice.

use verifier::Rule;

/// The kind of failure, as far as the user and the retry loop care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A peer or the cache offered metadata older than what this machine
    /// already trusted (TUF rollback protection).
    Rollback,
    /// Metadata expired (a freeze attack, a stale peer, or a stick that was
    /// offline too long).
    Expired,
    /// Signatures did not meet the threshold of this image's trusted keys.
    Untrusted,
    /// Anything else TUF rejected (mix-and-match, lengths, hashes...).
    Rejected,
    /// No peer answered / transport errors: retrying may help.
    Unreachable,
    /// Everything else (a missing target, a bad cached object, ...).
    Other,
}

impl Kind {
    /// Whether the same fetch, a few seconds later, could succeed.
    pub fn retry_helps(self) -> bool {
        matches!(self, Kind::Unreachable | Kind::Other)
    }

    /// What the user can do, for the last line before the rescue shell.
    pub fn advice(self) -> &'static str {
        match self {
            Kind::Rollback => {
                "the peer offers an older release than this machine already trusts (rollback refused); boot from a peer that serves the current release"
            }
            Kind::Expired => {
                "the signed metadata expired; connect a peer that serves fresh metadata, reseed the stick, check the clock, or allow a bounded offline grace with phase.grace=7d"
            }
            Kind::Untrusted => {
                "the metadata is not signed by this image's trusted root; use peers of the same fleet or rebuild the image with the right root"
            }
            Kind::Rejected => {
                "the metadata failed verification; use another peer or reseed the stick"
            }
            Kind::Unreachable => {
                "no peer delivered the files; check the network and that a peer is serving (phase serve), then reboot"
            }
            Kind::Other => "fix the cause above, then reboot",
        }
    }
}

/// Classifies an error by walking its `source()` chain.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> Kind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut kind = Kind::Other;
    while let Some(err) = cur {
        if let Some(v) = err.downcast_ref::<verifier::Error>() {
            match v {
                verifier::Error::Fetch { .. } => kind = Kind::Unreachable,
                _ => {
                    if let Some(rule) = v.rule() {
                        return rule_kind(rule);
                    }
                }
            }
        }
        if err.downcast_ref::<verifier::TransportError>().is_some()
            || err.downcast_ref::<fetcher::FetchError>().is_some()
        {
            kind = Kind::Unreachable;
        }
        cur = err.source();
    }
    kind
}

fn rule_kind(rule: &Rule) -> Kind {
    match rule {
        Rule::Rollback { .. } | Rule::MetaRollback { .. } | Rule::MetaMissing { .. } => {
            Kind::Rollback
        }
        Rule::Expired { .. } => Kind::Expired,
        Rule::Threshold { .. } => Kind::Untrusted,
        _ => Kind::Rejected,
    }
}

/// True when the error is "metadata expired" found with no peer answering
/// (only the cache's copies): the one case `phase.grace` may relax.
pub fn expired_offline(e: &crate::bootfetch::BootFetchError) -> bool {
    matches!(e, crate::bootfetch::BootFetchError::RefreshOffline(_)) && classify(e) == Kind::Expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfetch::BootFetchError;

    fn rejected(rule: Rule) -> verifier::Error {
        verifier::Error::Rejected {
            role: "timestamp".into(),
            version: Some(2),
            rule,
        }
    }

    #[test]
    fn rules_map_to_kinds_and_only_transport_failures_retry() {
        let rollback = BootFetchError::Refresh(
            1,
            rejected(Rule::Rollback {
                trusted: 3,
                found: 2,
            }),
        );
        assert_eq!(classify(&rollback), Kind::Rollback);
        assert!(!Kind::Rollback.retry_helps());
        let expired = BootFetchError::RefreshOffline(rejected(Rule::Expired {
            expires: verifier::metadata::Expires(chrono::DateTime::UNIX_EPOCH),
            now: chrono::Utc::now(),
        }));
        assert_eq!(classify(&expired), Kind::Expired);
        assert!(expired_offline(&expired));
        let online = BootFetchError::Refresh(
            1,
            rejected(Rule::Expired {
                expires: verifier::metadata::Expires(chrono::DateTime::UNIX_EPOCH),
                now: chrono::Utc::now(),
            }),
        );
        assert!(!expired_offline(&online));
        let unreachable = BootFetchError::Refresh(
            1,
            verifier::Error::Fetch {
                file: "timestamp.json".into(),
                source: verifier::TransportError::NotFound,
            },
        );
        assert_eq!(classify(&unreachable), Kind::Unreachable);
        assert!(Kind::Unreachable.retry_helps());
        let other = BootFetchError::NoSource {
            name: "stable/x86_64/kernel".into(),
        };
        assert_eq!(classify(&other), Kind::Other);
        for k in [
            Kind::Rollback,
            Kind::Expired,
            Kind::Untrusted,
            Kind::Unreachable,
        ] {
            assert!(!k.advice().is_empty());
        }
        assert!(Kind::Expired.advice().contains("phase.grace="));
    }
}
