"""Event fan-out: publish committed events on Redis, and follow a workflow's events.

The events table is the source of truth; pub/sub only says "look now". A follower
subscribes first, reads the table after the last id it has seen, then follows the
channel, de-duplicating by sequence number and re-reading the table when it sees a gap
or hears nothing for a while (a publisher can die between its commit and its publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from lalo_orchestrator.store import EventRecord, WorkflowStore

log = logging.getLogger(__name__)


def channel_name(prefix: str, workflow_id: str) -> str:
    return f"{prefix}:events:{workflow_id}"


class RedisEventPublisher:
    """Publishes events after their transaction committed; never fails the caller."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._url = redis_url
        self._prefix = prefix
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        return self._client

    def __call__(self, events: Sequence[EventRecord]) -> None:
        try:
            pipe = self._redis().pipeline(transaction=False)
            for event in events:
                pipe.publish(
                    channel_name(self._prefix, event.workflow_id), json.dumps(event.as_dict())
                )
            pipe.execute()
        except redis.RedisError as exc:
            # Followers re-read the table when pub/sub is quiet, so this only delays them.
            log.warning("could not publish %d event(s): %s", len(events), exc)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def is_final(event: EventRecord) -> bool:
    return event.type == "workflow.state" and event.workflow_state.terminal


async def follow_events(
    store: WorkflowStore,
    workflow_id: str,
    after_seq: int,
    *,
    redis_url: str = "",
    prefix: str = "lalo-orch",
    poll_s: float = 1.0,
) -> AsyncIterator[EventRecord]:
    """Every event with seq > after_seq, in order, once each, until the terminal one."""
    last = after_seq
    pubsub: Any = None
    client: aioredis.Redis | None = None
    if redis_url:
        try:
            client = aioredis.Redis.from_url(redis_url)
            pubsub = client.pubsub()
            await pubsub.subscribe(channel_name(prefix, workflow_id))
        except (redis.RedisError, OSError) as exc:
            log.warning("event follower falls back to polling: %s", exc)
            pubsub = None
    try:
        while True:
            # Catch up from the table (after subscribing, so nothing falls in between).
            while True:
                batch = await asyncio.to_thread(store.events_after, workflow_id, last)
                for event in batch:
                    last = event.seq
                    yield event
                    if is_final(event):
                        return
                if len(batch) < 500:
                    break
            if await asyncio.to_thread(_is_finished, store, workflow_id, last):
                return
            # Follow live messages until a gap or a quiet spell sends us back to the table.
            while True:
                message = await _next_message(pubsub, poll_s)
                if message is None:
                    break
                event = EventRecord.from_dict(json.loads(message))
                if event.seq <= last:
                    continue  # already delivered from the table
                if event.seq != last + 1:
                    break  # a gap: the table has what we missed
                last = event.seq
                yield event
                if is_final(event):
                    return
    finally:
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


def _is_finished(store: WorkflowStore, workflow_id: str, last: int) -> bool:
    """Terminal and fully delivered (covers a follower that resumes after the end)."""
    workflow = store.get(workflow_id)
    return workflow.state.terminal and workflow.event_seq <= last


async def _next_message(pubsub: Any, timeout_s: float) -> bytes | None:
    if pubsub is None:
        await asyncio.sleep(timeout_s)
        return None
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        except (redis.RedisError, OSError) as exc:
            log.warning("pub/sub read failed, polling the table instead: %s", exc)
            await asyncio.sleep(remaining)
            return None
        if message is not None and message.get("type") == "message":
            data = message["data"]
            return data if isinstance(data, bytes) else str(data).encode()
