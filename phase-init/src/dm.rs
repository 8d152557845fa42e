//! Device-mapper from Rust: the three ioctls that put one read-only table
//! on a new device (`DM_DEV_CREATE`, `DM_TABLE_LOAD`, `DM_DEV_SUSPEND` to
//! resume), and `DM_DEV_REMOVE` to take it away again when a step fails.
//!
//! The buffers are encoded here, in safe code, in the layout of
//! `linux/dm-ioctl.h` (interface version 4): a `struct dm_ioctl` header
//! (312 bytes), then for `DM_TABLE_LOAD` one `struct dm_target_spec`
//! (40 bytes) and its NUL-terminated parameter string, padded to 8 bytes.
//! The one `ioctl` call is in [`crate::sys::dm_ioctl`]. docs/verity.md
//! says why this is not the `devicemapper` crate.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// The device-mapper control node (devtmpfs creates it when `dm_mod` loads).
pub const CONTROL: &str = "/dev/mapper/control";

/// `sizeof(struct dm_ioctl)`.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`: names are at most 127 bytes and a NUL.
pub const NAME_LEN: usize = 128;
/// `DM_MAX_TYPE_NAME`.
const TYPE_NAME_LEN: usize = 16;

/// The interface version this module speaks (`DM_VERSION_MAJOR` 4; minor
/// and patch 0 ask for nothing newer than the first 4.x kernel had).
const VERSION: [u32; 3] = [4, 0, 0];

/// `DM_READONLY_FLAG`: the table is loaded read-only (dm-verity refuses a
/// writable one).
pub const READONLY_FLAG: u32 = 1 << 0;

/// The commands, `_IOWR(0xfd, nr, struct dm_ioctl)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    TableLoad = 9,
}

impl Command {
    /// The ioctl request number.
    pub fn request(self) -> libc::c_ulong {
        const IOC_READ_WRITE: libc::c_ulong = 3 << 30;
        IOC_READ_WRITE
            | ((DM_IOCTL_SIZE as libc::c_ulong) << 16)
            | (0xfd << 8)
            | self as libc::c_ulong
    }
}

