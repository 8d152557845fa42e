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
        BTreeSet::from(["bin", "dev", "etc", "init", "lib", "mnt", "proc", "run", "sys", "tmp"]),
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
}

#[test]
fn dynamic_init_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::stage1_spec(dir.path());
    spec.init = "/bin/ls".into();
    let err = Stage1::build(&spec).unwrap_err().to_string();
    assert!(
        err.contains("/bin/ls") && err.contains("dynamically linked"),
        "{err}"
    );
}

#[test]
fn unknown_module_in_the_list_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::stage1_spec(dir.path());
    let list = dir.path().join("modules.list");
    std::fs::write(&list, "[by-device]\nvirtio_net\nvirtio_nett\n").unwrap();
    spec.module_list = list;
    let err = Stage1::build(&spec).unwrap_err();
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("virtio_nett"), "{chain}");
}
