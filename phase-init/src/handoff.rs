//! Stage 1's last act: from verified artifacts to a loaded kexec target.
//!
//! Given the kernel, the target initramfs and the rootfs (with their digests)
//! and the target's signed command line, [`prepare`] writes the target initrd
//! (initramfs ++ payload cpio, see [`crate::payload`]) to a file on tmpfs and
//! builds the command line the target gets; [`crate::kexec`] does the rest.
//!
//! Where the artifacts come from is the caller's business: the verified
//! fetch (TUF + fetcher), or for the boot test (`phase.test=kexec`) the
//! directory [`TEST_ARTIFACTS`] baked into the test's initramfs.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use handover::{ArtifactRecord, BootJson, StepTiming, BOOT_JSON_VERSION};

use crate::cmdline::{Config, Stage};
use crate::kexec::Target;
use crate::payload::{self, Artifact, MetaFile, Payload, PayloadError, RootVerity};
use crate::step::{chain, Status};

/// `phase.test=kexec` reads `vmlinuz`, `initramfs.img`, `rootfs.squashfs`
/// and `cmdline` (the target's own kernel parameters) from here.
pub const TEST_ARTIFACTS: &str = "/etc/phase/test-artifacts";

/// Where the target initrd is written (tmpfs).
pub const INITRD_OUT: &str = "/run/phase/target-initrd.img";

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot read the target command line {path}")]
    Cmdline {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the target initrd {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the rootfs {path} is not the signed one (sha256 {got}, {len} bytes)")]
    RootfsMismatch {
        path: PathBuf,
        got: String,
        len: u64,
    },
    #[error("cannot assemble the target initrd {path}")]
    Payload {
        path: PathBuf,
        #[source]
        source: PayloadError,
    },
}

/// Verified artifacts, ready to hand over.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub kernel: Artifact,
    pub initramfs: Artifact,
    pub rootfs: Artifact,
    /// The target's own (signed) kernel parameters.
    pub cmdline: String,
    /// TUF target names, for `boot.json`.
    pub names: [String; 3],
    /// Further verified objects the target gets in its CAS (the jobs),
    /// with their TUF target names.
    pub extra: Vec<(String, Artifact)>,
    /// The verified TUF metadata, re-shared from `/phase/tuf/`.
    pub tuf: Vec<MetaFile>,
    /// The rootfs's dm-verity tree and signed parameters, when the release
    /// has them: stage 2 then reads the rootfs through dm-verity.
    pub verity: Option<RootVerity>,
    /// Whether the rootfs was hashed whole in this boot. A rootfs with
    /// dm-verity parameters taken from the cache is not (dm-verity checks
    /// each block as it is read); [`prepare`] hashes it before it goes
    /// into a kexec initrd, whose initramfs this stage has not checked.
    pub rootfs_hashed: bool,
}

/// The artifacts of a `phase.test=kexec` boot, from `dir`.
pub fn test_artifacts(dir: &Path, channel: &str) -> Result<Artifacts, HandoffError> {
    let hash = |what, name: &str| {
        let path = dir.join(name);
        Artifact::hash_file(what, &path).map_err(|source| HandoffError::Payload { path, source })
    };
    let cmdline_path = dir.join("cmdline");
    let cmdline =
        std::fs::read_to_string(&cmdline_path).map_err(|source| HandoffError::Cmdline {
            path: cmdline_path,
            source,
        })?;
    let arch = std::env::consts::ARCH;
    Ok(Artifacts {
        kernel: hash("kernel", "vmlinuz")?,
        initramfs: hash("target initramfs", "initramfs.img")?,
        rootfs: hash("rootfs", "rootfs.squashfs")?,
        cmdline: cmdline.trim().to_owned(),
        names: ["kernel", "initramfs", "rootfs"].map(|k| format!("{channel}/{arch}/{k}")),
        extra: Vec::new(),
        tuf: Vec::new(),
        verity: None,
        rootfs_hashed: true,
    })
}

/// A `phase.test=kexec` artifact directory for unit tests: a tiny kernel,
/// initramfs, rootfs and cmdline in `dir` ([`test_artifacts`] reads it).
#[cfg(test)]
pub fn write_test_artifacts(dir: &Path) {
    for (n, b) in [
        ("vmlinuz", &b"kernel"[..]),
        ("initramfs.img", b"initrd"),
        ("rootfs.squashfs", b"hsqs"),
        ("cmdline", b"console=ttyS0\n"),
    ] {
        std::fs::write(dir.join(n), b).expect("write");
    }
}

