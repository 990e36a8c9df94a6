"""Store backends for the key-value and SQLite factors: configuration, backends, live bindings.

- :mod:`.config` reads ``[key_value_store.*]`` / ``[sqlite_database.*]`` with Spin's rules;
- :mod:`.spin_sqlite` and :mod:`.redis_backend` are the key-value backends (``type = "spin"`` /
  ``"redis"``) behind :class:`.base.KeyValueBackend`;
- :mod:`.sqlite_database` serves guest SQL for ``[sqlite_database.*]``;
- :mod:`.bindings` swaps label → backend bindings under load without failing a request.
"""
