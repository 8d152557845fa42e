//! The last release that booted on this machine, kept on the cache
//! partition, and the fallback to it when the running kernel refuses the
//! signature of the verified release's kernel (docs/boot-flow.md,
//! "Fallback").
//!
//! [`keep`]: when stage 1 commits to a hand-over of a verified fetch (the
//! running kernel's `kexec_file_load` accepted the target kernel, or the
//! direct route laid `/phase` out), it writes [`LAST_BOOT`] at the root of a
//! writable cache partition: the channel, the TUF versions, the three
//! artifacts (target name, SHA-256, length), the signed target command
//! line, and the signed `snapshot.json` and `targets.json` of that release
//! byte for byte. The objects themselves stay in the cache's CAS.
//!
//! [`step`] (the `fallback` step): after a signature refusal
//! ([`crate::kexec::KexecError::is_signature_refusal`]) it reads the record
//! back and trusts none of it as written: the cache partition is not
//! signed. The kept metadata is verified again against the root this boot
//! trusts now ([`verifier::verify_kept_release`]: signatures, the snapshot
//! listing that targets file), every field of the record must be what that
//! signed metadata says, and each object is hashed again against it. Only
//! then does the caller measure, lay out and kexec that release.

use std::path::{Path, PathBuf};

use fetcher::cas::object_in;
use fetcher::ObjectSpec;

use crate::bootfetch::{self, BootFetchError, KINDS};
use crate::cachepart::Mounted;
use crate::cmdline::Config;
use crate::console::console;
use crate::handoff::{Artifacts, Provenance};
use crate::kexec::KexecError;
use crate::payload::{ArtifactRecord, PeerBytes, TufVersions};
use crate::step::{chain, Status};

pub use handover::{LastBoot, LAST_BOOT, LAST_BOOT_FORMAT, MAX_LAST_BOOT};

/// Why the kept release cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error("no cache partition, so no earlier release is kept")]
    NoCache,
    #[error("no earlier release is kept in the cache ({LAST_BOOT} absent)")]
    NoRecord,
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is not a record of a release")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("{0} has format {1}, this stage 1 reads {LAST_BOOT_FORMAT}")]
    Format(PathBuf, u32),
    #[error("the kept release's metadata does not verify against the trusted root")]
    Verify(#[source] verifier::Error),
    #[error("the kept record does not match its signed metadata: {0}")]
    Mismatch(String),
    #[error("the kept release's signed metadata has no usable {0}")]
    Spec(String, #[source] fetcher::TargetSpecError),
    #[error("an object of the kept release does not verify in the cache")]
    Object(#[source] Box<BootFetchError>),
    #[error("the kept release has the same kernel that was refused")]
    SameKernel,
    #[error("this boot has no trusted root.json to verify the kept release with")]
    NoRoot,
}

/// The kept release, verified again, ready to hand over.
#[derive(Debug, Clone)]
pub struct Older {
    pub artifacts: Artifacts,
    pub provenance: Provenance,
    /// What was refused, for `boot.json`.
    pub refused: handover::Fallback,
}

fn meta<'a>(a: &'a Artifacts, name: &str) -> Option<&'a [u8]> {
    a.tuf
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.bytes.as_slice())
}

/// The record of `artifacts` (verified at `tuf`); `None` when the fetch
/// left no signed snapshot and targets (a test hand-over).
pub fn record(artifacts: &Artifacts, tuf: &TufVersions, channel: &str) -> Option<LastBoot> {
    let text = |name| String::from_utf8(meta(artifacts, name)?.to_vec()).ok();
    let art = |kind: &str, name: &str, a: &crate::payload::Artifact| ArtifactRecord {
        kind: kind.to_owned(),
        target: name.to_owned(),
        sha256: a.sha256.clone(),
        length: a.length,
        hashed: true,
    };
    Some(LastBoot {
        format: LAST_BOOT_FORMAT,
        channel: channel.to_owned(),
        tuf: tuf.clone(),
        artifacts: vec![
            art(KINDS[0], &artifacts.names[0], &artifacts.kernel),
            art(KINDS[1], &artifacts.names[1], &artifacts.initramfs),
            art(KINDS[2], &artifacts.names[2], &artifacts.rootfs),
        ],
        cmdline: artifacts.cmdline.clone(),
        snapshot: text("snapshot.json")?,
        targets: text("targets.json")?,
    })
}

