//! The stage-1 initramfs holds exactly the contract with phase-init, lists
//! with `cpio -t`, and orders modules dependencies-first.
use super::common;

use std::collections::BTreeSet;

use image::stage1::Stage1;

fn check_contract(initramfs: &std::path::Path, kver: &str) -> Vec<String> {
    let (verbose, names) = common::cpio_list(initramfs);
    let set: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    for want in [
        "init",
        "etc/phase/root.json",
        "etc/phase/modules.order",
        "etc/phase/kernel-release",
        "etc/passwd",
        "etc/group",
        "bin/busybox",
        "bin/sh",
        "dev",
        "dev/console",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
    ] {
        assert!(
            set.contains(want),
            "{want} missing from {}: {names:?}",
            initramfs.display()
        );
    }
    // Nothing else at the top level.
    let top: BTreeSet<&str> = names.iter().map(|n| n.split('/').next().unwrap()).collect();
    assert_eq!(
        top,
        // lib64: the dynamic loader of /init (phase-init is glibc-dynamic).
        BTreeSet::from([
            "bin", "dev", "etc", "init", "lib", "lib64", "mnt", "proc", "run", "sys", "tmp"
        ]),
        "unexpected top-level entries"
    );
    let line = |name: &str| {
        verbose
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("no `cpio -tv` line for {name}:\n{verbose}"))
            .to_owned()
    };
    assert!(line("init").starts_with("-rwxr-xr-x"), "{}", line("init"));
    let console = line("dev/console");
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(
        console.contains("5,") && console.contains(" 1 "),
        "console is not 5,1: {console}"
    );
    assert!(
        line("bin/sh").contains("bin/sh -> busybox"),
        "{}",
        line("bin/sh")
    );
    // Fixed owners.
    for l in verbose.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((cols[2], cols[3]), ("root", "root"), "owner not 0:0: {l}");
    }
    // Every module listed in modules.order is in the archive under the release.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("i.cpio");
    common::run_ok(
        std::process::Command::new("zstd")
            .args(["-q", "-d", "-o"])
            .arg(&raw)
            .arg(initramfs),
    );
    common::run_ok(
        std::process::Command::new("sh")
            .current_dir(dir.path())
            .arg("-c")
            .arg("cpio -i -d --quiet etc/phase/modules.order etc/phase/kernel-release < i.cpio"),
    );
    let order = std::fs::read_to_string(dir.path().join("etc/phase/modules.order")).unwrap();
    let release = std::fs::read_to_string(dir.path().join("etc/phase/kernel-release")).unwrap();
    assert_eq!(release, format!("{kver}\n"));
    let order: Vec<String> = order.lines().map(str::to_owned).collect();
    assert!(!order.is_empty());
    for m in &order {
        assert!(m.ends_with(".ko"), "{m}");
        let path = format!("lib/modules/{kver}/{m}");
        assert!(
            set.contains(path.as_str()),
            "{path} listed in modules.order but not archived"
        );
    }
    let archived = names.iter().filter(|n| n.ends_with(".ko")).count();
    assert_eq!(
        archived,
        order.len(),
        "archived modules and modules.order differ"
    );
    order
}

/// Unpack the initramfs and run its `/init` with `args`, chrooted into it,
/// so only what the archive holds is there to load. Panics unless it exits 0.
fn run_init_chrooted(initramfs: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    common::run_ok(std::process::Command::new("sh").arg("-c").arg(format!(
        "zstd -q -d -c '{}' | (cd '{}' && cpio -i -d --quiet)",
        initramfs.display(),
        dir.path().display()
    )));
    let out = std::process::Command::new("chroot")
        .arg(dir.path())
        .arg("/init")
        .args(args)
        .output()
        .expect("chroot runs (the tests run as root)");
    assert!(
        out.status.success(),
        "/init {args:?} did not run from {}: {}",
        initramfs.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn stage1_from_the_debian_kernel_matches_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::stage1_spec(dir.path());
    let s1 = Stage1::build(&spec).expect("stage-1 builds");
    let out = dir.path().join("initramfs.img");
    std::fs::write(&out, s1.to_bytes().unwrap()).unwrap();
    let order = check_contract(&out, &spec.kernel.release);
    assert_eq!(order, s1.modules);
    // Dependencies first: every module's depends= appears earlier (or is built in).
    let index = image::modules::ModuleIndex::scan(&spec.kernel.modules_dir).unwrap();
    let pos = |name: &str| {
        order.iter().position(|m| {
            let stem = m.rsplit('/').next().unwrap().trim_end_matches(".ko");
            image::modules::canonical_name(stem) == image::modules::canonical_name(name)
        })
    };
    for (i, m) in order.iter().enumerate() {
        let bytes = std::fs::read(spec.kernel.modules_dir.join(m)).unwrap();
        let info = image::elf::modinfo(&bytes).unwrap();
        for dep in info.depends() {
            match pos(&dep) {
                Some(j) => assert!(j < i, "{m} is loaded before its dependency {dep}"),
                None => assert!(
                    index.is_builtin(&dep),
                    "{m} needs {dep}, neither listed nor built in"
                ),
            }
        }
    }
    // The list's drivers made it in.
    for want in [
        "virtio_net.ko",
        "virtio_blk.ko",
        "e1000.ko",
        "ext4.ko",
        "usb-storage.ko",
        "nvme.ko",
        "ahci.ko",
        "squashfs.ko",
        "overlay.ko",
        "vfat.ko",
    ] {
        assert!(
            order.iter().any(|m| m.ends_with(&format!("/{want}"))),
            "{want} missing: {order:?}"
        );
    }
}

#[test]
fn a_tor_network_file_is_baked_only_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::stage1_spec(dir.path());
    let out = dir.path().join("initramfs.img");
    std::fs::write(&out, Stage1::build(&spec).unwrap().to_bytes().unwrap()).unwrap();
    let (_, names) = common::cpio_list(&out);
    assert!(
        !names.iter().any(|n| n == "etc/phase/tor-network.toml"),
        "no --tor-network, yet a network file: {names:?}"
    );
    let net = b"[tor_network]\nfallback_caches = []\n".to_vec();
    spec.tor_network = Some(net.clone());
    std::fs::write(&out, Stage1::build(&spec).unwrap().to_bytes().unwrap()).unwrap();
    let raw = dir.path().join("initramfs.cpio");
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -q -d -f -o '{raw}' '{img}' && cd '{u}' && cpio -i -d --quiet etc/phase/tor-network.toml < '{raw}'",
            raw = raw.display(),
            img = out.display(),
            u = unpacked.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "unpack the initramfs");
    assert_eq!(
        std::fs::read(unpacked.join("etc/phase/tor-network.toml")).unwrap(),
        net,
        "the baked file differs from the given one"
    );
}

