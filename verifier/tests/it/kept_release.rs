//! A release kept from an earlier refresh (its snapshot and targets, as
//! phase-init keeps the last release it booted) is verified again against
//! the root trusted now: accepted while that root's keys signed it, refused
//! when a byte changed, when the snapshot does not list it, or when its
//! signer was rotated out since.
use super::support;
use support::*;
use verifier::{verify_kept_release, Error, Rule};

/// Release 1 with one target, then release 2 published over it; returns
/// the repository and release 1's snapshot and targets bytes.
fn two_releases() -> (Repo, Vec<u8>, Vec<u8>) {
    let mut repo = Repo::new();
    repo.add_target("stable/x86_64/kernel", b"kernel one");
    repo.commit(); // v2
    let snap = repo.served("2.snapshot.json");
    let targets = repo.served("2.targets.json");
    repo.add_target("stable/x86_64/kernel", b"kernel two");
    repo.commit(); // v3
    (repo, snap, targets)
}

#[test]
fn an_older_release_verifies_against_the_current_root() {
    let (repo, snap, targets) = two_releases();
    let kept = verify_kept_release(&repo.root_bytes(), &snap, &targets).expect("verifies");
    assert_eq!(kept.targets.version, 2);
    assert_eq!(kept.snapshot.version, 2);
    let t = kept.target("stable/x86_64/kernel").expect("listed");
    assert_eq!(t.length, b"kernel one".len() as u64);
    assert_eq!(
        t.sha256(),
        Some(verifier::digest::sha256_hex(b"kernel one").as_str())
    );
    assert!(kept.target("stable/x86_64/rootfs").is_none());
}

#[test]
fn a_changed_byte_or_a_mismatched_pair_is_refused() {
    let (repo, snap, targets) = two_releases();
    // One byte of the targets file: the snapshot's hash no longer matches.
    let mut bad = targets.clone();
    let at = bad.iter().position(|&b| b == b'1').expect("a digit");
    bad[at] = b'2';
    let e = verify_kept_release(&repo.root_bytes(), &snap, &bad).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Mismatch { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
    // Release 3's snapshot with release 2's targets.
    let snap3 = repo.served("3.snapshot.json");
    let e = verify_kept_release(&repo.root_bytes(), &snap3, &targets).unwrap_err();
    assert!(matches!(&e, Error::Rejected { .. }), "{}", chain(&e));
}

#[test]
fn a_release_signed_by_a_rotated_out_key_is_refused() {
    let (mut repo, snap, targets) = two_releases();
    repo.rotate("targets", 1);
    let e = verify_kept_release(&repo.root_bytes(), &snap, &targets).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Threshold { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}
