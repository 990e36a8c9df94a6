"""Every WIT type shape the host handles, through the real canonical ABI in both directions.

A generated component forwards each export ``echo-<name>(x: T) -> T`` straight to the host import of
the same signature (the core wasm passes the flat values through untouched). So for every type:
wasmtime-py lowers the input into guest memory, wasmtime lifts it into ``val_t`` for the host, our
*lift* builds the Python value the host function sees (checked here), our *lower* writes the host's
answer back, wasmtime lowers it into guest memory and wasmtime-py lifts the export's result (checked
against the input). A wrong offset, tag or ownership rule in either direction fails a test (or
crashes the process), it does not pass quietly.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc
from kubespin_shim.host.binding import CallContext, Interface, build_linker, set_current_context
from kubespin_shim.host.values import Err, Ok, Variant

from tests.host_paths import HOST_PATHS, host_path


@dataclass(frozen=True)
class Case:
    name: str
    wit: str  # the type, as written in the import's instance type (named types are exported there)
    flat: tuple[str, ...]  # the core wasm types of its flattened form
    given: Any  # the export's argument, as wasmtime-py takes it
    seen: Any  # what the host function must receive, in kubespin's representation


def _record(**fields: Any) -> wc.Record:
    r = wc.Record()
    for k, v in fields.items():
        setattr(r, k, v)
    return r


NAMED_TYPES = """
    (type $rec (record (field "a" u8) (field "b" string) (field "c" (list u16))))
    (export "rec" (type $rec' (eq $rec)))
    (type $var (variant (case "none") (case "num" u64) (case "text" string) (case "other" string)))
    (export "var" (type $var' (eq $var)))
    (type $color (enum "red" "green" "blue"))
    (export "color" (type $color' (eq $color)))
    (type $perm (flags "read" "write" "exec"))
    (export "perm" (type $perm' (eq $perm)))
    (type $entry (record (field "name" string) (field "v" (option s32))))
    (export "entry" (type $entry' (eq $entry)))
"""

CASES = [
    Case("u8", "u8", ("i32",), 200, 200),
    Case("s8", "s8", ("i32",), -100, -100),
    Case("u16", "u16", ("i32",), 65535, 65535),
    Case("s32", "s32", ("i32",), -(2**31), -(2**31)),
    Case("u32", "u32", ("i32",), 2**32 - 1, 2**32 - 1),
    Case("s64", "s64", ("i64",), -(2**63), -(2**63)),
    Case("u64", "u64", ("i64",), 2**64 - 1, 2**64 - 1),
    Case("f32", "f32", ("f32",), 1.5, 1.5),
    Case("f64", "f64", ("f64",), -2.25e300, -2.25e300),
    Case("bool", "bool", ("i32",), True, True),
    Case("char", "char", ("i32",), "✓", "✓"),
    Case("string", "string", ("i32", "i32"), "héllo wörld", "héllo wörld"),
    Case("empty-string", "string", ("i32", "i32"), "", ""),
    Case("bytes", "(list u8)", ("i32", "i32"), b"\x00\x01\xffabc", b"\x00\x01\xffabc"),
    Case("empty-bytes", "(list u8)", ("i32", "i32"), b"", b""),
    Case(
        "record",
        "$rec'",
        ("i32",) * 5,
        _record(a=7, b="bee", c=[1, 65535]),
        {"a": 7, "b": "bee", "c": [1, 65535]},
    ),
    Case("tuple", "(tuple s64 f32 char bool)", ("i64", "f32", "i32", "i32"),
         (-5, 0.5, "x", False), (-5, 0.5, "x", False)),
    Case("option-some", "(option string)", ("i32",) * 3, "here", "here"),
    Case("option-none", "(option string)", ("i32",) * 3, None, None),
    # wasmtime-py passes an untagged result when its cases have distinct Python types
    Case("result-ok", "(result u32 (error string))", ("i32",) * 3, 9, Ok(9)),
    Case("result-err", "(result u32 (error string))", ("i32",) * 3, "no", Err("no")),
    Case("bare-result-ok", "(result)", ("i32",), wc.Variant("ok"), Ok(None)),
    Case("bare-result-err", "(result)", ("i32",), wc.Variant("err"), Err(None)),
    Case("variant-empty", "$var'", ("i32", "i64", "i32"), wc.Variant("none"), Variant("none")),
    Case("variant-u64", "$var'", ("i32", "i64", "i32"), wc.Variant("num", 2**40), Variant("num", 2**40)),
    Case("variant-str", "$var'", ("i32", "i64", "i32"), wc.Variant("text", "t"), Variant("text", "t")),
    Case("variant-other", "$var'", ("i32", "i64", "i32"), wc.Variant("other", ""), Variant("other", "")),
    Case("enum", "$color'", ("i32",), "blue", "blue"),
    Case("flags", "$perm'", ("i32",), {"read", "exec"}, {"read", "exec"}),
    Case("no-flags", "$perm'", ("i32",), set(), set()),
    Case("strings", "(list string)", ("i32", "i32"), ["a", "", "ccc"], ["a", "", "ccc"]),
    Case(
        "headers",
        "(list (tuple string (list u8)))",
        ("i32", "i32"),
        [("content-type", b"text/plain"), ("x-empty", b"")],
        [("content-type", b"text/plain"), ("x-empty", b"")],
    ),
    Case(
        "records",
        "(list $entry')",
        ("i32", "i32"),
        [_record(name="n", v=-3), _record(name="", v=None)],
        [{"name": "n", "v": -3}, {"name": "", "v": None}],
    ),
    Case("u32s", "(list u32)", ("i32", "i32"), [0, 1, 2**32 - 1], [0, 1, 2**32 - 1]),
]


def component_wat(cases: list[Case]) -> str:
    imports, aliases, lowers, core_imports, core_funcs, with_items, exports = [], [], [], [], [], [], []
    for i, c in enumerate(cases):
        fn = f"echo-{c.name}"
        outer_ty = c.wit.replace("'", "")  # the named types are aliased out under their unprimed names
        imports.append(f'(export "{fn}" (func (param "x" {c.wit}) (result {c.wit})))')
        aliases.append(f'(alias export $api "{fn}" (func $f{i}))')
        lowers.append(
            f"(core func $l{i} (canon lower (func $f{i}) (memory $memory) (realloc $realloc) string-encoding=utf8))"
        )
        params = " ".join(c.flat)
        gets = " ".join(f"(local.get {j})" for j in range(len(c.flat)))
        if len(c.flat) == 1:  # a one-value result comes back directly, in the core function's result
            core_imports.append(f'(import "h" "{fn}" (func $h{i} (param {params}) (result {c.flat[0]})))')
            core_funcs.append(f'(func (export "{fn}") (param {params}) (result {c.flat[0]}) (call $h{i} {gets}))')
        else:  # larger results go through a return area in memory
            ret = 64 + 64 * i
            core_imports.append(f'(import "h" "{fn}" (func $h{i} (param {params} i32)))')
            core_funcs.append(
                f'(func (export "{fn}") (param {params}) (result i32)'
                f" (call $h{i} {gets} (i32.const {ret})) (i32.const {ret}))"
            )
        with_items.append(f'(export "{fn}" (func $l{i}))')
        exports.append(
            f'(func (export "{fn}") (param "x" {outer_ty}) (result {outer_ty})'
            f' (canon lift (core func $g "{fn}") (memory $memory) (realloc $realloc) string-encoding=utf8))'
        )
    nl = "\n  "
    return f"""
(component
  (import "test:host/roundtrip@0.1.0" (instance $api
    {NAMED_TYPES}
    {nl.join(imports)}
  ))
  (alias export $api "rec" (type $rec))
  (alias export $api "var" (type $var))
  (alias export $api "color" (type $color))
  (alias export $api "perm" (type $perm))
  (alias export $api "entry" (type $entry))
  {nl.join(aliases)}
  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
      (local.get $p)))
  (core instance $m (instantiate $mem))
  (alias core export $m "memory" (core memory $memory))
  (alias core export $m "realloc" (core func $realloc))
  {nl.join(lowers)}
  (core module $guest
    {nl.join(core_imports)}
    {nl.join(core_funcs)})
  (core instance $g (instantiate $guest (with "h" (instance {" ".join(with_items)}))))
  {nl.join(exports)}
)
"""


@pytest.fixture(scope="module", params=HOST_PATHS)
def echo(request: pytest.FixtureRequest) -> Any:
    """(call(name, value) -> result, seen: list of what the host received), once through the C value
    plans and entry points (host/_native.c) and once through the Python conversions."""
    with host_path(request.param):
        yield from _echo()


def _echo() -> Any:
    engine = wasmtime.Engine()
    component = wc.Component(engine, component_wat(CASES))
    seen: list[Any] = []
    answers: dict[str, Any] = {}  # a test's own answer for the next call of echo-<name>
    api = Interface("test:host/roundtrip")
    for c in CASES:

        def host_echo(ctx: CallContext, x: Any, name: str = c.name) -> Any:
            seen.append(x)
            return answers.pop(name) if name in answers else x

        api.func(f"echo-{c.name}")(host_echo)
    linker = build_linker(engine, component, {"test:host/roundtrip": api})
    store = wasmtime.Store(engine)
    ctx = CallContext("roundtrip")
    set_current_context(ctx)
    instance = linker.instantiate(store, component)

    def call(name: str, value: Any) -> Any:
        f = instance.get_func(store, f"echo-{name}")
        assert f is not None
        out = f(store, value)
        f.post_return(store)
        return out

    yield call, seen, answers
    set_current_context(None)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_value_round_trips_through_the_host(echo: Any, case: Case) -> None:
    call, seen, _ = echo
    seen.clear()
    out = call(case.name, case.given)
    assert len(seen) == 1
    got = seen[0]
    if isinstance(case.seen, float):
        assert got == pytest.approx(case.seen)
    else:
        assert got == case.seen
        assert type(got) is type(case.seen)
    if isinstance(case.given, float):
        assert out == pytest.approx(case.given)
    else:
        assert out == case.given


def test_many_calls_do_not_leak_or_corrupt(echo: Any) -> None:
    """Ownership: wasmtime frees what it passed in and what we handed back; a double free or a
    missed one shows up as a crash or a wrong value over many calls."""
    call, _, _ = echo
    for i in range(300):
        s = f"string number {i} " * (i % 7)
        assert call("string", s) == s
        assert call("headers", [(s, s.encode())]) == [(s, s.encode())]
        assert call("variant-str", wc.Variant("text", s)) == wc.Variant("text", s)
    gc.collect()


BAD_ANSWERS = [
    ("u8", 7, 300, "out of range"),
    ("s8", 7, -129, "out of range"),
    ("u64", 7, -1, ""),
    ("string", "ok", 5, ""),
    ("variant-str", wc.Variant("text", "t"), Variant("nope"), "variant has no case 'nope'"),
    ("variant-u64", wc.Variant("num", 1), Variant("num", "not a number"), ""),
    ("record", _record(a=7, b="bee", c=[1]), {"a": 7, "b": "bee"}, "c"),
    ("tuple", (-5, 0.5, "x", False), (1, 2.0), ""),
    ("enum", "blue", None, ""),
]


@pytest.fixture(params=HOST_PATHS)
def fresh_echo(request: pytest.FixtureRequest) -> Any:
    """``echo`` with an instance of its own: a trap leaves an instance unusable (as in the shim, where
    the next request gets a new one)."""
    with host_path(request.param):
        yield from _echo()


@pytest.mark.parametrize(("name", "given", "answer", "message"), BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_a_host_answer_of_the_wrong_shape_traps_the_call(
    fresh_echo: Any, name: str, given: Any, answer: Any, message: str
) -> None:
    """A host bug (a value that does not fit the WIT type) traps the guest's call with the reason,
    never reaches the guest wrapped or half-built, and does not take the process down."""
    call, _, answers = fresh_echo
    answers[name] = answer
    with pytest.raises(wasmtime.WasmtimeError) as trap:
        call(name, given)
    assert f"echo-{name}" in str(trap.value) and message in str(trap.value)
