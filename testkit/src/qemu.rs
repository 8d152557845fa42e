//! Boot a VM under QEMU (TCG) and assert on its serial console.
//!
//! Two ways to boot:
//!
//! * [`Qemu::image`]: a Phase Boot disk image (raw or qcow2) under OVMF, the
//!   way a user boots it: firmware → systemd-boot → kernel → phase-init.
//!   [`Qemu::mode`] and [`Qemu::append`] pick the systemd-boot entry and add
//!   kernel parameters by editing the ESP in a temporary qcow2 overlay backed
//!   by the image; the image itself is opened read-only and never changes.
//! * [`Qemu::direct_kernel`]: `-kernel -initrd -append` under SeaBIOS, for
//!   fast tests of an initramfs.
//!
//! The serial console goes to a pipe; a reader thread keeps the whole log
//! (and writes it to a file: [`Vm::log_path`]). [`Vm::wait_for`] waits for a
//! substring (or [`Vm::wait_for_regex`] a regex) with a deadline; on failure
//! it prints the whole serial log to stderr (cargo shows it with the failing
//! test) and the error carries the log's tail. Dropping a [`Vm`] kills QEMU.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::qemu::Qemu;
//!
//! let mut vm = Qemu::image("build/phase-boot-x86_64.img")
//!     .mode("local")
//!     .append("phase.test=poweroff")
//!     .timeout(Duration::from_secs(180))
//!     .start()
//!     .unwrap();
//! vm.wait_for("Phase Boot (local)").unwrap();
//! vm.wait_for("phase-init: ready mode=local").unwrap();
//! vm.wait_exit().unwrap();
//! ```
//!
//! No NIC is attached unless asked for ([`Qemu::tap`], [`Qemu::arg`]): a
//! test VM never reaches a network the test did not create. With
//! [`Qemu::tap`] QEMU runs inside the LAN's hub namespace (`ip netns exec`)
//! and its NIC is a tap device on the test bridge ([`crate::netns::Lan`]).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;

/// OVMF firmware code (read-only) and the variable store template.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF's Secure Boot build (needs SMM) and a variable store with the
/// stock Microsoft keys enrolled and Secure Boot on, as a PC leaves the
/// factory.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The QEMU binary for x86_64.
pub const QEMU_X86_64: &str = "qemu-system-x86_64";

/// Everything that can go wrong starting or watching a VM.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{what} {path} does not exist{hint}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },
    #[error("cannot prepare the disk {path}: {why}")]
    Disk { path: PathBuf, why: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("I/O on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    NotSeen(Box<NotSeen>),
}

/// What a failed wait saw: the VM, what was awaited, the log's tail.
#[derive(Debug)]
pub struct NotSeen {
    pub name: String,
    pub what: String,
    pub waited: Duration,
    /// "exited" or "still running".
    pub state: String,
    pub log_path: PathBuf,
    /// The last lines of the serial log (and QEMU's stderr, if any).
    pub tail: String,
}

impl fmt::Display for NotSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VM {}: no {} on the serial console after {:.1?} (QEMU {}); log: {}\n--- last lines ---\n{}",
            self.name,
            self.what,
            self.waited,
            self.state,
            self.log_path.display(),
            self.tail
        )
    }
}

type Result<T> = std::result::Result<T, QemuError>;

#[derive(Debug, Clone)]
enum Boot {
    Image {
        path: PathBuf,
        mode: Option<String>,
        append: Vec<String>,
    },
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// How long [`Vm::wait_for`] waits for the rest of a matched line.
const LINE_GRACE: Duration = Duration::from_secs(2);

/// The QEMU NIC models the tests boot with, each driven by a different
/// Linux driver the initramfs carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// `virtio-net-pci` (virtio_net).
    VirtioNet,
    /// `e1000` (e1000), QEMU's default NIC.
    E1000,
    /// `e1000e`, the Intel 82574L (e1000e).
    E1000e,
    /// `igb`, the Intel 82576 (igb).
    Igb,
    /// `rtl8139`, an RTL8139C+ (8139cp).
    Rtl8139,
    /// `usb-net` on its own `qemu-xhci` controller, a CDC Ethernet gadget
    /// (cdc_ether).
    UsbNet,
}

impl NicModel {
    /// QEMU's `-device` name.
    pub fn device(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::UsbNet => "usb-net",
        }
    }

    /// The Linux driver bound to it (`/sys/class/net/<if>/device/driver`).
    pub fn driver(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio_net",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
            NicModel::Rtl8139 => "8139cp",
            NicModel::UsbNet => "cdc_ether",
        }
    }
}

