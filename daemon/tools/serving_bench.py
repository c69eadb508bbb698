"""Serving measurements for ``driftd bench``: reload visibility under load, and predict throughput.

What is measured, on the machine it runs on:

* **publish to first prediction**: a background thread calls ``HotModel.predict`` back to back;
  a publisher process (as the trainer is one) saves a new snapshot version with
  ``FileSnapshotStore``; the main thread waits until the predicting thread has made a prediction
  with it, then waits a random fraction of the poll interval (so publishes fall at random
  phases of the poll) and has the next one published. The time runs from the moment ``LATEST``
  starts being replaced to the end of the first ``predict`` call that returned the new version.
* **failed / blocked predictions** across those reloads: a call that raised, and a call that
  took more than ten times the median call. The process's torch thread count is the caller's.
* **throughput** of ``HotModel.predict`` alone (one thread, no reloads): rows/s at the given
  batch size, and calls/s with batches of one row.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from operator import contains
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.hot_model import HotModel
from driftd.learning.models import build_model
from driftd.ports import RELOAD_INTERVAL_S, ModelSwapped, PredictionSink, Snapshot
from driftd.settings.root import ModelSettings, Settings
from driftd.wiring.learning import model_config_from_settings

BLOCKED_FACTOR = 10.0


class _PublishTimingStore(FileSnapshotStore):
    """Records, per version, the monotonic time just before ``LATEST`` is replaced."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, keep=3)
        self.published_at: dict[int, float] = {}

    def _write_latest(self, name: str) -> None:
        self.published_at[int(name)] = time.monotonic()
        super()._write_latest(name)


def _publish_on_request(directory: str, config: dict[str, Any], seed: int, pipe: Any) -> None:
    """Child process: for each version received, save a snapshot and answer its publish time.

    Publishing from another process, as the trainer does, keeps the writer's CPU and GIL time
    out of the serving process being measured. ``time.monotonic`` is system-wide on Linux.
    """
    store = _PublishTimingStore(Path(directory))
    models = [build_model(config, torch.Generator().manual_seed(seed + i)) for i in (0, 1)]
    pipe.send("ready")
    while (version := pipe.recv()) is not None:
        model = models[version % 2]
        store.save(Snapshot(version, model.state_dict(), {}, {"model": config}))
        pipe.send(store.published_at[version])


class _PredictLoad:
    """A thread calling ``predict`` back to back, recording each call's end, duration, version."""

    def __init__(self, model: HotModel, batch: np.ndarray) -> None:
        self.model, self.batch = model, batch
        self.first_seen: dict[int, float] = {}
        self.starts: list[float] = []
        self.durations: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-bench-load", daemon=True)

    def __enter__(self) -> _PredictLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        clock, first_seen = time.monotonic, self.first_seen
        while not self._stop.is_set():
            started = clock()
            try:
                version = self.model.predict(self.batch).version
            except Exception:
                self.failures += 1
                continue
            ended = clock()
            self.starts.append(started)
            self.durations.append(ended - started)
            first_seen.setdefault(version, ended)


