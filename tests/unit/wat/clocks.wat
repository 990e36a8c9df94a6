;; Imports the WASI functions kubespin implements natively (host/_native.c) and one test import
;; whose shape does not fit them, and exports a function per import that returns its value.
(component
  (import "wasi:clocks/monotonic-clock@0.2.3" (instance $mono
    (export "now" (func (result u64)))
    (export "resolution" (func (result u64)))
  ))
  (import "wasi:random/random@0.2.3" (instance $rand
    (export "get-random-u64" (func (result u64)))
  ))
  (import "wasi:random/insecure@0.2.3" (instance $insecure
    (export "get-insecure-random-u64" (func (result u64)))
  ))
  (import "test:host/odd" (instance $odd
    (export "now" (func (param "x" u32) (result u64)))
  ))
  (core func $now (canon lower (func $mono "now")))
  (core func $res (canon lower (func $mono "resolution")))
  (core func $rnd (canon lower (func $rand "get-random-u64")))
  (core func $insec (canon lower (func $insecure "get-insecure-random-u64")))
  (core func $odd_now (canon lower (func $odd "now")))
  (core module $m
    (import "h" "now" (func $now (result i64)))
    (import "h" "res" (func $res (result i64)))
    (import "h" "rnd" (func $rnd (result i64)))
    (import "h" "insec" (func $insec (result i64)))
    (import "h" "odd" (func $odd (param i32) (result i64)))
    (func (export "now") (result i64) call $now)
    (func (export "res") (result i64) call $res)
    (func (export "rnd") (result i64) call $rnd)
    (func (export "insec") (result i64) call $insec)
    (func (export "odd") (param i32) (result i64) local.get 0 call $odd)
  )
  (core instance $h (export "now" (func $now)) (export "res" (func $res)) (export "rnd" (func $rnd))
    (export "insec" (func $insec)) (export "odd" (func $odd_now)))
  (core instance $i (instantiate $m (with "h" (instance $h))))
  (func (export "now") (result u64) (canon lift (core func $i "now")))
  (func (export "resolution") (result u64) (canon lift (core func $i "res")))
  (func (export "random") (result u64) (canon lift (core func $i "rnd")))
  (func (export "insecure") (result u64) (canon lift (core func $i "insec")))
  (func (export "odd") (param "x" u32) (result u64) (canon lift (core func $i "odd")))
)
