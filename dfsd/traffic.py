"""Bytes received from and sent to peers, counted by the connections that move them (``wire.py``).

The counts are plain integers in a module of their own, so that a connection counts its bytes without importing the
Prometheus client: the client library and the tools (``dfs-cat``) never serve metrics, and importing prometheus_client
took 22 ms of each tool's start-up. The daemons' ``metrics.py`` shows them as ``dfsd_bytes_total{direction}``.

They are added to from the event loop moving the bytes: a prometheus ``Counter`` takes a lock on each ``inc``, which
cost a small request more than its log line's timestamp. (Two threads adding at the same instant could lose one
addition; dfsd moves bytes in its event loop's thread only.)
"""

from __future__ import annotations


class ByteCounts:
    """Bytes received and sent since the process started."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


BYTES = ByteCounts()
