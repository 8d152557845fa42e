//! kexec: load the verified target kernel with its initramfs (+ payload) and
//! command line through `kexec_file_load(2)`, then `reboot(KEXEC)`.
//!
//! `kexec_file_load` is the only kexec call that works under kernel lockdown
//! (the kernel reads the files itself and can check the kernel's signature);
//! the older `kexec_load` takes raw segments and is refused there. There is
//! no maintained kexec crate, so the call is made with `libc::syscall` in
//! [`crate::sys`].
//!
//! Failures are typed and each says in one line what the user can do; the
//! caller never tries the same kernel again. A refusal of the kernel's
//! signature ([`KexecError::is_signature_refusal`]) may be followed by the
//! last release that booted on this machine ([`crate::fallback`]); any
//! other failure ends in the rescue shell.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::step::Status;
use crate::sys;

/// Why kexec did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    #[error("cannot open the {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("kexec is not available: this kernel was built without CONFIG_KEXEC_FILE (ENOSYS); boot the target another way")]
    NotSupported,
    #[error("kexec is not permitted (EPERM): phase-init needs CAP_SYS_BOOT, or kexec was disabled (sysctl kernel.kexec_load_disabled=1)")]
    NotPermitted,
    #[error("kexec is busy (EBUSY): another kexec image is being loaded or executed")]
    Busy,
    #[error("target kernel {kernel}'s signature was rejected (EKEYREJECTED): only kernels signed by a trusted key can be kexec'd ({platform})")]
    SignatureRejected { kernel: String, platform: String },
    #[error("target kernel {kernel} is not signed (ENODATA), and this machine only kexecs signed kernels ({platform})")]
    Unsigned { kernel: String, platform: String },
    #[error(
        "target kernel {kernel} is not signed by a key this machine trusts (ENOKEY; {platform})"
    )]
    UntrustedKey { kernel: String, platform: String },
    #[error("the target kernel is not a kernel image this kernel can kexec (ENOEXEC): wrong architecture or not a bzImage/Image")]
    NotAKernel,
    #[error("the target kernel or initramfs does not fit in memory for kexec (ENOMEM)")]
    NoMemory,
    #[error("kexec_file_load failed")]
    Load(#[source] io::Error),
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC) returned instead of starting the target kernel")]
    Exec(#[source] io::Error),
}

impl KexecError {
    /// The error `kexec_file_load` reported, mapped to a plain reason; the
    /// signature refusals name the target kernel (`kernel`, its version)
    /// and where this boot runs (`platform`, e.g. `secureboot on, lockdown
    /// integrity`).
    pub fn refused(e: io::Error, kernel: &str, platform: &str) -> Self {
        let (kernel, platform) = (kernel.to_owned(), platform.to_owned());
        match e.raw_os_error() {
            Some(libc::ENODATA) => KexecError::Unsigned { kernel, platform },
            Some(libc::ENOKEY) => KexecError::UntrustedKey { kernel, platform },
            Some(libc::ENOSYS) => KexecError::NotSupported,
            Some(libc::EPERM) => KexecError::NotPermitted,
            Some(libc::EBUSY) => KexecError::Busy,
            Some(libc::EKEYREJECTED) => KexecError::SignatureRejected { kernel, platform },
            Some(libc::ENOEXEC) => KexecError::NotAKernel,
            Some(libc::ENOMEM) => KexecError::NoMemory,
            _ => KexecError::Load(e),
        }
    }
}

impl KexecError {
    /// Whether the running kernel refused this kernel for its signature
    /// (not signed, signed by a key it does not trust, a rejected
    /// signature; `EPERM` counts only under lockdown, where
    /// `kexec_file_load` answers an unverifiable kernel with it): another,
    /// signed kernel may still be accepted.
    pub fn is_signature_refusal(&self, locked_down: bool) -> bool {
        match self {
            KexecError::Unsigned { .. }
            | KexecError::SignatureRejected { .. }
            | KexecError::UntrustedKey { .. } => true,
            KexecError::NotPermitted => locked_down,
            _ => false,
        }
    }
}

/// What to kexec.
#[derive(Debug, Clone)]
pub struct Target {
    pub kernel: PathBuf,
    /// The target initramfs with the payload appended; `None` = no initramfs.
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

fn open(what: &'static str, path: &Path) -> Result<File, KexecError> {
    File::open(path).map_err(|source| KexecError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `target` into the kernel (`kexec_file_load`). After this, [`exec`]
/// starts it.
pub fn load(target: &Target) -> Result<(), KexecError> {
    let cmdline = CString::new(target.cmdline.as_bytes()).map_err(|_| KexecError::CmdlineNul)?;
    let kernel = open("target kernel", &target.kernel)?;
    let initrd = match &target.initrd {
        Some(p) => Some(open("target initramfs", p)?),
        None => None,
    };
    sys::kexec_file_load(kernel.as_fd(), initrd.as_ref().map(|f| f.as_fd()), &cmdline).map_err(
        |e| {
            let version = bzimage_version(&target.kernel)
                .unwrap_or_else(|| target.kernel.display().to_string());
            let platform = crate::platform::current().to_string();
            KexecError::refused(e, &version, &platform)
        },
    )
}

/// The version string an x86 bzImage carries (the boot protocol's
/// `kernel_version` field: a pointer, relative to 0x200, to a NUL-ended
/// string), e.g. `6.1.0-28-amd64`; `None` for anything else.
pub fn bzimage_version(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut head = [0u8; 0x210];
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    if &head[0x202..0x206] != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([head[0x20E], head[0x20F]]);
    if ptr == 0 {
        return None;
    }
    let at = u64::from(ptr) + 0x200;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).ok()?;
    let mut text = [0u8; 128];
    let n = std::io::Read::read(&mut f, &mut text).ok()?;
    let text = &text[..n];
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let v = std::str::from_utf8(&text[..end]).ok()?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).then(|| v.to_owned())
}

/// Syncs and jumps into the loaded kernel. Returns only on failure.
pub fn exec() -> KexecError {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Kexec) {
        Ok(()) => KexecError::Exec(io::Error::other("reboot returned success")),
        Err(e) => KexecError::Exec(e.into()),
    }
}

