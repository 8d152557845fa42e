//! Stage 1's embedded Tor client for private mode (docs/tor.md "Tor in
//! stage 1").
//!
//! A private boot that fetches from network peers and has no
//! `phase.socks5` proxy starts arti inside PID 1: no external daemon, its
//! state and directory cache under `/run` (RAM, gone at kexec). The network
//! it joins is the public Tor network, or the arti configuration fragment
//! `phase image --tor-network FILE` baked into the initramfs as
//! [`NETWORK_FILE`] (a private network's authorities and fallbacks, or
//! `[bridges]`). Bootstrap progress, the time it took and the time to the
//! first byte go to the console, one line each.
//!
//! arti runs on its own tokio runtime, which lives as long as the
//! [`Embedded`] value; the fetcher's HTTP client (on bootfetch's runtime)
//! reaches it through the in-process gateway of [`fetcher::tor`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fetcher::tor::{Route, Tor, TorConfig, TorEvent};

use crate::console::console;
use crate::step::Status;

/// The arti configuration fragment baked into the initramfs, if any.
pub const NETWORK_FILE: &str = "/etc/phase/tor-network.toml";

/// arti's state and cache (on `/run`, a tmpfs: never on a disk).
pub const STATE_DIR: &str = "/run/phase/tor";

/// The running embedded Tor client.
pub struct Embedded {
    rt: tokio::runtime::Runtime,
    tor: Tor,
    /// Which network: "the public Tor network" or the baked file.
    pub network: String,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// Starts and bootstraps arti (bounded by `timeout`,
    /// `phase.tor_timeout`), drawing progress on the console.
    /// `network_file`: [`NETWORK_FILE`] in PID 1; used only when it exists.
    pub fn start(
        network_file: &Path,
        state_dir: &Path,
        timeout: Duration,
    ) -> Result<Embedded, String> {
        // arti's TLS provider (tor-rtcompat asks the application for one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cfg = TorConfig::in_dir(state_dir);
        cfg.bootstrap_timeout = timeout;
        let network = if network_file.exists() {
            cfg = cfg
                .with_network_file(network_file)
                .map_err(|e| crate::step::chain(&e))?;
            format!("the network in {}", network_file.display())
        } else {
            "the public Tor network".to_string()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tor")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Tor runtime: {e}"))?;
        let events: fetcher::tor::TorEventFn = Arc::new(|ev: &TorEvent| {
            if let Some(line) = event_line(ev) {
                console().line(&line);
            }
        });
        let tor = rt
            .block_on(Tor::start(cfg, Some(events)))
            .map_err(|e| crate::step::chain(&e))?;
        Ok(Embedded { rt, tor, network })
    }

    /// The fetch route through this client.
    pub fn route(&self) -> Route {
        Route::Tor(self.tor.clone())
    }

    /// Closes every circuit and stops the runtime (before kexec).
    pub fn stop(self) {
        let Embedded { rt, tor, .. } = self;
        drop(tor);
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The console line for a Tor event (`None`: not worth a line).
pub fn event_line(ev: &TorEvent) -> Option<String> {
    match ev {
        // arti's status starts with the percentage ("45%: ...").
        TorEvent::Bootstrap { status, .. } => Some(format!("tor: bootstrap {status}")),
        TorEvent::Ready { elapsed } => Some(format!(
            "tor: bootstrapped in {:.1} s",
            elapsed.as_secs_f64()
        )),
        TorEvent::FirstByte { target, elapsed } => Some(format!(
            "tor: first byte from {target} {:.1} s after start",
            elapsed.as_secs_f64()
        )),
        TorEvent::StreamFailed { target, error } => {
            Some(format!("tor: cannot reach {target} through Tor: {error}"))
        }
    }
}

/// The `tor` boot step: arti bootstrapped in RAM within `phase.tor_timeout`,
/// or one problem saying why not.
pub fn step(config: &crate::cmdline::Config) -> (Option<Embedded>, Status) {
    match Embedded::start(
        Path::new(NETWORK_FILE),
        Path::new(STATE_DIR),
        Duration::from_secs(u64::from(config.tor_timeout)),
    ) {
        Ok(t) => {
            let detail = format!("bootstrapped on {}; state in RAM", t.network);
            (Some(t), Status::ok(detail))
        }
        Err(e) => (None, Status::fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_one_console_line_each() {
        let b = event_line(&TorEvent::Bootstrap {
            percent: 8,
            status: "8%: handshaking with Tor relays".into(),
        });
        assert_eq!(
            b.as_deref(),
            Some("tor: bootstrap 8%: handshaking with Tor relays")
        );
        let r = event_line(&TorEvent::Ready {
            elapsed: Duration::from_millis(12_340),
        });
        assert_eq!(r.as_deref(), Some("tor: bootstrapped in 12.3 s"));
        let f = event_line(&TorEvent::FirstByte {
            target: "198.18.0.16:7070".into(),
            elapsed: Duration::from_secs(20),
        });
        assert_eq!(
            f.as_deref(),
            Some("tor: first byte from 198.18.0.16:7070 20.0 s after start")
        );
        for l in [b, r, f].into_iter().flatten() {
            assert!(!l.contains('\n'), "one line: {l}");
        }
    }

    #[test]
    fn a_bad_network_file_is_named_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tor-network.toml");
        std::fs::write(&file, "[tor_network\nnot toml").expect("write");
        let e = Embedded::start(&file, &dir.path().join("state"), Duration::from_secs(5))
            .expect_err("bad file");
        assert!(e.contains("tor-network.toml"), "names the file: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
