;; Exports only `wasi:http/handler@0.3.0-rc-2025-09-16`, as WASIp3 (spin-sdk >= 4) components do.
(component
  (core module $m (func (export "handle")))
  (core instance $i (instantiate $m))
  (func $handle (canon lift (core func $i "handle")))
  (instance $h (export "handle" (func $handle)))
  (export "wasi:http/handler@0.3.0-rc-2025-09-16" (instance $h))
)
