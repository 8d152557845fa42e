//! A job that sleeps past its wall-clock deadline (inside a WASI call) is
//! stopped at the deadline, so is a busy job with plenty of fuel, and
//! plasmd keeps running jobs afterwards.

use super::common;
use common::*;
use plasmd::JobStatus;

/// poll_oneoff on one relative monotonic-clock subscription of one hour.
const SLEEP: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1 (monotonic),
    ;; timeout 3600 s in ns, precision 0, flags 0 (relative)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

const SPIN: &str = r#"(module
  (func (export "_start") (loop $forever (br $forever))))"#;

#[test]
fn sleeping_past_the_deadline_is_stopped() {
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let limits = serde_json::json!({"limits": {"deadline_ms": 700}});

    let job = fx.job("sleepy", &wat(SLEEP), limits.clone());
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(out.status, JobStatus::Deadline { deadline_ms: 700 });
    assert!(
        (600..10_000).contains(&out.usage.wall_ms),
        "stopped at the deadline, not before or much later: {} ms",
        out.usage.wall_ms
    );

    // Fuel enough for hours: only the deadline can stop it.
    let job = fx.job(
        "busy",
        &wat(SPIN),
        serde_json::json!({"limits": {"deadline_ms": 700, "fuel": 1_000_000_000_000u64}}),
    );
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(out.status, JobStatus::Deadline { deadline_ms: 700 });
    assert!(out.usage.wall_ms < 10_000, "{} ms", out.usage.wall_ms);
    assert!(out.usage.fuel > 0 && out.usage.fuel < 1_000_000_000_000);

    hello_still_runs(&fx, &plasm, &rt);
}
