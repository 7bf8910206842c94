"""Failed-login throttling: per client address and per user name, in a sliding window.

After ``max_failures`` failed logins within ``window_s`` seconds, further attempts for that user name (or
from that client) are answered ``429 Too Many Requests`` with ``Retry-After`` until the oldest failure
leaves the window - the right password included, so guessing cannot go on. Counts live in the server's
memory (one server process; a restart clears them).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from .errors import TooManyJobs as TooManyLogins  # code TooManyRequests, 429

MAX_KEYS = 100_000  # tracked names and addresses; beyond this the oldest are forgotten

class LoginThrottle:
    def __init__(self, max_per_user: int, max_per_client: int, window_s: float):
        self.limits = {"user": max_per_user, "client": max_per_client}
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def check(self, user: str, client: str) -> None:
        """Raise :class:`TooManyLogins` (with ``Retry-After``) when the user or the client is locked out."""
        now = time.monotonic()
        with self._lock:
            for kind, value in (("user", user), ("client", client)):
                times = self._recent((kind, value), now)
                if len(times) >= self.limits[kind]:
                    retry = max(1, math.ceil(times[0] + self.window_s - now))
                    exc = TooManyLogins(f"Too many failed logins for this {'user' if kind == 'user' else 'client'}"
                                        f"; try again in {retry} s.")
                    exc.headers["Retry-After"] = str(retry)
                    raise exc

    def failed(self, user: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > MAX_KEYS:
                for key in list(self._failures)[: MAX_KEYS // 10]:
                    del self._failures[key]
            for key in (("user", user), ("client", client)):
                self._failures.setdefault(key, deque()).append(now)