/// A VM to start: builder methods, then [`Qemu::start`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Qemu {
    boot: Boot,
    name: String,
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
    extra: Vec<String>,
    log_path: Option<PathBuf>,
    /// Run QEMU inside this network namespace (set by [`Qemu::tap`]).
    netns: Option<String>,
    nics: u32,
    /// The device model of the NICs [`Qemu::tap`] and [`Qemu::user_nic`] add.
    nic_model: NicModel,
    /// A `qemu-xhci` controller for USB NICs was added.
    nic_xhci: bool,
    /// Image boots: QEMU writes the image itself ([`Qemu::writable`]).
    writable: bool,
    /// Image boots: Secure Boot on with the Microsoft keys ([`Qemu::secure_boot`]).
    secure_boot: bool,
    /// Image boots: the disk is a USB stick ([`Qemu::usb_stick`]).
    usb_stick: bool,
    /// A TPM 2.0 (swtpm) on a TIS interface ([`Qemu::tpm`]).
    tpm: bool,
}

impl Qemu {
    fn new(boot: Boot, name: String) -> Self {
        Qemu {
            boot,
            name,
            memory_mib: 512,
            cpus: 1,
            timeout: Duration::from_secs(180),
            extra: Vec::new(),
            log_path: None,
            netns: None,
            nics: 0,
            nic_model: NicModel::VirtioNet,
            nic_xhci: false,
            writable: false,
            secure_boot: false,
            usb_stick: false,
            tpm: false,
        }
    }

    /// Boots a disk image (raw or qcow2, detected from its header) under OVMF.
    pub fn image(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Qemu::new(
            Boot::Image {
                path,
                mode: None,
                append: Vec::new(),
            },
            name,
        )
    }

    /// Boots `kernel` + `initrd` with the command line `append` (no firmware
    /// menu; SeaBIOS). Add `console=ttyS0` to see the kernel on the log.
    pub fn direct_kernel(
        kernel: impl AsRef<Path>,
        initrd: impl AsRef<Path>,
        append: impl Into<String>,
    ) -> Self {
        let kernel = kernel.as_ref().to_owned();
        Qemu::new(
            Boot::Kernel {
                kernel,
                initrd: initrd.as_ref().to_owned(),
                append: append.into(),
            },
            "direct-kernel".to_owned(),
        )
    }

