"""A progress indicator for long sweeps, on stderr (no dependency).

On a terminal it rewrites one line; in a log (CI) it prints a line at about every
quarter, so logs stay short.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("workloads", total) as p: ... p.step()``."""

    def __init__(self, label: str, total: int, stream=None, enabled: bool = True):
        self.label, self.total, self.done = label, max(int(total), 1), 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._next_report = 0.25

    def __enter__(self) -> "Progress":
        if self.enabled and not self.tty:
            self._write(f"[{self.label}] 0/{self.total}\n")
        return self

    def step(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.tty:
            self._write(f"\r[{self.label}] {self.done}/{self.total} ({self._elapsed()})")
        elif self.done / self.total >= self._next_report and self.done < self.total:
            self._write(f"[{self.label}] {self.done}/{self.total} ({self._elapsed()})\n")
            while self._next_report <= self.done / self.total:
                self._next_report += 0.25

    def __exit__(self, *exc) -> None:
        if self.enabled:
            start = "\r" if self.tty else ""
            self._write(f"{start}[{self.label}] {self.done}/{self.total} done in {self._elapsed()}\n")

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def quiet(label: str, total: int) -> Progress:
    """A progress object that prints nothing (for tests and library calls)."""
    return Progress(label, total, enabled=False)
