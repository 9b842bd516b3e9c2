"""Admission at the ingress door: synthesis slots, a short wait, and a refusal with no app work.

Each ingress replica runs at most ``capacity`` (``max_inflight``) syntheses. :class:`AdmissionGate`, an ASGI
middleware, takes a slot for every synthesis request (every POST) *before* its body is parsed, validated,
looked up in the cache or logged. When every slot is busy the request waits, without CPU, for a slot handed
over by a finishing request, for at most the wait budget ``min(max_wait_s, wait_fraction × service time)``
(service time: moving average of how long successful requests held their slot; a quick 4xx/5xx says nothing
about synthesis time and would shrink the budget to nothing). Otherwise, or when ``max_waiting`` requests
already wait, it is refused: 503 ``overloaded`` with a pre-encoded JSON body and a ``Retry-After`` from the
expected wait (queue length × service time / slots), and no log line (the ``overloaded`` error metric counts
them). What a refusal still costs is Ray Serve's own per-request work in the proxy and the replica (~10 ms
CPU on the 2-core box), hence the pacing below.

A freed slot goes to the *newest* waiter (LIFO). Under a standing queue the oldest waiters are the ones
whose budget runs out first anyway; serving the newest keeps an admitted request's wait near zero instead
of near the budget, so admitted latency stays close to the service time (the idea of Facebook's adaptive
LIFO, "Fail at Scale"; here always LIFO: without a standing queue the order hardly matters).

The wait is also what stops a client that ignores ``Retry-After`` from spinning: a closed loop of such
clients cycles once per wait budget instead of once per round trip, so the Serve proxy and the ingress do
not take the CPU the model stages need (benchmarks/reliability.py, overload row).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Admission", "AdmissionGate", "Ticket", "configure", "current"]

OVERLOADED = json.dumps(
    {"error": {"code": "overloaded", "message": "the service is at capacity; retry later"}}
).encode()
SERVICE_EWMA = 0.2  # weight of the newest service time in the moving average


class Ticket:
    """One admitted synthesis: holds a slot until :meth:`release` (idempotent)."""

    def __init__(self, owner: Admission) -> None:
        self._owner = owner
        self._start = time.monotonic()
        self._held = True

    def release(self, succeeded: bool = True) -> None:
        """Free the slot; a successful request's time updates the service-time average."""
        if self._held:
            self._held = False
            self._owner._finished(time.monotonic() - self._start if succeeded else None)


class Admission:
    """``capacity`` slots, at most ``max_waiting`` waiters (served newest first), each waiting at most the
    wait budget."""

    def __init__(
        self,
        capacity: int,
        max_waiting: int,
        max_wait_s: float,
        wait_fraction: float,
        retry_after_s: float,
        max_retry_after_s: float,
        on_refuse: Callable[[], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self.wait_fraction = wait_fraction
        self.retry_after_s = retry_after_s
        self.max_retry_after_s = max_retry_after_s
        self.on_refuse = on_refuse
        self.inflight = 0
        self.service_s: float | None = None  # moving average; None until a request finished
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def wait_budget(self) -> float:
        if self.service_s is None:
            return self.max_wait_s
        return min(self.max_wait_s, self.wait_fraction * self.service_s)

    def retry_after(self) -> float:
        """Seconds until a slot is likely free for one more request: the queue ahead of it, drained by
        ``capacity`` slots at the observed service time; at least ``retry_after_s``."""
        if self.service_s is None:
            return self.retry_after_s
        expected = (self.waiting + 1) * self.service_s / self.capacity
        return min(self.max_retry_after_s, max(self.retry_after_s, expected))

    async def acquire(self) -> Ticket | None:
        """A slot (at once, or handed over within the wait budget), or None: refuse the request."""
        if self.inflight < self.capacity and not self.waiting:
            self.inflight += 1
            return Ticket(self)
        if self.waiting >= self.max_waiting:
            return self._refused()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(self.wait_budget(), self._expire, fut)
        try:
            granted = await fut
        except asyncio.CancelledError:  # the client went away while waiting
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled() and fut.result():
                self._finished(None)  # the slot was already handed over: pass it on
            raise
        finally:
            timer.cancel()
        return Ticket(self) if granted else self._refused()

    def _refused(self) -> Ticket | None:
        if self.on_refuse is not None:
            self.on_refuse()
        return None

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            self._waiters.remove(fut)
            fut.set_result(False)

    def _finished(self, service_s: float | None) -> None:
        """A slot is free: hand it to the newest waiter (it stays counted), else give it back."""
        if service_s is not None:
            prev = self.service_s
            self.service_s = service_s if prev is None else prev + SERVICE_EWMA * (service_s - prev)
        if self._waiters:
            self._waiters.pop().set_result(True)
            return
        self.inflight -= 1


_admission: Admission | None = None


def configure(admission: Admission | None) -> None:
    """Install this replica's admission (``TTSIngress.__init__``; one ingress per replica process)."""
    global _admission
    _admission = admission


def current() -> Admission | None:
    return _admission


class AdmissionGate:
    """Pure ASGI middleware: every POST (a synthesis route) holds a slot for its whole response, taken
    before the body is read; a refused one gets the 503 here and never reaches FastAPI."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        admission = _admission
        if admission is None or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        ticket = await admission.acquire()
        if ticket is None:
            retry = str(max(1, math.ceil(admission.retry_after())))
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(OVERLOADED)).encode()),
                (b"retry-after", retry.encode()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": OVERLOADED})
            return
        status = 0

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ticket.release(succeeded=200 <= status < 300)
