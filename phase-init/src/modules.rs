//! Kernel modules the initramfs carries, loaded with `finit_module` by
//! coldplug: the modules of `/etc/phase/modules.always` at every boot, and
//! the modules whose device patterns (`/etc/phase/modules.alias`, the
//! kernel's `alias=` globs) match a device's modalias in
//! `/sys/bus/*/devices/*/modalias`, each with its dependencies
//! (`/etc/phase/modules.dep`), in the order of `/etc/phase/modules.order`
//! (dependencies first). Files are under `/lib/modules/<kver>/` where
//! `<kver>` is the content of `/etc/phase/kernel-release`; the image builder
//! writes all of them.
//!
//! Devices behind a freshly loaded bus driver (USB NICs and keyboards
//! behind `xhci_pci`, HID devices behind `usbhid`) appear after it loads, so
//! the modaliases are read again after each round of loads, for a bounded
//! number of rounds and time ([`MAX_ROUNDS`], [`DEADLINE`]).
//!
//! A module that fails to load is reported and the boot goes on: a missing
//! NIC driver should not stop a boot from the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::console::console;
use crate::step::{chain, Status};

/// Every carried module, dependencies first, relative to the initramfs root.
pub const ORDER_FILE: &str = "etc/phase/modules.order";
/// `<module>: <dep> <dep>...`, every dependency (transitive) of each module.
pub const DEP_FILE: &str = "etc/phase/modules.dep";
/// `alias <pattern> <module name>` lines.
pub const ALIAS_FILE: &str = "etc/phase/modules.alias";
/// The modules loaded at every boot (file systems, loop, efivarfs...).
pub const ALWAYS_FILE: &str = "etc/phase/modules.always";
/// The kernel release the modules were built for, relative to the root.
pub const RELEASE_FILE: &str = "etc/phase/kernel-release";

/// At most this many rounds of loads (each followed by a rescan).
pub const MAX_ROUNDS: usize = 6;
/// Coldplug stops waiting for devices to appear this long after it started.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// After a round that loaded a USB host controller driver, devices on its
/// ports enumerate over the next few hundred milliseconds: rescan until no
/// new device appeared for this long (within [`DEADLINE`]).
pub const USB_SETTLE: Duration = Duration::from_millis(600);
/// How often to rescan while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Why the module tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is empty (expected the kernel release, e.g. 6.1.0-28-amd64)")]
    EmptyRelease { path: PathBuf },
    #[error("{path}: line {line}: {why}")]
    Bad {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// What may be loaded: the module directory, the load order and the
/// coldplug tables.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kernel_release: String,
    pub dir: PathBuf,
    /// Every carried module, dependencies first.
    pub modules: Vec<String>,
    /// Module path -> every module it needs first.
    pub deps: BTreeMap<String, Vec<String>>,
    /// The device patterns.
    pub aliases: Aliases,
    /// Module paths loaded at every boot.
    pub always: Vec<String>,
}

/// Reads the plan below `root` (`/` at boot; a directory in tests).
pub fn read_plan(root: &Path) -> Result<Plan, PlanError> {
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read_to_string(&path).map_err(|source| PlanError::Read { path, source })
    };
    let release = read(RELEASE_FILE)?.trim().to_owned();
    if release.is_empty() {
        return Err(PlanError::EmptyRelease {
            path: root.join(RELEASE_FILE),
        });
    }
    let modules = parse_order(&read(ORDER_FILE)?);
    let deps = parse_deps(&root.join(DEP_FILE), &read(DEP_FILE)?)?;
    let aliases = Aliases::parse(&root.join(ALIAS_FILE), &read(ALIAS_FILE)?)?;
    let always = parse_order(&read(ALWAYS_FILE)?);
    Ok(Plan {
        dir: root.join("lib/modules").join(&release),
        kernel_release: release,
        modules,
        deps,
        aliases,
        always,
    })
}

/// One path per line; blank lines and `#` comments are skipped.
pub fn parse_order(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `module: dep dep...` lines.
fn parse_deps(path: &Path, text: &str) -> Result<BTreeMap<String, Vec<String>>, PlanError> {
    let mut deps = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((module, rest)) = line.split_once(':') else {
            return Err(PlanError::Bad {
                path: path.to_path_buf(),
                line: i + 1,
                why: "expected `module: dependencies`".into(),
            });
        };
        deps.insert(
            module.trim().to_owned(),
            rest.split_whitespace().map(str::to_owned).collect(),
        );
    }
    Ok(deps)
}

