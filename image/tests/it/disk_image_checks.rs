//! The disk image passes the reference checkers: `sgdisk -v` on the GPT,
//! `fsck.vfat -n` on the ESP and `e2fsck -fn` on the cache partition, each
//! extracted at its offset; the ESP carries the boot menu we expect.
use super::common;

use std::path::Path;
use std::process::Command;

use common::run_ok;

struct Part {
    offset: u64,
    len: u64,
    name: String,
}

fn partitions(img: &Path) -> Vec<Part> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(img)
        .expect("GPT readable");
    let lb = 512;
    disk.partitions()
        .values()
        .filter(|p| p.is_used())
        .map(|p| Part {
            offset: p.first_lba * lb,
            len: (p.last_lba + 1 - p.first_lba) * lb,
            name: p.name.clone(),
        })
        .collect()
}

fn mtype(fat: &Path, path: &str) -> String {
    run_ok(
        Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(fat)
            .arg(format!("::/{path}")),
    )
}

/// The loaders an ESP must carry, byte for byte: (ESP path, source file).
type Loaders<'a> = &'a [(&'a str, std::path::PathBuf)];

/// Every check on one image; returns the ESP and cache as separate files.
fn check_image(
    img: &Path,
    default_mode: &str,
    loaders: Loaders,
    work: &Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = run_ok(Command::new("sgdisk").arg("-v").arg(img));
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
    let parts = partitions(img);
    assert_eq!(parts.len(), 2, "two partitions");
    assert_eq!(parts[0].name, "PHASE-ESP");
    assert_eq!(parts[0].offset, 1 << 20, "ESP at 1 MiB");
    assert_eq!(parts[1].name, "PHASE-CACHE");
    assert_eq!(
        parts[1].offset,
        parts[0].offset + parts[0].len,
        "cache right after the ESP"
    );
    let typecodes = run_ok(Command::new("sgdisk").arg("-p").arg(img));
    assert!(
        typecodes.contains("EF00") && typecodes.contains("8300"),
        "{typecodes}"
    );

    let esp = work.join("esp.fat");
    common::extract(img, parts[0].offset, parts[0].len, &esp);
    let fsck = run_ok(Command::new("fsck.vfat").arg("-n").arg(&esp));
    assert!(
        !fsck.contains("Leaving filesystem unchanged"),
        "fsck.vfat wanted changes: {fsck}"
    );
    let cache = work.join("cache.ext4");
    common::extract(img, parts[1].offset, parts[1].len, &cache);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&cache));
    let sb = run_ok(Command::new("dumpe2fs").arg("-h").arg(&cache));
    assert!(sb.contains("Filesystem volume name:   PHASE-CACHE"), "{sb}");

    // The boot menu.
    let loader = mtype(&esp, "loader/loader.conf");
    assert!(
        loader.contains(&format!("default phase-{default_mode}.conf")),
        "{loader}"
    );
    // Hidden: the default entry boots at once, a held key shows the menu.
    assert!(
        loader.lines().any(|l| l.trim() == "timeout menu-hidden"),
        "{loader}"
    );
    for mode in image::esp::MODES {
        let entry = mtype(&esp, &format!("loader/entries/phase-{mode}.conf"));
        assert!(
            entry.contains(&format!("title      Phase Boot ({mode})")),
            "{entry}"
        );
        let options = entry
            .lines()
            .find(|l| l.starts_with("options"))
            .expect("options line");
        assert!(options.contains(&format!("phase.mode={mode}")), "{options}");
        let last_console = options
            .split_whitespace()
            .rfind(|w| w.starts_with("console="));
        assert_eq!(
            last_console,
            Some("console=ttyS0,115200"),
            "serial must be /dev/console: {options}"
        );
        assert!(entry.contains("linux      /phase/vmlinuz"), "{entry}");
        assert!(entry.contains("initrd     /phase/initramfs.img"), "{entry}");
    }
    let grub = mtype(&esp, "boot/grub/grub.cfg");
    assert!(
        grub.contains("menuentry \"Phase Boot (private)\""),
        "{grub}"
    );
    assert!(
        !grub.contains('@'),
        "unrendered placeholder in grub.cfg: {grub}"
    );
    // The loaders are where firmware and shim look, byte for byte.
    let listing = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-/", "-i"])
            .arg(&esp)
            .arg("::/"),
    );
    for want in ["::/phase/vmlinuz", "::/phase/initramfs.img"]
        .into_iter()
        .map(str::to_owned)
        .chain(loaders.iter().map(|(p, _)| format!("::/{p}")))
    {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing: {listing}"
        );
    }
    let efi_files = listing
        .lines()
        .filter(|l| l.starts_with("::/EFI/") && !l.ends_with('/'))
        .count();
    assert_eq!(efi_files, loaders.len(), "unexpected EFI files: {listing}");
    for (i, (path, source)) in loaders.iter().enumerate() {
        let copied = work.join(format!("loader-{i}.efi"));
        run_ok(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&esp)
                .arg(format!("::/{path}"))
                .arg(&copied),
        );
        assert!(
            std::fs::read(&copied).unwrap() == std::fs::read(source).unwrap(),
            "{path} is not {}",
            source.display()
        );
    }
    (esp, cache)
}

