"""The runtime's listening line (tidal.runtime.channel.LISTENING_LINE), found in a
runner's output as it streams: how a backend with no socket to its runner (a
container) hears the moment its server listens. The output is the runner's own and
untrusted: a line the runner prints early only makes the platform probe sooner."""

from __future__ import annotations

from tidal.runtime.channel import LISTENING_LINE

MARK = LISTENING_LINE.encode()
# The most of one unfinished line kept between chunks (the line itself is short).
MAX_PARTIAL = 4096


class ListeningWatch:
    """Fed the output in chunks as they come (split anywhere); says once when a whole
    line starts with the listening mark, and ignores the rest of the stream."""

    def __init__(self) -> None:
        self.heard = False
        self._partial = b""

    def feed(self, chunk: bytes) -> bool:
        """True for the chunk that completes the listening line, else False."""
        if self.heard:
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > MAX_PARTIAL:
            # A line this long is not the mark; keep only enough to tell where it ends.
            self._partial = b"\0"
        self.heard = any(line.startswith(MARK) for line in lines)
        return self.heard
