"""A one-line progress note on stderr for CLI commands that wait (issue 15: "long
work shows progress"), shown only when stderr is a terminal, so scripts and pipes
get clean output.

    with Progress("starting PostgreSQL") as progress:
        ...
        progress.update("waiting for a leader")

A background thread redraws ``⠋ text (12s)`` a few times a second, the seconds
counted since the last :meth:`update` or :meth:`clear`. ``delay_s``: draw only
after that long without either (a command that is often quick stays silent).
Call :meth:`clear` before printing to stdout on the same terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Self, TextIO

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REDRAW_S = 0.2


class Progress:
    def __init__(self, text: str, *, stream: TextIO | None = None, delay_s: float = 0.0,
                 enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.delay_s = delay_s
        self._text = text
        self._since = time.monotonic()
        self._drawn = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.clear()

    def update(self, text: str) -> None:
        """A new note; the seconds count from now."""
        with self._lock:
            self._text, self._since = text, time.monotonic()
        self._draw()

    def clear(self) -> None:
        """Erase the note (until the next redraw); the seconds count from now."""
        with self._lock:
            self._since = time.monotonic()
            if self._drawn:
                self._write("\r\x1b[2K")
                self._drawn = False

    def line(self, now: float | None = None) -> str:
        """What is drawn now (for tests)."""
        elapsed = (time.monotonic() if now is None else now) - self._since
        spin = SPINNER[int(elapsed / REDRAW_S) % len(SPINNER)]
        return f"{spin} {self._text} ({int(elapsed)}s)"

    def _run(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self._draw()

    def _draw(self) -> None:
        if not self.enabled or self._stop.is_set():
            return
        with self._lock:
            if time.monotonic() - self._since < self.delay_s:
                return
            self._write("\r\x1b[2K" + self.line())
            self._drawn = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal is gone or the stream closed
            self.enabled = False


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