/// The target's command line: its signed parameters, then ours (which win,
/// being last): role target, the same mode, channel and write policy (not
/// the test hooks, nor `phase.kexec`, which only stage 1 reads).
pub fn target_cmdline(signed: &str, config: &Config) -> String {
    let mut c = config.clone();
    c.stage = Stage::Target;
    c.nowrite = config.nowrite();
    c.test = None;
    c.kexec = crate::cmdline::Kexec::default();
    let ours = c.to_cmdline();
    if signed.trim().is_empty() {
        ours
    } else {
        format!("{} {ours}", signed.trim())
    }
}

/// The provenance record of this boot (TUF versions and peers are filled in
/// by the verified fetch; a test boot has none).
pub fn boot_json(a: &Artifacts, config: &Config, cmdline: &str) -> BootJson {
    let record = |kind: &str, name: &str, art: &Artifact| ArtifactRecord {
        kind: kind.to_owned(),
        target: name.to_owned(),
        sha256: art.sha256.clone(),
        length: art.length,
        hashed: kind != "rootfs" || a.rootfs_hashed,
    };
    BootJson {
        version: BOOT_JSON_VERSION,
        mode: config.mode.as_str().to_owned(),
        channel: config.channel.clone(),
        cmdline: cmdline.to_owned(),
        artifacts: [
            record("kernel", &a.names[0], &a.kernel),
            record("initramfs", &a.names[1], &a.initramfs),
            record("rootfs", &a.names[2], &a.rootfs),
        ]
        .into_iter()
        .chain(
            a.verity
                .iter()
                .map(|v| record("verity", &v.params.verity.tree, &v.tree)),
        )
        .chain(a.extra.iter().map(|(name, art)| record("job", name, art)))
        .collect(),
        tuf: Default::default(),
        peers: Vec::new(),
        steps: crate::step::timings()
            .into_iter()
            .map(|(step, ms)| StepTiming { step, ms })
            .collect(),
        identity: None,
        platform: Some(crate::platform::current()),
        handover: None,
        measurements: Vec::new(),
    }
}

/// Whether the kexec'd stage 2 reads the rootfs in place from the cache
/// partition rather than from the kexec initrd (in RAM): the release has
/// dm-verity parameters (every block is checked as it is read), the
/// rootfs is the cache partition's own CAS object, and writes are allowed
/// (local and internet modes; private mode and `phase.nowrite` keep the
/// rootfs in RAM, as a boot without a cache partition does).
pub fn rootfs_in_cache(a: &Artifacts, config: &Config) -> bool {
    let in_cas =
        Path::new(crate::cachepart::MOUNT_POINT).join(crate::cas_layout::object(&a.rootfs.sha256));
    a.verity.is_some() && !config.nowrite() && a.rootfs.path == in_cas
}

/// Writes the target initrd to `out` and returns the kexec target and the
/// initrd's size. With `in_cache` ([`rootfs_in_cache`]) the rootfs stays
/// out of it: its parameters tell stage 2 to read it from the cache
/// partition.
pub fn prepare(
    a: &Artifacts,
    boot: &BootJson,
    out: &Path,
    in_cache: bool,
) -> Result<(Target, u64), HandoffError> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HandoffError::Create {
            path: out.to_path_buf(),
            source,
        })?;
    }
    let verity = a.verity.clone().map(|mut v| {
        if in_cache {
            v.params.in_cache = Some(a.rootfs.sha256.clone());
        }
        v
    });
    if !a.rootfs_hashed && !in_cache {
        let got = Artifact::hash_file("rootfs", &a.rootfs.path).map_err(|source| {
            HandoffError::Payload {
                path: out.to_path_buf(),
                source,
            }
        })?;
        if got.sha256 != a.rootfs.sha256 || got.length != a.rootfs.length {
            return Err(HandoffError::RootfsMismatch {
                path: a.rootfs.path.clone(),
                got: got.sha256,
                len: got.length,
            });
        }
    }
    let file = File::create(out).map_err(|source| HandoffError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    let extra: Vec<Artifact> = a.extra.iter().map(|(_, art)| art.clone()).collect();
    let size = payload::write_initrd(
        BufWriter::with_capacity(1 << 20, file),
        &Payload {
            kernel: &a.kernel,
            initramfs: &a.initramfs,
            rootfs: &a.rootfs,
            extra: &extra,
            verity: verity.as_ref(),
            tuf: &a.tuf,
            boot,
        },
    )
    .map_err(|source| HandoffError::Payload {
        path: out.to_path_buf(),
        source,
    })?;
    Ok((
        Target {
            kernel: a.kernel.path.clone(),
            initrd: Some(out.to_path_buf()),
            cmdline: boot.cmdline.clone(),
        },
        size,
    ))
}