/// The canonical module name of a module path: `kernel/.../usb-storage.ko`
/// -> `usb_storage`.
pub fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The device patterns of `modules.alias`: the kernel's globs (`*`, `?`,
/// `[...]`, as `fnmatch` reads them), each with the module it names.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    entries: Vec<Alias>,
}

#[derive(Debug, Clone)]
struct Alias {
    /// The pattern's text up to its first wildcard: a cheap first test.
    literal: String,
    pattern: glob::Pattern,
    module: String,
}

/// `*` matches across any character (no path semantics), as `fnmatch`
/// without flags does.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Aliases {
    /// `alias <pattern> <module>` lines; `#` comments and blanks skipped.
    pub fn parse(path: &Path, text: &str) -> Result<Aliases, PlanError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| PlanError::Bad {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [kw, pattern, module] = f[..] else {
                return Err(bad("expected `alias <pattern> <module>`".into()));
            };
            if kw != "alias" {
                return Err(bad("expected `alias <pattern> <module>`".into()));
            }
            let glob = glob::Pattern::new(pattern)
                .map_err(|e| bad(format!("pattern {pattern:?}: {e}")))?;
            let literal = pattern
                .split(['*', '?', '['])
                .next()
                .unwrap_or("")
                .to_owned();
            entries.push(Alias {
                literal,
                pattern: glob,
                module: module.replace('-', "_"),
            });
        }
        Ok(Aliases { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules (canonical names) one of whose patterns matches `modalias`.
    pub fn matching<'a>(&'a self, modalias: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |a| {
                modalias.starts_with(&a.literal) && a.pattern.matches_with(modalias, MATCH)
            })
            .map(|a| a.module.as_str())
    }
}

/// Every device modalias under `sys` (`/sys`): `bus/*/devices/*/modalias`.
pub fn scan_modaliases(sys: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(m) = std::fs::read_to_string(dev.path().join("modalias")) {
                let m = m.trim();
                if !m.is_empty() {
                    out.insert(m.to_owned());
                }
            }
        }
    }
    out
}

/// Coldplug's memory: which modaliases were matched and which modules were
/// tried, so each round loads only what is new.
#[derive(Debug)]
pub struct Coldplug<'a> {
    plan: &'a Plan,
    /// Module name -> path, for the names `modules.alias` uses.
    by_name: BTreeMap<String, &'a str>,
    seen: BTreeSet<String>,
    tried: BTreeSet<String>,
}

impl<'a> Coldplug<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        let by_name = plan
            .modules
            .iter()
            .map(|m| (module_name(m), m.as_str()))
            .collect();
        Coldplug {
            plan,
            by_name,
            seen: BTreeSet::new(),
            tried: BTreeSet::new(),
        }
    }

    /// The modules to load next, in load order with their dependencies,
    /// for the modaliases not seen before (and, the first time, the
    /// always-loaded set); marks them tried.
    pub fn next_batch(&mut self, modaliases: &BTreeSet<String>, first: bool) -> Vec<String> {
        let mut want: BTreeSet<&str> = BTreeSet::new();
        if first {
            want.extend(self.plan.always.iter().map(String::as_str));
        }
        for m in modaliases.difference(&self.seen) {
            for name in self.plan.aliases.matching(m) {
                if let Some(rel) = self.by_name.get(name) {
                    want.insert(rel);
                }
            }
        }
        self.seen.extend(modaliases.iter().cloned());
        let mut with_deps: BTreeSet<&str> = want.clone();
        for rel in &want {
            if let Some(deps) = self.plan.deps.get(*rel) {
                with_deps.extend(deps.iter().map(String::as_str));
            }
        }
        // A module the order does not list (a hand-made always list) goes last.
        let mut batch: Vec<String> = self
            .plan
            .modules
            .iter()
            .filter(|m| with_deps.contains(m.as_str()))
            .cloned()
            .collect();
        batch.extend(
            with_deps
                .iter()
                .filter(|m| !self.plan.modules.iter().any(|o| o == *m))
                .map(|m| (*m).to_owned()),
        );
        batch.retain(|m| !self.tried.contains(m));
        self.tried.extend(batch.iter().cloned());
        batch
    }
}

/// Whether a batch loaded a bus driver whose devices enumerate after it
/// loaded (a USB host controller: the devices on its ports).
fn enumerates_later(batch: &[String]) -> bool {
    batch.iter().any(|m| m.contains("usb/host/"))
}

