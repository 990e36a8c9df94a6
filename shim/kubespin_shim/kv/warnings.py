"""Log each label problem (access denied, label not bound) once per component and label.

Labels come from guests, which may open any string; the memory of what was logged is bounded so
that a guest inventing labels cannot grow it without limit.
"""

from __future__ import annotations

import logging
import threading

MAX_REMEMBERED = 1000


class LabelWarnings:
    def __init__(self, log: logging.Logger, limit: int = MAX_REMEMBERED) -> None:
        self._log = log
        self._limit = limit
        self._seen: set[tuple[str, str, str]] = set()
        self._capped = False
        self._lock = threading.Lock()

    def warn_once(self, component: str, label: str, kind: str, message: str) -> None:
        key = (component, label, kind)
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) >= self._limit:
                if not self._capped:
                    self._capped = True
                    self._log.warning("more than %d distinct label problems: not logging further ones", self._limit)
                return
            self._seen.add(key)
        self._log.warning(message)
