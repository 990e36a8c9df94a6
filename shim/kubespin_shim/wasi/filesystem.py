"""wasi:filesystem — a read-only view of the component's ``files`` mounts, preopened at ``/``.

The tree is built once per component at startup from the manifest's file mounts (directories are
walked then), so a request costs no host directory walks, and a guest path can never reach a host
file that the manifest did not mount: lookups walk the in-memory tree, never the host path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, HostResource, Ok
from kubespin_shim.wasi.io import InputStream

FILES_KEY = "filesystem.root"
READ_ONLY = Err("read-only")


@dataclass
class Node:
    host_path: Path | None = None  # None for a synthetic directory
    children: dict[str, Node] | None = field(default=None)

    @property
    def is_dir(self) -> bool:
        return self.children is not None


class FileTree:
    def __init__(self) -> None:
        self.root = Node(children={})

    @classmethod
    def from_mounts(cls, mounts: Iterable[tuple[str, Path, bool]]) -> FileTree:
        tree = cls()
        for guest_path, host_path, is_dir in mounts:
            if is_dir:
                tree._add_dir(guest_path, host_path)
            else:
                tree._add_file(guest_path, host_path)
        return tree

    def _dir_at(self, parts: list[str]) -> Node:
        node = self.root
        for part in parts:
            assert node.children is not None
            child = node.children.get(part)
            if child is None or not child.is_dir:
                child = node.children[part] = Node(children={})
            node = child
        return node

    def _add_file(self, guest_path: str, host_path: Path) -> None:
        parts = [p for p in guest_path.split("/") if p]
        if not parts:
            return
        parent = self._dir_at(parts[:-1])
        assert parent.children is not None
        parent.children[parts[-1]] = Node(host_path=host_path)

    def _add_dir(self, guest_path: str, host_dir: Path) -> None:
        base = [p for p in guest_path.split("/") if p]
        self._dir_at(base)
        for dirpath, _dirnames, filenames in os.walk(host_dir):
            rel = Path(dirpath).relative_to(host_dir).parts
            self._dir_at(base + list(rel))
            for name in filenames:
                full = Path(dirpath) / name
                if full.is_file():
                    self._add_file("/".join([*base, *rel, name]), full)

    @property
    def empty(self) -> bool:
        return not self.root.children


def _resolve(start: Node, path: str) -> Node | Err:
    if path.startswith("/"):
        return Err("not-permitted")
    stack = [start]
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(stack) == 1:
                return Err("not-permitted")
            stack.pop()
            continue
        cur = stack[-1]
        if not cur.is_dir:
            return Err("not-directory")
        assert cur.children is not None
        nxt = cur.children.get(part)
        if nxt is None:
            return Err("no-entry")
        stack.append(nxt)
    return stack[-1]


def _stat(node: Node) -> dict[str, object]:
    if node.is_dir or node.host_path is None:
        return {
            "type": "directory", "link-count": 1, "size": 0,
            "data-access-timestamp": None, "data-modification-timestamp": None,
            "status-change-timestamp": None,
        }
    st = node.host_path.stat()
    ts = {"seconds": int(st.st_mtime), "nanoseconds": st.st_mtime_ns % 1_000_000_000}
    return {
        "type": "regular-file", "link-count": 1, "size": st.st_size,
        "data-access-timestamp": ts, "data-modification-timestamp": ts, "status-change-timestamp": ts,
    }


class DirectoryEntryStream(HostResource):
    def __init__(self, entries: list[dict[str, str]]) -> None:
        self._entries = entries

    def read_directory_entry(self) -> Ok:
        return Ok(self._entries.pop(0) if self._entries else None)


class Descriptor(HostResource):
    def __init__(self, node: Node) -> None:
        self.node = node
        self._data: bytes | None = None

    def _bytes(self) -> bytes:
        if self._data is None:
            assert self.node.host_path is not None
            self._data = self.node.host_path.read_bytes()
        return self._data

    def read_via_stream(self, offset: int) -> Ok | Err:
        if self.node.is_dir:
            return Err("is-directory")
        return Ok(InputStream.of_bytes(self._bytes()[offset:]))

    def write_via_stream(self, offset: int) -> Err:
        return READ_ONLY

    def append_via_stream(self) -> Err:
        return READ_ONLY

    def advise(self, offset: int, length: int, advice: str) -> Ok:
        return Ok(None)

    def sync_data(self) -> Ok:
        return Ok(None)

    sync = sync_data

    def get_flags(self) -> Ok:
        return Ok({"read"})

    def get_type(self) -> Ok:
        return Ok("directory" if self.node.is_dir else "regular-file")

    def set_size(self, size: int) -> Err:
        return READ_ONLY

    def set_times(self, atime: object, mtime: object) -> Err:
        return READ_ONLY

    def read(self, length: int, offset: int) -> Ok | Err:
        if self.node.is_dir:
            return Err("is-directory")
        data = self._bytes()
        chunk = data[offset : offset + length]
        return Ok((chunk, offset + len(chunk) >= len(data)))

    def write(self, data: bytes, offset: int) -> Err:
        return READ_ONLY

    def read_directory(self) -> Ok | Err:
        if not self.node.is_dir:
            return Err("not-directory")
        assert self.node.children is not None
        entries = [
            {"type": "directory" if n.is_dir else "regular-file", "name": name}
            for name, n in sorted(self.node.children.items())
        ]
        return Ok(DirectoryEntryStream(entries))

    def create_directory_at(self, path: str) -> Err:
        return READ_ONLY

    def stat(self) -> Ok:
        return Ok(_stat(self.node))

    def stat_at(self, path_flags: set[str], path: str) -> Ok | Err:
        node = _resolve(self.node, path)
        if isinstance(node, Err):
            return node
        return Ok(_stat(node))

    def set_times_at(self, path_flags: set[str], path: str, atime: object, mtime: object) -> Err:
        return READ_ONLY

    def link_at(self, old_flags: set[str], old_path: str, new_desc: object, new_path: str) -> Err:
        return READ_ONLY

    def open_at(self, path_flags: set[str], path: str, open_flags: set[str], flags: set[str]) -> Ok | Err:
        if open_flags & {"create", "truncate", "exclusive"} or flags & {"write", "mutate-directory"}:
            return READ_ONLY
        node = _resolve(self.node, path)
        if isinstance(node, Err):
            return node
        if "directory" in open_flags and not node.is_dir:
            return Err("not-directory")
        return Ok(Descriptor(node))

    def readlink_at(self, path: str) -> Err:
        return Err("invalid")

    def remove_directory_at(self, path: str) -> Err:
        return READ_ONLY

    def rename_at(self, old_path: str, new_desc: object, new_path: str) -> Err:
        return READ_ONLY

    def symlink_at(self, old_path: str, new_path: str) -> Err:
        return READ_ONLY

    def unlink_file_at(self, path: str) -> Err:
        return READ_ONLY

    def is_same_object(self, other: Descriptor) -> bool:
        return other.node is self.node

    def metadata_hash(self) -> Ok:
        return Ok({"lower": id(self.node) & 0xFFFFFFFFFFFFFFFF, "upper": 0})

    def metadata_hash_at(self, path_flags: set[str], path: str) -> Ok | Err:
        node = _resolve(self.node, path)
        if isinstance(node, Err):
            return node
        return Ok({"lower": id(node) & 0xFFFFFFFFFFFFFFFF, "upper": 0})


types = Interface("wasi:filesystem/types")
types.resource(
    "descriptor",
    Descriptor,
    [
        "read-via-stream", "write-via-stream", "append-via-stream", "advise", "sync-data", "get-flags",
        "get-type", "set-size", "set-times", "read", "write", "read-directory", "sync",
        "create-directory-at", "stat", "stat-at", "set-times-at", "link-at", "open-at", "readlink-at",
        "remove-directory-at", "rename-at", "symlink-at", "unlink-file-at", "is-same-object",
        "metadata-hash", "metadata-hash-at",
    ],
)
types.resource("directory-entry-stream", DirectoryEntryStream, ["read-directory-entry"])
types.func("filesystem-error-code")(lambda ctx, err: None)

preopens = Interface("wasi:filesystem/preopens")


@preopens.func("get-directories")
def get_directories(ctx: CallContext) -> list[tuple[Descriptor, str]]:
    tree: FileTree | None = ctx.extras.get(FILES_KEY)
    if tree is None or tree.empty:
        return []
    return [(Descriptor(tree.root), "/")]


INTERFACES = [types, preopens]
