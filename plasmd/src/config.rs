//! `plasmd daemon`'s configuration: the TOML file, the flags that override
//! it (`main.rs`), the boot's policy (`PHASE_MODE`, `PHASE_NOWRITE`) and
//! the peers stage 1 used (`boot.json`, the `handover` crate).

use std::path::{Path, PathBuf};

use handover::BootJson;
use serde::Deserialize;

use crate::job::{job_name, target_name};

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/plasmd/plasmd.sock";
/// Default provenance file.
pub const DEFAULT_BOOT_JSON: &str = handover::BOOT_JSON;
/// Default state directory.
pub const DEFAULT_STATE: &str = "/var/lib/plasmd";

/// `plasmd daemon --config FILE` (TOML). Every field is optional.
///
/// ```toml
/// state = "/var/lib/plasmd"            # runs/<id>/{log,outcome.json,scratch}
/// socket = "/run/plasmd/plasmd.sock"
/// cache = "/phase"                     # read-only CAS, looked at after the store: <cache>/cas/sha256, <cache>/tuf
/// root = "/phase/tuf/root.json"        # trust anchor when <state>/tuf has none (default <cache>/tuf/root.json)
/// peers = ["http://198.18.0.1:7070"]
/// peers_from_boot = true               # add the http peers named in boot.json (default true)
/// boot_json = "/phase/boot.json"       # read-only /phase/boot.json for jobs (this is the default)
/// hostname = "node-7"                  # default: the kernel's
/// jobs = ["hello"]                     # run at start-up, in order
/// max_parallel = 2                     # runs at once; more wait queued
/// fetch_deadline_s = 300               # per job fetched from peers
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub state: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub peers_from_boot: Option<bool>,
    pub boot_json: Option<PathBuf>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub jobs: Vec<String>,
    pub max_parallel: Option<usize>,
    pub fetch_deadline_s: Option<u64>,
}

impl DaemonConfig {
    /// Read and check a config file; the error is one line naming the file
    /// and what is wrong.
    pub fn load(path: &Path) -> Result<DaemonConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parse and check config text.
    pub fn parse(text: &str) -> Result<DaemonConfig, String> {
        let c: DaemonConfig = toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        c.check()?;
        Ok(c)
    }

    /// The checks `parse` makes (also for configs built from flags).
    pub fn check(&self) -> Result<(), String> {
        for j in &self.jobs {
            if job_name(&target_name(j)).is_none() {
                return Err(format!(
                    "jobs: {j:?} is not a job name (letters, digits, '.', '_', '-')"
                ));
            }
        }
        if self.max_parallel == Some(0) {
            return Err("max_parallel must be at least 1".into());
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.contains(['\0', '\n']) {
                return Err(format!("hostname {h:?} is not a host name"));
            }
        }
        Ok(())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.clone().unwrap_or_else(|| DEFAULT_STATE.into())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into())
    }

    /// The provenance file: `boot_json`, default `/phase/boot.json`.
    pub fn boot_json_path(&self) -> PathBuf {
        self.boot_json
            .clone()
            .unwrap_or_else(|| DEFAULT_BOOT_JSON.into())
    }

    /// What the boot asks of every service (phase-init's `PHASE_MODE` and
    /// `PHASE_NOWRITE`, docs/threat-model.md): in private mode no peer at
    /// all (a job comes from the verified boot payload, never over a direct
    /// connection); with nowrite the state directory must not be on a
    /// writable disk (`mounts`: `/proc/self/mounts` text). Returns what was
    /// changed, for the log; an error names the offending mount.
    pub fn apply_boot_policy(
        &mut self,
        mode: Option<&str>,
        nowrite: bool,
        mounts: &str,
    ) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if mode == Some("private") {
            notes.push(
                "private mode: no peers (jobs come from the verified boot payload only)".to_owned(),
            );
            self.peers.clear();
            self.peers_from_boot = Some(false);
        }
        if nowrite {
            let state = self.state_dir();
            if let Some(m) = disk_mount_of(&state, mounts) {
                return Err(format!(
                    "PHASE_NOWRITE=1 but the state directory {} is on the writable disk {m}; use a tmpfs path",
                    state.display()
                ));
            }
            notes.push(format!(
                "nowrite: state {} is not on a disk",
                state.display()
            ));
        }
        Ok(notes)
    }

    /// `peers`, then the http peers boot.json names (when asked to).
    pub fn all_peers(&self) -> Vec<String> {
        let mut v = self.peers.clone();
        if self.peers_from_boot.unwrap_or(true) {
            for p in boot_peers(&self.boot_json_path()) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        v
    }
}

/// The `peers[].peer` values of a boot.json that are http URLs (`cache`
/// is not a peer plasmd can ask). A file that is missing gives none; one
/// that is not a boot.json gives none, with a warning.
fn boot_peers(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let boot = match BootJson::from_json(&bytes) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "not a boot.json; no peers taken from it");
            return Vec::new();
        }
    };
    boot.peers
        .into_iter()
        .map(|p| p.peer)
        .filter(|u| u.starts_with("http://"))
        .collect()
}

