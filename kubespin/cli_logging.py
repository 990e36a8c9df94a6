"""Logging for the long-running node commands (`kubespin node`, `kubespin node-probe`): one format, and
the HTTP/2 client libraries quiet unless --verbose."""

from __future__ import annotations

import logging

NOISY = ("httpx", "httpx2", "httpcore", "hpack", "h2")


def configure(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for noisy in NOISY:
            logging.getLogger(noisy).setLevel(logging.WARNING)
