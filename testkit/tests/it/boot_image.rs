//! Boot tests of the built image: the image `make image` writes boots under
//! QEMU/OVMF (TCG) through systemd-boot to phase-init in every mode; the
//! hidden menu shows when a key is held (the private boot); the qcow2 boots
//! the same, and a typo'd parameter warns and still boots (one boot: the
//! qcow2 in local mode with two typos).
//!
//! Prerequisites (built by `make test` through TEST_PREREQS):
//! `$PHASE_BUILD/phase-boot-x86_64.img` and `.qcow2`. A missing image fails
//! the test with the command that builds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::fixtures::build_dir;
use testkit::qemu::{Qemu, Vm};

/// Generous for TCG on a loaded 2-core machine; a boot takes 10–30 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn image(ext: &str) -> PathBuf {
    let p = build_dir().join(format!("phase-boot-x86_64.{ext}"));
    assert!(
        p.is_file(),
        "boot test prerequisite missing: {} (build it with `make image` / `make qcow2`, \
         or run `make test`, which builds it first)",
        p.display()
    );
    p
}

/// Boots `disk` in `mode` with `append` and checks the three layers on the
/// serial console (see [`expect_layers`]).
fn boot(disk: PathBuf, mode: &str, append: &str) -> Vm {
    let t = Instant::now();
    let mut vm = start(&disk, mode, append);
    expect_layers(&mut vm, mode);
    eprintln!("{}: ready in {:.1?}", disk.display(), t.elapsed());
    vm
}

fn start(disk: &Path, mode: &str, append: &str) -> Vm {
    Qemu::image(disk)
        .mode(mode)
        .append(format!("phase.test=poweroff {append}"))
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU for {}: {e}", disk.display()))
}

/// The three layers on the serial console: the kernel, the command line of
/// the entry systemd-boot booted (its menu is hidden), phase-init.
fn expect_layers(vm: &mut Vm, mode: &str) {
    let entry = format!("phase.mode={mode}");
    for expect in [
        "Linux version ",
        entry.as_str(),
        "Run /init as init process",
    ] {
        vm.wait_for(expect).unwrap_or_else(|e| panic!("{e}"));
    }
    // OVMF without enrolled keys (setup mode) or with Secure Boot off, so
    // the kernel is not locked down.
    let platform =
        regex::Regex::new(r"platform ok .*secureboot (off|setup), lockdown none").expect("regex");
    vm.wait_for_regex(&platform)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for(&format!("phase-init: ready mode={mode} channel=stable"))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn powers_off(mut vm: Vm) {
    let status = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "QEMU exited with {status}");
}

#[test]
fn image_boots_in_internet_mode() {
    let vm = boot(image("img"), "internet", "");
    // Nobody held a key: the menu stayed hidden.
    let log = vm.log();
    assert!(!log.contains("Phase Boot ("), "the menu showed:\n{log}");
    powers_off(vm);
}

