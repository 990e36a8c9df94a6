"""Typed exceptions shared by the shim.

Every failure a person can fix (a bad manifest, a missing file, a corrupt artifact) is raised as a
subclass of :class:`ShimError`, so the CLI can print it without a traceback and the operator can put
the message into a status condition. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

from pathlib import Path


class ShimError(Exception):
    """Base class for errors the shim reports to a person instead of crashing."""


class ManifestError(ShimError):
    """A Spin application (spin.toml, locked app, or OCI artifact) cannot be loaded.

    ``file`` is what was being read, ``key`` the dotted path inside it (``component.hello.source``,
    ``trigger.http[0].route``; empty when the problem is the whole file), and ``message`` says what is
    wrong and, where possible, what to do about it.
    """

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"

    def __reduce__(self) -> tuple[type[ManifestError], tuple[str, str, str]]:
        # Keep the three fields when the error crosses a process boundary (multiprocessing, pickling).
        return (type(self), (self.file, self.key, self.message))
