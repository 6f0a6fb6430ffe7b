"""The live event stream: events fan out from detection to every connected client.

Detection runs in its own thread; clients are asyncio tasks of the API server. Each
client has a bounded queue and its filter (already narrowed to its site scope);
:meth:`Broadcaster.publish` is called from the detection thread and hands matching
documents to each client's loop with ``call_soon_threadsafe``. A client whose queue
is full (it reads slower than events arrive) is disconnected, counted, and can
reconnect and page through the API for what it missed: detection never waits for a
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from flowhawk.serve.eventdb import EventFilter

#: Seconds between keep-alive comments on an idle stream.
HEARTBEAT = 15.0
_CLOSE = object()


@dataclass(eq=False)
class Client:
    flt: EventFilter
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue())
    limit: int = 1000
    dropped: bool = False

    def offer(self, doc: dict[str, Any]) -> None:  # on the client's loop
        if self.dropped:
            return
        if self.queue.qsize() >= self.limit:
            self.dropped = True
            self.queue.put_nowait(_CLOSE)
        else:
            self.queue.put_nowait(doc)


class Broadcaster:
    """Clients of the live stream and the fan-out to them."""

    def __init__(self, queue_limit: int = 1000):
        self.queue_limit = queue_limit
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self.disconnected_slow = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, docs: list[dict[str, Any]]) -> None:
        """Offer documents to every client whose filter matches (any thread)."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            for doc in docs:
                if client.flt.matches(doc):
                    try:
                        client.loop.call_soon_threadsafe(client.offer, doc)
                    except RuntimeError:  # its loop is closed: the client is gone
                        break

    def close_all(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(RuntimeError):
                client.loop.call_soon_threadsafe(client.queue.put_nowait, _CLOSE)

    async def events(self, flt: EventFilter, heartbeat: float = HEARTBEAT) -> AsyncIterator[str]:
        """Server-sent events for one client until it disconnects or falls behind."""
        client = Client(flt, asyncio.get_running_loop(), limit=self.queue_limit)
        with self._lock:
            self._clients.add(client)
        try:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    doc = await asyncio.wait_for(client.queue.get(), heartbeat)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if doc is _CLOSE:
                    if client.dropped:
                        self.disconnected_slow += 1
                        yield "event: overflow\ndata: {}\n\n"
                    return
                data = json.dumps(doc, separators=(",", ":"), default=str)
                yield f"id: {doc['id']}\nevent: event\ndata: {data}\n\n"
        finally:
            with self._lock:
                self._clients.discard(client)