#[test]
fn make_built_image_passes_sgdisk_fsck_vfat_and_e2fsck() {
    let img = common::built("phase-boot-x86_64.img", "image");
    let work = tempfile::tempdir().unwrap();
    let mode = std::env::var("DEFAULT_MODE").unwrap_or_else(|_| "internet".into());
    // The default image is the Secure Boot chain: Microsoft-signed shim as
    // the removable-media loader, Debian-signed systemd-boot beside it.
    let set = image::signed::current(&common::build_dir()).unwrap_or_else(|e| panic!("{e}"));
    let loaders = [
        (image::esp::LOADER_PATH, set.shim.clone()),
        (image::esp::SHIM_NEXT_PATH, set.systemd_boot.clone()),
        (image::esp::MOK_MANAGER_PATH, set.mok_manager.clone()),
    ];
    let (esp, _) = check_image(&img, &mode, &loaders, work.path());
    for (file, issuer) in [
        (&set.shim, "Microsoft"),
        (&set.systemd_boot, "Debian Secure Boot CA"),
    ] {
        let issuers = image::signed::signature_issuers(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !issuers.is_empty() && issuers.iter().all(|i| i.contains(issuer)),
            "{}: issuers {issuers:?}, expected {issuer}",
            file.display()
        );
    }
    // The ESP carries the kernel make prepared and the make-built initramfs.
    let kernel = common::kernel();
    let initrd = work.path().join("initrd");
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg("::/phase/initramfs.img")
            .arg(&initrd),
    );
    assert_eq!(
        std::fs::read(&initrd).unwrap(),
        std::fs::read(common::built("x86_64/initramfs.img", "initramfs")).unwrap()
    );
    let vmlinuz = work.path().join("vmlinuz");
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg("::/phase/vmlinuz")
            .arg(&vmlinuz),
    );
    assert_eq!(
        std::fs::read(&vmlinuz).unwrap(),
        std::fs::read(&kernel.vmlinuz).unwrap()
    );
}

#[test]
fn cache_partition_is_populated_from_a_directory() {
    let work = tempfile::tempdir().unwrap();
    let kernel = common::kernel();
    let esp = image::esp::assemble(&image::esp::EspSpec {
        templates: common::repo().join("esp"),
        loaders: image::esp::Loaders::Plain {
            systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
        },
        kernel: kernel.vmlinuz.clone(),
        kernel_release: kernel.release.clone(),
        initramfs: vec![0x28, 0xb5, 0x2f, 0xfd],
        default_mode: "private".into(),
        cmdline_extra: "phase.test=poweroff".into(),
    })
    .unwrap();
    let cache_src = work.path().join("cache-src");
    let obj = cache_src.join("cas/sha256/ab");
    std::fs::create_dir_all(&obj).unwrap();
    std::fs::write(obj.join("ab".repeat(32)), vec![42u8; 3 << 20]).unwrap();
    std::fs::create_dir_all(cache_src.join("tuf")).unwrap();
    std::fs::write(cache_src.join("tuf/timestamp.json"), b"{}").unwrap();
    let img = work.path().join("disk.img");
    let spec = image::DiskSpec {
        size: 200 << 20,
        esp_size: 64 << 20,
        seed: [1; 32],
        mtime: 1_577_836_800,
    };
    let layout = image::disk::write_image(&img, &spec, &esp, Some(&cache_src)).unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 200 << 20);
    let plain = [(
        image::esp::LOADER_PATH,
        std::path::PathBuf::from("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
    )];
    let (esp_fat, cache) = check_image(&img, "private", &plain, work.path());
    let entry = mtype(&esp_fat, "loader/entries/phase-local.conf");
    assert!(
        entry.contains("phase.mode=local phase.test=poweroff\n"),
        "extra cmdline not appended: {entry}"
    );
    assert_eq!(std::fs::metadata(&cache).unwrap().len(), layout.cache.len());
    let ls = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("ls -l /cas/sha256/ab")
            .arg(&cache),
    );
    assert!(
        ls.contains(&"ab".repeat(32)) && ls.contains("3145728"),
        "{ls}"
    );
    let dumped = work.path().join("obj");
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!(
                "dump /cas/sha256/ab/{} {}",
                "ab".repeat(32),
                dumped.display()
            ))
            .arg(&cache),
    );
    assert_eq!(std::fs::read(dumped).unwrap(), vec![42u8; 3 << 20]);
}

#[test]
fn esp_stage_alone_is_a_clean_fat32_volume() {
    let work = tempfile::tempdir().unwrap();
    let kernel = common::kernel();
    let esp = image::esp::assemble(&image::esp::EspSpec {
        templates: common::repo().join("esp"),
        loaders: image::esp::Loaders::Plain {
            systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
        },
        kernel: kernel.vmlinuz.clone(),
        kernel_release: kernel.release.clone(),
        initramfs: vec![1, 2, 3],
        default_mode: "internet".into(),
        cmdline_extra: String::new(),
    })
    .unwrap();
    let out = work.path().join("esp.img");
    let spec = image::DiskSpec {
        size: 0,
        esp_size: 64 << 20,
        seed: [2; 32],
        mtime: 1_577_836_800,
    };
    image::disk::write_esp_image(&out, &spec, &esp).unwrap();
    let fsck = run_ok(Command::new("fsck.vfat").arg("-n").arg(&out));
    assert!(fsck.contains("files"), "{fsck}");
    // The FAT32 boot sector names its type at offset 0x52.
    let boot = std::fs::read(&out).unwrap();
    assert_eq!(&boot[0x52..0x5a], b"FAT32   ");
    assert_eq!(&boot[510..512], [0x55, 0xaa]);
}

#[test]
fn too_small_an_image_is_refused_clearly() {
    let work = tempfile::tempdir().unwrap();
    let spec = image::DiskSpec {
        size: 32 << 20,
        esp_size: 64 << 20,
        seed: [0; 32],
        mtime: 0,
    };
    let err =
        image::disk::write_image(&work.path().join("x.img"), &spec, &Default::default(), None)
            .unwrap_err()
            .to_string();
    assert!(err.contains("too small"), "{err}");
}