/// Coldplug under `sys` with `load` doing the loading: rounds of "match
/// the modaliases, load what is new", rescanning after each round (and
/// polling until no new device appeared for `settle` after a USB host
/// controller loaded, never past `deadline`), at most `max_rounds` rounds.
/// Returns the report and the number of rounds.
pub fn coldplug_with(
    plan: &Plan,
    sys: &Path,
    max_rounds: usize,
    deadline: Duration,
    settle: Duration,
    mut load: impl FnMut(&Path) -> Result<Loaded, (&'static str, io::Error)>,
) -> (Report, usize) {
    let start = Instant::now();
    let mut state = Coldplug::new(plan);
    let mut report = Report::default();
    let mut batch = state.next_batch(&scan_modaliases(sys), true);
    let mut rounds = 0;
    while !batch.is_empty() && rounds < max_rounds {
        rounds += 1;
        load_batch(plan, &batch, &mut report, &mut load);
        let wait = enumerates_later(&batch);
        let mut quiet_since = Instant::now();
        let mut known = scan_modaliases(sys);
        loop {
            batch = state.next_batch(&known, false);
            if !batch.is_empty() || !wait || start.elapsed() >= deadline {
                break;
            }
            if quiet_since.elapsed() >= settle {
                break;
            }
            std::thread::sleep(POLL);
            let now = scan_modaliases(sys);
            if now != known {
                quiet_since = Instant::now();
                known = now;
            }
        }
    }
    report.devices = state.seen.len();
    (report, rounds)
}

fn load_batch(
    plan: &Plan,
    batch: &[String],
    report: &mut Report,
    load: &mut impl FnMut(&Path) -> Result<Loaded, (&'static str, io::Error)>,
) {
    for rel in batch {
        let start = Instant::now();
        let word = match load(&plan.dir.join(rel)) {
            Ok(Loaded::New) => {
                report.loaded += 1;
                "loaded"
            }
            Ok(Loaded::Already) => {
                report.already += 1;
                "already present"
            }
            Ok(Loaded::NoDevice) => {
                report.no_device += 1;
                "no hardware for it"
            }
            Err((what, source)) => {
                report.failed.push(LoadError {
                    module: rel.clone(),
                    what,
                    source,
                });
                "FAILED"
            }
        };
        report.each.push((rel.clone(), word, start.elapsed()));
    }
}

/// A module that did not load.
#[derive(Debug, thiserror::Error)]
#[error("module {module}: {what}")]
pub struct LoadError {
    pub module: String,
    what: &'static str,
    #[source]
    pub source: io::Error,
}

/// What loading the plan did.
#[derive(Debug, Default)]
pub struct Report {
    pub loaded: usize,
    /// `EEXIST`: built in or loaded before; fine.
    pub already: usize,
    /// `ENODEV`: the module's init found no hardware for it (e.g.
    /// crc32c-intel on a CPU without SSE4.2); fine.
    pub no_device: usize,
    pub failed: Vec<LoadError>,
    /// Every module tried, in order: its path, outcome word and load time
    /// (shown with `phase.debug`).
    pub each: Vec<(String, &'static str, Duration)>,
    /// Distinct device modaliases seen.
    pub devices: usize,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{} loaded, {} already present, {} without their hardware, {} failed",
            self.loaded,
            self.already,
            self.no_device,
            self.failed.len()
        )
    }

    /// The step's line: the summary, then what coldplug looked at.
    pub fn line(&self, carried: usize, rounds: usize) -> String {
        format!(
            "{}; {} devices, {rounds} rounds, {} of {carried} modules",
            self.summary(),
            self.devices,
            self.each.len()
        )
    }
}

/// What `finit_module` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    New,
    Already,
    NoDevice,
}

/// Loads one module file with `finit_module`.
pub fn load_one(path: &Path) -> Result<Loaded, (&'static str, io::Error)> {
    let file = File::open(path).map_err(|e| ("cannot open the file", e))?;
    // The kernel decompresses .ko.xz/.ko.zst itself when asked to
    // (CONFIG_MODULE_DECOMPRESS); plain .ko is what the image builder writes.
    let name = path.as_os_str().to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    match rustix::system::finit_module(&file, c"", flags) {
        Ok(()) => Ok(Loaded::New),
        Err(rustix::io::Errno::EXIST) => Ok(Loaded::Already),
        Err(rustix::io::Errno::NODEV) => Ok(Loaded::NoDevice),
        Err(e) => Err(("the kernel refused it (dmesg tells why)", e.into())),
    }
}

