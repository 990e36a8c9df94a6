"""Whether the operator can reach a Redis store: one PING with a short timeout (redis-py's asyncio
client). Error text is scrubbed of the URL, which may carry a password."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError


def describe_endpoint(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


async def ping(url: str, timeout: float = 1.0) -> str | None:
    """None when Redis answers PING; otherwise a message safe to show in status and Events."""
    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
        return None
    except (RedisError, OSError, TimeoutError) as err:
        text = str(err).replace(url, "<redis url>")
        return f"Redis at {describe_endpoint(url)} did not answer PING: {type(err).__name__}: {text}"
    finally:
        await client.aclose()
