"""A deadline for a call that cannot be interrupted: a UNO call into a hung LibreOffice blocks
its thread for good, so the only way out is from another thread, by killing the instance."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    """Calls ``on_expiry(generation)`` when an armed deadline passes.

    One long-lived thread per converter: starting a thread per conversion waits for the new
    thread to be scheduled, which on a busy machine costs milliseconds every document. Each
    ``arm`` returns a new generation, so an expiry that arrives late can be told apart from one
    that concerns the conversion running now.
    """

    def __init__(self, on_expiry: Callable[[int], None]) -> None:
        self._on_expiry = on_expiry
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._generation = 0
        self._stopped = False
        threading.Thread(target=self._run, name="libreoffice-watchdog", daemon=True).start()

    def arm(self, seconds: float) -> int:
        with self._condition:
            self._generation += 1
            self._deadline = time.monotonic() + seconds
            self._condition.notify()
            return self._generation

    def disarm(self) -> None:
        with self._condition:
            self._deadline = None
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and (
                    self._deadline is None or self._deadline > time.monotonic()
                ):
                    timeout = None if self._deadline is None else self._deadline - time.monotonic()
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                self._deadline = None
                generation = self._generation
            self._on_expiry(generation)  # outside the lock: killing may take a while