/// Why a device-mapper step failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper name {0:?} is empty, too long or not plain ASCII")]
    Name(String),
    #[error("device-mapper target type {0:?} is empty or longer than 15 bytes")]
    TargetType(String),
    #[error("the table parameters contain a NUL byte")]
    Params,
    #[error("cannot open {CONTROL} (is dm_mod loaded?)")]
    Control(#[source] io::Error),
    #[error("device-mapper {what} of {name} failed")]
    Ioctl {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

/// One target line of a table: `<start> <sectors> <type> <params>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub sectors: u64,
    pub target_type: String,
    pub params: String,
}

fn check_name(name: &str) -> Result<(), DmError> {
    let ok = !name.is_empty()
        && name.len() < NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then_some(())
        .ok_or_else(|| DmError::Name(name.to_owned()))
}

/// The `struct dm_ioctl` header for `name` with `flags`, in a buffer of
/// `data_size` bytes (at least [`DM_IOCTL_SIZE`]); the data starts right
/// after the header.
pub fn header(
    name: &str,
    flags: u32,
    data_size: usize,
    target_count: u32,
) -> Result<Vec<u8>, DmError> {
    check_name(name)?;
    let mut b = vec![0u8; data_size.max(DM_IOCTL_SIZE)];
    let len = b.len() as u32;
    for (i, v) in VERSION.iter().enumerate() {
        put_u32(&mut b, i * 4, *v);
    }
    put_u32(&mut b, 12, len); // data_size
    put_u32(&mut b, 16, DM_IOCTL_SIZE as u32); // data_start
    put_u32(&mut b, 20, target_count);
    put_u32(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

/// The `DM_TABLE_LOAD` buffer: the header, then each target's spec and
/// parameter string (each spec's `next` is the offset of the one after
/// it, counted from its own start, as libdevmapper writes it).
pub fn table_load(name: &str, flags: u32, targets: &[Target]) -> Result<Vec<u8>, DmError> {
    let mut specs = Vec::new();
    for t in targets {
        if t.target_type.is_empty() || t.target_type.len() >= TYPE_NAME_LEN {
            return Err(DmError::TargetType(t.target_type.clone()));
        }
        if t.params.as_bytes().contains(&0) {
            return Err(DmError::Params);
        }
        let len = (TARGET_SPEC_SIZE + t.params.len() + 1).next_multiple_of(8);
        let mut s = vec![0u8; len];
        s[0..8].copy_from_slice(&t.start.to_ne_bytes());
        s[8..16].copy_from_slice(&t.sectors.to_ne_bytes());
        put_u32(&mut s, 20, len as u32); // next
        s[24..24 + t.target_type.len()].copy_from_slice(t.target_type.as_bytes());
        s[TARGET_SPEC_SIZE..TARGET_SPEC_SIZE + t.params.len()].copy_from_slice(t.params.as_bytes());
        specs.extend_from_slice(&s);
    }
    let mut b = header(
        name,
        flags,
        DM_IOCTL_SIZE + specs.len(),
        targets.len() as u32,
    )?;
    b[DM_IOCTL_SIZE..].copy_from_slice(&specs);
    Ok(b)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// The `dev` field of an answer (the kernel's `huge_encode_dev`) as
/// (major, minor).
pub fn answer_dev(b: &[u8]) -> (u32, u32) {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[40..48]);
    let dev = u64::from_ne_bytes(raw);
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// A device-mapper device made by [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub major: u32,
    pub minor: u32,
}

impl Device {
    /// The devtmpfs node, `/dev/dm-<minor>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/dm-{}", self.minor))
    }
}

fn control() -> Result<File, DmError> {
    // devtmpfs creates the node when dm_mod registers it; a module loaded
    // just before may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTROL)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(DmError::Control(e)),
        }
    }
}

fn call(
    control: &File,
    cmd: Command,
    what: &'static str,
    name: &str,
    buf: &mut [u8],
) -> Result<(), DmError> {
    sys::dm_ioctl(control.as_fd(), cmd.request(), buf).map_err(|source| DmError::Ioctl {
        what,
        name: name.to_owned(),
        source,
    })
}

/// Creates the device `name`, loads `targets` (read-only with
/// [`READONLY_FLAG`] in `flags`) and resumes it, so it can be opened. On
/// failure the half-made device is removed again.
pub fn create(name: &str, flags: u32, targets: &[Target]) -> Result<Device, DmError> {
    let mut load = table_load(name, flags, targets)?;
    let control = control()?;
    let mut buf = header(name, 0, DM_IOCTL_SIZE, 0)?;
    call(&control, Command::DevCreate, "create", name, &mut buf)?;
    let made = (|| -> Result<(u32, u32), DmError> {
        call(&control, Command::TableLoad, "table load", name, &mut load)?;
        let mut resume = header(name, 0, DM_IOCTL_SIZE, 0)?;
        call(&control, Command::DevSuspend, "resume", name, &mut resume)?;
        Ok(answer_dev(&resume))
    })();
    match made {
        Ok((major, minor)) => Ok(Device {
            name: name.to_owned(),
            major,
            minor,
        }),
        Err(e) => {
            let _ = remove_with(&control, name);
            Err(e)
        }
    }
}

/// Removes the device `name`.
pub fn remove(name: &str) -> Result<(), DmError> {
    remove_with(&control()?, name)
}

fn remove_with(control: &File, name: &str) -> Result<(), DmError> {
    let mut buf = header(name, 0, DM_IOCTL_SIZE, 0)?;
    call(control, Command::DevRemove, "remove", name, &mut buf)
}

