"""A brake on console login guessing: after a few failed logins from one client address, that
address must wait before it may try again, and each further failure doubles the wait.

API keys are 256-bit random secrets, so guessing one is hopeless anyway; the brake keeps a client
from hammering the key database and the audit log (every failed login is an fsynced audit line).
It is per gateway process (each ``--workers`` worker keeps its own), in memory, and bounded: at most
``max_clients`` addresses are remembered, the stalest forgotten first.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5  # failures before any wait
FIRST_WAIT_S = 1.0  # the wait after the first failure past the free ones; it doubles from there
MAX_WAIT_S = 60.0  # a shared address (a proxy, NAT) locks its operators out for a minute at most
FORGET_S = 900.0  # a client with no failure for this long starts afresh


@dataclass
class _Client:
    failures: int
    last: float
    until: float


class LoginThrottle:
    def __init__(self, *, max_clients: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def wait_s(self, client: str) -> float:
        """Seconds ``client`` must still wait before a login is tried for it (0: go ahead)."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        now = self.clock()
        if now - entry.last >= FORGET_S:
            del self._clients[client]
            return 0.0
        return max(0.0, entry.until - now)

    def failed(self, client: str) -> _Client | None:
        """Count a failure; returns what was remembered before it, for :meth:`restore`."""
        now = self.clock()
        entry = self._clients.pop(client, None)
        before = dataclasses.replace(entry) if entry is not None else None
        if entry is None or now - entry.last >= FORGET_S:
            entry = _Client(0, now, now)
        entry.failures += 1
        entry.last = now
        over = entry.failures - FREE_FAILURES
        entry.until = now + (min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** min(over - 1, 16)) if over > 0 else 0.0)
        self._clients[client] = entry  # the most recent at the end
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return before

    def restore(self, client: str, before: _Client | None) -> None:
        """Take back a failure counted by :meth:`failed` (an attempt that turned out not to be one)."""
        if before is None:
            self._clients.pop(client, None)
        else:
            self._clients[client] = before

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
