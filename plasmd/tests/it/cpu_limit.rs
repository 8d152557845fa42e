//! A job that loops forever is killed by its fuel (CPU) limit long before
//! its deadline, and plasmd keeps running jobs afterwards.

use super::common;
use common::*;
use plasmd::JobStatus;

const SPIN: &str = r#"(module
  (func (export "_start") (loop $forever (br $forever))))"#;

#[test]
fn endless_loop_is_killed_by_the_cpu_limit() {
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let fuel = 20_000_000u64;
    let job = fx.job(
        "spin",
        &wat(SPIN),
        serde_json::json!({"limits": {"fuel": fuel, "deadline_ms": 60_000}}),
    );
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(out.status, JobStatus::CpuLimit { fuel });
    assert_eq!(out.usage.fuel, fuel, "all fuel used");
    assert!(
        out.usage.wall_ms < 30_000,
        "fuel, not the deadline, stopped it ({} ms)",
        out.usage.wall_ms
    );
    hello_still_runs(&fx, &plasm, &rt);
}