/// Writes `record` to `dir`/[`LAST_BOOT`] (temp file, fsync, rename).
pub fn write(dir: &Path, record: &LastBoot) -> std::io::Result<()> {
    use std::io::Write;
    let body = serde_json::to_vec(record)?;
    let tmp = dir.join(format!("{LAST_BOOT}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(LAST_BOOT))?;
    std::fs::File::open(dir)?.sync_all()
}

/// After a committed hand-over of a verified fetch: the release becomes
/// the one to fall back to, on a writable cache partition (one console
/// line; a failure to write is a warning, never a stop).
pub fn keep(cache: Option<&Mounted>, artifacts: &Artifacts, tuf: &TufVersions, config: &Config) {
    let Some(c) = cache.filter(|c| c.writable) else {
        return;
    };
    let Some(r) = record(artifacts, tuf, &config.channel) else {
        return;
    };
    match write(&c.dir, &r) {
        Ok(()) => console().line(&format!(
            "fallback: kept release {} in the cache as the one to fall back to",
            versions(&r.tuf)
        )),
        Err(e) => console().warn(&format!(
            "fallback: cannot keep this release in {}: {e}; a kernel refused later will have nothing to fall back to",
            c.dir.join(LAST_BOOT).display()
        )),
    }
}

/// `targets v3 snapshot v3`.
pub fn versions(t: &TufVersions) -> String {
    format!(
        "targets v{} snapshot v{}",
        t.targets.unwrap_or(0),
        t.snapshot.unwrap_or(0)
    )
}

/// Reads the record in `dir` and verifies it against `root` (the trusted
/// root's bytes) for `channel`; returns it with its objects hashed again.
pub fn load(
    dir: &Path,
    root: &[u8],
    channel: &str,
) -> Result<(LastBoot, [crate::payload::Artifact; 3]), FallbackError> {
    let path = dir.join(LAST_BOOT);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FallbackError::NoRecord),
        Err(e) => return Err(FallbackError::Read(path, e)),
        Ok(m) if m.len() > MAX_LAST_BOOT => {
            let e = std::io::Error::other(format!("larger than {MAX_LAST_BOOT} bytes"));
            return Err(FallbackError::Read(path, e));
        }
        Ok(_) => std::fs::read(&path).map_err(|e| FallbackError::Read(path.clone(), e))?,
    };
    let r: LastBoot =
        serde_json::from_slice(&bytes).map_err(|e| FallbackError::Parse(path.clone(), e))?;
    if r.format != LAST_BOOT_FORMAT {
        return Err(FallbackError::Format(path, r.format));
    }
    let kept = verifier::verify_kept_release(root, r.snapshot.as_bytes(), r.targets.as_bytes())
        .map_err(FallbackError::Verify)?;
    let mismatch = |what: String| Err(FallbackError::Mismatch(what));
    if r.tuf.targets != Some(kept.targets.version) || r.tuf.snapshot != Some(kept.snapshot.version)
    {
        return mismatch(format!(
            "it names {} but the signed metadata is targets v{} snapshot v{}",
            versions(&r.tuf),
            kept.targets.version,
            kept.snapshot.version
        ));
    }
    if r.channel != channel {
        return mismatch(format!(
            "it is of channel {}, this boot's is {channel}",
            r.channel
        ));
    }
    if r.artifacts.len() != KINDS.len() {
        return mismatch(format!("{} artifacts instead of 3", r.artifacts.len()));
    }
    let arch = std::env::consts::ARCH;
    let mut objects = Vec::new();
    for (kind, a) in KINDS.iter().zip(&r.artifacts) {
        let name = format!("{channel}/{arch}/{kind}");
        if a.kind != *kind || a.target != name {
            return mismatch(format!("{} {} where {name} belongs", a.kind, a.target));
        }
        let Some(t) = kept.target(&name) else {
            return mismatch(format!("the signed targets do not list {name}"));
        };
        let spec = ObjectSpec::try_from(&t).map_err(|e| FallbackError::Spec(name.clone(), e))?;
        if a.sha256 != spec.sha256.to_string() || a.length != spec.length {
            return mismatch(format!(
                "{name}: sha256 {} length {} recorded, the signed target says sha256 {} length {}",
                a.sha256, a.length, spec.sha256, spec.length
            ));
        }
        if *kind == "kernel" {
            let signed = t.phase().ok().and_then(|c| c.cmdline).unwrap_or_default();
            if signed != r.cmdline {
                return mismatch(format!(
                    "the command line {:?} recorded, {signed:?} signed",
                    r.cmdline
                ));
            }
        }
        let at = object_in(dir, &spec.sha256);
        let object = bootfetch::verify_object(&name, &at, &spec)
            .map_err(|e| FallbackError::Object(Box::new(e)))?;
        objects.push(object);
    }
    let objects: [crate::payload::Artifact; 3] = objects
        .try_into()
        .map_err(|_| FallbackError::Mismatch("an incomplete boot set".into()))?;
    Ok((r, objects))
}