    /// Image boots: make `loader/entries/phase-<mode>.conf` the default entry.
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        if let Boot::Image { mode: m, .. } = &mut self.boot {
            *m = Some(mode.into());
        }
        self
    }

    /// Image boots: append words to the `options` line of the booted entry.
    /// Direct kernel boots: append to the command line.
    pub fn append(mut self, words: impl Into<String>) -> Self {
        let words = words.into();
        match &mut self.boot {
            Boot::Image { append, .. } => append.push(words),
            Boot::Kernel { append, .. } => {
                append.push(' ');
                append.push_str(&words);
            }
        }
        self
    }

    /// A label for messages (default: the image's file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Guest RAM (default 512 MiB).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs (default 1; TCG runs them on host threads).
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// The deadline for every wait, counted from [`Qemu::start`] (default 180 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// One extra QEMU argument (e.g. a `-netdev` / `-device` pair for a NIC).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// A NIC on `tap` (from [`crate::netns::Lan::add_tap`]), with the
    /// tap's MAC, of the model [`Qemu::nic_model`] chose (default virtio):
    /// QEMU then runs inside the tap's namespace (`ip netns exec`), so the
    /// guest is one more host on the test bridge. Call once per NIC; all
    /// taps must be in the same namespace.
    pub fn tap(mut self, tap: &crate::netns::Tap) -> Self {
        let id = format!("tapnic{}", self.nics);
        self.nics += 1;
        self.netns = Some(tap.ns.clone());
        self.extra.extend([
            "-netdev".to_owned(),
            format!("tap,id={id},ifname={},script=no,downscript=no", tap.ifname),
        ]);
        let mac = tap.mac.clone();
        self.nic_device(&id, &mac)
    }

    /// The device model of the NICs added after this call (default
    /// [`NicModel::VirtioNet`]).
    pub fn nic_model(mut self, model: NicModel) -> Self {
        self.nic_model = model;
        self
    }

    /// A NIC on its own QEMU user-mode network `net` (e.g.
    /// `198.18.65.0/24`) with `restrict=on`: QEMU's built-in DHCP server
    /// hands out `.15` first, nothing is routed to the host or beyond. The
    /// MAC is `52:54:00:12:34:<56 + n>` for the n-th NIC.
    pub fn user_nic(mut self, net: &str) -> Self {
        let id = format!("usernic{}", self.nics);
        let mac = format!("52:54:00:12:34:{:02x}", 0x56 + self.nics);
        self.nics += 1;
        self.extra.extend([
            "-netdev".to_owned(),
            format!("user,id={id},net={net},restrict=on"),
        ]);
        self.nic_device(&id, &mac)
    }

    fn nic_device(mut self, netdev: &str, mac: &str) -> Self {
        if self.nic_model == NicModel::UsbNet && !self.nic_xhci {
            self.nic_xhci = true;
            self.extra
                .extend(["-device".to_owned(), "qemu-xhci,id=nicxhci".to_owned()]);
        }
        let bus = if self.nic_model == NicModel::UsbNet {
            ",bus=nicxhci.0"
        } else {
            ""
        };
        self.extra.extend([
            "-device".to_owned(),
            format!("{},netdev={netdev},mac={mac}{bus}", self.nic_model.device()),
        ]);
        self
    }

    /// Image boots: the VM writes the image file itself, as a machine
    /// writes its stick (no snapshot, no overlay) — for tests of what a boot
    /// writes. Boots the image as it is: edit its boot entry first with
    /// [`edit_entry_in_place`] ([`Qemu::mode`] / [`Qemu::append`] are refused).
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// Image boots: OVMF's Secure Boot build with a fresh copy of the
    /// variable store holding the stock Microsoft keys (Secure Boot on),
    /// SMM on. Default: OVMF with no keys enrolled (Secure Boot off).
    pub fn secure_boot(mut self) -> Self {
        self.secure_boot = true;
        self
    }

    /// Image boots: attach the disk as a removable USB mass-storage device
    /// on an xHCI controller (`qemu-xhci` + `usb-storage`), as a stick in a
    /// PC, instead of a virtio disk.
    pub fn usb_stick(mut self) -> Self {
        self.usb_stick = true;
        self
    }

    /// A TPM 2.0 on the TIS interface: a fresh swtpm (state and control
    /// socket in the VM's temporary directory, started and cleared), which
    /// lives as long as the [`Vm`]. The guest sees `/dev/tpmrm0`; with OVMF
    /// the firmware measures into it too.
    pub fn tpm(mut self) -> Self {
        self.tpm = true;
        self
    }

    /// Extra QEMU arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also keep the serial log at `path` (default: a file in the VM's
    /// temporary directory, deleted with the [`Vm`]).
    pub fn serial_log(mut self, path: impl AsRef<Path>) -> Self {
        self.log_path = Some(path.as_ref().to_owned());
        self
    }

    /// Prepares the disk and firmware, starts QEMU and returns the running VM.
    pub fn start(self) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-qemu-")
            .tempdir()
            .map_err(|source| QemuError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            "-machine".into(),
            "q35".into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-nic".into(),
            "none".into(),
            "-no-reboot".into(),
        ];
        match &self.boot {
            Boot::Image { path, mode, append } => {
                let disk = if self.writable {
                    in_place_disk(path, mode.is_some() || !append.is_empty())?
                } else {
                    prepare_disk(path, mode.as_deref(), append, dir.path())?
                };
                if self.secure_boot {
                    // SMM guards the variable store: with `secure=on` the
                    // flash is writable only from SMM, as on a real board.
                    args.extend([
                        "-machine".into(),
                        "smm=on".into(),
                        "-global".into(),
                        "driver=cfi.pflash01,property=secure,value=on".into(),
                    ]);
                }
                args.extend(ovmf_args(dir.path(), self.secure_boot)?);
                args.push("-drive".into());
                args.push(disk.drive_arg(self.usb_stick));
                if self.usb_stick {
                    args.extend([
                        "-device".into(),
                        "qemu-xhci,id=xhci".into(),
                        "-device".into(),
                        "usb-storage,bus=xhci.0,drive=stick,removable=on".into(),
                    ]);
                }
            }
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                for (what, p) in [("kernel", kernel), ("initrd", initrd)] {
                    exists(what, p, "")?;
                }
                args.extend([
                    "-kernel".into(),
                    path_arg(kernel),
                    "-initrd".into(),
                    path_arg(initrd),
                    "-append".into(),
                    append.clone(),
                ]);
            }
        }
        let swtpm = if self.tpm {
            let (child, sock) = start_swtpm(dir.path())?;
            args.extend([
                "-chardev".into(),
                format!("socket,id=chrtpm,path={}", sock.display()),
                "-tpmdev".into(),
                "emulator,id=tpm0,chardev=chrtpm".into(),
                "-device".into(),
                "tpm-tis,tpmdev=tpm0".into(),
            ]);
            Some(child)
        } else {
            None
        };
        args.extend(self.extra.iter().cloned());
        let log_path = self
            .log_path
            .clone()
            .unwrap_or_else(|| dir.path().join("serial.log"));
        Vm::spawn(self, args, dir, log_path, swtpm)
    }
}

