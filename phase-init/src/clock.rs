//! Stage 1's notion of "now" for every TUF expiry check.
//!
//! An initramfs cannot trust its clock: a machine with a flat CMOS battery
//! boots in 1970 or 2000, one with a tampered RTC anywhere. Expiry is what
//! stops a freeze attack (a peer or a stale stick replaying old, validly
//! signed metadata), so the one thing the clock must never do is move
//! backwards: an RTC that is behind would make expired metadata look fresh.
//! The policy (docs/boot-flow.md, "Clock"):
//!
//! `now = max(RTC, build time, last verified time)`
//!
//! * RTC: the system time as the kernel set it from the RTC.
//! * build time: the mtime of the baked trusted root (`phase image` gives
//!   every initramfs entry the build's `SOURCE_DATE_EPOCH`); no boot of this
//!   image can happen before the image was built.
//! * last verified time: `<cache>/clock.json`, written after a successful
//!   verified fetch with the `now` that fetch used. It only ever grows.
//!
//! Each source can only move `now` forward, which can only make metadata
//! *more* expired — never less. The worst a wrong source can do is refuse a
//! boot (an RTC far in the future makes everything expired, which is loud
//! and which a correct clock fixes); it can never make expired metadata
//! acceptable. The last verified time is written only after metadata
//! verified at that time, so a stored floor is never later than some signed
//! expiry: it cannot lock a stick out of metadata the publisher renews.
//! The expiry is never judged in the past: the grace policy
//! (`phase.grace`) is a separate, explicit and logged exception.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::console::console;
use crate::step::Status;

/// The file on the cache partition that keeps the last verified time.
pub const CLOCK_FILE: &str = "clock.json";

/// Where a boot's `now` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rtc,
    BuildTime,
    LastVerified,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rtc => "the RTC",
            Source::BuildTime => "the image build time",
            Source::LastVerified => "the last verified boot",
        }
    }
}

/// The boot clock: the time used and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    pub now: DateTime<Utc>,
    pub source: Source,
    /// What the RTC said.
    pub rtc: DateTime<Utc>,
}

impl BootClock {
    /// `max(rtc, every floor)`; on a tie the RTC wins (it is not behind).
    pub fn new(rtc: DateTime<Utc>, floors: &[(Source, Option<DateTime<Utc>>)]) -> Self {
        let mut c = BootClock {
            now: rtc,
            source: Source::Rtc,
            rtc,
        };
        for (source, t) in floors {
            c = c.raise(*source, *t);
        }
        c
    }

    /// The same clock, moved forward to `t` if that is later.
    #[must_use]
    pub fn raise(self, source: Source, t: Option<DateTime<Utc>>) -> Self {
        match t {
            Some(t) if t > self.now => BootClock {
                now: t,
                source,
                ..self
            },
            _ => self,
        }
    }

    /// One line for the console.
    pub fn describe(&self) -> String {
        let now = self.now.format("%Y-%m-%dT%H:%M:%SZ");
        if self.source == Source::Rtc {
            format!("now {now} from the RTC")
        } else {
            format!(
                "now {now} from {} (the RTC says {}, which is behind it)",
                self.source.as_str(),
                self.rtc.format("%Y-%m-%dT%H:%M:%SZ")
            )
        }
    }
}

