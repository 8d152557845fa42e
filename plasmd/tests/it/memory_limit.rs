//! A job that grows its memory past its limit is killed with a clear
//! status, so is one whose initial memory is already too large, and plasmd
//! keeps running jobs afterwards.

use super::common;
use common::*;
use plasmd::JobStatus;

const GROW: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    ;; 1 page at a time up to 256 pages (16 MiB); each grow must succeed.
    (local $i i32)
    (loop $more
      (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 256))))))"#;

const BIG_INITIAL: &str = r#"(module (memory 512) (func (export "_start")))"#;

#[test]
fn job_exceeding_memory_is_killed_and_plasmd_keeps_running() {
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let limit = 4u64 << 20;
    let limits = serde_json::json!({"limits": {"memory_bytes": limit}});

    let job = fx.job("grow", &wat(GROW), limits.clone());
    let out = rt.block_on(plasm.run(&job)).expect("run");
    match out.status {
        JobStatus::MemoryLimit {
            limit_bytes,
            requested_bytes,
        } => {
            assert_eq!(limit_bytes, limit);
            assert_eq!(requested_bytes, limit + 65536, "first refused grow");
        }
        other => panic!("expected a memory-limit kill, got {other:?}"),
    }
    assert_eq!(out.usage.peak_memory_bytes, limit, "grew up to the limit");
    assert!(out.status.to_string().contains("memory limit"));
    let record: plasmd::JobOutcome = serde_json::from_slice(
        &std::fs::read(out.log.with_file_name("outcome.json")).expect("outcome.json"),
    )
    .expect("outcome record");
    assert_eq!(record, out);

    let job = fx.job("big", &wat(BIG_INITIAL), limits);
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert!(
        matches!(
            out.status,
            JobStatus::MemoryLimit {
                requested_bytes: 33554432,
                ..
            }
        ),
        "initial memory over the limit: {:?}",
        out.status
    );

    hello_still_runs(&fx, &plasm, &rt);
}
