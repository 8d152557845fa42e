//! Stage 1's failure paths, one VM boot each, all from one fleet
//! and one seeded disk (release 1, metadata valid for 30 days):
//!
//! 1. expired metadata while offline: the RTC 40 days ahead, no NIC →
//!    `fetch FAIL ... expired`, the grace policy is named as off, the last
//!    line says what to do, no retry, the rescue shell, `phase-init status`;
//! 2. the grace policy: the same boot with `phase.grace=14d` → a loud
//!    `WARNING grace` line, a `grace warn` step (`UNFRESH`), and kexec;
//! 3. no peer delivers: `phase.cache=disabled`, the only peer refuses every
//!    connection, `phase.retry=3` → 3 bounded attempts (2 s, 4 s apart), the
//!    last line, the rescue shell;
//!    3b. the same with the default `phase.retry=forever`: the retries go on
//!    (a fleet's seed may come up later) until a key pressed on the serial
//!    console during the countdown stops them for the rescue shell;
//! 4. TUF failure, wrong root: the stage-1 initramfs of ANOTHER fleet on this
//!    disk → the cache's root is not trusted (replaced by the baked one), the
//!    cached metadata fails its signature threshold, the last line names the
//!    root, the rescue shell.
//!
//! Bad bytes from every peer: testkit/tests/boot_tampered*.rs (helper
//! bootnet); a refused kexec: boot_kexec.rs.
//!
//! Prerequisites (built by `make test`): `$PHASE_BIN`, `$PHASE_BUILD/kernel/`,
//! `$PHASE_BUILD/x86_64/phase-init`; `mksquashfs`, static `/bin/busybox`.

use std::process::Command;
use std::time::Instant;

use super::boot_fail_common as common;

use common::{boot, expect, status_in_rescue_shell, user_net, Fleet, PEER_URL};

/// `-rtc base=` this many days ahead of now (UTC), from date(1).
fn rtc_ahead(days: u32) -> Vec<String> {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("+{days} days"), "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .expect("run date");
    assert!(out.status.success(), "date failed");
    let base = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    vec!["-rtc".into(), format!("base={base}")]
}

#[test]
fn each_failure_says_why_and_what_to_do_then_the_rescue_shell() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let fleet = Fleet::new(d, "fleet");
    let repo = d.join("repo");
    let tag = format!("{}-{}", std::process::id(), t0.elapsed().as_nanos());
    fleet.publish(&repo, &format!("fail-{tag}"), 1);
    let disk = d.join("disk.img");
    fleet.disk(&repo, &disk);
    let mut times = vec![("build", t0.elapsed())];

    // 1. Expired while offline; the default refuses.
    {
        let mut vm = boot(
            &fleet,
            &fleet.initramfs,
            &disk,
            "",
            rtc_ahead(40),
            "expired",
        );
        expect(&mut vm, "clock    ok");
        expect(&mut vm, "cache    ok");
        expect(&mut vm, "fetch    FAIL");
        expect(&mut vm, "expired at");
        expect(
            &mut vm,
            "grace: metadata expired while offline and phase.grace is not set; refusing",
        );
        let line = expect(&mut vm, "boot: no verified boot set");
        assert!(line.contains("phase.grace=7d"), "{line}");
        status_in_rescue_shell(&mut vm, "the signed metadata expired");
        let log = vm.log();
        assert!(!log.contains("retrying in"), "offline was retried:\n{log}");
        assert!(!log.contains("kexec: starting"), "{log}");
    }
    times.push(("expired", t0.elapsed()));

    // 2. The same with an explicit grace: loud, then kexec.
    {
        let mut vm = boot(
            &fleet,
            &fleet.initramfs,
            &disk,
            "phase.grace=14d",
            rtc_ahead(40),
            "grace",
        );
        expect(&mut vm, "fetch    FAIL");
        expect(
            &mut vm,
            "WARNING grace: metadata expired while offline; phase.grace=14d allows",
        );
        let step = expect(&mut vm, "grace    warn");
        assert!(
            step.contains("UNFRESH boot allowed by phase.grace=14d"),
            "{step}"
        );
        expect(&mut vm, "without a fresh verification");
        expect(&mut vm, "kexec: starting the target kernel");
        expect(&mut vm, "kexec_core: Starting new kernel");
    }
    times.push(("grace", t0.elapsed()));

    // 3. No peer delivers anything: bounded retries, then the rescue shell.
    {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let mut vm = boot(
            &fleet,
            &fleet.initramfs,
            &disk,
            &format!(
                "phase.mode=internet phase.cache=disabled phase.peers={PEER_URL} phase.retry=3"
            ),
            user_net(Some(port)),
            "no-peer",
        );
        expect(&mut vm, "network  ok");
        expect(&mut vm, "fetch    FAIL");
        expect(&mut vm, "fetch: attempt 1 of 3 failed; retrying in 2 s");
        expect(&mut vm, "fetch: attempt 2 of 3 failed; retrying in 4 s");
        expect(&mut vm, "fetch    FAIL");
        let line = expect(&mut vm, "boot: no verified boot set");
        assert!(line.contains("no peer delivered the files"), "{line}");
        status_in_rescue_shell(&mut vm, "no peer delivered the files");
        assert!(!vm.log().contains("attempt 3 of 3 failed; retrying"));
    }
    times.push(("no peer", t0.elapsed()));

    // 3b. The default keeps trying; a key on the console stops it.
    {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let mut vm = boot(
            &fleet,
            &fleet.initramfs,
            &disk,
            &format!("phase.mode=internet phase.cache=disabled phase.peers={PEER_URL}"),
            user_net(Some(port)),
            "no-peer-forever",
        );
        expect(&mut vm, "fetch: attempt 1 failed; retrying in 2 s");
        expect(&mut vm, "fetch: attempt 2 failed; retrying in 4 s");
        // Attempt 3 fails too and waits 8 s: a key ends the wait early.
        let announce = expect(&mut vm, "fetch: attempt 3 failed; retrying in 8 s");
        assert!(announce.contains("press any key"), "{announce}");
        vm.send_line("").expect("press a key on the serial console");
        let line = expect(
            &mut vm,
            "boot: a key was pressed; no more fetch attempts after 3",
        );
        assert!(line.contains("no peer delivered the files"), "{line}");
        expect(&mut vm, "rescue: shell on ");
        let log = vm.log();
        assert!(!log.contains("fetch: attempt 4 failed"), "{log}");
        assert!(!log.contains("kexec: starting"), "{log}");
    }
    times.push(("no peer, forever, key", t0.elapsed()));

    // 4. Another fleet's stage 1 on this stick: its root does not sign this
    //    cache's metadata, and the cache cannot make it trust other keys.
    {
        let other = Fleet::new(d, "other");
        let mut vm = boot(
            &fleet,
            &other.initramfs,
            &disk,
            "",
            Vec::new(),
            "wrong-root",
        );
        expect(&mut vm, "trust: the cache's trusted root is not ours");
        expect(&mut vm, "fetch    FAIL");
        expect(&mut vm, "signature threshold not met");
        let line = expect(&mut vm, "boot: no verified boot set");
        assert!(
            line.contains("not signed by this image's trusted root"),
            "{line}"
        );
        status_in_rescue_shell(&mut vm, "not signed by this image's trusted root");
        assert!(!vm.log().contains("kexec: starting"));
    }
    times.push(("wrong root", t0.elapsed()));

    let mut prev = std::time::Duration::ZERO;
    let parts: Vec<String> = times
        .iter()
        .map(|(n, t)| {
            let s = format!("{n} {:.1} s", (*t - prev).as_secs_f64());
            prev = *t;
            s
        })
        .collect();
    eprintln!("failure paths test: {}", parts.join(", "));
}