/// `major:minor` of the block device at `path`, the way a table names a
/// device without a path lookup.
pub fn dev_numbers(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)?.rdev();
    Ok(format!(
        "{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    #[test]
    fn request_numbers_are_the_kernel_s() {
        // From linux/dm-ioctl.h on x86_64 (strace shows these).
        assert_eq!(Command::DevCreate.request(), 0xc138_fd03);
        assert_eq!(Command::DevRemove.request(), 0xc138_fd04);
        assert_eq!(Command::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(Command::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn the_header_has_version_sizes_flags_and_name_where_dm_ioctl_h_puts_them() {
        let b = header("phase-rootfs", READONLY_FLAG, DM_IOCTL_SIZE, 0).expect("header");
        assert_eq!(b.len(), DM_IOCTL_SIZE);
        assert_eq!([u32_at(&b, 0), u32_at(&b, 4), u32_at(&b, 8)], [4, 0, 0]);
        assert_eq!(u32_at(&b, 12), 312, "data_size");
        assert_eq!(u32_at(&b, 16), 312, "data_start");
        assert_eq!(u32_at(&b, 28), 1, "flags");
        assert_eq!(&b[48..60], b"phase-rootfs");
        assert!(b[60..176].iter().all(|&x| x == 0), "NUL-padded name");
        assert!(b[176..].iter().all(|&x| x == 0), "no uuid");
    }

    #[test]
    fn a_table_load_carries_each_spec_and_its_params_padded_to_8() {
        let params = "1 7:0 7:1 4096 4096 2 1 sha256 ab -".to_owned();
        let t = Target {
            start: 0,
            sectors: 16,
            target_type: "verity".into(),
            params: params.clone(),
        };
        let b = table_load("r", READONLY_FLAG, std::slice::from_ref(&t)).expect("load");
        let spec_len = (40 + params.len() + 1).next_multiple_of(8);
        assert_eq!(b.len(), 312 + spec_len);
        assert_eq!(
            u32_at(&b, 12) as usize,
            b.len(),
            "data_size covers the spec"
        );
        assert_eq!(u32_at(&b, 20), 1, "target_count");
        assert_eq!(u32_at(&b, 28), READONLY_FLAG);
        let s = &b[312..];
        assert_eq!(u64::from_ne_bytes(s[0..8].try_into().expect("8")), 0);
        assert_eq!(u64::from_ne_bytes(s[8..16].try_into().expect("8")), 16);
        assert_eq!(u32_at(s, 20) as usize, spec_len, "next");
        assert_eq!(&s[24..30], b"verity");
        assert_eq!(s[30], 0);
        assert_eq!(&s[40..40 + params.len()], params.as_bytes());
        assert_eq!(s[40 + params.len()], 0, "NUL-terminated");
    }

    #[test]
    fn bad_names_types_and_params_are_refused() {
        let long = "x".repeat(128);
        for bad in ["", "a/b", "with space", long.as_str()] {
            assert!(
                matches!(header(bad, 0, 0, 0), Err(DmError::Name(_))),
                "{bad:?}"
            );
        }
        assert!(header(&"x".repeat(127), 0, 0, 0).is_ok());
        let t = |ty: &str, params: &str| Target {
            start: 0,
            sectors: 8,
            target_type: ty.into(),
            params: params.into(),
        };
        assert!(matches!(
            table_load("r", 0, &[t("a-type-name-of-16", "")]),
            Err(DmError::TargetType(_))
        ));
        assert!(matches!(
            table_load("r", 0, &[t("verity", "a\0b")]),
            Err(DmError::Params)
        ));
    }

    #[test]
    fn the_answer_s_device_number_is_decoded() {
        let mut b = vec![0u8; DM_IOCTL_SIZE];
        // huge_encode_dev(MKDEV(253, 0x1234)): minor's low byte, major, the
        // minor's high bits above.
        let dev: u64 = 0x34 | (253 << 8) | (0x1200 << 12);
        b[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(answer_dev(&b), (253, 0x1234));
        let d = Device {
            name: "r".into(),
            major: 253,
            minor: 0,
        };
        assert_eq!(d.path(), Path::new("/dev/dm-0"));
    }
}
