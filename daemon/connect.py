"""Broker clients' lifecycle: created with backoff, closed without one failure stopping the rest.

A daemon started during a broker outage (or before the broker, as under Docker Compose) should
wait for it, not exit with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from threading import Event
from typing import TypeVar

log = logging.getLogger("driftd.connect")

#: First and longest wait between attempts.
BACKOFF_S = (0.5, 10.0)
T = TypeVar("T")


def connect_with_backoff(
    make: Callable[[], T],
    what: str,
    *,
    stop: Event | None = None,
    on_attempt: Callable[[], None] | None = None,
) -> T | None:
    """``make()``, retried with doubling waits while it raises; None once ``stop`` is set.

    Args:
        make: Creates the client (raises while the broker cannot be reached).
        what: The client's name, for the log.
        stop: Ends the retries (e.g. set by a SIGTERM handler); None: retry until it works.
        on_attempt: Called before each attempt (e.g. a liveness heartbeat).
    """
    stop = stop or Event()
    delay = BACKOFF_S[0]
    while not stop.is_set():
        if on_attempt is not None:
            on_attempt()
        try:
            return make()
        except Exception as error:  # whatever the client raises while it cannot connect
            log.warning(
                "cannot create the %s yet (%s): retrying in %.1f s", what, error, delay,
                extra={"event": "connect_retry", "client": what},
            )  # fmt: skip
            stop.wait(delay)
            delay = min(2 * delay, BACKOFF_S[1])
    return None


def close_all(closers: Iterable[Callable[[], None]]) -> None:
    """Call every closer; one that fails is logged and the others still run."""
    for close in closers:
        try:
            close()
        except Exception as error:
            log.warning("error while closing: %s", error)