/// The `kexec` boot step: [`load`], its command line on the status line.
pub fn step(target: &Target) -> (Result<(), KexecError>, Status) {
    match load(target) {
        Ok(()) => (
            Ok(()),
            Status::ok(format!(
                "kexec_file_load accepted the target kernel; cmdline: {}",
                target.cmdline
            )),
        ),
        Err(e) => {
            let status = Status::fail(crate::step::chain(&e));
            (Err(e), status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_map_to_plain_reasons() {
        let cases = [
            (libc::ENOSYS, "CONFIG_KEXEC_FILE"),
            (libc::EPERM, "CAP_SYS_BOOT"),
            (libc::EBUSY, "busy"),
            (libc::EKEYREJECTED, "signature"),
            (libc::ENOEXEC, "not a kernel image"),
            (libc::ENOMEM, "memory"),
        ];
        for (errno, words) in cases {
            let e = KexecError::refused(io::Error::from_raw_os_error(errno), "6.1.0-28-amd64", "");
            let text = e.to_string();
            assert!(text.contains(words), "{errno}: {text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
        let other = KexecError::refused(io::Error::from_raw_os_error(libc::EINVAL), "", "");
        assert!(matches!(other, KexecError::Load(_)));
    }

    #[test]
    fn signature_refusals_name_the_kernel_and_the_platform() {
        let platform = "secureboot on, lockdown integrity";
        let unsigned = KexecError::refused(
            io::Error::from_raw_os_error(libc::ENODATA),
            "6.1.0-28-amd64",
            platform,
        )
        .to_string();
        assert_eq!(
            unsigned,
            "target kernel 6.1.0-28-amd64 is not signed (ENODATA), and this machine only kexecs signed kernels (secureboot on, lockdown integrity)"
        );
        let foreign = KexecError::refused(
            io::Error::from_raw_os_error(libc::ENOKEY),
            "6.1.0-28-amd64",
            platform,
        )
        .to_string();
        assert!(
            foreign.starts_with(
                "target kernel 6.1.0-28-amd64 is not signed by a key this machine trusts"
            ),
            "{foreign}"
        );
        assert!(foreign.contains(platform), "{foreign}");
    }

    #[test]
    fn only_signature_refusals_may_be_followed_by_another_kernel() {
        let refusal = |errno: i32| {
            KexecError::refused(io::Error::from_raw_os_error(errno), "6.1.0-28-amd64", "")
        };
        for errno in [libc::ENODATA, libc::ENOKEY, libc::EKEYREJECTED] {
            assert!(refusal(errno).is_signature_refusal(false), "{errno}");
        }
        assert!(refusal(libc::EPERM).is_signature_refusal(true));
        assert!(!refusal(libc::EPERM).is_signature_refusal(false));
        for errno in [
            libc::ENOEXEC,
            libc::ENOMEM,
            libc::EBUSY,
            libc::ENOSYS,
            libc::EINVAL,
        ] {
            assert!(!refusal(errno).is_signature_refusal(true), "{errno}");
        }
    }

    #[test]
    fn the_version_comes_from_the_bzimage_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("vmlinuz");
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        // kernel_version = 0x400 - 0x200
        img[0x20E..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        let v = b"6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP";
        img[0x400..0x400 + v.len()].copy_from_slice(v);
        std::fs::write(&p, &img).expect("write");
        assert_eq!(bzimage_version(&p).as_deref(), Some("6.1.0-28-amd64"));
        // Not a bzImage, or too short: no version.
        img[0x202] = b'X';
        std::fs::write(&p, &img).expect("write");
        assert_eq!(bzimage_version(&p), None);
        std::fs::write(&p, b"short").expect("write");
        assert_eq!(bzimage_version(&p), None);
    }

    #[test]
    fn a_missing_kernel_names_the_file_and_nothing_is_loaded() {
        let t = Target {
            kernel: PathBuf::from("/nonexistent/vmlinuz"),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        };
        let e = load(&t).expect_err("no such file");
        assert!(matches!(e, KexecError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/vmlinuz"));
    }

    #[test]
    fn a_nul_in_the_cmdline_is_refused_before_any_syscall() {
        let t = Target {
            kernel: PathBuf::from("/nonexistent"),
            initrd: None,
            cmdline: "a\0b".into(),
        };
        assert!(matches!(load(&t), Err(KexecError::CmdlineNul)));
    }

    #[test]
    fn without_cap_sys_boot_or_kexec_the_call_fails_with_a_reason() {
        // On the build host (no kexec in its kernel, or not root) the real
        // syscall must come back with a mapped reason, never succeed.
        let dir = tempfile::tempdir().expect("tempdir");
        let k = dir.path().join("not-a-kernel");
        std::fs::write(&k, b"definitely not a bzImage").expect("write");
        let t = Target {
            kernel: k,
            initrd: None,
            cmdline: "x".into(),
        };
        let e = load(&t).expect_err("cannot load junk");
        assert!(
            matches!(
                e,
                KexecError::NotSupported
                    | KexecError::NotPermitted
                    | KexecError::NotAKernel
                    | KexecError::Load(_)
            ),
            "{e:?}"
        );
    }
}
