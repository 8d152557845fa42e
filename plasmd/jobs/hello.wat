;; The Phase Boot demo job (WASI preview 1, hand-written WAT so it builds
;; with the `wat` crate and no WASM toolchain: `plasmd assemble`).
;;
;; Prints
;;   Hello from Phase WASM on <PHASE_HOSTNAME>
;;   Boot provenance (/phase/boot.json):
;;   <the file, as phase-init wrote it>
;; and exits 0. When /phase/boot.json cannot be read it says so on stderr and
;; exits 1 (no /phase preopen), 2 (open failed) or 3 (read failed); plasmd
;; preopens /phase read-only when the node has a boot.json.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
    (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  ;; Layout of the one page:
  ;;   0     iovec for writes / reads (ptr, len)
  ;;   8     nwritten / nread
  ;;   16    environ count, 20 environ buffer size
  ;;   24    prestat (tag u8, name length u32 at 28)
  ;;   32    opened fd
  ;;   64..  string constants
  ;;   256   preopen name buffer (256 bytes)
  ;;   1024  environ pointers (at most 1024)
  ;;   8192  environ strings (at most 32 KiB)
  ;;   40960 file read buffer (24 KiB)
  (memory (export "memory") 1)
  (data (i32.const 64) "Hello from Phase WASM on ")           ;; 25
  (data (i32.const 96) "PHASE_HOSTNAME=")                     ;; 15
  (data (i32.const 112) "/phase")                             ;; 6
  (data (i32.const 120) "boot.json")                          ;; 9
  (data (i32.const 136) "Boot provenance (/phase/boot.json):\n") ;; 36
  (data (i32.const 176) "hello: cannot read /phase/boot.json\n") ;; 36
  (data (i32.const 224) "unknown")                            ;; 7
  (data (i32.const 232) "\n")                                 ;; 1

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $print (param $ptr i32) (param $len i32)
    (call $write (i32.const 1) (local.get $ptr) (local.get $len)))

  ;; 1 when the $blen bytes at $b equal the first $blen bytes at $a.
  (func $prefix (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $blen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; The value of PHASE_HOSTNAME as (ptr, len); "unknown" when unset.
  (func $hostname (result i32 i32)
    (local $count i32) (local $i i32) (local $s i32) (local $len i32)
    (if (call $environ_sizes_get (i32.const 16) (i32.const 20))
      (then (return (i32.const 224) (i32.const 7))))
    (local.set $count (i32.load (i32.const 16)))
    (if (i32.or (i32.gt_u (local.get $count) (i32.const 1024))
                (i32.gt_u (i32.load (i32.const 20)) (i32.const 32768)))
      (then (return (i32.const 224) (i32.const 7))))
    (if (call $environ_get (i32.const 1024) (i32.const 8192))
      (then (return (i32.const 224) (i32.const 7))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $s (i32.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 4)))))
        (local.set $len (call $strlen (local.get $s)))
        (if (call $prefix (local.get $s) (local.get $len) (i32.const 96) (i32.const 15))
          (then (return (i32.add (local.get $s) (i32.const 15))
                        (i32.sub (local.get $len) (i32.const 15)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 224) (i32.const 7))

  ;; The preopened directory named "/phase", or -1.
  (func $find_phase (result i32)
    (local $fd i32) (local $len i32)
    (local.set $fd (i32.const 3))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (local.get $fd) (i32.const 64)))
        (br_if $done (call $fd_prestat_get (local.get $fd) (i32.const 24)))
        (local.set $len (i32.load (i32.const 28)))
        (if (i32.and (i32.eqz (i32.load8_u (i32.const 24)))
                     (i32.eq (local.get $len) (i32.const 6)))
          (then
            (if (i32.eqz (call $fd_prestat_dir_name (local.get $fd) (i32.const 256) (i32.const 6)))
              (then
                (if (call $prefix (i32.const 256) (i32.const 6) (i32.const 112) (i32.const 6))
                  (then (return (local.get $fd))))))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next)))
    (i32.const -1))

  ;; Exit codes: 1 no /phase preopen, 2 boot.json does not open, 3 read error.
  (func $fail (param $code i32)
    (call $write (i32.const 2) (i32.const 176) (i32.const 36))
    (call $proc_exit (local.get $code)))

  (func (export "_start")
    (local $dir i32) (local $fd i32) (local $n i32) (local $last i32)
    (call $print (i32.const 64) (i32.const 25))
    (call $hostname)
    (call $print)
    (call $print (i32.const 232) (i32.const 1))

    (local.set $dir (call $find_phase))
    (if (i32.lt_s (local.get $dir) (i32.const 0)) (then (call $fail (i32.const 1))))
    ;; path_open(dir, no symlink follow, "boot.json", no oflags,
    ;;           rights fd_read, no inherited rights, no fdflags, -> fd)
    (if (call $path_open (local.get $dir) (i32.const 0) (i32.const 120) (i32.const 9)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))
      (then (call $fail (i32.const 2))))
    (local.set $fd (i32.load (i32.const 32)))
    (call $print (i32.const 136) (i32.const 36))
    (local.set $last (i32.const 10))
    (block $eof
      (loop $more
        (i32.store (i32.const 0) (i32.const 40960))
        (i32.store (i32.const 4) (i32.const 24576))
        (if (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $fail (i32.const 3))))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $last (i32.load8_u (i32.add (i32.const 40959) (local.get $n))))
        (call $print (i32.const 40960) (local.get $n))
        (br $more)))
    (if (i32.ne (local.get $last) (i32.const 10))
      (then (call $print (i32.const 232) (i32.const 1)))))
)
