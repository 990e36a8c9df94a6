"""Outbound networking for guests: Spin's ``allowed_outbound_hosts``, outbound HTTP and outbound Redis.

- ``allowed_hosts``: the allow-list syntax and matching, as Spin's ``outbound-networking-config``.
- ``policy``: one component's allow-list per request (templates resolved lazily) and the denial log.
- ``pipe``: a bounded, thread-safe byte pipe between a guest's streams and a worker thread.
- ``http_client``: real HTTP(S) requests with httpx in worker threads; error-code mapping.
- ``internal``: requests that never leave the process (``self`` and ``*.spin.internal``).
- ``wasi_http``: the outgoing side of ``wasi:http/types`` and ``wasi:http/outgoing-handler``.
- ``redis_client``: ``fermyon:spin/redis@2.0.0`` over redis-py.
"""
