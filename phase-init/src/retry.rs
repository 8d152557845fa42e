//! Stage 1's retry policy: how often a fetch that failed is tried again and
//! how long the node waits in between (the countdown itself, during which a
//! key press opens the rescue shell, is [`crate::keywatch`]).
//!
//! Nodes of a fleet power on in any order, so a node whose seed is not up
//! yet keeps trying by default (`phase.retry=forever`), backing off from
//! 2 s to [`MAX_WAIT`]. `phase.retry=N` bounds it to N attempts in all.
//! Which failures are worth another attempt is [`crate::failure::Kind`]'s
//! call; a node with no network at all tries once.
//!
//! Also compiled on its own by the fuzz targets (`fuzz/`, docs/fuzzing.md):
//! it uses `std` only, and no `crate::` item.

use std::time::Duration;

/// `phase.retry`: how many attempts a stage-1 fetch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// Keep trying until a fetch succeeds or someone presses a key.
    #[default]
    Forever,
    /// At most this many attempts in all (1 = no retry).
    Attempts(u32),
}

impl Retry {
    /// The largest bounded value `phase.retry` accepts.
    pub const MAX_ATTEMPTS: u32 = 1000;

    /// `forever`, or a number of attempts in 1..=[`Retry::MAX_ATTEMPTS`].
    pub fn from_word(v: &str) -> Option<Retry> {
        if v == "forever" {
            return Some(Retry::Forever);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=Self::MAX_ATTEMPTS).contains(n))
            .map(Retry::Attempts)
    }

    /// The cmdline word for this value.
    pub fn word(self) -> String {
        match self {
            Retry::Forever => "forever".to_owned(),
            Retry::Attempts(n) => n.to_string(),
        }
    }

    /// Whether attempt number `attempt` (1-based) may be followed by another.
    pub fn another_after(self, attempt: u32) -> bool {
        match self {
            Retry::Forever => true,
            Retry::Attempts(n) => attempt < n,
        }
    }
}

/// The longest wait between two attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The wait after attempt `attempt` (1-based): 2 s, 4 s, 8 s ... doubling up
/// to [`MAX_WAIT`].
pub fn backoff(attempt: u32) -> Duration {
    let secs = 2u64.saturating_pow(attempt.clamp(1, 16));
    Duration::from_secs(secs).min(MAX_WAIT)
}

/// The console line that announces a retry.
pub fn announce(policy: Retry, attempt: u32, wait: Duration) -> String {
    match policy {
        Retry::Attempts(n) => format!(
            "fetch: attempt {attempt} of {n} failed; retrying in {} s",
            wait.as_secs()
        ),
        Retry::Forever => format!(
            "fetch: attempt {attempt} failed; retrying in {} s, and until a peer delivers (press any key on the console for the rescue shell; phase.retry=N bounds the attempts)",
            wait.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_words_parse_and_round_trip() {
        assert_eq!(Retry::from_word("forever"), Some(Retry::Forever));
        assert_eq!(Retry::from_word("3"), Some(Retry::Attempts(3)));
        assert_eq!(Retry::from_word("1000"), Some(Retry::Attempts(1000)));
        for bad in ["0", "1001", "-1", "", "always", "3s", "é"] {
            assert_eq!(Retry::from_word(bad), None, "{bad:?}");
        }
        for r in [Retry::Forever, Retry::Attempts(1), Retry::Attempts(42)] {
            assert_eq!(Retry::from_word(&r.word()), Some(r));
        }
    }

    #[test]
    fn bounded_policies_stop_after_their_last_attempt_and_forever_never_does() {
        assert!(!Retry::Attempts(1).another_after(1));
        assert!(Retry::Attempts(3).another_after(2));
        assert!(!Retry::Attempts(3).another_after(3));
        assert!(Retry::Forever.another_after(u32::MAX));
    }

    #[test]
    fn the_backoff_doubles_from_two_seconds_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn the_bounded_announcement_keeps_its_shape() {
        assert_eq!(
            announce(Retry::Attempts(3), 1, backoff(1)),
            "fetch: attempt 1 of 3 failed; retrying in 2 s"
        );
        let forever = announce(Retry::Forever, 7, backoff(7));
        assert!(forever.starts_with("fetch: attempt 7 failed; retrying in 60 s"));
        assert!(forever.contains("press any key"), "{forever}");
    }
}