def measure_serving(
    *,
    publishes: int = 100,
    poll_interval_s: float = RELOAD_INTERVAL_S,
    n_features: int = 16,
    n_classes: int = 3,
    hidden: tuple[int, ...] = (64, 64),
    predict_batch: int = 64,
    throughput_seconds: float = 2.0,
    visible_timeout_s: float = 10.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure reload visibility under load and ``HotModel`` throughput (see the module doc).

    Args:
        publishes: Snapshot versions published under load.
        poll_interval_s: The HotModel's poll interval (its default unless changed).
        n_features: Model input width.
        n_classes: Classes of the (MLP) classifier.
        hidden: Hidden widths of the MLP.
        predict_batch: Rows per predict call for the load and the throughput measurement.
        throughput_seconds: Duration of each throughput measurement.
        visible_timeout_s: Longest wait for one version to be predicted with.
        seed: Seed of the inputs, weights and publish phases.

    Returns:
        Plain numbers: ``publish_to_prediction_p50_s``/``p99_s``/``max_s``, ``publishes``,
        ``not_visible`` (versions never predicted with in time), ``predictions_under_reload``,
        ``failed_predictions``, ``blocked_predictions`` (and of those
        ``blocked_during_a_reload``: overlapping a load), ``predict_median_s``,
        ``predict_max_s``, ``reloads``, ``refused``, ``rows_per_s``, ``calls_per_s_batch_1``.
    """
    rng = random.Random(seed)  # noqa: S311 - seeded benchmark data, not security
    config = model_config_from_settings(
        ModelSettings(n_classes=n_classes, hidden=list(hidden)), n_features
    )
    batch = np.random.default_rng(seed).normal(size=(predict_batch, n_features)).astype(np.float32)
    context = multiprocessing.get_context("spawn")  # no fork of a process running threads
    with tempfile.TemporaryDirectory(prefix="driftd-serving-bench-") as directory:
        pipe, child_end = context.Pipe()
        publisher = context.Process(
            target=_publish_on_request, args=(directory, config, seed, child_end), daemon=True
        )
        publisher.start()
        try:
            pipe.recv()  # ready
            pipe.send(1)
            pipe.recv()
            loads: list[tuple[float, float]] = []  # (start, end) of each reload, monotonic

            def swapped(swap: ModelSwapped) -> None:
                ended = time.monotonic()
                loads.append((ended - swap.load_seconds, ended))

            with HotModel(directory, poll_interval_s=poll_interval_s, on_swapped=swapped) as model:
                with _PredictLoad(model, batch) as load:
                    delays, not_visible = [], 0
                    for version in range(2, publishes + 2):
                        pipe.send(version)
                        published_at = pipe.recv()
                        seen = partial(contains, load.first_seen, version)
                        if _wait_for(seen, visible_timeout_s):
                            delays.append(load.first_seen[version] - published_at)
                        else:
                            not_visible += 1
                        time.sleep(rng.uniform(0.0, poll_interval_s))  # a random poll phase
                starts, durations = np.asarray(load.starts), np.asarray(load.durations)
                reloads, refused = model.reloads, model.refused
                rows_per_s = predict_rate(model, batch, throughput_seconds) * predict_batch
                calls_per_s = predict_rate(model, batch[:1], throughput_seconds)
        finally:
            with contextlib.suppress(OSError):
                pipe.send(None)
            publisher.join(timeout=30)
            if publisher.is_alive():
                publisher.terminate()
    median = float(np.median(durations)) if durations.size else float("nan")
    blocked = durations > BLOCKED_FACTOR * median
    during_reload = _overlapping(starts[blocked], durations[blocked], loads)
    seconds = np.asarray(delays) if delays else np.asarray([float("nan")])
    return {
        "publishes": publishes,
        "poll_interval_s": poll_interval_s,
        "publish_to_prediction_p50_s": float(np.percentile(seconds, 50)),
        "publish_to_prediction_p99_s": float(np.percentile(seconds, 99)),
        "publish_to_prediction_max_s": float(seconds.max()),
        "not_visible": not_visible,
        "predictions_under_reload": int(durations.size),
        "failed_predictions": load.failures,
        "blocked_predictions": int(blocked.sum()),
        "blocked_during_a_reload": during_reload,
        "predict_median_s": median,
        "predict_max_s": float(durations.max()) if durations.size else float("nan"),
        "reloads": reloads,
        "refused": refused,
        "predict_batch": predict_batch,
        "rows_per_s": rows_per_s,
        "calls_per_s_batch_1": calls_per_s,
    }


def _overlapping(
    starts: np.ndarray, durations: np.ndarray, windows: list[tuple[float, float]]
) -> int:
    """How many calls ``[start, start + duration]`` overlap a reload window (1 ms margin)."""
    return sum(
        any(start <= end + 0.001 and start + duration >= begin - 0.001 for begin, end in windows)
        for start, duration in zip(starts.tolist(), durations.tolist(), strict=True)
    )


def predict_rate(model: HotModel, batch: np.ndarray, seconds: float) -> float:
    """Calls per second of ``model.predict(batch)`` on this thread over about ``seconds``."""
    model.predict(batch)  # warm up
    calls, started = 0, time.perf_counter()
    deadline = started + seconds
    while calls == 0 or time.perf_counter() < deadline:
        model.predict(batch)
        calls += 1
    return calls / (time.perf_counter() - started)


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition``; the times measured are taken by the predicting thread, not here."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class _TimedSink:
    """Wraps a prediction sink: counts sends, times the first send and the last flush."""

    def __init__(self, inner: PredictionSink | None = None) -> None:
        self.inner, self.sent = inner, 0
        self.first_send = self.last_flush = float("nan")

    def send(self, key: bytes | None, value: bytes) -> None:
        if not self.sent:
            self.first_send = time.perf_counter()
        self.sent += 1
        if self.inner is not None:
            self.inner.send(key, value)

    def flush(self, timeout_s: float) -> None:
        if self.inner is not None:
            self.inner.flush(timeout_s)
        self.last_flush = time.perf_counter()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def measure_inference_worker(
    *, events: int = 100_000, batch_size: int = 256, broker: EmbeddedBroker | None = None
) -> dict[str, Any]:
    """Events/s of one ``driftd infer`` worker, timed from its first prediction to its last ack.

    With ``broker`` (the embedded one of ``driftd bench``) the worker reads a fresh topic there
    and produces acknowledged predictions to another; group timeouts are the short test ones.
    Without, an in-memory source replays the same events and the sink only counts: decode,
    predict, encode and bookkeeping, with the broker taken out.
    """
    from driftd.adapters.kafka_prediction_sink import KafkaPredictionSink
    from driftd.adapters.memory import DiscardingDeadLetterSink
    from driftd.adapters.memory_source import InMemoryRecordSource
    from driftd.infer import build_inference_worker
    from driftd.loop import StopWhen
    from driftd.ports import RecordSource
    from driftd.records import Record
    from driftd.settings.root import load_settings
    from driftd.tools.streams import DriftingStream

    stream = DriftingStream(n_events=events)
    payloads = [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]
    topics = [f"bench-{name}-{uuid.uuid4().hex[:8]}" for name in ("in", "out")]
    with tempfile.TemporaryDirectory(prefix="driftd-infer-bench-") as directory:
        settings = load_settings(
            kafka={"bootstrap_servers": broker.bootstrap_servers if broker else "127.0.0.1:9",
                   "session_timeout_ms": 3000, "heartbeat_interval_ms": 1000},
            infer={"input_topics": topics[:1], "output_topic": topics[1]},
            snapshots={"dir": directory},
            metrics={"enabled": False},
            learner={"batch_size": batch_size},
        )  # fmt: skip
        config = model_config_from_settings(settings.model, stream.n_features)
        FileSnapshotStore(Path(directory), keep=1).save(
            Snapshot(1, build_model(config, torch.Generator()).state_dict(), {}, {"model": config})
        )
        source: Callable[[], RecordSource] | None = None
        sink = _TimedSink()
        if broker is None:
            records = [Record(topics[0], 0, i, value) for i, value in enumerate(payloads)]
            source = partial(InMemoryRecordSource, records)
        else:
            broker.create_topics(topics)
            _produce(settings, topics[0], payloads)
            sink.inner = KafkaPredictionSink(settings.kafka, topics[1])
        worker = build_inference_worker(
            settings, source=source, sink=lambda: sink, dead_letters=DiscardingDeadLetterSink
        )
        progress = worker.run(StopWhen(max_events=events, max_seconds=600))
    seconds = sink.last_flush - sink.first_send
    return {
        "events": progress.events_consumed,
        "predictions": progress.predictions,
        "batch_size": batch_size,
        "broker": broker is not None,
        "seconds": seconds,
        "events_per_s": progress.predictions / seconds,
    }


def _produce(settings: Settings, topic: str, payloads: list[bytes]) -> None:
    from driftd.adapters.kafka_clients import build_producer

    producer = build_producer(settings.kafka)
    for payload in payloads:
        producer.send(topic, value=payload)
    producer.flush()
    producer.close()
