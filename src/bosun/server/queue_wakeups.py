"""Wakes long-polling `queues.get_next_task` callers when a task is added to their queue.

Handlers run in worker threads; waiters are futures on the event loop. One added task wakes one
waiter (the longest waiting), so 200 idle agents do not all race for a single task. A waiter
registers *before* it looks at the queue, so an enqueue can never slip between its look and its
sleep. Tasks added by another server process sharing the database are seen by `QueueWatch`;
waiters also re-check every `RECHECK_SECONDS` as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from dataclasses import dataclass

RECHECK_SECONDS = 15.0


@dataclass(eq=False)
class Ticket:
    queue_ids: list[str]
    future: asyncio.Future[None]

    @property
    def woken(self) -> bool:
        return self.future.done() and not self.future.cancelled()


class QueueWakeups:
    def __init__(self) -> None:
        self._waiters: dict[str, deque[Ticket]] = defaultdict(deque)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def register(self, queue_ids: list[str]) -> Ticket:
        ticket = Ticket(queue_ids, asyncio.get_running_loop().create_future())
        for queue_id in queue_ids:
            self._waiters[queue_id].append(ticket)
        return ticket

    async def wait(self, ticket: Ticket, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ticket.future), timeout)

    def release(self, ticket: Ticket) -> None:
        for queue_id in ticket.queue_ids:
            waiters = self._waiters.get(queue_id)
            if waiters is None:
                continue
            with contextlib.suppress(ValueError):
                waiters.remove(ticket)
            if not waiters:
                del self._waiters[queue_id]
        if not ticket.future.done():
            ticket.future.cancel()

    def waited_queues(self) -> list[str]:
        """On the event loop: the queues someone waits on now."""
        return [queue_id for queue_id, waiters in self._waiters.items() if waiters]

    def notify(self, queue_id: str, count: int = 1) -> None:
        """Thread-safe: wake up to `count` waiters of the queue."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake, queue_id, count)

    def wake(self, queue_id: str, count: int = 1) -> None:
        """On the event loop: wake up to `count` waiters of the queue."""
        waiters = self._waiters.get(queue_id)
        while waiters and count > 0:
            ticket = waiters.popleft()
            if not ticket.future.done():
                ticket.future.set_result(None)
                count -= 1