/// Where a fetched boot set came from, for `boot.json`: the TUF versions
/// and the bytes each peer (or the cache) gave.
pub type Provenance = (handover::TufVersions, Vec<handover::PeerBytes>);

/// The `artifact` boot step (`phase.test=kexec`): the artifacts baked into
/// the test's initramfs at [`TEST_ARTIFACTS`], hashed.
pub fn artifact_step(config: &Config) -> (Option<Artifacts>, Status) {
    let dir = Path::new(TEST_ARTIFACTS);
    match test_artifacts(dir, &config.channel) {
        Ok(a) => {
            let detail = format!(
                "kernel {} B, initramfs {} B, rootfs {} B from {}",
                a.kernel.length,
                a.initramfs.length,
                a.rootfs.length,
                dir.display()
            );
            (Some(a), Status::ok(detail))
        }
        Err(e) => (None, Status::fail(chain(&e))),
    }
}

/// The command line the target gets and its `boot.json`: with the fetch's
/// `provenance`, private mode's `identity` and the `measure` step's event
/// log, when there are, and the route stage 1 hands over by.
pub fn record(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<Provenance>,
    identity: Option<&handover::Identity>,
    route: &crate::direct::Route,
    measurements: Vec<handover::Measurement>,
) -> (String, BootJson) {
    let cmdline = target_cmdline(&artifacts.cmdline, config);
    let mut boot = boot_json(artifacts, config, &cmdline);
    // A rootfs that goes into the kexec initrd is hashed whole first
    // ([`prepare`]).
    if !route.is_direct() && !rootfs_in_cache(artifacts, config) {
        for a in boot.artifacts.iter_mut().filter(|a| a.kind == "rootfs") {
            a.hashed = true;
        }
    }
    if let Some((tuf, peers)) = provenance {
        boot.tuf = tuf;
        boot.peers = peers;
    }
    boot.identity = identity.cloned();
    boot.handover = Some(route.record());
    boot.measurements = measurements;
    (cmdline, boot)
}

