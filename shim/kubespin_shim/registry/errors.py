"""Typed errors for registry push and pull, each with a message a person can act on.

All derive from :class:`RegistryError` (a :class:`~kubespin_shim.errors.ShimError`), so ``kubespin up``
prints them without a traceback and the operator can copy them into a status condition.
"""

from __future__ import annotations

from kubespin_shim.errors import ShimError


class RegistryError(ShimError):
    """Base class: a push or pull failed for a reason outside this program."""


class InvalidReferenceError(RegistryError):
    """The text is not an OCI reference ``host[:port]/repo[:tag|@digest]``."""


class InsecureRegistryError(RegistryError):
    """Plain HTTP was needed for a registry that is neither loopback nor allowed to be insecure."""


class RegistryUnreachableError(RegistryError):
    """The registry did not answer (connection refused, DNS, TLS, timeout)."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class ArtifactNotFoundError(RegistryError):
    """The repository, tag or digest is unknown to the registry."""


class NotASpinAppError(RegistryError):
    """The artifact exists but is not a Spin application (no locked-app layer or config)."""


class DigestMismatchError(RegistryError):
    """Content from the registry does not hash to the digest that names it."""


class RegistryProtocolError(RegistryError):
    """The registry answered in a way the distribution API does not allow (or with an error)."""
