//! Helpers shared by the trust subcommands (keygen, publish, rotate, verify,
//! tuf-client): durations, the plain-HTTP transport, and repository
//! locations (a directory or an `http://` URL).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use anyhow::{bail, Context};
use verifier::{DirTransport, Transport, TransportError};

/// Parse `30d`, `12h`, `45m`, `90s`, `2w`, `1y` (a number and one unit).
pub fn parse_duration(s: &str) -> anyhow::Result<chrono::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number then s/m/h/d/w/y"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        other => bail!("duration {s:?}: unknown unit {other:?} (use s, m, h, d, w or y)"),
    };
    if n <= 0 {
        bail!("duration {s:?} must be positive");
    }
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .with_context(|| format!("duration {s:?} is too long"))
}

/// Clap value parser for durations.
pub fn duration_arg(s: &str) -> Result<chrono::Duration, String> {
    parse_duration(s).map_err(|e| format!("{e:#}"))
}

/// Clap value parser for an RFC 3339 time.
pub fn time_arg(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Join a base URL and a relative path with exactly one `/`.
pub fn join_url(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// The whole of one request (head and body) must finish within this: 30 s
/// plus the cap at 64 KiB/s, so a silent or trickling server costs a
/// bounded time (a minimum rate), while a large target still has time.
pub fn request_deadline(max_len: u64) -> StdDuration {
    StdDuration::from_secs(30).saturating_add(StdDuration::from_secs(max_len / (64 * 1024)))
}

/// A repository over plain HTTP: metadata under one base URL, targets under
/// another. Responses are read up to the cap plus one byte, never more.
#[derive(Debug)]
pub struct HttpTransport {
    client: reqwest::blocking::Client,
    metadata_base: String,
    targets_base: Option<String>,
}

impl HttpTransport {
    /// Metadata from `metadata_base`, targets from `targets_base`.
    pub fn new(metadata_base: &str, targets_base: Option<&str>) -> anyhow::Result<Self> {
        for url in std::iter::once(metadata_base).chain(targets_base) {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("{url:?} is not an http:// URL");
            }
        }
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(StdDuration::from_secs(10))
            // Each request gets its own overall deadline (`request_deadline`).
            .timeout(None)
            .redirect(fetcher::fetch::redirect_policy())
            .build()
            .context("creating the HTTP client failed")?;
        Ok(HttpTransport {
            client,
            metadata_base: metadata_base.to_string(),
            targets_base: targets_base.map(str::to_string),
        })
    }

    fn get(&self, url: &str, max_len: u64) -> Result<reqwest::blocking::Response, TransportError> {
        let resp = self
            .client
            .get(url)
            .timeout(request_deadline(max_len))
            .send()
            .map_err(TransportError::other)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Err(TransportError::NotFound);
        }
        if !status.is_success() {
            return Err(TransportError::other(format!("{url}: HTTP {status}")));
        }
        if resp.content_length().is_some_and(|n| n > max_len) {
            return Err(TransportError::TooLarge { max: max_len });
        }
        Ok(resp)
    }
}

impl Transport for HttpTransport {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        let resp = self.get(&join_url(&self.metadata_base, name), max_len)?;
        verifier::read_capped(resp, max_len)
    }

    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError> {
        let base = self
            .targets_base
            .as_deref()
            .ok_or_else(|| TransportError::other("no target base URL given"))?;
        let resp = self.get(&join_url(base, path), max_len)?;
        Ok(Box::new(resp.take(max_len.saturating_add(1))))
    }
}

/// Where a repository lives: a directory (`metadata/`, `targets/`) or a URL
/// serving that same layout.
pub enum RepoLocation {
    /// Local directory.
    Dir(PathBuf),
    /// Base URL.
    Url(String),
}

impl RepoLocation {
    /// `http://...` or `https://...` is a URL, anything else a directory.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            RepoLocation::Url(s.to_string())
        } else {
            RepoLocation::Dir(PathBuf::from(s))
        }
    }

    /// A transport for this location.
    pub fn transport(&self) -> anyhow::Result<Box<dyn Transport>> {
        Ok(match self {
            RepoLocation::Dir(d) => {
                if !d.join("metadata").is_dir() {
                    bail!(
                        "{} is not a repository (no metadata/ directory)",
                        d.display()
                    );
                }
                Box::new(DirTransport::new(d))
            }
            RepoLocation::Url(u) => Box::new(HttpTransport::new(
                &join_url(u, "metadata"),
                Some(&join_url(u, "targets")),
            )?),
        })
    }
}

/// Validate a channel or arch name: one non-empty path element of
/// `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_component(what: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("{what} {s:?} must be one name of letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// Print `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("serializing the report failed")?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert_eq!(parse_duration("1y").unwrap(), chrono::Duration::days(365));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3q").is_err());
        assert!(parse_duration("0d").is_err());
    }

    #[test]
    fn urls_and_names() {
        assert_eq!(join_url("http://h/a/", "/b"), "http://h/a/b");
        assert!(check_component("channel", "stable").is_ok());
        assert!(check_component("channel", "..").is_err());
        assert!(check_component("arch", "x86/64").is_err());
    }
}