/// The `payload` boot step: `boot.json` ([`record`]) and the target initrd
/// at [`INITRD_OUT`], ready for kexec.
pub fn payload_step(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<Provenance>,
    identity: Option<&handover::Identity>,
    route: &crate::direct::Route,
    measurements: Vec<handover::Measurement>,
) -> (Option<Target>, Status) {
    let (_, boot) = record(artifacts, config, provenance, identity, route, measurements);
    let out = Path::new(INITRD_OUT);
    let in_cache = rootfs_in_cache(artifacts, config);
    match prepare(artifacts, &boot, out, in_cache) {
        Ok((t, size)) => {
            let rootfs = if in_cache {
                format!(
                    "; the rootfs stays on the cache partition ({}), read in place through dm-verity",
                    artifacts.rootfs.path.display()
                )
            } else {
                String::new()
            };
            (
                Some(t),
                Status::ok(format!("{} ({size} B){rootfs}", out.display())),
            )
        }
        Err(e) => (None, Status::fail(chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::{parse, Mode, TestAction};

    #[test]
    fn target_cmdline_keeps_the_signed_words_and_hands_on_the_mode() {
        let mut c = Config {
            mode: Mode::Private,
            channel: "testing".into(),
            test: Some(TestAction::Kexec),
            ..Config::default()
        };
        c.debug = true;
        let line = target_cmdline(" console=ttyS0 quiet ", &c);
        assert!(line.starts_with("console=ttyS0 quiet phase."), "{line}");
        let parsed = parse(&line);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let t = parsed.config;
        assert_eq!(t.stage, Stage::Target);
        assert_eq!(t.mode, Mode::Private);
        assert_eq!(t.channel, "testing");
        assert!(
            t.nowrite,
            "private mode's nowrite is explicit for the target"
        );
        assert_eq!(t.test, None, "test hooks are not inherited");
        assert!(t.debug);
    }

    #[test]
    fn a_signed_stage_word_is_overridden_by_ours() {
        let line = target_cmdline("phase.stage=boot", &Config::default());
        assert_eq!(parse(&line).config.stage, Stage::Target);
    }

    #[test]
    fn prepare_writes_the_initrd_and_test_artifacts_are_read_from_a_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_test_artifacts(dir.path());
        let a = test_artifacts(dir.path(), "stable").expect("artifacts");
        assert_eq!(a.cmdline, "console=ttyS0");
        assert_eq!(
            a.names[2],
            format!("stable/{}/rootfs", std::env::consts::ARCH)
        );
        let config = Config::default();
        let line = target_cmdline(&a.cmdline, &config);
        let boot = boot_json(&a, &config, &line);
        assert_eq!(boot.artifact("rootfs").map(|r| r.length), Some(4));
        let out = dir.path().join("out/initrd.img");
        let (target, size) = prepare(&a, &boot, &out, false).expect("prepare");
        assert_eq!(std::fs::metadata(&out).expect("written").len(), size);
        assert_eq!(target.cmdline, line);
        assert_eq!(target.kernel, dir.path().join("vmlinuz"));
    }

    #[test]
    fn only_a_verity_rootfs_of_a_writable_cache_stays_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_test_artifacts(dir.path());
        let mut a = test_artifacts(dir.path(), "stable").expect("artifacts");
        let local = Config {
            mode: Mode::Local,
            ..Config::default()
        };
        let in_cas = Path::new(crate::cachepart::MOUNT_POINT)
            .join(crate::cas_layout::object(&a.rootfs.sha256));
        a.rootfs.path = in_cas;
        assert!(!rootfs_in_cache(&a, &local), "no dm-verity parameters");
        a.verity = Some(RootVerity {
            tree: a.kernel.clone(),
            params: payload::VerityParams {
                target: a.names[2].clone(),
                verity: verifier::Verity {
                    version: 1,
                    hash_algorithm: "sha256".into(),
                    data_block_size: 4096,
                    hash_block_size: 4096,
                    data_blocks: 1,
                    salt: Vec::new(),
                    root_hash: [0; 32],
                    tree: "stable/x86_64/rootfs.verity".into(),
                },
                in_cache: None,
            },
        });
        assert!(rootfs_in_cache(&a, &local));
        assert!(rootfs_in_cache(&a, &Config::default()), "internet mode");
        let private = Config {
            mode: Mode::Private,
            ..Config::default()
        };
        assert!(!rootfs_in_cache(&a, &private), "private mode: in RAM");
        let nowrite = Config {
            nowrite: true,
            ..local.clone()
        };
        assert!(!rootfs_in_cache(&a, &nowrite), "phase.nowrite: in RAM");
        a.rootfs.path = PathBuf::from("/run/phase/ram-cas/cas/sha256/ab/cd");
        assert!(!rootfs_in_cache(&a, &local), "not on the cache partition");
    }

    #[test]
    fn boot_json_says_when_the_rootfs_was_not_hashed_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_test_artifacts(dir.path());
        let mut a = test_artifacts(dir.path(), "stable").expect("artifacts");
        let config = Config::default();
        let rootfs_hashed = |route: crate::direct::Route, a: &Artifacts| {
            let (_, boot) = record(a, &config, None, None, &route, Vec::new());
            let unhashed: Vec<&str> = boot.unhashed().collect();
            (boot.artifact("rootfs").map(|r| r.hashed), unhashed.len())
        };
        let direct = || crate::direct::Route::Direct("same kernel".into());
        let kexec = || crate::direct::Route::Kexec("another kernel".into());
        assert_eq!(rootfs_hashed(direct(), &a), (Some(true), 0));
        a.rootfs_hashed = false;
        // Read in place through dm-verity: the peer service must hash it.
        assert_eq!(rootfs_hashed(direct(), &a), (Some(false), 1));
        // Into the kexec initrd: prepare hashes it first.
        assert_eq!(rootfs_hashed(kexec(), &a), (Some(true), 0));
    }

    #[test]
    fn a_missing_test_artifact_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cmdline"), "x").expect("write");
        let e = test_artifacts(dir.path(), "stable").expect_err("missing");
        let text = crate::step::chain(&e);
        assert!(text.contains("vmlinuz"), "{text}");
    }
}
