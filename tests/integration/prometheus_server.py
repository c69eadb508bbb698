"""A real Prometheus (Debian's ``prometheus`` binary) for tests: loopback, temporary, fast scrape.

Started with a generated config on a free loopback port, with its TSDB in a temporary
directory; queried through its HTTP API. See NOTES.md: ready in ~0.1 s, but the first scrape
shows in queries only after ~5.5 s whatever the scrape interval, so callers poll.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

# Loopback must never go through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def require_prometheus() -> str:
    """The ``prometheus`` binary; skip without it (fail on CI, where it must be installed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus is not on PATH (Debian package `prometheus`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


class PrometheusServer:
    """One Prometheus process scraping ``targets`` every second and evaluating ``rule_files``.

    Args:
        workdir: Where the config and the TSDB go.
        targets: Job name → ``host:port`` addresses (loopback only).
        rule_files: Rule files to load; they are evaluated every second.
    """

    def __init__(
        self, workdir: Path, targets: dict[str, list[str]], rule_files: list[Path]
    ) -> None:
        self._workdir = workdir
        self._config = workdir / "prometheus.yml"
        self._config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(path) for path in rule_files],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": addresses}]}
                        for job, addresses in targets.items()
                    ],
                }
            )
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, attempts: int = 3) -> PrometheusServer:
        """Start on a free loopback port (retried if another process takes it first)."""
        binary = require_prometheus()
        for attempt in range(attempts):
            port = _free_port()
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self._config}",
                    f"--storage.tsdb.path={self._workdir / f'tsdb-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready(timeout=20.0):
                return self
            self.stop()
        raise RuntimeError(f"prometheus did not start in {attempts} attempts")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with _OPENER.open(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, else an AssertionError."""
        query = urllib.parse.urlencode(params)
        try:
            with _OPENER.open(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                body = json.loads(error.read())
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples, or ``[t, v]`` for a scalar)."""
        data = self.api("query", query=expr)
        result = data["result"]
        return [{"value": result}] if data["resultType"] in ("scalar", "string") else result

    def has_series(self, metric: str) -> bool:
        """Whether any series of ``metric`` is in the head block now."""
        return bool(self.query(f"group({metric})"))

    def knows_metric(self, metric: str) -> bool:
        """Whether a scrape announced ``metric`` (its HELP/TYPE), even with no series yet.

        Counters are announced without ``_total`` in OpenMetrics and with it in the classic text
        format; histograms under their base name.
        """
        names = {metric, metric.removesuffix("_total")}
        for suffix in ("_bucket", "_sum", "_count"):
            if metric.endswith(suffix):
                names.add(metric.removesuffix(suffix))
        return any(self.api("metadata", metric=name) for name in names)

    def stop(self) -> None:
        """Terminate and wait; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
