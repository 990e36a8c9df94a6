;; A component that forwards its export `echo` to the host import `test:host/api.echo`,
;; and `greet` (string -> result<string, error variant>) to `test:host/api.greet`.
;; Both go through the canonical ABI in both directions, so the host's lift and lower run for real.
(component
  (import "test:host/api@0.1.0" (instance $api
    (type $err (variant (case "not-found") (case "other" string)))
    (export "error" (type $err' (eq $err)))
    (export "echo" (func (param "data" (list u8)) (result (list u8))))
    (export "greet" (func (param "name" string) (result (result string (error $err')))))
  ))
  (alias export $api "echo" (func $echo))
  (alias export $api "greet" (func $greet))
  (alias export $api "error" (type $error))
  (core module $mem
    (memory (export "memory") 4)
    (global $next (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
      (local.get $p)))
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))
  (core func $echo_low (canon lower (func $echo) (memory $memory) (realloc $realloc)))
  (core func $greet_low (canon lower (func $greet) (memory $memory) (realloc $realloc) string-encoding=utf8))
  (core module $guest
    (import "h" "echo" (func $echo (param i32 i32 i32)))
    (import "h" "greet" (func $greet (param i32 i32 i32)))
    (func (export "echo") (param i32 i32) (result i32)
      (call $echo (local.get 0) (local.get 1) (i32.const 16))
      (i32.const 16))
    (func (export "greet") (param i32 i32) (result i32)
      (call $greet (local.get 0) (local.get 1) (i32.const 32))
      (i32.const 32)))
  (core instance $g (instantiate $guest
    (with "h" (instance (export "echo" (func $echo_low)) (export "greet" (func $greet_low))))))
  (type $result (result string (error $error)))
  (func (export "echo") (param "data" (list u8)) (result (list u8))
    (canon lift (core func $g "echo") (memory $memory) (realloc $realloc)))
  (func (export "greet") (param "name" string) (result $result)
    (canon lift (core func $g "greet") (memory $memory) (realloc $realloc) string-encoding=utf8))
)
