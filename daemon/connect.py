"""Broker clients' lifecycle: created with backoff, closed without one failure stopping the rest.

A daemon started during a broker outage (or before the broker, as under Docker Compose) should
wait for it, not exit with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from threading import Event, Lock, Thread
from typing import Generic, TypeVar

log = logging.getLogger("driftd.connect")

#: First and longest wait between attempts.
BACKOFF_S = (0.5, 10.0)
T = TypeVar("T")


class StoppedWhileConnectingError(Exception):
    """A stop was requested before the broker answered: there is nothing to snapshot."""


def connect_with_backoff(
    make: Callable[[], T],
    what: str,
    *,
    stop: Event | None = None,
    on_attempt: Callable[[], None] | None = None,
    close: Callable[[T], None] | None = None,
) -> T | None:
    """``make()``, retried with doubling waits while it raises; None once ``stop`` is set.

    With a ``stop`` event each attempt runs in a thread, so a stop returns at once even while
    an attempt is blocked (a client's bootstrap can wait ``request_timeout_ms``); a client that
    attempt still creates is then closed with ``close``.

    Args:
        make: Creates the client (raises while the broker cannot be reached).
        what: The client's name, for the log.
        stop: Ends the retries (e.g. set by a SIGTERM handler); None: retry until it works.
        on_attempt: Called before each attempt (e.g. a liveness heartbeat).
        close: Closes a client created after the stop (none is closed when None).
    """
    stopped = stop or Event()
    delay = BACKOFF_S[0]
    while not stopped.is_set():
        if on_attempt is not None:
            on_attempt()
        try:
            client = make() if stop is None else _Attempt(make, close).wait(stop)
        except Exception as error:  # whatever the client raises while it cannot connect
            log.warning(
                "cannot create the %s yet (%s): retrying in %.1f s", what, error, delay,
                extra={"event": "connect_retry", "client": what},
            )  # fmt: skip
            stopped.wait(delay)
            delay = min(2 * delay, BACKOFF_S[1])
            continue
        if client is not None or not stopped.is_set():
            return client
    return None


class _Attempt(Generic[T]):
    """One ``make()`` on a daemon thread, which a stop can abandon without waiting for it."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], None] | None) -> None:
        self._make, self._close = make, close
        self._lock = Lock()
        self._done = Event()
        self._abandoned = False
        self._client: T | None = None
        self._error: Exception | None = None
        Thread(target=self._run, name="driftd-connect", daemon=True).start()

    def wait(self, stop: Event) -> T | None:
        """The client; raises what ``make()`` raised; None if ``stop`` came first."""
        while not self._done.wait(0.05):
            if stop.is_set():
                with self._lock:
                    if not self._done.is_set():
                        self._abandoned = True
                        return None
        if self._error is not None:
            raise self._error
        return self._client

    def _run(self) -> None:
        client: T | None = None
        error: Exception | None = None
        try:
            client = self._make()
        except Exception as raised:
            error = raised
        with self._lock:
            abandoned = self._abandoned
            self._client, self._error = client, error
            self._done.set()
        if abandoned and client is not None and self._close is not None:
            try:
                self._close(client)
            except Exception as failure:
                log.warning("error while closing an abandoned %s: %s", type(client), failure)


def close_all(closers: Iterable[Callable[[], None]]) -> None:
    """Call every closer; one that fails is logged and the others still run."""
    for close in closers:
        try:
            close()
        except Exception as error:
            log.warning("error while closing: %s", error)
