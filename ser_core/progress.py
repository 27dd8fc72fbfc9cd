"""A dependency-free progress bar for the CLI and a callback hook for the app."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """Counts work done; draws a bar on a terminal, or calls ``callback(done, total)``."""

    def __init__(self, total: int, label: str = "", *, enabled: bool | None = None,
                 callback: Callable[[int, int], None] | None = None, stream=None):
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.callback = callback
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self.callback:
            self.callback(self.done, self.total)
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        if self.total:
            frac = self.done / self.total
            eta = elapsed / frac - elapsed if frac > 0 else 0.0
            bar = "#" * int(frac * 30)
            text = f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {elapsed:5.1f}s eta {eta:5.1f}s"
        else:
            text = f"\r{self.label} {self.done} {elapsed:5.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
