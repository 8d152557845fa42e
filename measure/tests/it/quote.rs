//! The AK and the quote against swtpm, with tpm2-tools as the reference:
//! `tpm2_checkquote` verifies a quote this crate made, and this crate's
//! verifier accepts a quote `tpm2_quote` made.

use std::path::Path;
use std::process::{Command, Stdio};

use measure::{replay, verify_quote, AkPublic, Event, Kind, QuoteError, PHASE_PCR, QUOTE_PCRS};

use crate::swtpm::Swtpm;

fn tool(swtpm: &Swtpm, name: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(name)
        .args(["-T", &swtpm.tcti()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{name} runs (Debian package tpm2-tools): {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tpm2_checkquote` of a quote this crate made, from the files it reads.
fn checkquote(dir: &Path, ak: &[u8], attest: &[u8], sig: &[u8], pcrs: &[u8], nonce: &str) -> bool {
    for (name, bytes) in [
        ("ak.pub", ak),
        ("msg", attest),
        ("sig", sig),
        ("pcrs", pcrs),
    ] {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let p = |n: &str| dir.join(n).display().to_string();
    Command::new("tpm2_checkquote")
        .args(["-u", &p("ak.pub"), "-m", &p("msg"), "-s", &p("sig")])
        .args(["-f", &p("pcrs"), "-l", "sha256:4,7,9,23", "-g", "sha256"])
        .args(["-q", nonce])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tpm2_checkquote runs (Debian package tpm2-tools)")
        .success()
}

#[test]
fn the_ak_is_the_same_every_time_and_tpm2_checkquote_accepts_its_quote() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let events = [
        Event::new(Kind::Mode, "local"),
        Event::new(Kind::Channel, "stable"),
    ];
    let nonce = *b"0123456789abcdef0123456789abcdef";
    let (q1, q2) = {
        let mut tpm = swtpm.tpm();
        for e in &events {
            tpm.pcr_extend(e.pcr, &e.digest()).expect("extend");
        }
        let q1 = tpm.attest(&nonce).expect("quote");
        let q2 = tpm.attest(b"another nonce").expect("second quote");
        (q1, q2)
    };
    assert_eq!(q1.ak, q2.ak, "the same template gives the same AK");
    assert_ne!(q1.attest, q2.attest);
    let a = verify_quote(&q1.ak, &q1.attest, &q1.signature, &nonce, &q1.pcrs).expect("verifies");
    assert_eq!(a.extra_data, nonce);
    assert_eq!(a.pcrs, QUOTE_PCRS.to_vec());
    assert_eq!(q1.pcrs[3], (PHASE_PCR, replay(&events, PHASE_PCR)));
    let e = verify_quote(&q2.ak, &q2.attest, &q2.signature, &nonce, &q2.pcrs)
        .expect_err("q2 is over another nonce");
    assert!(matches!(e, QuoteError::Nonce { .. }), "{e}");

    // The AK was flushed after each quote: no transient object is left.
    let out = tool(&swtpm, "tpm2_getcap", &["handles-transient"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("0x80"), "transient handles left: {text}");

    // The reference verifier agrees, and refuses another nonce.
    let values: Vec<u8> = q1.pcrs.iter().flat_map(|(_, v)| v.to_vec()).collect();
    let ak = q1.ak.to_tpm2b();
    assert!(
        checkquote(
            dir.path(),
            &ak,
            &q1.attest,
            &q1.signature,
            &values,
            &hex::encode(nonce)
        ),
        "tpm2_checkquote accepts the quote"
    );
    assert!(
        !checkquote(
            dir.path(),
            &ak,
            &q1.attest,
            &q1.signature,
            &values,
            "00112233445566778899"
        ),
        "tpm2_checkquote refuses it with another nonce"
    );
}

#[test]
fn a_quote_made_by_tpm2_quote_verifies_with_measure() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let ours = {
        let mut tpm = swtpm.tpm();
        let (handle, ak) = tpm.create_ak().expect("create the AK");
        tpm.flush(handle).expect("flush");
        ak
    };
    tool(
        &swtpm,
        "tpm2_createprimary",
        &[
            "-C",
            "e",
            "-g",
            "sha256",
            "-G",
            "ecc256:ecdsa-sha256:null",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "-c",
            &p("ak.ctx"),
        ],
    );
    tool(
        &swtpm,
        "tpm2_readpublic",
        &["-c", &p("ak.ctx"), "-o", &p("ak.pub")],
    );
    let nonce = "a1b2c3d4e5f60718";
    tool(
        &swtpm,
        "tpm2_quote",
        &[
            "-c",
            &p("ak.ctx"),
            "-l",
            "sha256:4,7,9,23",
            "-q",
            nonce,
            "-m",
            &p("msg"),
            "-s",
            &p("sig"),
            "-o",
            &p("pcrs"),
            "-F",
            "values",
            "-g",
            "sha256",
        ],
    );
    let read = |n: &str| std::fs::read(dir.path().join(n)).expect("tool output");
    let ak = AkPublic::parse(&read("ak.pub")).expect("tpm2-tools' AK is an AK");
    assert_eq!(
        ak, ours,
        "tpm2_createprimary with the AK template makes our AK"
    );
    let values = read("pcrs");
    assert_eq!(values.len(), 4 * 32);
    let pcrs: Vec<(u32, [u8; 32])> = QUOTE_PCRS
        .iter()
        .zip(values.chunks(32))
        .map(|(&p, v)| {
            let mut a = [0u8; 32];
            a.copy_from_slice(v);
            (p, a)
        })
        .collect();
    let nonce = hex::decode(nonce).expect("hex");
    let a = verify_quote(&ak, &read("msg"), &read("sig"), &nonce, &pcrs).expect("verifies");
    assert_eq!(a.pcrs, QUOTE_PCRS.to_vec());
    let e = verify_quote(&ak, &read("msg"), &read("sig"), b"other nonce", &pcrs)
        .expect_err("other nonce");
    assert!(matches!(e, QuoteError::Nonce { .. }), "{e}");
}
