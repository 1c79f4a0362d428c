"""Finding the runtime's listening line in a container's output stream (pure)."""

from __future__ import annotations

from tidal.backends.output_signal import MAX_PARTIAL, ListeningWatch
from tidal.runtime.channel import LISTENING_LINE

LINE = f"{LISTENING_LINE}0.0.0.0:8080\n".encode()


def test_heard_once_when_the_line_is_complete_across_chunks() -> None:
    watch = ListeningWatch()
    assert not watch.feed(b"tidal runtime: loading app.py::A\n" + LINE[:10])
    assert not watch.feed(LINE[10:-1])  # not a whole line yet
    assert watch.feed(b"\nmore output\n")
    assert not watch.feed(LINE)  # said once; the rest of the stream is not read
    assert watch.heard


def test_only_a_line_that_starts_with_the_mark_counts() -> None:
    watch = ListeningWatch()
    assert not watch.feed(b"user says: " + LINE)
    assert not watch.feed(LISTENING_LINE.encode())  # no newline: not a line yet
    assert watch.feed(b"\n")


def test_an_endless_line_is_not_kept_and_cannot_end_as_the_mark() -> None:
    watch = ListeningWatch()
    for _ in range(100):
        assert not watch.feed(b"x" * MAX_PARTIAL)
    assert len(watch._partial) <= MAX_PARTIAL
    assert not watch.feed(LINE)  # the end of that long line, not a line of its own
    assert watch.feed(LINE)