/// The writable block-device mount (`/dev/...`, `rw`) that holds `path`,
/// as `device on dir`, from `/proc/self/mounts` text; `None` when the
/// longest matching mount is not one (tmpfs, overlay, a read-only disk).
pub fn disk_mount_of(path: &Path, mounts: &str) -> Option<String> {
    let mut best: Option<(usize, &str, &str, bool)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || !path.starts_with(f[1]) {
            continue;
        }
        let len = f[1].len();
        if best.is_none_or(|(b, ..)| len >= b) {
            let rw = f[3].split(',').any(|o| o == "rw");
            best = Some((len, f[0], f[1], rw));
        }
    }
    best.filter(|(_, dev, _, rw)| *rw && dev.starts_with("/dev/"))
        .map(|(_, dev, dir, _)| format!("{dev} on {dir}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_checks() {
        let c = DaemonConfig::parse(
            r#"state = "/s"
cache = "/phase"
peers = ["http://198.18.0.1:7070"]
jobs = ["hello", "a-b.c"]
"#,
        )
        .expect("valid config");
        assert_eq!(c.jobs, vec!["hello".to_string(), "a-b.c".to_string()]);
        assert_eq!(c.socket_path(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.boot_json_path(), PathBuf::from(DEFAULT_BOOT_JSON));
        let e = DaemonConfig::parse("jobs = [\"../x\"]").expect_err("bad job name");
        assert!(e.contains("\"../x\""), "{e}");
        let e = DaemonConfig::parse("state = \"/s\"\njob = [\"x\"]").expect_err("unknown key");
        assert!(e.starts_with("line 2: unknown field `job`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = DaemonConfig::parse("max_parallel = 0").expect_err("zero slots");
        assert!(e.contains("max_parallel"), "{e}");
    }

    /// A boot.json as stage 1 writes it, naming `peers`.
    fn boot_json(peers: &[&str]) -> Vec<u8> {
        BootJson {
            version: handover::BOOT_JSON_VERSION,
            mode: "local".into(),
            channel: "stable".into(),
            cmdline: "phase.stage=target".into(),
            artifacts: vec![],
            tuf: handover::TufVersions::default(),
            peers: peers
                .iter()
                .map(|p| handover::PeerBytes {
                    peer: (*p).into(),
                    bytes: 5,
                    found: None,
                    dropped: None,
                })
                .collect(),
            steps: vec![],
            identity: None,
            platform: None,
            handover: None,
            measurements: Vec::new(),
        }
        .to_json()
    }

    #[test]
    fn boot_json_peers_are_http_urls_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = dir.path().join("boot.json");
        std::fs::write(&b, boot_json(&["http://198.18.0.1:7070", "cache"])).expect("write");
        assert_eq!(boot_peers(&b), vec!["http://198.18.0.1:7070".to_string()]);
        let c = DaemonConfig {
            boot_json: Some(b.clone()),
            peers_from_boot: None,
            peers: vec!["http://198.18.0.2:1".into()],
            ..DaemonConfig::default()
        };
        assert_eq!(c.all_peers().len(), 2);
        // A field a newer stage 1 added does not hide the peers.
        let newer = String::from_utf8(boot_json(&["http://198.18.0.1:7070"]))
            .expect("utf-8")
            .replacen("\"bytes\"", "\"rtt_ms\": 3, \"bytes\"", 1);
        std::fs::write(&b, newer).expect("write");
        assert_eq!(boot_peers(&b).len(), 1);
        // What is not a boot.json names no peers; neither does a missing file.
        std::fs::write(&b, r#"{"peers":[{"peer":"http://198.18.0.1:7070"}]}"#).expect("write");
        assert!(boot_peers(&b).is_empty());
        assert!(boot_peers(&dir.path().join("missing.json")).is_empty());
    }

    #[test]
    fn private_mode_drops_every_peer_and_nowrite_refuses_a_disk_state_dir() {
        let mounts = "\
overlay / overlay rw,lowerdir=/l,upperdir=/u,workdir=/w 0 0
tmpfs /run tmpfs rw,nosuid 0 0
/dev/vda2 /var/lib/plasmd ext4 rw,relatime 0 0
/dev/vda3 /mnt/ro ext4 ro,relatime 0 0
";
        let mut c = DaemonConfig {
            peers: vec!["http://198.18.0.10:7070".into()],
            state: Some("/run/plasmd-state".into()),
            ..DaemonConfig::default()
        };
        let notes = c.apply_boot_policy(Some("private"), true, mounts).unwrap();
        assert!(notes[0].contains("no peers"), "{notes:?}");
        assert!(c.all_peers().is_empty());
        assert_eq!(c.peers_from_boot, Some(false));
        let mut local = DaemonConfig {
            peers: vec!["http://198.18.0.10:7070".into()],
            ..DaemonConfig::default()
        };
        local
            .apply_boot_policy(Some("local"), false, mounts)
            .unwrap();
        assert_eq!(local.peers.len(), 1, "other modes keep their peers");
        // The default state dir sits on the rw disk mount: refused.
        let e = DaemonConfig::default()
            .apply_boot_policy(Some("private"), true, mounts)
            .unwrap_err();
        assert!(e.contains("/dev/vda2 on /var/lib/plasmd"), "{e}");
        assert_eq!(disk_mount_of(Path::new("/mnt/ro/x"), mounts), None);
        assert_eq!(disk_mount_of(Path::new("/var/lib/plasmdx"), mounts), None);
    }
}
