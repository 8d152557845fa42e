//! The demo job (plasmd/jobs/hello.wat), signed and resolved through TUF,
//! greets with the host name plasmd passes and prints the boot provenance
//! it reads from the read-only /phase/boot.json; without a boot.json it
//! still greets and exits 1 with a message on stderr.

use super::common;
use common::*;
use plasmd::{JobStatus, Plasm};

#[test]
fn demo_job_prints_greeting_and_provenance() {
    let fx = Fixture::new();
    let boot = fx.dir.path().join("boot.json");
    let provenance = r#"{"version":1,"mode":"local","channel":"stable","tuf":{"targets":3}}"#;
    std::fs::write(&boot, provenance).expect("boot.json");
    let mut config = fx.config();
    config.provenance = Some(boot.clone());
    let plasm = Plasm::new(config).expect("plasm");
    let rt = rt();
    let job = fx.job("hello", &hello_wasm(), serde_json::json!({}));
    let out = rt.block_on(plasm.run(&job)).expect("run");
    let text = log(&out.log);
    assert_eq!(out.status, JobStatus::Exited { code: 0 }, "log: {text}");
    assert_eq!(
        text,
        format!(
            "Hello from Phase WASM on node-7\nBoot provenance (/phase/boot.json):\n{provenance}\n"
        )
    );
    assert_eq!(out.usage.stdout_bytes, text.len() as u64);
    assert_eq!(out.usage.stderr_bytes, 0);
    assert_eq!(out.sha256, verifier::digest::sha256_hex(&hello_wasm()));
    // The job saw a copy: the node's file is untouched and /phase is read-only.
    assert_eq!(
        std::fs::read_to_string(&boot).expect("boot.json"),
        provenance
    );
}

#[test]
fn demo_job_without_provenance_greets_and_fails_clearly() {
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let job = fx.job("hello", &hello_wasm(), serde_json::json!({}));
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(out.status, JobStatus::Exited { code: 1 });
    assert_eq!(
        log(&out.log),
        "Hello from Phase WASM on node-7\nhello: cannot read /phase/boot.json\n"
    );
    assert!(out.usage.stderr_bytes > 0);
}

#[test]
fn job_args_and_env_come_from_signed_metadata() {
    // A job that prints argv[1] and the value of GREETING.
    let src = r#"(module
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $asz (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_get" (func $aget (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $esz (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $eget (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func $strlen (param $p i32) (result i32) (local $n i32)
        (block $d (loop $l
          (br_if $d (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
          (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $l)))
        (local.get $n))
      ;; write the NUL-terminated string at $p and a newline (replacing the NUL)
      (func $line (param $p i32) (local $n i32)
        (local.set $n (call $strlen (local.get $p)))
        (i32.store8 (i32.add (local.get $p) (local.get $n)) (i32.const 10))
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (i32.add (local.get $n) (i32.const 1)))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func (export "_start") (local $i i32) (local $n i32)
        (drop (call $asz (i32.const 16) (i32.const 20)))
        (drop (call $aget (i32.const 1024) (i32.const 4096)))
        (call $line (i32.load (i32.const 1028)))
        (drop (call $esz (i32.const 16) (i32.const 20)))
        (local.set $n (i32.load (i32.const 16)))
        (drop (call $eget (i32.const 2048) (i32.const 8192)))
        (block $d (loop $l
          (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
          (if (i32.eq (i32.load (i32.load (i32.add (i32.const 2048) (i32.mul (local.get $i) (i32.const 4)))))
                      (i32.const 0x45455247)) ;; "GREE" little-endian
            (then (call $line (i32.load (i32.add (i32.const 2048) (i32.mul (local.get $i) (i32.const 4)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))))"#;
    let fx = Fixture::new();
    let plasm = fx.plasm();
    let rt = rt();
    let job = fx.job(
        "echo",
        &wat(src),
        serde_json::json!({"args": ["first-arg"], "env": {"GREETING": "hi there", "PHASE_HOSTNAME": "spoofed"}}),
    );
    assert_eq!(job.spec().args, vec!["first-arg".to_string()]);
    let out = rt.block_on(plasm.run(&job)).expect("run");
    assert_eq!(out.status, JobStatus::Exited { code: 0 });
    assert_eq!(log(&out.log), "first-arg\nGREETING=hi there\n");
}