#[test]
fn make_built_initramfs_lists_with_cpio() {
    let initramfs = common::built("x86_64/initramfs.img", "initramfs");
    let kernel = common::kernel();
    check_contract(&initramfs, &kernel.release);
    // The real phase-init starts from the archive alone (as a command, not
    // PID 1, it prints its usage).
    let out = run_init_chrooted(&initramfs, &["--help"]);
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(usage.starts_with("usage: phase-init status"), "{usage}");
}

/// A dynamically linked /init runs from the archive alone: the loader and
/// every library it needs are in it. `/bin/ls` (which needs libselinux,
/// which needs libpcre2: a two-level closure) stands in for phase-init, and
/// runs chrooted into the unpacked archive.
#[test]
fn a_dynamic_init_runs_from_the_archive_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::stage1_spec(dir.path());
    spec.init = "/bin/ls".into();
    let s1 = Stage1::build(&spec).expect("stage-1 with a dynamic init builds");
    assert_eq!(
        s1.libraries[0], "/lib64/ld-linux-x86-64.so.2",
        "{:?}",
        s1.libraries
    );
    for lib in ["libc.so.6", "libselinux.so.1", "libpcre2-8.so.0"] {
        let path = format!("/lib/x86_64-linux-gnu/{lib}");
        assert!(
            s1.libraries.contains(&path),
            "{path} not carried: {:?}",
            s1.libraries
        );
    }
    let img = dir.path().join("initramfs.img");
    std::fs::write(&img, s1.to_bytes().unwrap()).unwrap();
    let out = run_init_chrooted(&img, &["/etc/phase"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l == "root.json"), "{listing}");
}

/// The error of a build that must fail, with its first cause.
fn build_error(spec: &image::stage1::Stage1Spec) -> String {
    let err = Stage1::build(spec).unwrap_err();
    let cause = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    format!("{err}: {cause}")
}

#[test]
fn an_init_needing_a_missing_library_is_refused_naming_both() {
    // /bin/ls with one DT_NEEDED name changed in its string table (same
    // length, so the ELF stays valid).
    let dir = tempfile::tempdir().unwrap();
    let mut ls = std::fs::read("/bin/ls").unwrap();
    let at = ls
        .windows(15)
        .position(|w| w == b"libselinux.so.1")
        .expect("/bin/ls needs libselinux.so.1");
    ls[at..at + 15].copy_from_slice(b"libphasemiss.so");
    let init = dir.path().join("init");
    std::fs::write(&init, ls).unwrap();
    let mut spec = common::stage1_spec(dir.path());
    spec.init = init.clone();
    let chain = build_error(&spec);
    assert!(
        chain.contains(&init.display().to_string())
            && chain.contains("needs libphasemiss.so, which is in none of /lib/x86_64-linux-gnu"),
        "{chain}"
    );
}

#[test]
fn unknown_module_in_the_list_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::stage1_spec(dir.path());
    let list = dir.path().join("modules.list");
    std::fs::write(&list, "[by-device]\nvirtio_net\nvirtio_nett\n").unwrap();
    spec.module_list = list;
    let chain = build_error(&spec);
    assert!(chain.contains("virtio_nett"), "{chain}");
}
