"""Planted faults: realistic bugs the reference backend can run with (``--fault NAME``).

Each fault is something a real backend gets wrong, and each is aimed at one
verdict of the analysis, which must fail when the backend runs with it.
"""

from __future__ import annotations

from enum import StrEnum


class Fault(StrEnum):
    """The faults, with the verdict each must trip."""

    LEAK = "leak"  #: keeps ~64 KiB per connection forever -> leak
    FD_LEAK = "fd-leak"  #: dups each connection's socket and never closes it -> leak (fds, CLOSE_WAIT)
    DUPLICATE_AGENT = "duplicate-agent"  #: a resume creates a second agent; the first stays -> duplicate-agent
    LOSE_OFFLINE = "lose-offline"  #: pushes for a detached session are dropped -> delivery
    STREAM_GAP = "stream-gap"  #: chunks made while detached are never replayed -> delivery
    NO_REAP = "no-reap"  #: idle sockets are never closed -> zombie
    SLOW_RESUME = "slow-resume"  #: a resume takes 1.5-3 s -> reconnect-latency
    REFRESH_BREAKS = "refresh-breaks"  #: a refresh closes the socket (1011) -> refresh
    FORGET_ON_RESTART = "forget-on-restart"  #: the store is not flushed on shutdown -> restart
    NO_TAKEOVER = "no-takeover"  #: a resume on a new connection leaves the older one open -> duplicate-agent


LEAK_BYTES_PER_CONNECTION = 64 * 1024
SLOW_RESUME_RANGE_S = (1.5, 3.0)