/// The menu is hidden (every other boot here goes straight to the kernel),
/// but a person who holds a key while the stick starts gets it, with every
/// mode, and Enter boots the entry it highlights.
#[test]
fn a_held_key_shows_the_hidden_menu_which_boots_private_mode() {
    let disk = image("img");
    let mut vm = start(&disk, "private", "phase.nowrite=false phase.debug");
    vm.hold_key_until(" ", "Phase Boot (internet)", Duration::from_millis(200))
        .unwrap_or_else(|e| panic!("{e}"));
    for mode in ["local", "private"] {
        vm.wait_for(&format!("Phase Boot ({mode})"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The menu now waits for a choice: it must not have booted on its own.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !vm.log().contains("Linux version "),
        "the menu booted without a choice:\n{}",
        vm.log()
    );
    vm.send_line("").expect("press Enter on the serial console");
    expect_layers(&mut vm, "private");
    // Private mode forces nowrite, whatever the command line says.
    let log = vm.log();
    assert!(
        log.contains("mode=private channel=stable cache=enabled nowrite=true stage=boot debug"),
        "{log}"
    );
    // phase.debug lists every module with its outcome.
    let module_line =
        regex::Regex::new(r"(?m)^\[ *\d+\.\d{3}s\]   module kernel/\S+\.ko: loaded \(\d+ ms\)$")
            .expect("valid regex");
    assert!(
        module_line.is_match(&log),
        "no per-module line in the log:\n{log}"
    );
    vm.wait_for("phase.test=poweroff: powering off")
        .unwrap_or_else(|e| panic!("{e}"));
    powers_off(vm);
}

#[test]
fn the_qcow2_boots_in_local_mode_and_a_typo_in_a_parameter_warns() {
    // The entry says phase.mode=local; the misspelled name and the misspelled
    // value each get a warning naming them, and the boot goes on in local.
    let mut vm = boot(
        image("qcow2"),
        "local",
        "phase.mdoe=private phase.mode=lcoal",
    );
    let log = vm.log();
    for warning in [
        "warning: phase.mdoe: unknown parameter, ignored",
        "warning: phase.mode=lcoal: expected internet|local|private; using local",
    ] {
        assert!(log.contains(warning), "no {warning:?} in the log:\n{log}");
    }
    vm.wait_for("powering off")
        .unwrap_or_else(|e| panic!("{e}"));
    powers_off(vm);
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-qemu-x86.sh")
}

#[test]
fn test_qemu_script_boots_the_image_and_leaves_it_untouched() {
    let img = image("img");
    let before = std::fs::metadata(&img).expect("stat the image");
    let out = Command::new("bash")
        .arg(script())
        .args([
            "--image",
            img.to_str().expect("utf-8 path"),
            "--mode",
            "local",
        ])
        .args(["--append", "phase.test=poweroff", "--timeout", "240"])
        .output()
        .expect("run scripts/test-qemu-x86.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("phase-init: ready mode=local channel=stable"),
        "{text}"
    );
    let after = std::fs::metadata(&img).expect("stat the image");
    assert_eq!(before.len(), after.len());
    assert_eq!(
        before.modified().ok(),
        after.modified().ok(),
        "the boot wrote to {}",
        img.display()
    );
}

#[test]
fn test_qemu_script_fails_with_the_log_tail() {
    let img = image("img");
    let out = Command::new("bash")
        .arg(script())
        .args(["--image", img.to_str().expect("utf-8 path")])
        .args(["--expect", "a line no boot prints", "--timeout", "5"])
        .output()
        .expect("run scripts/test-qemu-x86.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAIL: no \"a line no boot prints\" within 5 s"),
        "{err}"
    );
    assert!(
        err.contains("--- last 40 lines of the serial log ---"),
        "{err}"
    );
}

#[test]
fn a_panic_lands_in_the_rescue_shell_which_respawns() {
    let disk = image("img");
    let mut vm = Qemu::image(&disk)
        .mode("local")
        .append("phase.test=panic")
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU for {}: {e}", disk.display()));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "PANIC in phase-init at ");
    expect(&mut vm, "phase.test=panic: panicking on purpose");
    expect(&mut vm, "dropping to the rescue shell");
    expect(&mut vm, "rescue: shell on /dev/ttyS0");
    expect(&mut vm, "(phase rescue)");
    // Job control: a background job shows up in `jobs`; the shell answers.
    vm.send_line("sleep 300 & jobs; echo answer-$((6*7)) $$")
        .expect("type on the serial console");
    let job = regex::Regex::new(r"\[1\]\+ +Running +sleep 300").expect("valid regex");
    vm.wait_for_regex(&job).unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "answer-42");
    // PID 1 starts a new shell when this one exits.
    vm.send_line("exit").expect("type on the serial console");
    expect(&mut vm, "rescue: shell on /dev/ttyS0 exited (status 0)");
    expect(&mut vm, "rescue: shell on /dev/ttyS0");
    expect(&mut vm, "(phase rescue)");
    vm.send_line("/bin/busybox poweroff -f")
        .expect("type on the serial console");
    powers_off(vm);
}

#[test]
fn direct_kernel_boot_of_the_built_initramfs() {
    // The kernel and initramfs `make image` put on the ESP, booted with
    // -kernel/-initrd (no firmware, no boot loader): the fast path later
    // tests use for initramfs work.
    let build = build_dir();
    let release_file = build.join("kernel/current");
    let release = std::fs::read_to_string(&release_file)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make kernel`)", release_file.display()));
    let release = release.trim();
    let kernel = build.join(format!("kernel/{release}/boot/vmlinuz-{release}"));
    let initrd = build.join("x86_64/initramfs.img");
    for p in [&kernel, &initrd] {
        assert!(p.is_file(), "{} is missing (run `make image`)", p.display());
    }
    let mut vm = Qemu::direct_kernel(
        &kernel,
        &initrd,
        "console=ttyS0,115200 phase.mode=local phase.channel=testing phase.test=poweroff",
    )
    .timeout(BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_for(&format!("Linux version {release}"))
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("loader   ok").unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("phase-init: ready mode=local channel=testing")
        .unwrap_or_else(|e| panic!("{e}"));
    powers_off(vm);
}
