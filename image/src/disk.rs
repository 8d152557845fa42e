//! The GPT disk image: partition 1 the ESP (FAT32, made by `mkfs.fat` and
//! filled with mtools in a separate file, then copied into place),
//! partition 2 `PHASE-CACHE` (ext4, made by `mke2fs -d` from a directory into
//! a separate file, then copied into place). No root, no loop device, no
//! mount. Optional qcow2 output through `qemu-img convert`.
//!
//! Layout (512-byte sectors): protective MBR and primary GPT in the first
//! MiB, the ESP from 1 MiB, the cache partition right after it up to the last
//! whole MiB before the backup GPT. GUIDs, the FAT volume id and the ext4
//! UUID derive from a caller-given seed, so equal inputs give equal images.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::esp::EspFiles;
use crate::util::{derived_uuid, run, CommandError};

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// Partition table entries written (the usual 128).
const GPT_ENTRIES: u32 = 128;
/// Label of the cache partition (GPT name and ext4 label).
pub const CACHE_LABEL: &str = "PHASE-CACHE";
/// GPT name of the ESP.
pub const ESP_NAME: &str = "PHASE-ESP";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("invalid size {0:?} (expected bytes or a number with K, M, G suffix, e.g. 512M)")]
    BadSize(String),
    #[error("image size {size} too small: needs at least {needed} bytes for a {esp}-byte ESP and a cache partition")]
    TooSmall { size: u64, needed: u64, esp: u64 },
    #[error("ESP size {0} must be a whole number of MiB, at least 64 MiB (FAT32)")]
    BadEspSize(u64),
    #[error("ESP content ({content} bytes) does not fit a {esp}-byte ESP")]
    EspFull { content: u64, esp: u64 },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the GPT")]
    Gpt(#[source] gpt::GptError),
    #[error("cannot write the protective MBR")]
    Mbr(#[source] gpt::mbr::MBRError),
    #[error("cannot make the FAT32 ESP")]
    FatTool(#[source] CommandError),
    #[error("cannot make the ext4 cache filesystem")]
    Mke2fs(#[source] CommandError),
    #[error("cannot convert to qcow2")]
    QemuImg(#[source] CommandError),
    #[error("qcow2: {0}")]
    Qcow2Options(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parse `512M`, `2G`, `1048576`, `64MiB`.
pub fn parse_size(text: &str) -> Result<u64, DiskError> {
    let t = text.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| DiskError::BadSize(text.to_owned()))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(DiskError::BadSize(text.to_owned())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| DiskError::BadSize(text.to_owned()))
}

/// A partition's place on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Extent {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.last_lba < self.first_lba
    }
}

/// Where the partitions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskLayout {
    pub size: u64,
    pub esp: Extent,
    pub cache: Extent,
}

impl DiskLayout {
    /// ESP from 1 MiB, cache after it to the last whole MiB before the
    /// backup GPT (33 sectors at the end).
    pub fn compute(size: u64, esp_size: u64) -> Result<DiskLayout, DiskError> {
        if esp_size % MIB != 0 || esp_size < 64 * MIB {
            return Err(DiskError::BadEspSize(esp_size));
        }
        let needed = MIB + esp_size + 16 * MIB + MIB;
        if size < needed || size % SECTOR != 0 {
            return Err(DiskError::TooSmall {
                size,
                needed,
                esp: esp_size,
            });
        }
        let esp = Extent {
            first_lba: MIB / SECTOR,
            last_lba: (MIB + esp_size) / SECTOR - 1,
        };
        let backup_start = size - 33 * SECTOR;
        let cache_end = backup_start / MIB * MIB;
        let cache = Extent {
            first_lba: esp.last_lba + 1,
            last_lba: cache_end / SECTOR - 1,
        };
        Ok(DiskLayout { size, esp, cache })
    }
}

/// Everything that decides the image bytes besides the contents.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub size: u64,
    pub esp_size: u64,
    /// Derives the disk and partition GUIDs, FAT volume id and ext4 UUID.
    pub seed: [u8; 32],
    /// Timestamp recorded by mke2fs (seconds since the epoch).
    pub mtime: u32,
}

/// Default ESP size: room for systemd-boot, a Debian kernel and a stage-1
/// initramfs several times over.
pub const DEFAULT_ESP_SIZE: u64 = 128 * MIB;

/// Write the whole image to `out` (through a temporary file renamed at the
/// end). `cache_dir` populates the cache partition (`None`: empty).
pub fn write_image(
    out: &Path,
    spec: &DiskSpec,
    esp: &EspFiles,
    cache_dir: Option<&Path>,
) -> Result<DiskLayout, DiskError> {
    let layout = DiskLayout::compute(spec.size, spec.esp_size)?;
    if esp.total_bytes() + 2 * MIB > layout.esp.len() {
        return Err(DiskError::EspFull {
            content: esp.total_bytes(),
            esp: layout.esp.len(),
        });
    }
    let mut output = OutputFile::create(out, ".phase-image-", spec.size)?;
    let (file, path) = (&mut output.file, &output.path);
    write_gpt(file, path, &layout, spec)?;
    write_esp(file, path, layout.esp, spec, esp)?;
    write_cache(file, path, &layout, spec, cache_dir)?;
    output.commit(out)?;
    tracing::info!(out = %out.display(), size = spec.size, "disk image written");
    Ok(layout)
}

fn write_gpt(
    file: &mut File,
    path: &Path,
    layout: &DiskLayout,
    spec: &DiskSpec,
) -> Result<(), DiskError> {
    let sectors = spec.size / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file).map_err(DiskError::Mbr)?;

    let device = file.try_clone().map_err(io_err(path))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .change_partition_count(true)
        .create_from_device(device, Some(derived_uuid(&spec.seed, "disk")))
        .map_err(DiskError::Gpt)?;
    let mut parts = BTreeMap::new();
    parts.insert(
        1,
        gpt::partition::Partition {
            part_type_guid: gpt::partition_types::EFI,
            part_guid: derived_uuid(&spec.seed, "esp"),
            first_lba: layout.esp.first_lba,
            last_lba: layout.esp.last_lba,
            flags: 0,
            name: ESP_NAME.to_owned(),
        },
    );
    parts.insert(
        2,
        gpt::partition::Partition {
            part_type_guid: gpt::partition_types::LINUX_FS,
            part_guid: derived_uuid(&spec.seed, "cache"),
            first_lba: layout.cache.first_lba,
            last_lba: layout.cache.last_lba,
            flags: 0,
            name: CACHE_LABEL.to_owned(),
        },
    );
    for id in 3..=GPT_ENTRIES {
        parts.insert(id, gpt::partition::Partition::zero());
    }
    disk.update_partitions(parts).map_err(DiskError::Gpt)?;
    disk.write().map_err(DiskError::Gpt)?;
    Ok(())
}

