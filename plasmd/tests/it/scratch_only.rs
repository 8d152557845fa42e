//! A job sees no file system but its scratch directory: opening or
//! creating a file outside it (`..`, absolute paths, a symlink it made, a
//! descriptor that is not preopened) fails, writing inside it works, and
//! plasmd keeps running jobs afterwards.

use super::common;
use common::*;
use plasmd::JobStatus;

/// Exit code 10+N when escape attempt N succeeded, 20 when the scratch
/// write failed, 0 when every escape was refused and the write worked.
const ESCAPE: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "../escape.txt")                 ;; 13
  (data (i32.const 120) "/etc/passwd")                   ;; 11
  (data (i32.const 140) "../../../../../../etc/passwd")  ;; 28
  (data (i32.const 180) "etc/passwd")                    ;; 10
  (data (i32.const 200) "/etc")                          ;; 4
  (data (i32.const 210) "link")                          ;; 4
  (data (i32.const 220) "link/passwd")                   ;; 11
  (data (i32.const 240) "inside.txt")                    ;; 10
  (data (i32.const 260) "scratch works\n")               ;; 14
  ;; open(dirfd, lookup flags, path, len, oflags, rights) -> errno
  (func $open (param $dir i32) (param $follow i32) (param $p i32) (param $n i32)
              (param $oflags i32) (param $rights i64) (result i32)
    (call $path_open (local.get $dir) (local.get $follow) (local.get $p) (local.get $n)
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 0)))
  (func $refused (param $errno i32) (param $code i32)
    (if (i32.eqz (local.get $errno)) (then (call $proc_exit (local.get $code)))))
  (func (export "_start")
    ;; fd 3 must be the one preopen (/scratch).
    (call $refused (i32.eqz (call $fd_prestat_get (i32.const 3) (i32.const 8))) (i32.const 19))
    ;; 1: create ../escape.txt (O_CREAT, fd_write)
    (call $refused (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 13) (i32.const 1) (i64.const 64)) (i32.const 11))
    ;; 2: /etc/passwd
    (call $refused (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 11) (i32.const 0) (i64.const 2)) (i32.const 12))
    ;; 3: ../../../../../../etc/passwd, following symlinks
    (call $refused (call $open (i32.const 3) (i32.const 1) (i32.const 140) (i32.const 28) (i32.const 0) (i64.const 2)) (i32.const 13))
    ;; 4: a descriptor that is not preopened
    (call $refused (call $open (i32.const 4) (i32.const 0) (i32.const 180) (i32.const 10) (i32.const 0) (i64.const 2)) (i32.const 14))
    ;; 5: a symlink to /etc made inside scratch, then followed
    (drop (call $path_symlink (i32.const 200) (i32.const 4) (i32.const 3) (i32.const 210) (i32.const 4)))
    (call $refused (call $open (i32.const 3) (i32.const 1) (i32.const 220) (i32.const 11) (i32.const 0) (i64.const 2)) (i32.const 15))
    ;; inside scratch: create inside.txt and write to it
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 240) (i32.const 10)
          (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0))
      (then (call $proc_exit (i32.const 20))))
    (i32.store (i32.const 16) (i32.const 260))
    (i32.store (i32.const 20) (i32.const 14))
    (if (call $fd_write (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24))
      (then (call $proc_exit (i32.const 21))))))"#;

#[test]
fn job_cannot_open_files_outside_its_scratch_dir() {
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let job = fx.job("escape", &wat(ESCAPE), serde_json::json!({}));
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(
        out.status,
        JobStatus::Exited { code: 0 },
        "exit 11..15 names the escape that worked, 19 a wrong preopen, 20/21 a scratch failure; log: {}",
        log(&out.log)
    );
    let run_dir = out.scratch.parent().expect("run dir");
    assert!(
        !run_dir.join("escape.txt").exists(),
        "escaped the scratch dir"
    );
    assert_eq!(
        std::fs::read_to_string(out.scratch.join("inside.txt")).expect("scratch file"),
        "scratch works\n"
    );
    hello_still_runs(&fx, &plasm, &rt);
}