/// Starts swtpm with its state in `dir/tpm` and its control socket at
/// `dir/swtpm.sock` (QEMU's `tpm-emulator` gets the data channel through
/// it); returns once the socket exists.
fn start_swtpm(dir: &Path) -> Result<(Child, PathBuf)> {
    let state = dir.join("tpm");
    fs::create_dir_all(&state).map_err(|source| QemuError::Io {
        path: state.clone(),
        source,
    })?;
    let sock = dir.join("swtpm.sock");
    let mut child = Command::new("swtpm")
        .args([
            "socket",
            "--tpm2",
            "--flags",
            "startup-clear",
            "--terminate",
        ])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|source| QemuError::Spawn {
            program: "swtpm (Debian package swtpm)".into(),
            source,
        })?;
    let start = Instant::now();
    while !sock.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(QemuError::Io {
                path: sock,
                source: io::Error::new(io::ErrorKind::TimedOut, "swtpm did not listen"),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok((child, sock))
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn exists(what: &'static str, p: &Path, hint: &str) -> Result<()> {
    if p.exists() {
        Ok(())
    } else {
        Err(QemuError::Missing {
            what,
            path: p.to_owned(),
            hint: hint.to_owned(),
        })
    }
}

fn ovmf_args(dir: &Path, secure_boot: bool) -> Result<Vec<String>> {
    let hint = " (Debian package ovmf; scripts/deps-check.sh --install)";
    let (code, template) = if secure_boot {
        (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
    } else {
        (OVMF_CODE, OVMF_VARS)
    };
    exists("OVMF firmware", Path::new(code), hint)?;
    exists("OVMF variable store", Path::new(template), hint)?;
    let vars = dir.join("OVMF_VARS.fd");
    fs::copy(template, &vars).map_err(|source| QemuError::Io {
        path: vars.clone(),
        source,
    })?;
    Ok(vec![
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ])
}

/// Disk image formats the harness understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// Reads the header: qcow2 starts with `QFI\xfb`, anything else is raw.
    pub fn detect(path: &Path) -> io::Result<Self> {
        let mut magic = [0u8; 4];
        let mut f = File::open(path)?;
        let n = f.read(&mut magic)?;
        Ok(if n == 4 && magic == *b"QFI\xfb" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

struct PreparedDisk {
    path: PathBuf,
    format: DiskFormat,
    /// The original image, opened read-only by QEMU: writes go to a
    /// throw-away snapshot.
    snapshot: bool,
}

impl PreparedDisk {
    /// The `-drive` value: a virtio disk, or with `usb` a drive for a
    /// `usb-storage` device (`id=stick`).
    fn drive_arg(&self, usb: bool) -> String {
        let path = self.path.to_string_lossy().replace(',', ",,");
        let attach = if usb { "if=none,id=stick" } else { "if=virtio" };
        let mut s = format!(
            "{attach},format={},file={path},cache=unsafe",
            self.format.as_str()
        );
        if self.snapshot {
            s.push_str(",snapshot=on");
        }
        s
    }
}

/// The ESP (GPT partition 1) of a raw disk: byte offset and length.
pub fn esp_extent(raw: &Path) -> Result<(u64, u64)> {
    let bad = |why: String| QemuError::Disk {
        path: raw.to_owned(),
        why,
    };
    let mut f = File::open(raw).map_err(|e| bad(e.to_string()))?;
    for sector in [512u64, 4096] {
        let mut hdr = [0u8; 92];
        f.seek(SeekFrom::Start(sector))
            .and_then(|_| f.read_exact(&mut hdr))
            .map_err(|e| bad(format!("reading the GPT header: {e}")))?;
        if &hdr[0..8] != b"EFI PART" {
            continue;
        }
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let entries_lba = le64(&hdr[72..80]);
        let mut entry = [0u8; 48];
        f.seek(SeekFrom::Start(entries_lba * sector))
            .and_then(|_| f.read_exact(&mut entry))
            .map_err(|e| bad(format!("reading GPT entry 1: {e}")))?;
        let (first, last) = (le64(&entry[32..40]), le64(&entry[40..48]));
        if first == 0 || last < first {
            return Err(bad("GPT partition 1 is empty".into()));
        }
        return Ok((first * sector, (last - first + 1) * sector));
    }
    Err(bad("no GPT header (\"EFI PART\") at LBA 1".into()))
}

/// Edits `loader/loader.conf` to boot `phase-<mode>.conf` by default.
pub fn set_default_entry(loader_conf: &str, mode: &str) -> String {
    let mut out: Vec<String> = loader_conf
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("default"))
        .map(str::to_owned)
        .collect();
    out.push(format!("default phase-{mode}.conf"));
    out.join("\n") + "\n"
}

/// The entry file `loader.conf` boots by default (`phase-<mode>.conf`).
pub fn default_entry(loader_conf: &str) -> Option<String> {
    loader_conf.lines().rev().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("default")).then(|| w.next().map(str::to_owned))?
    })
}

/// Appends `words` to the `options` line of an entry file.
pub fn append_options(entry: &str, words: &str) -> String {
    let mut done = false;
    let mut out: Vec<String> = entry
        .lines()
        .map(|l| {
            if !done && l.split_whitespace().next() == Some("options") {
                done = true;
                format!("{} {words}", l.trim_end())
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !done {
        out.push(format!("options {words}"));
    }
    out.join("\n") + "\n"
}

fn tool(cmd: &mut Command) -> Result<Vec<u8>> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|source| QemuError::Spawn {
            program: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(QemuError::Tool {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// The image itself, written by the VM ([`Qemu::writable`]).
fn in_place_disk(image: &Path, edits: bool) -> Result<PreparedDisk> {
    exists("disk image", image, " (build it with `make image`)")?;
    if edits {
        return Err(QemuError::Disk {
            path: image.to_owned(),
            why: "a writable boot uses the image as it is: edit its entry first with qemu::edit_entry_in_place, not mode()/append()".into(),
        });
    }
    let path = fs::canonicalize(image).map_err(|source| QemuError::Io {
        path: image.to_owned(),
        source,
    })?;
    let format = DiskFormat::detect(&path).map_err(|source| QemuError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(PreparedDisk {
        path,
        format,
        snapshot: false,
    })
}

/// Edits a RAW image's ESP in place (mtools at the partition's offset):
/// makes `phase-<mode>.conf` the default entry when `mode` is given, and
/// appends `words` (if not empty) to the default entry's `options` line.
pub fn edit_entry_in_place(image: &Path, mode: Option<&str>, words: &str) -> Result<()> {
    let (off, _) = esp_extent(image)?;
    let img = format!("{}@@{off}", image.display());
    let tmp = tempfile::NamedTempFile::new().map_err(|source| QemuError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    edit_esp(&img, tmp.path(), image, mode, words)
}

/// The boot-entry edit on an mtools image spec (`file` or `file@@offset`):
/// makes `phase-<mode>.conf` the default entry when `mode` is given, and
/// appends `words` (if not empty) to the default entry's `options` line.
/// `scratch` is a local file used to hand the edited text to `mcopy`;
/// `image` names the disk in errors.
fn edit_esp(
    img: &str,
    scratch: &Path,
    image: &Path,
    mode: Option<&str>,
    words: &str,
) -> Result<()> {
    let read = |p: &str| -> Result<String> {
        let out = tool(Command::new("mtype").args(["-i", img, &format!("::{p}")]))?;
        Ok(String::from_utf8_lossy(&out).replace("\r\n", "\n"))
    };
    let write = |p: &str, text: &str| -> Result<()> {
        fs::write(scratch, text).map_err(|source| QemuError::Io {
            path: scratch.to_owned(),
            source,
        })?;
        tool(
            Command::new("mcopy")
                .args(["-o", "-i", img])
                .arg(scratch)
                .arg(format!("::{p}")),
        )?;
        Ok(())
    };
    let conf = read("/loader/loader.conf")?;
    let entry = match mode {
        Some(m) => {
            write("/loader/loader.conf", &set_default_entry(&conf, m))?;
            format!("phase-{m}.conf")
        }
        None => default_entry(&conf).ok_or_else(|| QemuError::Disk {
            path: image.to_owned(),
            why: "loader/loader.conf names no default entry".into(),
        })?,
    };
    if !words.is_empty() {
        let path = format!("/loader/entries/{entry}");
        let text = read(&path)?;
        write(&path, &append_options(&text, words))?;
    }
    Ok(())
}

/// Makes the disk QEMU boots. Without edits that is the image itself, with
/// `snapshot=on`. With edits it is a qcow2 overlay whose backing file is the
/// image, holding only the ESP blocks the edits changed.
fn prepare_disk(
    image: &Path,
    mode: Option<&str>,
    append: &[String],
    dir: &Path,
) -> Result<PreparedDisk> {
    exists("disk image", image, " (build it with `make image`)")?;
    let image = fs::canonicalize(image).map_err(|source| QemuError::Io {
        path: image.to_owned(),
        source,
    })?;
    let format = DiskFormat::detect(&image).map_err(|source| QemuError::Io {
        path: image.clone(),
        source,
    })?;
    if mode.is_none() && append.is_empty() {
        return Ok(PreparedDisk {
            path: image,
            format,
            snapshot: true,
        });
    }
    // A raw view of the disk to read the GPT and the ESP from.
    let raw = match format {
        DiskFormat::Raw => image.clone(),
        DiskFormat::Qcow2 => {
            let raw = dir.join("view.raw");
            tool(
                Command::new("qemu-img")
                    .args(["convert", "-f", "qcow2", "-O", "raw"])
                    .arg(&image)
                    .arg(&raw),
            )?;
            raw
        }
    };
    let (esp_off, esp_len) = esp_extent(&raw)?;
    let esp = dir.join("esp.raw");
    copy_range_sparse(&raw, esp_off, esp_len, &esp)?;
    let esp_img = esp.to_string_lossy().into_owned();
    edit_esp(
        &esp_img,
        &dir.join("edit.tmp"),
        &image,
        mode,
        &append.join(" "),
    )?;
    // Write the changed blocks of the ESP into an overlay over the image.
    let overlay = dir.join("overlay.qcow2");
    tool(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", format.as_str(), "-b"])
            .arg(&image)
            .arg(&overlay),
    )?;
    let changed = changed_blocks(&raw, esp_off, &esp, esp_len)?;
    let mut io = Command::new("qemu-io");
    io.args(["-f", "qcow2"]);
    for (i, (off, bytes)) in changed.iter().enumerate() {
        let chunk = dir.join(format!("chunk{i}"));
        fs::write(&chunk, bytes).map_err(|source| QemuError::Io {
            path: chunk.clone(),
            source,
        })?;
        io.arg("-c").arg(format!(
            "write -q -s {} {} {}",
            chunk.display(),
            esp_off + off,
            bytes.len()
        ));
    }
    io.arg(&overlay);
    if !changed.is_empty() {
        tool(&mut io)?;
    }
    if format == DiskFormat::Qcow2 {
        let _ = fs::remove_file(&raw);
    }
    let _ = fs::remove_file(&esp);
    Ok(PreparedDisk {
        path: overlay,
        format: DiskFormat::Qcow2,
        snapshot: false,
    })
}

const BLOCK: usize = 64 * 1024;

/// Copies `len` bytes at `off` of `src` into a new file `dst`, leaving holes
/// where the source has all-zero blocks.
fn copy_range_sparse(src: &Path, off: u64, len: u64, dst: &Path) -> Result<()> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| QemuError::Io { path, source }
    };
    let mut from = File::open(src).map_err(io_err(src))?;
    from.seek(SeekFrom::Start(off)).map_err(io_err(src))?;
    let mut to = File::create(dst).map_err(io_err(dst))?;
    to.set_len(len).map_err(io_err(dst))?;
    let mut buf = vec![0u8; BLOCK];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(BLOCK as u64)).unwrap_or(BLOCK);
        from.read_exact(&mut buf[..n]).map_err(io_err(src))?;
        if buf[..n].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(done)).map_err(io_err(dst))?;
            to.write_all(&buf[..n]).map_err(io_err(dst))?;
        }
        done += n as u64;
    }
    Ok(())
}

/// The blocks of `esp` (offsets relative to the ESP) that differ from the
/// ESP inside `raw`.
fn changed_blocks(raw: &Path, esp_off: u64, esp: &Path, len: u64) -> Result<Vec<(u64, Vec<u8>)>> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| QemuError::Io { path, source }
    };
    let mut a = File::open(raw).map_err(io_err(raw))?;
    a.seek(SeekFrom::Start(esp_off)).map_err(io_err(raw))?;
    let mut b = File::open(esp).map_err(io_err(esp))?;
    let (mut x, mut y) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let mut out = Vec::new();
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(BLOCK as u64)).unwrap_or(BLOCK);
        a.read_exact(&mut x[..n]).map_err(io_err(raw))?;
        b.read_exact(&mut y[..n]).map_err(io_err(esp))?;
        if x[..n] != y[..n] {
            out.push((done, y[..n].to_vec()));
        }
        done += n as u64;
    }
    Ok(out)
}

