;; wasi:keyvalue store + atomics through the canonical ABI, as a guest would call them:
;; open a bucket, two CAS handles on one key, swap with the first (creates the key), swap with
;; the second (must fail with cas-failed carrying a fresh own<cas>), read that handle's current
;; value, swap with it, then two increments (s64 results). `run` returns 42 when every step saw
;; what it should, else a code naming the step (1xxx open, 2xxx cas.new, 3xxx first swap, 4xxx
;; conflict, 5xxx current, 6xxx retry swap, 7xxx increment).
(component
  (import "wasi:keyvalue/store@0.2.0-draft2" (instance $store
    (export "bucket" (type $bucket (sub resource)))
    (type $err (variant (case "no-such-store") (case "access-denied") (case "other" string)))
    (export "error" (type $error (eq $err)))
    (export "open" (func (param "identifier" string) (result (result (own $bucket) (error $error)))))
  ))
  (alias export $store "bucket" (type $bucket))
  (alias export $store "error" (type $error))
  (import "wasi:keyvalue/atomics@0.2.0-draft2" (instance $atomics
    (export "bucket" (type $b (eq $bucket)))
    (export "error" (type $e (eq $error)))
    (export "cas" (type $cas (sub resource)))
    (type $cas-err (variant (case "store-error" $e) (case "cas-failed" (own $cas))))
    (export "cas-error" (type $cas-error (eq $cas-err)))
    (export "[static]cas.new" (func (param "bucket" (borrow $b)) (param "key" string) (result (result (own $cas) (error $e)))))
    (export "[method]cas.current" (func (param "self" (borrow $cas)) (result (result (option (list u8)) (error $e)))))
    (export "increment" (func (param "bucket" (borrow $b)) (param "key" string) (param "delta" s64) (result (result s64 (error $e)))))
    (export "swap" (func (param "cas" (own $cas)) (param "value" (list u8)) (result (result (error $cas-error)))))
  ))
  (alias export $store "open" (func $open))
  (alias export $atomics "[static]cas.new" (func $cas_new))
  (alias export $atomics "[method]cas.current" (func $current))
  (alias export $atomics "increment" (func $increment))
  (alias export $atomics "swap" (func $swap))

  (core module $mem
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      ;; bump allocator, aligned to 8
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (data (i32.const 16) "default")
    (data (i32.const 32) "k")
    (data (i32.const 48) "one")
    (data (i32.const 64) "two")
    (data (i32.const 80) "three")
    (data (i32.const 96) "n")
    (data (i32.const 112) "gamma"))
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))

  (core func $open_l (canon lower (func $open) (memory $memory) (realloc $realloc)))
  (core func $cas_new_l (canon lower (func $cas_new) (memory $memory) (realloc $realloc)))
  (core func $current_l (canon lower (func $current) (memory $memory) (realloc $realloc)))
  (core func $increment_l (canon lower (func $increment) (memory $memory) (realloc $realloc)))
  (core func $swap_l (canon lower (func $swap) (memory $memory) (realloc $realloc)))

  (core module $guest
    (import "m" "memory" (memory 1))
    (import "h" "open" (func $open (param i32 i32 i32)))
    (import "h" "cas_new" (func $cas_new (param i32 i32 i32 i32)))
    (import "h" "current" (func $current (param i32 i32)))
    (import "h" "increment" (func $increment (param i32 i32 i32 i64 i32)))
    (import "h" "swap" (func $swap (param i32 i32 i32 i32)))
    (func (export "run") (result i32) (local $b i32) (local $c1 i32) (local $c2 i32) (local $c3 i32) (local $p i32)
      ;; open("default"): result<own<bucket>, error> at 256: tag u8 @256, payload @260
      (call $open (i32.const 16) (i32.const 7) (i32.const 256))
      (if (i32.load8_u (i32.const 256)) (then (return (i32.add (i32.const 1000) (i32.load8_u (i32.const 260))))))
      (local.set $b (i32.load (i32.const 260)))
      ;; two CAS handles on "k" while it is absent
      (call $cas_new (local.get $b) (i32.const 32) (i32.const 1) (i32.const 320))
      (if (i32.load8_u (i32.const 320)) (then (return (i32.const 2001))))
      (local.set $c1 (i32.load (i32.const 324)))
      (call $cas_new (local.get $b) (i32.const 32) (i32.const 1) (i32.const 384))
      (if (i32.load8_u (i32.const 384)) (then (return (i32.const 2002))))
      (local.set $c2 (i32.load (i32.const 388)))
      ;; swap(c1, "one") succeeds: result<_, cas-error> tag @448
      (call $swap (local.get $c1) (i32.const 48) (i32.const 3) (i32.const 448))
      (if (i32.load8_u (i32.const 448)) (then (return (i32.add (i32.const 3000) (i32.load8_u (i32.const 452))))))
      ;; swap(c2, "two") must fail: err @512, cas-error tag @516 = 1 (cas-failed), own<cas> @520
      (call $swap (local.get $c2) (i32.const 64) (i32.const 3) (i32.const 512))
      (if (i32.ne (i32.load8_u (i32.const 512)) (i32.const 1)) (then (return (i32.const 4001))))
      (if (i32.ne (i32.load8_u (i32.const 516)) (i32.const 1)) (then (return (i32.const 4002))))
      (local.set $c3 (i32.load (i32.const 520)))
      ;; current(c3) = ok(some("one")): tag @576, option tag @580, list ptr @584 len @588
      (call $current (local.get $c3) (i32.const 576))
      (if (i32.load8_u (i32.const 576)) (then (return (i32.const 5001))))
      (if (i32.ne (i32.load8_u (i32.const 580)) (i32.const 1)) (then (return (i32.const 5002))))
      (if (i32.ne (i32.load (i32.const 588)) (i32.const 3)) (then (return (i32.const 5003))))
      (local.set $p (i32.load (i32.const 584)))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 111)) (then (return (i32.const 5004))))  ;; 'o'
      (if (i32.ne (i32.load8_u offset=2 (local.get $p)) (i32.const 101)) (then (return (i32.const 5005))))  ;; 'e'
      ;; swap(c3, "three") succeeds
      (call $swap (local.get $c3) (i32.const 80) (i32.const 5) (i32.const 640))
      (if (i32.load8_u (i32.const 640)) (then (return (i32.const 6001))))
      ;; increment("n", 5) = ok(5); increment("n", -7) = ok(-2): tag @704, s64 @712
      (call $increment (local.get $b) (i32.const 96) (i32.const 1) (i64.const 5) (i32.const 704))
      (if (i32.load8_u (i32.const 704)) (then (return (i32.const 7001))))
      (if (i64.ne (i64.load (i32.const 712)) (i64.const 5)) (then (return (i32.const 7002))))
      (call $increment (local.get $b) (i32.const 96) (i32.const 1) (i64.const -7) (i32.const 768))
      (if (i32.load8_u (i32.const 768)) (then (return (i32.const 7003))))
      (if (i64.ne (i64.load (i32.const 776)) (i64.const -2)) (then (return (i32.const 7004))))
      (i32.const 42))
    ;; open("gamma") and return 0 for ok, else 1 + the error's case index (access-denied = 2)
    (func (export "open-gamma") (result i32)
      (call $open (i32.const 112) (i32.const 5) (i32.const 900))
      (if (result i32) (i32.load8_u (i32.const 900))
        (then (i32.add (i32.const 1) (i32.load8_u (i32.const 904))))
        (else (i32.const 0)))))
  (core instance $g (instantiate $guest
    (with "m" (instance $m))
    (with "h" (instance
      (export "open" (func $open_l))
      (export "cas_new" (func $cas_new_l))
      (export "current" (func $current_l))
      (export "increment" (func $increment_l))
      (export "swap" (func $swap_l))))))
  (func (export "run") (result u32) (canon lift (core func $g "run")))
  (func (export "open-gamma") (result u32) (canon lift (core func $g "open-gamma")))
)
