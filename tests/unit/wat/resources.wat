;; Host resource `thing`: the guest constructs one (own), calls a method on it (borrow), drops it.
(component
  (import "test:host/res@0.2.3" (instance $r
    (export "thing" (type $t (sub resource)))
    (export "[constructor]thing" (func (param "v" u32) (result (own $t))))
    (export "[method]thing.get" (func (param "self" (borrow $t)) (result u32)))
  ))
  (alias export $r "thing" (type $thing))
  (alias export $r "[constructor]thing" (func $ctor))
  (alias export $r "[method]thing.get" (func $get))
  (core func $ctor_l (canon lower (func $ctor)))
  (core func $get_l (canon lower (func $get)))
  (core func $drop (canon resource.drop $thing))
  (core module $m
    (import "h" "ctor" (func $ctor (param i32) (result i32)))
    (import "h" "get" (func $get (param i32) (result i32)))
    (import "h" "drop" (func $drop (param i32)))
    (func (export "run") (param i32) (result i32) (local $h i32)
      (local.set $h (call $ctor (local.get 0)))
      (call $get (local.get $h))
      (call $drop (local.get $h)))
    (func (export "spin") (loop $l (br $l))))
  (core instance $i (instantiate $m
    (with "h" (instance (export "ctor" (func $ctor_l)) (export "get" (func $get_l)) (export "drop" (func $drop))))))
  (func (export "run") (param "v" u32) (result u32) (canon lift (core func $i "run")))
  (func (export "spin") (canon lift (core func $i "spin")))
)