/// `MODULE_INIT_COMPRESSED_FILE` from `<linux/module.h>`.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// The `modules` boot step: coldplug from the plan below `root` and the
/// devices under `/sys`; with `debug` one line per module.
pub fn step(root: &Path, debug: bool) -> ((), Status) {
    let plan = match read_plan(root) {
        Ok(plan) => plan,
        Err(e) => return ((), Status::fail(chain(&e))),
    };
    let (report, rounds) = coldplug_with(
        &plan,
        Path::new("/sys"),
        MAX_ROUNDS,
        DEADLINE,
        USB_SETTLE,
        load_one,
    );
    if debug {
        for (module, outcome, took) in &report.each {
            console().line(&format!(
                "  module {module}: {outcome} ({} ms)",
                took.as_millis()
            ));
        }
    }
    let mut problems: Vec<String> = Vec::new();
    let running = crate::kernel::release();
    if plan.kernel_release != running {
        problems.push(format!(
            "modules are for kernel {} but {running} is running",
            plan.kernel_release
        ));
    }
    problems.extend(
        report
            .failed
            .iter()
            .map(|e| format!("{}; continuing", chain(e))),
    );
    (
        (),
        Status::with_problems(report.line(plan.modules.len(), rounds), problems),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_file_skips_blanks_and_comments() {
        let text = "# deps first\nkernel/fs/netfs/netfs.ko\n\n  kernel/fs/9p/9p.ko  \n";
        assert_eq!(
            parse_order(text),
            vec!["kernel/fs/netfs/netfs.ko", "kernel/fs/9p/9p.ko"]
        );
    }

    fn write_plan(root: &Path, order: &str, dep: &str, alias: &str, always: &str) {
        std::fs::create_dir_all(root.join("etc/phase")).unwrap();
        std::fs::write(root.join(RELEASE_FILE), "6.1.0-28-amd64\n").unwrap();
        std::fs::write(root.join(ORDER_FILE), order).unwrap();
        std::fs::write(root.join(DEP_FILE), dep).unwrap();
        std::fs::write(root.join(ALIAS_FILE), alias).unwrap();
        std::fs::write(root.join(ALWAYS_FILE), always).unwrap();
    }

    #[test]
    fn plan_reads_release_order_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        write_plan(
            dir.path(),
            "a.ko\nb/c.ko\n",
            "a.ko:\nb/c.ko: a.ko\n",
            "alias pci:v00001AF4d* c\n",
            "a.ko\n",
        );
        let plan = read_plan(dir.path()).unwrap();
        assert_eq!(plan.kernel_release, "6.1.0-28-amd64");
        assert_eq!(plan.dir, dir.path().join("lib/modules/6.1.0-28-amd64"));
        assert_eq!(plan.modules, vec!["a.ko", "b/c.ko"]);
        assert_eq!(plan.deps["b/c.ko"], vec!["a.ko"]);
        assert_eq!(plan.aliases.len(), 1);
        assert_eq!(plan.always, vec!["a.ko"]);
    }

    #[test]
    fn missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_plan(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("etc/phase/kernel-release"),
            "{err}"
        );
        std::fs::create_dir_all(dir.path().join("etc/phase")).unwrap();
        std::fs::write(dir.path().join(RELEASE_FILE), " \n").unwrap();
        let err = read_plan(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        write_plan(dir.path(), "a.ko\n", "a.ko\n", "", "");
        let err = read_plan(dir.path()).unwrap_err();
        assert!(err.to_string().contains("modules.dep: line 1"), "{err}");
        write_plan(dir.path(), "a.ko\n", "", "alias x[ a\n", "");
        let err = read_plan(dir.path()).unwrap_err();
        assert!(err.to_string().contains("modules.alias: line 1"), "{err}");
    }

    #[test]
    fn module_names_are_canonical() {
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko"),
            "usb_storage"
        );
        assert_eq!(module_name("x/8139too.ko.xz"), "8139too");
    }

    /// Real patterns from Debian 6.1's modules (`alias=` lines).
    const ALIASES: &str = "\
alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
alias usb:v*p*d*dc*dsc*dp*ic02isc06ip00in* cdc_ether
alias usb:v0BDAp8153d*dc*dsc*dp*ic02isc06ip00in* cdc_ether
alias usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in* r8152
alias usb:v*p*d*dc*dsc*dp*ic03isc*ip*in* usbhid
alias hid:b*g0001v*p* hid_generic
alias usb:v*p*d*dc*dsc*dp*ic08isc0[56]ip50in* usb-storage
alias acpi*:PNP0C0[9AB]:* ec_fake
";

    fn aliases() -> Aliases {
        Aliases::parse(Path::new("modules.alias"), ALIASES).unwrap()
    }

    fn matches(modalias: &str) -> Vec<String> {
        let a = aliases();
        let mut m: Vec<String> = a.matching(modalias).map(str::to_owned).collect();
        m.sort();
        m
    }

    #[test]
    fn modaliases_match_the_kernels_globs() {
        assert_eq!(
            matches("pci:v000010ECd00008168sv00001043sd00008677bc02sc00i00"),
            ["r8169"]
        );
        assert_eq!(
            matches("pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"),
            ["e1000e"]
        );
        // Class match: any vendor's xHCI controller.
        assert_eq!(
            matches("pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"),
            ["xhci_pci"]
        );
        // A Realtek USB NIC in its vendor configuration, and in CDC mode.
        assert_eq!(
            matches("usb:v0BDAp8153d3100dc00dsc00dp00icFFiscFFip00in00"),
            ["r8152"]
        );
        assert_eq!(
            matches("usb:v0BDAp8153d3100dc00dsc00dp00ic02isc06ip00in00"),
            ["cdc_ether", "cdc_ether", "r8152"]
        );
        // QEMU's usb-net (CDC Ethernet) and a keyboard.
        assert_eq!(
            matches("usb:v0525pA4A2d0000dc02dsc00dp00ic02isc06ip00in00"),
            ["cdc_ether"]
        );
        assert_eq!(
            matches("usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00"),
            ["usbhid"]
        );
        assert_eq!(matches("hid:b0003g0001v00000627p00000001"), ["hid_generic"]);
        // `[56]`, `-` in a module name, a `*` in the middle of the bus.
        assert_eq!(
            matches("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert!(matches("usb:v0781p5567d0100dc00dsc00dp00ic08isc04ip50in00").is_empty());
        assert_eq!(matches("acpi:PNP0C0A:PNP0C0A:"), ["ec_fake"]);
        // No match, and a match is not a prefix match.
        assert!(matches("pci:v000010ECd00008139sv*").is_empty());
        assert!(matches("pci:v000010ECd0000816").is_empty());
    }

    /// A fake sysfs: one device per modalias under `bus/<bus>/devices/`.
    fn add_device(sys: &Path, bus: &str, name: &str, modalias: &str) {
        let d = sys.join("bus").join(bus).join("devices").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("modalias"), format!("{modalias}\n")).unwrap();
    }

    fn usb_plan(root: &Path) -> Plan {
        write_plan(
            root,
            "fs/ext4.ko\nusb/core/usbcore.ko\nusb/host/xhci-hcd.ko\nusb/host/xhci-pci.ko\n\
             net/usbnet.ko\nnet/cdc_ether.ko\nnet/e1000e.ko\nhid/hid.ko\nhid/usbhid.ko\nhid/hid-generic.ko\n",
            "fs/ext4.ko:\nusb/core/usbcore.ko:\nusb/host/xhci-hcd.ko: usb/core/usbcore.ko\n\
             usb/host/xhci-pci.ko: usb/core/usbcore.ko usb/host/xhci-hcd.ko\n\
             net/usbnet.ko: usb/core/usbcore.ko\nnet/cdc_ether.ko: usb/core/usbcore.ko net/usbnet.ko\n\
             net/e1000e.ko:\nhid/hid.ko:\nhid/usbhid.ko: usb/core/usbcore.ko hid/hid.ko\n\
             hid/hid-generic.ko: hid/hid.ko\n",
            ALIASES,
            "fs/ext4.ko\n",
        );
        read_plan(root).unwrap()
    }

    #[test]
    fn only_matching_modules_load_with_their_dependencies_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let plan = usb_plan(dir.path());
        let sys = dir.path().join("sys");
        add_device(
            &sys,
            "pci",
            "0000:00:02.0",
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00",
        );
        add_device(
            &sys,
            "pci",
            "0000:00:1f.0",
            "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00",
        );
        let mut loaded = Vec::new();
        let (report, rounds) =
            coldplug_with(&plan, &sys, MAX_ROUNDS, DEADLINE, USB_SETTLE, |p: &Path| {
                loaded.push(
                    p.strip_prefix(&plan.dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                Ok(Loaded::New)
            });
        assert_eq!(loaded, ["fs/ext4.ko", "net/e1000e.ko"]);
        assert_eq!((report.loaded, report.devices, rounds), (2, 2, 1));
        assert_eq!(
            report.line(plan.modules.len(), rounds),
            "2 loaded, 0 already present, 0 without their hardware, 0 failed; \
             2 devices, 1 rounds, 2 of 10 modules"
        );
    }

    /// Devices that appear behind a freshly loaded USB host controller (a
    /// NIC, then the HID device behind usbhid) are found by the rescans.
    #[test]
    fn devices_behind_a_new_bus_driver_are_found_by_rescans() {
        let dir = tempfile::tempdir().unwrap();
        let plan = usb_plan(dir.path());
        let sys = dir.path().join("sys");
        add_device(
            &sys,
            "pci",
            "0000:00:04.0",
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
        );
        let mut loaded = Vec::new();
        let (report, rounds) = coldplug_with(
            &plan,
            &sys,
            MAX_ROUNDS,
            DEADLINE,
            Duration::from_millis(300),
            |p: &Path| {
                let rel = p
                    .strip_prefix(&plan.dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                // What the kernel does when these drivers bind.
                match rel.as_str() {
                    "usb/host/xhci-pci.ko" => {
                        add_device(
                            &sys,
                            "usb",
                            "1-1:1.0",
                            "usb:v0525pA4A2d0000dc02dsc00dp00ic02isc06ip00in00",
                        );
                        add_device(
                            &sys,
                            "usb",
                            "1-2:1.0",
                            "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00",
                        );
                    }
                    "hid/usbhid.ko" => {
                        add_device(
                            &sys,
                            "hid",
                            "0003:0627:0001.0001",
                            "hid:b0003g0001v00000627p00000001",
                        );
                    }
                    _ => {}
                }
                loaded.push(rel);
                Ok(Loaded::New)
            },
        );
        assert_eq!(
            loaded,
            [
                "fs/ext4.ko",
                "usb/core/usbcore.ko",
                "usb/host/xhci-hcd.ko",
                "usb/host/xhci-pci.ko",
                "net/usbnet.ko",
                "net/cdc_ether.ko",
                "hid/hid.ko",
                "hid/usbhid.ko",
                "hid/hid-generic.ko",
            ]
        );
        assert_eq!((rounds, report.devices), (3, 4));
    }

    #[test]
    fn rescans_are_bounded_by_rounds_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let plan = usb_plan(dir.path());
        let sys = dir.path().join("sys");
        add_device(
            &sys,
            "pci",
            "0000:00:04.0",
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
        );
        // One round only: the USB devices that appear are not looked at.
        let (report, rounds) = coldplug_with(&plan, &sys, 1, DEADLINE, USB_SETTLE, |p: &Path| {
            if p.ends_with("usb/host/xhci-pci.ko") {
                add_device(
                    &sys,
                    "usb",
                    "1-1:1.0",
                    "usb:v0525pA4A2d0000dc02dsc00dp00ic02isc06ip00in00",
                );
            }
            Ok(Loaded::New)
        });
        assert_eq!((rounds, report.loaded), (1, 4));
        // A controller with nothing behind it: the wait ends at the deadline.
        let empty = tempfile::tempdir().unwrap();
        add_device(
            empty.path(),
            "pci",
            "x",
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
        );
        let start = Instant::now();
        let (_, rounds) = coldplug_with(
            &plan,
            empty.path(),
            MAX_ROUNDS,
            Duration::from_millis(200),
            Duration::from_secs(60),
            |_: &Path| Ok(Loaded::New),
        );
        assert_eq!(rounds, 1);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_missing_module_is_reported_and_the_rest_still_run() {
        let dir = tempfile::tempdir().unwrap();
        write_plan(
            dir.path(),
            "gone.ko\nalso-gone.ko\n",
            "",
            "",
            "gone.ko\nalso-gone.ko\n",
        );
        let plan = read_plan(dir.path()).unwrap();
        let (report, _) = coldplug_with(
            &plan,
            &dir.path().join("sys"),
            MAX_ROUNDS,
            DEADLINE,
            USB_SETTLE,
            load_one,
        );
        assert_eq!(report.failed.len(), 2);
        assert_eq!(
            report.failed[0].to_string(),
            "module gone.ko: cannot open the file"
        );
        assert_eq!(
            report.summary(),
            "0 loaded, 0 already present, 0 without their hardware, 2 failed"
        );
    }
}
