//! An unsigned or altered job never runs: bytes that do not match the
//! signed digest are refused by `Job::from_verified`, an altered file in the
//! repository is refused by `Job::fetch`, a job the metadata does not list
//! cannot be resolved, and a signed target of another kind is not a job.

use super::common;
use common::*;
use plasmd::{Job, JobError};

#[test]
fn bytes_not_matching_the_signed_digest_are_refused() {
    let fx = Fixture::new();
    let wasm = hello_wasm();
    let good = fx.job("hello", &wasm, serde_json::json!({}));
    let target = good.target().clone();

    // Same length, one byte changed.
    let mut altered = wasm.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    let e = Job::from_verified(target.clone(), altered).expect_err("altered bytes accepted");
    assert!(matches!(e, JobError::Digest { .. }), "{e:?}");
    assert!(
        e.to_string().contains("do not match the signed target"),
        "{e}"
    );

    // Another valid module entirely.
    let other = wat(r#"(module (func (export "_start")))"#);
    let e = Job::from_verified(target.clone(), other).expect_err("other module accepted");
    assert!(matches!(e, JobError::Digest { .. }), "{e:?}");

    // The signed bytes are accepted.
    Job::from_verified(target, wasm).expect("signed bytes");
}

#[test]
fn altered_repository_file_is_refused_on_fetch() {
    let fx = Fixture::new();
    let wasm = hello_wasm();
    fx.publish("hello", &wasm, serde_json::json!({}));
    let sha = verifier::digest::sha256_hex(&wasm);
    let file = fx
        .repo
        .join("targets/jobs")
        .join(format!("{sha}.hello.wasm"));
    let mut bytes = std::fs::read(&file).expect("published job file");
    bytes[10] ^= 0xff;
    std::fs::write(&file, &bytes).expect("tamper");
    let e = Job::fetch(&mut fx.updater(), "hello").expect_err("tampered job fetched");
    assert!(matches!(e, JobError::Digest { .. }), "{e:?}");
}

#[test]
fn unlisted_job_cannot_be_resolved() {
    let fx = Fixture::new();
    fx.publish("hello", &hello_wasm(), serde_json::json!({}));
    let e = Job::fetch(&mut fx.updater(), "unsigned").expect_err("unlisted job resolved");
    assert!(matches!(e, JobError::Resolve { .. }), "{e:?}");
    let e = Job::fetch(&mut fx.updater(), "../etc/x").expect_err("bad name");
    assert!(matches!(e, JobError::Name(_)), "{e:?}");
}

#[test]
fn malformed_job_metadata_is_refused() {
    let fx = Fixture::new();
    fx.publish(
        "hello",
        &hello_wasm(),
        serde_json::json!({"limits": {"memory": 1}}),
    );
    let e = Job::fetch(&mut fx.updater(), "hello").expect_err("unknown limit accepted");
    assert!(
        matches!(
            e,
            JobError::Spec {
                field: "limits",
                ..
            }
        ),
        "{e:?}"
    );
}
