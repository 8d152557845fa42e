//! The console countdown between two fetch attempts: the active consoles
//! are watched for a key press, which stops the retries and opens the rescue
//! shell (the policy, how long to wait, is [`crate::retry`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// How a countdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Countdown {
    /// The wait is over: try again.
    Elapsed,
    /// Someone pressed a key on this console device.
    KeyPressed,
}

/// Every `COUNTDOWN_STEP` of a long wait the console says how long is left.
const COUNTDOWN_STEP: Duration = Duration::from_secs(10);
/// How often the consoles are polled for a key.
const POLL: Duration = Duration::from_millis(200);

/// Waits `wait`, saying every ten seconds how much is left, and returns
/// early when a key is pressed on one of `keys`' consoles.
pub fn countdown(wait: Duration, keys: &mut KeyWatch, mut say: impl FnMut(&str)) -> Countdown {
    let start = Instant::now();
    let mut next_say = COUNTDOWN_STEP;
    loop {
        if keys.pressed() {
            return Countdown::KeyPressed;
        }
        let gone = start.elapsed();
        if gone >= wait {
            return Countdown::Elapsed;
        }
        if gone >= next_say {
            let left = wait.saturating_sub(gone);
            say(&format!("fetch: retrying in {} s", left.as_secs().max(1)));
            next_say += COUNTDOWN_STEP;
        }
        std::thread::sleep(POLL.min(wait - gone));
    }
}

/// The consoles watched for a key press: each opened non-blocking and put
/// in non-canonical mode without echo (one key is enough, no Enter), and
/// restored when the watch is dropped.
#[derive(Debug)]
pub struct KeyWatch {
    ttys: Vec<(File, Option<Termios>)>,
}

impl KeyWatch {
    /// Watches `paths` (the active consoles); a console that cannot be
    /// opened is left out (the others still work).
    pub fn open(paths: &[String]) -> KeyWatch {
        let ttys = paths
            .iter()
            .filter_map(|p| {
                let fd = rustix::fs::open(
                    p.as_str(),
                    rustix::fs::OFlags::RDWR
                        | rustix::fs::OFlags::NOCTTY
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ok()?;
                let file = File::from(fd);
                let saved = raw_keys(&file);
                Some((file, saved))
            })
            .collect();
        KeyWatch { ttys }
    }

    /// How many consoles are watched.
    pub fn len(&self) -> usize {
        self.ttys.len()
    }

    /// True when no console could be opened.
    pub fn is_empty(&self) -> bool {
        self.ttys.is_empty()
    }

    /// True when at least one byte is waiting on any watched console (all
    /// waiting bytes are consumed, so they do not reach the rescue shell).
    pub fn pressed(&mut self) -> bool {
        let mut any = false;
        let mut buf = [0u8; 64];
        for (file, _) in &mut self.ttys {
            // Bounded: a console gives at most what was typed so far.
            for _ in 0..16 {
                match file.read(&mut buf) {
                    Ok(n) if n > 0 => any = true,
                    _ => break,
                }
            }
        }
        any
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        for (file, saved) in &self.ttys {
            if let Some(t) = saved {
                let _ = termios::tcsetattr(file.as_fd(), OptionalActions::Now, t);
            }
        }
    }
}

/// Puts a terminal into "one key, no echo" mode; returns its old settings
/// (`None`: not a terminal, or it refused; reads still work, after Enter).
fn raw_keys(file: &File) -> Option<Termios> {
    let saved = termios::tcgetattr(file.as_fd()).ok()?;
    let mut t = saved.clone();
    t.local_modes.remove(LocalModes::ICANON | LocalModes::ECHO);
    t.special_codes[SpecialCodeIndex::VMIN] = 0;
    t.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(file.as_fd(), OptionalActions::Now, &t).ok()?;
    Some(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_countdown_without_keys_waits_the_whole_time_and_counts_down() {
        let mut keys = KeyWatch::open(&[]);
        let mut said = Vec::new();
        let t = Instant::now();
        let r = countdown(Duration::from_millis(300), &mut keys, |l| {
            said.push(l.to_owned())
        });
        assert_eq!(r, Countdown::Elapsed);
        assert!(t.elapsed() >= Duration::from_millis(300));
        // Shorter than one countdown step: no intermediate line.
        assert!(said.is_empty(), "{said:?}");
    }

    #[test]
    fn a_byte_on_a_watched_terminal_ends_the_countdown_early() {
        // A pseudo-terminal pair stands in for the serial console: a key
        // typed on the controlling side arrives on the watched side.
        let master = match rustix::pty::openpt(
            rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
        ) {
            Ok(m) => m,
            Err(e) => panic!("no pseudo-terminals on this machine: {e}"),
        };
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
        let name = name.to_string_lossy().into_owned();
        let mut keys = KeyWatch::open(std::slice::from_ref(&name));
        assert_eq!(keys.len(), 1, "{name} could not be watched");
        assert!(!keys.pressed());
        let mut m = File::from(master);
        std::io::Write::write_all(&mut m, b"x").expect("type a key");
        let t = Instant::now();
        let r = countdown(Duration::from_secs(30), &mut keys, |_| {});
        assert_eq!(r, Countdown::KeyPressed);
        assert!(t.elapsed() < Duration::from_secs(5));
        // Non-canonical: one key, no Enter needed, and it was consumed.
        assert!(!keys.pressed());
    }
}