/// Write only the ESP, as a FAT32 partition image of `spec.esp_size` bytes.
pub fn write_esp_image(out: &Path, spec: &DiskSpec, esp: &EspFiles) -> Result<(), DiskError> {
    if spec.esp_size % MIB != 0 || spec.esp_size < 64 * MIB {
        return Err(DiskError::BadEspSize(spec.esp_size));
    }
    if esp.total_bytes() + 2 * MIB > spec.esp_size {
        return Err(DiskError::EspFull {
            content: esp.total_bytes(),
            esp: spec.esp_size,
        });
    }
    let mut output = OutputFile::create(out, ".phase-esp-", spec.esp_size)?;
    let extent = Extent {
        first_lba: 0,
        last_lba: spec.esp_size / SECTOR - 1,
    };
    write_esp(&mut output.file, &output.path, extent, spec, esp)?;
    output.commit(out)
}

/// An output file written beside its final name and renamed into place
/// only when complete, so a failed build never leaves a half image there.
struct OutputFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    file: File,
}

impl OutputFile {
    /// A temporary file of `size` bytes (sparse) in `out`'s directory.
    fn create(out: &Path, prefix: &str, size: u64) -> Result<Self, DiskError> {
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir)
            .map_err(io_err(dir))?;
        let path = tmp.path().to_path_buf();
        let file = tmp.as_file().try_clone().map_err(io_err(&path))?;
        file.set_len(size).map_err(io_err(&path))?;
        Ok(Self { tmp, path, file })
    }

    /// fsync, mode 0644 (tempfile creates 0600; an image is an ordinary
    /// output file), then rename to `out`.
    fn commit(self, out: &Path) -> Result<(), DiskError> {
        self.file.sync_all().map_err(io_err(&self.path))?;
        let mut perms = self
            .file
            .metadata()
            .map_err(io_err(&self.path))?
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        self.file
            .set_permissions(perms)
            .map_err(io_err(&self.path))?;
        self.tmp.persist(out).map_err(|e| DiskError::Io {
            path: out.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// Format a FAT32 filesystem in the file `fat` (already sized) with
/// `mkfs.fat --invariant` and copy the ESP files in with mtools, in sorted
/// order, every timestamp set to `spec.mtime` (`SOURCE_DATE_EPOCH`).
fn make_fat(fat: &Path, work: &Path, spec: &DiskSpec, esp: &EspFiles) -> Result<(), DiskError> {
    let volume_id = hex::encode(&derived_uuid(&spec.seed, "fat").as_bytes()[..4]);
    let epoch = spec.mtime.to_string();
    let tool = |program: &str| {
        let mut c = Command::new(program);
        c.env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("MTOOLSRC", "/dev/null");
        c
    };
    run(tool("mkfs.fat")
        .args([
            "-F",
            "32",
            "-S",
            "512",
            "-n",
            "PHASE-BOOT",
            "--invariant",
            "-i",
        ])
        .arg(&volume_id)
        .arg(fat))
    .map_err(DiskError::FatTool)?;

    // Directories, parents first (BTreeSet order puts "a" before "a/b").
    let mut dirs = std::collections::BTreeSet::new();
    for path in esp.files.keys() {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for d in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(d);
            dirs.insert(acc.clone());
        }
    }
    if !dirs.is_empty() {
        let mut mmd = tool("mmd");
        mmd.arg("-i").arg(fat);
        for d in &dirs {
            mmd.arg(format!("::/{d}"));
        }
        run(&mut mmd).map_err(DiskError::FatTool)?;
    }
    // Files: staged on the host, then one mcopy per file.
    let staging = work.join("esp-files");
    for (i, (path, data)) in esp.files.iter().enumerate() {
        let src = staging.join(i.to_string());
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        std::fs::write(&src, data).map_err(io_err(&src))?;
        run(tool("mcopy")
            .args(["-Q", "-o", "-i"])
            .arg(fat)
            .arg(&src)
            .arg(format!("::/{path}")))
        .map_err(DiskError::FatTool)?;
        std::fs::remove_file(&src).map_err(io_err(&src))?;
    }
    Ok(())
}

/// Write the ESP at `extent` of `file`: built in a separate file, copied in.
fn write_esp(
    file: &mut File,
    path: &Path,
    extent: Extent,
    spec: &DiskSpec,
    esp: &EspFiles,
) -> Result<(), DiskError> {
    let work = tempfile::Builder::new()
        .prefix(".phase-esp-")
        .tempdir_in(path.parent().unwrap_or(Path::new(".")))
        .map_err(io_err(path))?;
    let fat = work.path().join("esp.fat");
    {
        let f = File::create(&fat).map_err(io_err(&fat))?;
        f.set_len(extent.len()).map_err(io_err(&fat))?;
    }
    make_fat(&fat, work.path(), spec, esp)?;
    copy_sparse(&fat, file, path, extent.offset())
}

fn write_cache(
    file: &mut File,
    path: &Path,
    layout: &DiskLayout,
    spec: &DiskSpec,
    cache_dir: Option<&Path>,
) -> Result<(), DiskError> {
    let work = tempfile::Builder::new()
        .prefix(".phase-cache-")
        .tempdir_in(path.parent().unwrap_or(Path::new(".")))
        .map_err(io_err(path))?;
    let fs_path = work.path().join("cache.ext4");
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).map_err(io_err(&empty))?;
    let source = cache_dir.unwrap_or(&empty);
    {
        let f = File::create(&fs_path).map_err(io_err(&fs_path))?;
        f.set_len(layout.cache.len()).map_err(io_err(&fs_path))?;
    }
    let uuid = derived_uuid(&spec.seed, "ext4").to_string();
    let hash_seed = derived_uuid(&spec.seed, "ext4-hash").to_string();
    run(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", spec.mtime.to_string())
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-m",
            "0",
            "-L",
            CACHE_LABEL,
            "-U",
        ])
        .arg(&uuid)
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={hash_seed}"))
        .arg("-d")
        .arg(source)
        .arg(&fs_path))
    .map_err(DiskError::Mke2fs)?;
    copy_sparse(&fs_path, file, path, layout.cache.offset())
}

