"""wasi:http ``fields`` (headers and trailers): lower-cased names, byte values, validated."""

from __future__ import annotations

import functools
import re

from kubespin_shim.host.values import Err, HostResource, Ok, Variant

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # fullmatch: "$" would let a final newline through
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
# Hop-by-hop fields are the connection's business, never a guest's (as wasmtime-wasi-http).
FORBIDDEN = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings"}
)

INVALID = Err(Variant("invalid-syntax"))
IMMUTABLE = Err(Variant("immutable"))
FORBID = Err(Variant("forbidden"))


class Fields(HostResource):
    __slots__ = ("entries_", "immutable")

    def __init__(self, entries: list[tuple[str, bytes]] | None = None, immutable: bool = False) -> None:
        self.entries_: list[tuple[str, bytes]] = entries if entries is not None else []
        self.immutable = immutable

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Ok | Err:
        out: list[tuple[str, bytes]] = []
        for name, value in entries:
            lower = _field(name, value)
            if type(lower) is not str:
                return lower
            out.append((lower, value))
        return Ok(cls(out))

    def view(self) -> Fields:
        """An immutable handle over the same entries (what `headers()` returns)."""
        return Fields(self.entries_, immutable=True)

    def get(self, name: str) -> list[bytes]:
        key = name.lower()
        return [v for n, v in self.entries_ if n == key]

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(n == key for n, _ in self.entries_)

    def set(self, name: str, values: list[bytes]) -> Ok | Err:
        if self.immutable:
            return IMMUTABLE
        for v in values:
            bad = _check(name, v)
            if bad is not None:
                return bad
        key = name.lower()
        self.entries_[:] = [(n, v) for n, v in self.entries_ if n != key] + [(key, v) for v in values]
        return Ok(None)

    def delete(self, name: str) -> Ok | Err:
        if self.immutable:
            return IMMUTABLE
        bad = _check(name, b"")
        if bad is not None:
            return bad
        key = name.lower()
        self.entries_[:] = [(n, v) for n, v in self.entries_ if n != key]
        return Ok(None)

    def append(self, name: str, value: bytes) -> Ok | Err:
        if self.immutable:
            return IMMUTABLE
        bad = _check(name, value)
        if bad is not None:
            return bad
        self.entries_.append((name.lower(), value))
        return Ok(None)

    def entries(self) -> list[tuple[str, bytes]]:
        return list(self.entries_)

    def clone(self) -> Fields:
        return Fields(list(self.entries_))


def _check(name: str, value: bytes) -> Err | None:
    verdict = _field(name, value)
    return verdict if type(verdict) is not str else None


def _field(name: str, value: bytes) -> str | Err:
    """The field's lower-cased name, or the error the guest gets for it."""
    verdict = _name_verdict(name)
    if type(verdict) is str and _BAD_VALUE.search(value):
        return INVALID
    return verdict


@functools.lru_cache(maxsize=1024)  # guests send the same few names on every request
def _name_verdict(name: str) -> str | Err:
    """The lower-cased name, or the error it gets (not a token, or forbidden)."""
    if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
        return INVALID
    lower = name.lower()
    return FORBID if lower in FORBIDDEN else lower
