//! What the libraries saw, on the boot console.
//!
//! The libraries (`verifier`, `fetcher`, `discovery`) report through
//! `tracing` events and never print. PID 1 installs one subscriber that
//! writes each event as one console line (which also goes to `/dev/kmsg`,
//! see [`crate::console`]): a dropped peer, a DHT bootstrap peer that cannot
//! be dialled, an updater warning. `phase.debug=true` raises the level.
//!
//! | `phase.debug` | our crates | everything else (arti, libp2p, mdns-sd, hyper ...) |
//! |---|---|---|
//! | `false` (default) | warnings and errors | errors |
//! | `true` | debug and above | info and above |

use std::io;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::console::console;

/// The crates whose warnings a boot shows by default.
const OURS: &[&str] = &["verifier", "fetcher", "discovery", "phase_init"];

/// The filter for `phase.debug`.
pub fn filter(debug: bool) -> Targets {
    let (ours, others) = if debug {
        (LevelFilter::DEBUG, LevelFilter::INFO)
    } else {
        (LevelFilter::WARN, LevelFilter::ERROR)
    };
    OURS.iter()
        .fold(Targets::new().with_default(others), |t, c| {
            t.with_target(*c, ours)
        })
}

/// Installs the console subscriber once; a second call does nothing.
pub fn install(debug: bool) {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(ConsoleLines)
        .with_ansi(false)
        .without_time()
        .compact();
    // Err: a subscriber is already installed (a second call); keep it.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter(debug))
        .try_init();
}

/// Hands each event's text to the console, one line per text line.
#[derive(Debug, Clone, Copy)]
struct ConsoleLines;

impl<'a> MakeWriter<'a> for ConsoleLines {
    type Writer = EventText;

    fn make_writer(&'a self) -> Self::Writer {
        EventText(Vec::new())
    }
}

/// One event's text, written to the console when the event is done (the
/// formatter drops its writer after each event).
#[derive(Debug)]
struct EventText(Vec<u8>);

/// An event longer than this is cut (a peer's error text could be long).
const MAX_EVENT: usize = 4096;

impl io::Write for EventText {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MAX_EVENT.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventText {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            console().line(line.trim_start());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(f: &Targets, target: &str, level: Level) -> bool {
        f.would_enable(target, &level)
    }

    #[test]
    fn by_default_our_warnings_show_and_other_crates_only_errors() {
        let f = filter(false);
        assert!(enabled(&f, "fetcher::fetch", Level::WARN));
        assert!(enabled(&f, "discovery::dht", Level::WARN));
        assert!(enabled(&f, "verifier::updater", Level::WARN));
        assert!(!enabled(&f, "fetcher::fetch", Level::INFO));
        assert!(!enabled(&f, "libp2p_swarm", Level::WARN));
        assert!(enabled(&f, "libp2p_swarm", Level::ERROR));
    }

    #[test]
    fn debug_shows_our_debug_events_and_others_info() {
        let f = filter(true);
        assert!(enabled(&f, "fetcher::fetch", Level::DEBUG));
        assert!(!enabled(&f, "fetcher::fetch", Level::TRACE));
        assert!(enabled(&f, "arti_client", Level::INFO));
        assert!(!enabled(&f, "arti_client", Level::DEBUG));
    }

    #[test]
    fn an_event_text_is_bounded() {
        let mut t = EventText(Vec::new());
        let big = vec![b'x'; MAX_EVENT * 2];
        assert_eq!(io::Write::write(&mut t, &big).unwrap_or(0), big.len());
        assert_eq!(t.0.len(), MAX_EVENT);
        t.0.clear();
    }
}
