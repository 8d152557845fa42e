//! The record of the last release that booted, on the host: kept after a
//! verified fetch from a cache laid out as `phase image --seed-repo` does,
//! read back and verified again against the trusted root; every way the
//! unsigned cache partition can lie about it is refused.

use chrono::Utc;
use phase_init::bootfetch;
use phase_init::fallback::{self, FallbackError, LastBoot, LAST_BOOT};
use phase_init::kexec::KexecError;
use phase_init::trust;

use super::bootfetch::{config, places, world, World};

/// A verified offline fetch of the world's release, kept as the record.
fn kept(w: &World) -> (bootfetch::Fetched, LastBoot) {
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    let f = bootfetch::run(&config(), &baked, &places(w, true), now).expect("fetch");
    let r = fallback::record(&f.artifacts, &f.tuf, "testing").expect("a record");
    fallback::write(&w.cache, &r).expect("write the record");
    (f, r)
}

fn root(w: &World) -> Vec<u8> {
    std::fs::read(w.root.join(trust::ROOT_FILE)).expect("root")
}

fn rewrite(w: &World, r: &LastBoot) {
    fallback::write(&w.cache, r).expect("rewrite");
}

fn err(w: &World) -> FallbackError {
    match fallback::load(&w.cache, &root(w), "testing") {
        Ok(_) => panic!("the record was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_kept_release_reads_back_with_its_objects_hashed_again() {
    let w = world();
    let (f, r) = kept(&w);
    assert!(w.cache.join(LAST_BOOT).is_file());
    assert_eq!(r.tuf.targets, f.tuf.targets);
    assert_eq!(r.cmdline, "console=ttyS0 quiet");
    let (back, [kernel, initramfs, rootfs]) =
        fallback::load(&w.cache, &root(&w), "testing").expect("load");
    assert_eq!(back, r);
    assert_eq!(kernel.sha256, f.artifacts.kernel.sha256);
    assert_eq!(initramfs.sha256, f.artifacts.initramfs.sha256);
    assert_eq!(rootfs.length, 70_000);
    assert!(kernel.path.starts_with(w.cache.join("cas")), "{kernel:?}");

    // The fallback step proper: the refused release had another kernel.
    let mut refused = f.artifacts.clone();
    refused.kernel.sha256 = "0".repeat(64);
    let why = KexecError::Unsigned {
        kernel: "6.1.0-28-amd64".into(),
        platform: "secureboot on, lockdown integrity".into(),
    };
    let cache = places(&w, true).cache;
    let (older, status) = fallback::step(cache.as_ref(), &refused, Some(&f.tuf), &why, &config());
    let older = older.unwrap_or_else(|| panic!("{status:?}"));
    assert!(
        status.detail.starts_with(&format!(
            "release {} refused (its kernel sha256:000000000000..); falling back to release {}, the older signed target in the cache",
            fallback::versions(&f.tuf),
            fallback::versions(&r.tuf)
        )),
        "{status:?}"
    );
    assert_eq!(older.artifacts.kernel.sha256, f.artifacts.kernel.sha256);
    assert_eq!(older.refused.kernel, "0".repeat(64));
    assert!(older.refused.refused.contains("(ENODATA)"), "{older:?}");

    // The same kernel again: nothing to gain.
    let (none, status) =
        fallback::step(cache.as_ref(), &f.artifacts, Some(&f.tuf), &why, &config());
    assert!(none.is_none());
    assert!(
        status.problems[0].contains("the same kernel that was refused"),
        "{status:?}"
    );
}

#[test]
fn no_record_or_no_cache_is_said_in_words() {
    let w = world();
    assert!(matches!(err(&w), FallbackError::NoRecord));
    let (f, _) = kept(&w);
    let why = KexecError::NotPermitted;
    let (none, status) = fallback::step(None, &f.artifacts, Some(&f.tuf), &why, &config());
    assert!(none.is_none());
    assert_eq!(
        status.problems,
        ["no fallback: no cache partition, so no earlier release is kept; nothing else is started"]
    );
}

#[test]
fn a_record_that_lies_about_its_release_is_refused() {
    let w = world();
    let (_, r) = kept(&w);
    let other = "ab".repeat(32);

    // Another kernel digest than the signed one.
    let mut bad = r.clone();
    bad.artifacts[0].sha256 = other.clone();
    rewrite(&w, &bad);
    assert!(
        matches!(err(&w), FallbackError::Mismatch(_)),
        "{}",
        phase_init::step::chain(&err(&w))
    );

    // Another command line than the signed one.
    let mut bad = r.clone();
    bad.cmdline = "console=ttyS0 init=/bin/sh".into();
    rewrite(&w, &bad);
    assert!(matches!(err(&w), FallbackError::Mismatch(_)));

    // Other versions than the signed metadata's.
    let mut bad = r.clone();
    bad.tuf.targets = Some(99);
    rewrite(&w, &bad);
    assert!(matches!(err(&w), FallbackError::Mismatch(_)));

    // A changed byte in the signed targets metadata.
    let mut bad = r.clone();
    bad.targets = bad.targets.replacen("testing", "tasting", 1);
    rewrite(&w, &bad);
    assert!(matches!(err(&w), FallbackError::Verify(_)));

    // Another channel.
    rewrite(&w, &r);
    let e = fallback::load(&w.cache, &root(&w), "stable").expect_err("another channel");
    assert!(matches!(e, FallbackError::Mismatch(_)), "{e:?}");

    // Another fleet's root.
    let other_world = world();
    let e = fallback::load(&w.cache, &root(&other_world), "testing").expect_err("foreign root");
    assert!(matches!(e, FallbackError::Verify(_)), "{e:?}");

    // The honest record is accepted again.
    fallback::load(&w.cache, &root(&w), "testing").expect("the honest record");
}

#[test]
fn a_changed_object_in_the_cache_is_refused() {
    let w = world();
    let (f, _) = kept(&w);
    let path = &f.artifacts.rootfs.path;
    let mut bytes = std::fs::read(path).expect("read rootfs");
    bytes[100] ^= 1;
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).expect("write rootfs");
    let e = err(&w);
    assert!(matches!(e, FallbackError::Object(_)), "{e:?}");
    assert!(
        phase_init::step::chain(&e).contains("does not match its signed digest"),
        "{}",
        phase_init::step::chain(&e)
    );
}
