"""The operator's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port."""

from __future__ import annotations

import gzip
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

#: A probe answers ``(ok, reason)``; the reason is the 503 body when not ok.
Probe = Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer for IPv4 or IPv6 hosts that skips the reverse DNS lookup."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s ``getfqdn``, which can stall on a reverse lookup."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


#: Families whose client adds a ``<name>_created`` sample (the creation time of each series).
_CREATED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class WithoutCreated:
    """A registry view that leaves out the client's ``*_created`` samples.

    In the text format they are extra gauge series (one per counter and histogram series) that
    no dashboard reads and that double the series count. This drops them for this endpoint
    only, instead of ``prometheus_client.disable_created_metrics()``, which changes the whole
    process (and an embedding application's own metrics).

    Args:
        registry: The registry to expose.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """The registry's families without their ``_created`` samples."""
        for family in self._registry.collect():
            if family.type in _CREATED_TYPES:
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
            yield family


class MetricsServer:
    """Serves the registry and two probes from a ``ThreadingHTTPServer`` on a daemon thread.

    ``GET /metrics`` is the registry in the Prometheus text format, or OpenMetrics when the
    scraper asks for it (``Accept``), gzipped when accepted, without the client's ``_created``
    series (see :class:`WithoutCreated`). ``GET /healthz`` (liveness) and
    ``GET /readyz`` (readiness) answer 200 ``ok`` or 503 with the probe's reason; a probe that
    raises counts as failing. Anything else is 404. Requests are not logged.

    Args:
        registry: The registry to expose.
        host: Address to bind (the settings default is ``127.0.0.1``).
        port: Port to bind; 0 picks a free one (see ``start``).
        health: Liveness probe.
        readiness: Readiness probe.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        health: Probe,
        readiness: Probe,
    ) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._health = health
        self._readiness = readiness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port; raises ``RuntimeError`` before ``start``."""
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Bind, start serving on a daemon thread and return the bound port."""
        if self._server is not None:
            raise RuntimeError("MetricsServer is already started")
        self._server = _Server((self._host, self._port), self._handler_class())
        # A short poll interval makes stop() quick; an idle wake-up every 0.1 s costs nothing.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="driftd-metrics-http",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - one flat handler
        """Build a request handler class bound to this server's registry and probes."""
        registry = WithoutCreated(self._registry)
        probes = {"/healthz": self._health, "/readyz": self._readiness}

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0  # seconds: a stalled client must not hold a thread forever

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    self._metrics()
                elif path in probes:
                    self._probe(probes[path])
                else:
                    self._reply(404, b"not found\n", "text/plain; charset=utf-8")

            def _metrics(self) -> None:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(registry)
                except Exception as error:  # a broken collector must not kill the endpoint
                    logger.exception("metrics exposition failed")
                    self._reply(500, f"{error}\n".encode(), "text/plain; charset=utf-8")
                    return
                encoding = None
                if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                    body, encoding = gzip.compress(body), "gzip"
                self._reply(200, body, content_type, encoding)

            def _probe(self, probe: Probe) -> None:
                try:
                    ok, reason = probe()
                except Exception as error:  # a raising probe is a failing probe
                    ok, reason = False, f"probe raised {type(error).__name__}: {error}"
                text = "ok" if ok else reason or "not ok"
                self._reply(200 if ok else 503, f"{text}\n".encode(), "text/plain; charset=utf-8")

            def _reply(
                self, status: int, body: bytes, content_type: str, encoding: str | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if encoding is not None:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet: a scrape every few seconds is not news."""

        return Handler