/// Missing modules: the initramfs's module order and always-loaded list
/// name a module file the initramfs does not carry (a cpio appended to the
/// fleet's initramfs replaces `/etc/phase/modules.order` and
/// `/etc/phase/modules.always` with the real lists plus one module that is
/// not there). The modules step names it in one line, loads every
/// other module, and the boot goes on to the ready line (most modules are
/// for hardware a machine may not have; a needed one shows up as the
/// later failure).
#[test]
fn a_missing_module_is_named_and_the_boot_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let fleet = Fleet::new(d, "fleet");
    let bytes = std::fs::read(&fleet.initramfs).expect("read initramfs");
    let tool = match bytes.get(..4) {
        Some([0x28, 0xb5, 0x2f, 0xfd]) => "zstd",
        Some([0xfd, 0x37, 0x7a, 0x58]) => "xz",
        Some([0x1f, 0x8b, ..]) => "gzip",
        _ => "cat",
    };
    let sh = |script: &str| {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(d)
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let decompress = if tool == "cat" {
        "cat".to_owned()
    } else {
        format!("{tool} -dc")
    };
    let order = sh(&format!(
        "{decompress} < '{}' | cpio -i --quiet --to-stdout etc/phase/modules.order",
        fleet.initramfs.display()
    ));
    assert!(
        order.lines().count() > 2,
        "no module order in the initramfs: {order:?}"
    );
    let always = sh(&format!(
        "{decompress} < '{}' | cpio -i --quiet --to-stdout etc/phase/modules.always",
        fleet.initramfs.display()
    ));
    let missing = "kernel/drivers/phase-test/not-in-this-initramfs.ko";
    std::fs::create_dir_all(d.join("extra/etc/phase")).expect("mkdir");
    for (file, text) in [("modules.order", &order), ("modules.always", &always)] {
        std::fs::write(
            d.join("extra/etc/phase").join(file),
            format!("{}\n{missing}\n", text.trim_end()),
        )
        .expect("write the module list");
    }
    sh("cd extra && find etc | cpio -o --quiet -H newc -R 0:0 > ../extra.cpio");
    // The kernel reads an appended archive only at a 4-byte boundary.
    let initrd = d.join("initrd-missing-module.img");
    let mut combined = bytes.clone();
    combined.resize(bytes.len().next_multiple_of(4), 0);
    combined.extend(std::fs::read(d.join("extra.cpio")).expect("read extra.cpio"));
    std::fs::write(&initrd, combined).expect("write initrd");
    let mut vm = testkit::qemu::Qemu::direct_kernel(
        &fleet.kernel,
        &initrd,
        "console=ttyS0,115200 phase.mode=local phase.test=poweroff",
    )
    .name("missing-module")
    .timeout(common::BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let step = expect(&mut vm, "modules  warn");
    assert!(step.contains("1 failed"), "{step}");
    let line = expect(&mut vm, &format!("module {missing}: cannot open"));
    assert!(line.contains("warning: "), "{line}");
    expect(&mut vm, "phase-init: ready mode=local");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
}
