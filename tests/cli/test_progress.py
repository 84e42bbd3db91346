"""dpq.cli.progress: a note on a terminal's stderr while a command waits; nothing
at all when stderr is not a terminal."""

from __future__ import annotations

import io

from dpq.cli.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress("starting", stream=stream) as progress:
        progress.update("waiting for a leader")
        progress.clear()
    assert stream.getvalue() == ""


def test_on_a_terminal_the_note_is_drawn_updated_and_erased():
    stream = Tty()
    with Progress("starting PostgreSQL", stream=stream) as progress:
        progress.update("waiting for a leader")
        assert stream.getvalue().endswith("waiting for a leader (0s)")
    assert stream.getvalue().endswith("\r\x1b[2K")  # erased on the way out


def test_a_delayed_note_stays_away_while_things_happen():
    stream = Tty()
    with Progress("waiting for jobs", stream=stream, delay_s=3600) as progress:
        progress.update("waiting for jobs (1 of 5)")
        progress.clear()
    assert stream.getvalue() == ""


def test_the_line_counts_seconds_since_the_last_update():
    progress = Progress("waiting", stream=Tty())
    start = progress._since
    assert progress.line(now=start + 12.3).endswith("waiting (12s)")