#[derive(Default)]
struct Serial {
    bytes: Vec<u8>,
    eof: bool,
}

type Shared = Arc<(Mutex<Serial>, Condvar)>;

/// A running VM. Dropping it kills QEMU.
pub struct Vm {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    serial: Shared,
    stderr: Arc<Mutex<Vec<u8>>>,
    started: Instant,
    deadline: Instant,
    /// Position in the cleaned log after the last match.
    cursor: usize,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    /// The VM's TPM ([`Qemu::tpm`]), stopped with the VM.
    swtpm: Option<Child>,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("log_path", &self.log_path)
            .finish()
    }
}

impl Vm {
    fn spawn(
        q: Qemu,
        args: Vec<String>,
        dir: tempfile::TempDir,
        log_path: PathBuf,
        swtpm: Option<Child>,
    ) -> Result<Self> {
        let log_file = File::create(&log_path).map_err(|source| QemuError::Io {
            path: log_path.clone(),
            source,
        })?;
        let mut cmd = match &q.netns {
            // `ip netns exec` execs QEMU in place: the child is QEMU.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, QEMU_X86_64]);
                c
            }
            None => Command::new(QEMU_X86_64),
        };
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| QemuError::Spawn {
                program: format!("{QEMU_X86_64} (Debian package qemu-system-x86)"),
                source,
            })?;
        let serial: Shared = Arc::default();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut out) = child.stdout.take() {
            let serial = Arc::clone(&serial);
            let mut log_file = log_file;
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = out.read(&mut buf).unwrap_or(0);
                    let (lock, cvar) = &*serial;
                    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if n == 0 {
                        s.eof = true;
                        cvar.notify_all();
                        return;
                    }
                    s.bytes.extend_from_slice(&buf[..n]);
                    let _ = log_file.write_all(&buf[..n]);
                    cvar.notify_all();
                }
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf);
            });
        }
        let started = Instant::now();
        Ok(Vm {
            name: q.name,
            stdin: child.stdin.take(),
            child,
            serial,
            stderr,
            started,
            deadline: started + q.timeout,
            cursor: 0,
            log_path,
            exit: None,
            swtpm,
            _dir: dir,
        })
    }

    /// Where the serial log is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Time since [`Qemu::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial log so far, with terminal escape sequences and `\r` removed.
    pub fn log(&self) -> String {
        let (lock, _) = &*self.serial;
        clean(&lock.lock().unwrap_or_else(|e| e.into_inner()).bytes)
    }

    /// Types `line` and Enter on the serial console.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.send(&format!("{line}\r"))
    }

    /// Types `text` on the serial console as it is (no Enter).
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("QEMU stdin is closed"))?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()
    }

    /// Holds `key` down: types it every `every` until `needle` appears after
    /// the previous match (as [`Vm::wait_for`]), within the deadline. This is
    /// how a person opens a hidden boot menu.
    pub fn hold_key_until(&mut self, key: &str, needle: &str, every: Duration) -> Result<String> {
        loop {
            let log = self.log();
            let from = self.cursor.min(log.len());
            if log[from..].contains(needle) || Instant::now() >= self.deadline {
                return self.wait_for(needle);
            }
            if let Err(e) = self.send(key) {
                // QEMU has gone: wait_for reports it with the log's tail.
                eprintln!("{}: typing {key:?}: {e}", self.name);
                return self.wait_for(needle);
            }
            thread::sleep(every);
        }
    }

    /// Waits until `needle` appears in the log after the previous match and
    /// returns the line containing it. Matches are ordered: each search
    /// starts where the last one ended.
    pub fn wait_for(&mut self, needle: &str) -> Result<String> {
        self.wait_until(&format!("{needle:?}"), |log| {
            log.find(needle).map(|i| (i, i + needle.len()))
        })
    }

    /// Like [`Vm::wait_for`] with a regex; returns the matching line.
    pub fn wait_for_regex(&mut self, re: &Regex) -> Result<String> {
        self.wait_until(&format!("/{re}/"), |log| {
            re.find(log).map(|m| (m.start(), m.end()))
        })
    }

    fn wait_until(
        &mut self,
        what: &str,
        find: impl Fn(&str) -> Option<(usize, usize)>,
    ) -> Result<String> {
        let (lock, cvar) = &*self.serial;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        // Set when the match is seen before the end of its line arrived.
        let mut line_grace: Option<Instant> = None;
        loop {
            let log = clean(&s.bytes);
            let from = self.cursor.min(log.len());
            if let Some((start, end)) = find(&log[from..]) {
                let (start, end) = (from + start, from + end);
                let newline = log[end..].find('\n');
                // The serial console delivers a line in pieces: give the rest
                // of it a bounded moment, so callers see the whole line (a
                // prompt never gets its newline and is returned as it is).
                let grace_end = *line_grace.get_or_insert_with(|| Instant::now() + LINE_GRACE);
                if newline.is_none() && !s.eof && Instant::now() < grace_end.min(self.deadline) {
                    s = cvar
                        .wait_timeout(s, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                self.cursor = end;
                let line_start = log[..start].rfind('\n').map_or(0, |i| i + 1);
                let line_end = newline.map_or(log.len(), |i| end + i);
                return Ok(log[line_start..line_end].to_owned());
            }
            let now = Instant::now();
            if s.eof || now >= self.deadline {
                let state = if s.eof { "exited" } else { "still running" };
                drop(s);
                return Err(self.not_seen(what, state, &log));
            }
            let wait = (self.deadline - now).min(Duration::from_millis(500));
            s = cvar
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn not_seen(&mut self, what: &str, state: &str, log: &str) -> QemuError {
        // Give the stderr reader a moment if QEMU died.
        if state == "exited" {
            let _ = self.wait_child(Duration::from_secs(2));
        }
        let stderr =
            String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner()))
                .trim()
                .to_owned();
        eprintln!(
            "===== serial log of VM {} ({}) =====\n{log}\n===== end of serial log =====",
            self.name,
            self.log_path.display()
        );
        if !stderr.is_empty() {
            eprintln!("===== QEMU stderr =====\n{stderr}");
        }
        let lines: Vec<&str> = log.lines().collect();
        let mut tail = lines[lines.len().saturating_sub(30)..].join("\n");
        if !stderr.is_empty() {
            tail.push_str("\n--- QEMU stderr ---\n");
            tail.push_str(&stderr);
        }
        QemuError::NotSeen(Box::new(NotSeen {
            name: self.name.clone(),
            what: what.to_owned(),
            waited: self.started.elapsed(),
            state: state.to_owned(),
            log_path: self.log_path.clone(),
            tail,
        }))
    }

    fn wait_child(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.exit {
                return Some(st);
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (within the deadline) for QEMU to exit, e.g. after the guest
    /// powered off (`-no-reboot` makes a reboot exit too).
    pub fn wait_exit(&mut self) -> Result<ExitStatus> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.wait_child(left) {
            Some(st) => Ok(st),
            None => {
                let log = self.log();
                Err(self.not_seen("QEMU exit (guest power-off)", "still running", &log))
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(t) = &mut self.swtpm {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

/// Removes ANSI escape sequences, other control characters except `\n` and
/// `\t`, and `\r`, so the firmware menu's text can be matched as plain text.
pub fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // Character set designation: ESC ( B and friends.
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                    chars.next();
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_escapes_and_carriage_returns() {
        assert_eq!(
            clean(b"\x1b[2J\x1b[01;01H\x1b[0m\x1b[35m\x1b[40mPhase Boot (local)\r\n\x1b(Bok"),
            "Phase Boot (local)\nok"
        );
    }

    #[test]
    fn loader_conf_default_is_replaced() {
        let conf = "# c\ndefault phase-internet.conf\ntimeout 2\n";
        let new = set_default_entry(conf, "local");
        assert_eq!(new, "# c\ntimeout 2\ndefault phase-local.conf\n");
        assert_eq!(default_entry(&new).as_deref(), Some("phase-local.conf"));
        assert_eq!(default_entry("timeout 1\n"), None);
    }

    #[test]
    fn options_are_appended_once() {
        let e = "title T\noptions console=ttyS0 phase.mode=local\n";
        assert_eq!(
            append_options(e, "phase.test=poweroff"),
            "title T\noptions console=ttyS0 phase.mode=local phase.test=poweroff\n"
        );
        assert_eq!(append_options("title T\n", "x=1"), "title T\noptions x=1\n");
    }

    #[test]
    fn gpt_extent_of_a_hand_made_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let mut img = vec![0u8; 512 * 40];
        img[512..520].copy_from_slice(b"EFI PART");
        img[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        let e = 1024;
        img[e + 32..e + 40].copy_from_slice(&2048u64.to_le_bytes());
        img[e + 40..e + 48].copy_from_slice(&4095u64.to_le_bytes());
        fs::write(&p, &img).unwrap();
        assert_eq!(esp_extent(&p).unwrap(), (2048 * 512, 2048 * 512));
        fs::write(&p, vec![0u8; 8192]).unwrap();
        assert!(esp_extent(&p)
            .unwrap_err()
            .to_string()
            .contains("no GPT header"));
    }

    #[test]
    fn missing_image_is_a_clear_error() {
        let err = Qemu::image("/nonexistent/phase.img")
            .mode("local")
            .start()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk image /nonexistent/phase.img does not exist (build it with `make image`)"
        );
    }
}