/// Copy `from` into `to` at `offset`, skipping all-zero blocks (the target
/// is a fresh sparse file, so they are zero already and stay holes).
fn copy_sparse(from: &Path, to: &mut File, to_path: &Path, offset: u64) -> Result<(), DiskError> {
    let mut src = File::open(from).map_err(io_err(from))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let n = read_full(&mut src, &mut buf).map_err(io_err(from))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            to.seek(SeekFrom::Start(pos)).map_err(io_err(to_path))?;
            to.write_all(&buf[..n]).map_err(io_err(to_path))?;
        }
        pos += n as u64;
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// qcow2 preallocation modes `qemu-img` accepts.
pub const PREALLOC_MODES: [&str; 4] = ["off", "metadata", "falloc", "full"];

/// Options of the qcow2 conversion.
#[derive(Debug, Clone, Default)]
pub struct Qcow2Options {
    pub compress: bool,
    pub prealloc: Option<String>,
    pub cluster_size: Option<u64>,
}

/// `qemu-img convert -O qcow2 -o compat=1.1,lazy_refcounts=on[,...] [-c]`.
pub fn convert_qcow2(raw: &Path, out: &Path, opts: &Qcow2Options) -> Result<(), DiskError> {
    let mut o = String::from("compat=1.1,lazy_refcounts=on");
    if let Some(c) = opts.cluster_size {
        if !(512..=2 * MIB).contains(&c) || !c.is_power_of_two() {
            return Err(DiskError::Qcow2Options(format!(
                "cluster size {c} must be a power of two between 512 and 2M"
            )));
        }
        o.push_str(&format!(",cluster_size={c}"));
    }
    if let Some(p) = &opts.prealloc {
        if !PREALLOC_MODES.contains(&p.as_str()) {
            return Err(DiskError::Qcow2Options(format!(
                "preallocation {p:?} is not one of off, metadata, falloc, full"
            )));
        }
        if opts.compress && p != "off" {
            return Err(DiskError::Qcow2Options(
                "compression cannot be combined with preallocation".into(),
            ));
        }
        o.push_str(&format!(",preallocation={p}"));
    }
    let tmp = out.with_extension("qcow2.tmp");
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2", "-o", &o]);
    if opts.compress {
        cmd.arg("-c");
    }
    cmd.arg(raw).arg(&tmp);
    run(&mut cmd).map_err(DiskError::QemuImg)?;
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn layout_is_mib_aligned_and_leaves_room_for_the_backup_gpt() {
        let l = DiskLayout::compute(512 * MIB, DEFAULT_ESP_SIZE).unwrap();
        assert_eq!(l.esp.offset(), MIB);
        assert_eq!(l.esp.len(), DEFAULT_ESP_SIZE);
        assert_eq!(l.cache.offset(), MIB + DEFAULT_ESP_SIZE);
        assert_eq!(l.cache.offset() % MIB, 0);
        assert_eq!((l.cache.offset() + l.cache.len()) % MIB, 0);
        assert!(l.cache.last_lba < 512 * MIB / SECTOR - 33);
        assert_eq!(l.cache.len(), 512 * MIB - 2 * MIB - DEFAULT_ESP_SIZE);
    }

    #[test]
    fn too_small_or_odd_sizes_are_refused() {
        assert!(matches!(
            DiskLayout::compute(100 * MIB, DEFAULT_ESP_SIZE),
            Err(DiskError::TooSmall { .. })
        ));
        assert!(matches!(
            DiskLayout::compute(512 * MIB, 32 * MIB),
            Err(DiskError::BadEspSize(_))
        ));
    }
}
