//! The only unsafe code of phase-init: what std cannot express safely.
//!
//! Everything else goes through rustix's safe wrappers.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Makes sure fds 0, 1 and 2 are the console. The kernel opens
/// `/dev/console` for init, but only if the node exists when init starts;
/// after devtmpfs is mounted we can open it ourselves.
pub fn ensure_stdio_console() {
    if rustix::io::fcntl_getfd(std::io::stdout()).is_ok() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    // Failures leave the fds as they were: there is no console to report to.
    let _ = rustix::stdio::dup2_stdin(&console);
    let _ = rustix::stdio::dup2_stdout(&console);
    let _ = rustix::stdio::dup2_stderr(&console);
}

/// Spawns `cmd` as the leader of a new session whose controlling terminal is
/// its stdin (which must be a tty), so a shell gets job control.
pub fn spawn_session_leader(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes two raw syscalls through
    // rustix (setsid, ioctl TIOCSCTTY): no allocation, no locks, no access to
    // state shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// `kexec_file_load(2)`: loads `kernel` (and `initrd`, if any) with
/// `cmdline` for a later `reboot(LINUX_REBOOT_CMD_KEXEC)`. The kernel reads
/// and (under lockdown) verifies the files itself.
pub fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &CStr,
) -> io::Result<()> {
    let (initrd_fd, flags) = match initrd {
        Some(fd) => (fd.as_raw_fd(), 0),
        None => (-1, libc::KEXEC_FILE_NO_INITRAMFS),
    };
    // The length counts the terminating NUL (the kernel checks that the last
    // byte is NUL).
    let len = cmdline.to_bytes_with_nul().len();
    // SAFETY: kexec_file_load takes two fds (valid for the call: borrowed),
    // a length and a pointer to `len` readable bytes (the CStr, NUL
    // included, alive for the call), and flags. The kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            len as libc::c_ulong,
            cmdline.as_ptr(),
            flags as libc::c_ulong,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// linux/loop.h
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR`.
const LO_FLAGS_RO_AUTOCLEAR: u32 = 1 | 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn loop_info(name: &[u8]) -> LoopInfo64 {
    let mut file_name = [0u8; 64];
    let n = name.len().min(63);
    file_name[..n].copy_from_slice(&name[..n]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_RO_AUTOCLEAR,
        lo_file_name: file_name,
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the number of a free loop
/// device (allocating one if needed).
pub fn loop_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number; the
    // fd is valid for the call (borrowed).
    let r = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    u32::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Attaches `backing` to the loop device `dev`, read-only and auto-clearing
/// (the device frees itself when its last user, the mount, goes away).
/// Uses `LOOP_CONFIGURE`; falls back to `LOOP_SET_FD` + `LOOP_SET_STATUS64`
/// on kernels older than 5.8 (EINVAL/ENOTTY).
pub fn loop_attach(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let config = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        block_size: 0,
        info: loop_info(name),
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config`
    // is (repr(C), same layout as linux/loop.h), alive for the call; both
    // fds are valid for the call.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &config as *const LoopConfig,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) {
        return Err(e);
    }
    // SAFETY: LOOP_SET_FD takes the backing fd as its argument; valid for the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let info = loop_info(name);
    // SAFETY: LOOP_SET_STATUS64 reads one `struct loop_info64`, which `info`
    // is (repr(C)), alive for the call.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            &info as *const LoopInfo64,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The signals the supervisor handles: children and shutdown requests
/// (busybox `reboot` sends SIGTERM, `poweroff` SIGUSR2, `halt` SIGUSR1;
/// Ctrl-Alt-Del is SIGINT).
pub const SUPERVISOR_SIGNALS: [libc::c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it fully
    // before sigaddset reads it, both only write within it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks `signals` for this thread (PID 1 is single-threaded by then) so
/// that [`wait_signal`] can take them synchronously. Children started with
/// `std::process::Command` get an empty mask again (std resets it).
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialized sigset_t alive for the call; a null old
    // set is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Waits up to `timeout` for one of `signals` (which must be blocked);
/// `None` on timeout or interruption.
pub fn wait_signal(signals: &[libc::c_int], timeout: std::time::Duration) -> Option<libc::c_int> {
    let set = sigset(signals);
    let ts = libc::timespec {
        // Capped to fit a 32-bit time_t too (68 years is forever here).
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: `set` and `ts` are initialized and alive for the call; a null
    // siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// `ioctl(fd, request, buf)` for the device-mapper commands (see
/// [`crate::dm`], which builds and reads the buffer): the kernel reads the
/// `struct dm_ioctl` at the start of `buf` (and the `data_size` bytes it
/// names, at most `buf.len()`) and writes its answer back into the same
/// bytes.
pub fn dm_ioctl(control: BorrowedFd<'_>, request: libc::c_ulong, buf: &mut [u8]) -> io::Result<()> {
    // `data_size` (bytes 12..16): how much of `buf` the kernel may read
    // and write.
    let data_size = buf
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes);
    match data_size {
        Some(n) if buf.len() >= crate::dm::DM_IOCTL_SIZE && n as usize <= buf.len() => {}
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
    // SAFETY: `buf` is a live, writable slice of at least the size of
    // `struct dm_ioctl` for the call, and its `data_size` field (checked
    // above) is at most `buf.len()`; the kernel reads and writes only
    // within `data_size`. The fd is valid for the call.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
