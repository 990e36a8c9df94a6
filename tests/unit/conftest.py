"""Fixtures of the unit tests."""

from tests.host_paths import each_host_path

__all__ = ["each_host_path"]