/// The `fallback` step, after the running kernel refused the verified
/// release's kernel (`why`): the kept release of `cache`, verified again
/// against the root this boot trusts (the refused release's `root.json`).
pub fn step(
    cache: Option<&Mounted>,
    refused: &Artifacts,
    refused_tuf: Option<&TufVersions>,
    why: &KexecError,
    config: &Config,
) -> (Option<Older>, Status) {
    match older(cache, refused, refused_tuf, why, config) {
        Ok(o) => {
            let short = |a: &crate::payload::Artifact| a.sha256.get(..12).unwrap_or("").to_owned();
            let detail = format!(
                "release {} refused (its kernel sha256:{}..); falling back to release {}, the older signed target in the cache: kernel sha256:{}.. initramfs sha256:{}.. rootfs sha256:{}.. verified again",
                versions(&o.refused.tuf),
                short(&refused.kernel),
                versions(&o.provenance.0),
                short(&o.artifacts.kernel),
                short(&o.artifacts.initramfs),
                short(&o.artifacts.rootfs)
            );
            (Some(o), Status::ok(detail))
        }
        Err(e) => (
            None,
            Status::fail(format!(
                "no fallback: {}; nothing else is started",
                chain(&e)
            )),
        ),
    }
}

fn older(
    cache: Option<&Mounted>,
    refused: &Artifacts,
    refused_tuf: Option<&TufVersions>,
    why: &KexecError,
    config: &Config,
) -> Result<Older, FallbackError> {
    let c = cache.ok_or(FallbackError::NoCache)?;
    let root = meta(refused, "root.json").ok_or(FallbackError::NoRoot)?;
    let (r, [kernel, initramfs, rootfs]) = load(&c.dir, root, &config.channel)?;
    if kernel.sha256 == refused.kernel.sha256 {
        return Err(FallbackError::SameKernel);
    }
    let names = [0, 1, 2].map(|i| r.artifacts[i].target.clone());
    let bytes = kernel.length + initramfs.length + rootfs.length;
    let mut tuf = r.tuf.clone();
    tuf.root = refused_tuf.and_then(|t| t.root);
    Ok(Older {
        artifacts: Artifacts {
            kernel,
            initramfs,
            rootfs,
            cmdline: r.cmdline,
            names,
            extra: Vec::new(),
            // The target re-shares the metadata this boot trusts.
            tuf: refused.tuf.clone(),
            // `load` hashed every object whole again, the rootfs too, so
            // stage 2 mounts it without dm-verity.
            verity: None,
            rootfs_hashed: true,
        },
        provenance: (
            tuf,
            vec![PeerBytes {
                peer: "cache".into(),
                bytes,
                found: Some("cache".into()),
                dropped: None,
            }],
        ),
        refused: handover::Fallback {
            refused: chain(why),
            kernel: refused.kernel.sha256.clone(),
            tuf: refused_tuf.cloned().unwrap_or_default(),
        },
    })
}