/// The image build time: the mtime of `file` (the baked root), or `None`
/// when it cannot be read or is the epoch (no build time recorded).
pub fn build_time(file: &Path) -> Option<DateTime<Utc>> {
    let m = std::fs::metadata(file).ok()?.modified().ok()?;
    let t: DateTime<Utc> = m.into();
    (t.timestamp() > 0).then_some(t)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockFile {
    version: u32,
    last_verified: DateTime<Utc>,
}

/// The last verified time stored in the cache directory `dir`; `None` when
/// absent or unreadable (a damaged file only loses a floor, never lowers
/// the clock).
pub fn last_verified(dir: &Path) -> Option<DateTime<Utc>> {
    let bytes = std::fs::read(dir.join(CLOCK_FILE)).ok()?;
    serde_json::from_slice::<ClockFile>(&bytes)
        .ok()
        .map(|c| c.last_verified)
}

/// Records `t` (the time a fetch verified at) in `dir`, unless a later time
/// is already there. Written to a temporary file, fsynced, renamed.
pub fn store_last_verified(dir: &Path, t: DateTime<Utc>) -> std::io::Result<()> {
    if last_verified(dir).is_some_and(|old| old >= t) {
        return Ok(());
    }
    let body = serde_json::to_vec(&ClockFile {
        version: 1,
        last_verified: t,
    })?;
    let tmp = dir.join(format!("{CLOCK_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(CLOCK_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// `phase.grace`: how far in the past expiry may be judged, offline only.
/// Returns the time to judge at, `now - grace`.
pub fn grace_time(now: DateTime<Utc>, grace: std::time::Duration) -> DateTime<Utc> {
    let g = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::zero());
    now.checked_sub_signed(g).unwrap_or(now)
}

/// The `clock` boot step: the RTC and the build time of the image below
/// `root`.
pub fn step(root: &Path) -> (BootClock, Status) {
    let c = BootClock::new(
        Utc::now(),
        &[(
            Source::BuildTime,
            build_time(&root.join(crate::trust::ROOT_FILE)),
        )],
    );
    (c, Status::ok(c.describe()))
}

/// `c` raised to the last verified time the mounted cache recorded, with a
/// console line when that moved it.
pub fn raise_to_cache(c: BootClock, cache: Option<&crate::cachepart::Mounted>) -> BootClock {
    let raised = c.raise(
        Source::LastVerified,
        cache.and_then(|m| last_verified(&m.dir)),
    );
    if raised.now != c.now {
        console().line(&format!("clock: {}", raised.describe()));
    }
    raised
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, 6, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_correct_rtc_is_used() {
        let c = BootClock::new(
            t(2026),
            &[
                (Source::BuildTime, Some(t(2025))),
                (Source::LastVerified, Some(t(2026))),
            ],
        );
        assert_eq!((c.now, c.source), (t(2026), Source::Rtc));
        assert!(c.describe().ends_with("from the RTC"), "{}", c.describe());
    }

    #[test]
    fn an_rtc_behind_the_build_or_a_verified_boot_never_moves_time_back() {
        // Flat CMOS battery: 2000.
        let c = BootClock::new(
            t(2000),
            &[
                (Source::BuildTime, Some(t(2025))),
                (Source::LastVerified, None),
            ],
        );
        assert_eq!((c.now, c.source), (t(2025), Source::BuildTime));
        let c = c.raise(Source::LastVerified, Some(t(2026)));
        assert_eq!(
            (c.now, c.source, c.rtc),
            (t(2026), Source::LastVerified, t(2000))
        );
        assert!(
            c.describe().contains("which is behind it"),
            "{}",
            c.describe()
        );
        // A floor can only raise the clock.
        let c = c.raise(Source::BuildTime, Some(t(2010)));
        assert_eq!(c.now, t(2026));
    }

    #[test]
    fn the_last_verified_time_only_grows_and_bad_files_are_no_floor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_verified(dir.path()), None);
        store_last_verified(dir.path(), t(2026)).unwrap();
        assert_eq!(last_verified(dir.path()), Some(t(2026)));
        store_last_verified(dir.path(), t(2024)).unwrap();
        assert_eq!(last_verified(dir.path()), Some(t(2026)));
        store_last_verified(dir.path(), t(2027)).unwrap();
        assert_eq!(last_verified(dir.path()), Some(t(2027)));
        std::fs::write(dir.path().join(CLOCK_FILE), "garbage").unwrap();
        assert_eq!(last_verified(dir.path()), None);
    }

    #[test]
    fn build_time_is_the_file_mtime_and_the_epoch_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("root.json");
        std::fs::write(&f, "{}").unwrap();
        let now = Utc::now();
        let b = build_time(&f).unwrap();
        assert!((now - b).num_seconds().abs() < 60);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(build_time(&f), None);
        assert_eq!(build_time(&dir.path().join("missing")), None);
    }

    #[test]
    fn grace_judges_in_the_past_by_exactly_the_grace() {
        let g = std::time::Duration::from_secs(7 * 86400);
        assert_eq!(grace_time(t(2026), g), t(2026) - chrono::Duration::days(7));
    }
}
