"""Waiting on a job's event stream from asyncio (the API's Server-Sent Events): a blocking XREAD on an asyncio
connection of its own, so a new event reaches the reader as soon as Redis has it."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from orchestrator.model.events import Event
from orchestrator.store.keys import KeyNames


class AsyncEvents:
    """One reader's connection; close it with aclose() (or use `async with`)."""

    def __init__(self, url: str, keys: KeyNames, socket_timeout: float) -> None:
        # the socket timeout must outlast the blocking read (redis-py's asyncio default of 5 s would cut
        # every quiet stream)
        self._r = aioredis.from_url(url, decode_responses=True, socket_timeout=socket_timeout)
        self._keys = keys

    async def read(self, job_id: str, after: str = "0-0", *, block_ms: int, count: int = 500) -> list[Event]:
        """Events after `after` (a stream id), waiting up to block_ms for the first new one ([] if none came)."""
        reply: Any = await self._r.xread({self._keys.events(job_id): after}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []
        return [Event.from_stream(entry_id, fields) for entry_id, fields in entries]

    async def aclose(self) -> None:
        await self._r.aclose()

    async def __aenter__(self) -> AsyncEvents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
