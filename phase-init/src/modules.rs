//! Kernel modules the initramfs carries, loaded with `finit_module` in the
//! order of `/etc/phase/modules.order` (dependencies first, written by the
//! image builder), from `/lib/modules/<kver>/` where `<kver>` is the content
//! of `/etc/phase/kernel-release`.
//!
//! A module that fails to load is reported and the boot goes on: a missing
//! NIC driver should not stop a boot from the cache.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::console::console;
use crate::step::{chain, Status};

/// Where the load list lives, relative to the initramfs root.
pub const ORDER_FILE: &str = "etc/phase/modules.order";
/// The kernel release the modules were built for, relative to the root.
pub const RELEASE_FILE: &str = "etc/phase/kernel-release";

/// Why the module list could not be read.
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
}

/// What to load: the module directory and the paths in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kernel_release: String,
    pub dir: PathBuf,
    pub modules: Vec<String>,
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
    Ok(Plan {
        dir: root.join("lib/modules").join(&release),
        kernel_release: release,
        modules,
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
    /// Every module in order: its path, outcome word and load time (shown
    /// with `phase.debug`).
    pub each: Vec<(String, &'static str, Duration)>,
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
}

/// Loads every module of `plan` in order; never stops early.
pub fn load_all(plan: &Plan) -> Report {
    let mut report = Report::default();
    for rel in &plan.modules {
        let start = Instant::now();
        let word = match load_one(&plan.dir.join(rel)) {
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
    report
}

enum Loaded {
    New,
    Already,
    NoDevice,
}

fn load_one(path: &Path) -> Result<Loaded, (&'static str, io::Error)> {
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

/// The `modules` boot step: the plan below `root`, loaded in order; with
/// `debug` one line per module.
pub fn step(root: &Path, debug: bool) -> ((), Status) {
    let plan = match read_plan(root) {
        Ok(plan) => plan,
        Err(e) => return ((), Status::fail(chain(&e))),
    };
    let report = load_all(&plan);
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
    ((), Status::with_problems(report.summary(), problems))
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

    #[test]
    fn plan_reads_release_and_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/phase")).unwrap();
        std::fs::write(dir.path().join(RELEASE_FILE), "6.1.0-28-amd64\n").unwrap();
        std::fs::write(dir.path().join(ORDER_FILE), "a.ko\nb/c.ko\n").unwrap();
        let plan = read_plan(dir.path()).unwrap();
        assert_eq!(plan.kernel_release, "6.1.0-28-amd64");
        assert_eq!(plan.dir, dir.path().join("lib/modules/6.1.0-28-amd64"));
        assert_eq!(plan.modules, vec!["a.ko", "b/c.ko"]);
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
    }

    #[test]
    fn a_missing_module_is_reported_and_the_rest_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            kernel_release: "x".into(),
            dir: dir.path().to_owned(),
            modules: vec!["gone.ko".into(), "also-gone.ko".into()],
        };
        let report = load_all(&plan);
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
