"""Guessing slows down: a client that sends a few wrong secrets within a minute is refused (429) until that minute
has passed, before its next secret is even compared. Nothing waits: a refused guess costs no thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

FREE_GUESSES = 5  # wrong secrets a client may send in WINDOW_SECS: a person mistyping, not a guesser
WINDOW_SECS = 60.0
MAX_CLIENTS = 10_000  # clients remembered at once: past it, those whose minute is over are forgotten, then the oldest


class GuessThrottle:
    """Wrong secrets per client (an address) in the minute since its first one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._guesses: dict[str, tuple[float, int]] = {}  # client -> (its minute began at, wrong secrets in it)

    def retry_after(self, client: str) -> int:
        """Whole seconds until client may try a secret again; 0: now."""
        with self._lock:
            began, wrong = self._guesses.get(client, (0.0, 0))
        left = began + WINDOW_SECS - self.clock()
        return math.ceil(left) if wrong >= FREE_GUESSES and left > 0 else 0

    def wrong(self, client: str) -> int | None:
        """Note a wrong secret from client; the count when this one used up its free guesses (the burst's one log
        line), else None."""
        now = self.clock()
        with self._lock:
            began, wrong = self._guesses.get(client, (now, 0))
            if now - began >= WINDOW_SECS:
                began, wrong = now, 0
            self._guesses[client] = (began, wrong + 1)
            if len(self._guesses) > MAX_CLIENTS:
                self._forget(now)
        return wrong + 1 if wrong + 1 == FREE_GUESSES else None

    def _forget(self, now: float) -> None:
        """Bound the memory: forget clients whose minute is over, or else the oldest half."""
        over = [client for client, (began, _) in self._guesses.items() if now - began >= WINDOW_SECS]
        for client in over or sorted(self._guesses, key=lambda c: self._guesses[c][0])[:MAX_CLIENTS // 2]:
            del self._guesses[client]
