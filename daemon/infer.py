"""Composition of ``driftd infer``: settings in, a wired streaming inference worker out.

Like :mod:`driftd.app` for the trainer, the one place that knows both the serving core and the
adapters. The worker starts its metrics endpoint at once, then waits (``/readyz`` answering 503)
until a first snapshot can be served from ``snapshots.dir`` (a directory, or an object-store URL
read with ``snapshots.storage_options``: a missing ``driftd[s3]`` extra is a configuration
error, an unreachable store fails at once); only then does it join the consumer
group ``infer.group_id`` on ``infer.input_topics`` and start predicting into
``infer.output_topic``. Rejected records go to ``kafka.dead_letter_topic`` as in the trainer
(empty: counted only); a worker reading the trainer's topic can be given its own one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Event
from typing import TypeVar

import torch
from prometheus_client import CollectorRegistry

from driftd.adapters.hot_model import HotModel
from driftd.adapters.http_endpoint import MetricsServer
from driftd.adapters.kafka_inference_source import KafkaInferenceSource
from driftd.adapters.kafka_prediction_sink import KafkaPredictionSink
from driftd.adapters.prometheus_inference_telemetry import PrometheusInferenceTelemetry
from driftd.app import dead_letter_sink
from driftd.connect import close_all, connect_with_backoff
from driftd.loop import StopWhen
from driftd.ports import Clock, DeadLetterSink, PredictionSink, RecordSource, SystemClock
from driftd.serving.inference_loop import InferenceLoop, InferenceProgress
from driftd.settings.root import ConfigurationError, Settings
from driftd.triggers import EveryNStepsOrTSeconds
from driftd.wiring.learning import configured_n_features, make_decoder, resolve_device

log = logging.getLogger("driftd.infer")

_Client = TypeVar("_Client", RecordSource, PredictionSink, DeadLetterSink)

#: The decoder reads labels from this field, which no event has: inference ignores labels.
NO_LABEL_FIELD = "\x00driftd: labels are not read by inference"


@dataclass
class InferenceWorker:
    """A wired inference worker and the resources it owns.

    The source, sink and dead-letter sink are built once the first model serves (the decoder
    needs its feature count); factories for them can be injected.
    """

    settings: Settings
    model: HotModel
    telemetry: PrometheusInferenceTelemetry
    registry: CollectorRegistry
    clock: Clock
    make_source: Callable[[], RecordSource]
    make_sink: Callable[[], PredictionSink]
    make_dead_letters: Callable[[], DeadLetterSink]
    server: MetricsServer | None = None
    loop: InferenceLoop | None = None
    last_heartbeat: float = 0.0
    _stop: Event = field(default_factory=Event, init=False, repr=False)

    def request_stop(self) -> None:
        """Stop waiting, or finish the batch, flush and commit (safe from a signal handler)."""
        self._stop.set()
        if self.loop is not None:
            self.loop.request_stop()

    def run(self, stop: StopWhen | None = None) -> InferenceProgress:
        """Wait for a first snapshot, then predict until stopped; release everything after."""
        try:
            if not self._wait_for_model():
                return InferenceProgress()
            self.loop = self._build_loop()
            if self.loop is None:  # stopped while the broker was unreachable
                return InferenceProgress()
            if self._stop.is_set():  # a stop that arrived while the loop was being built
                self.loop.request_stop()
            return self.loop.run(stop)
        finally:
            self.close()

    def close(self) -> None:
        """Close the source, sinks, model and metrics server (idempotent)."""
        loop, self.loop = self.loop, None
        closers = [self.model.close]
        if loop is not None:
            closers = [loop.source.close, loop.sink.close, loop.dead_letters.close, *closers]
        close_all(closers)
        if self.server is not None:
            self.server.stop()
            self.server = None

    def health(self) -> tuple[bool, str]:
        """Liveness: the worker loop (or the wait for a snapshot) keeps turning."""
        heartbeat = self.loop.last_heartbeat if self.loop is not None else self.last_heartbeat
        idle = self.clock.monotonic() - heartbeat
        limit = max(60.0, 20 * self.settings.learner.poll_timeout_s)
        return (True, "ok") if idle <= limit else (False, f"loop has not turned for {idle:.0f} s")

    def readiness(self) -> tuple[bool, str]:
        """Readiness: a model serves and the source has partitions."""
        if not self.model.ready:
            return False, f"no snapshot served yet from {self.settings.snapshots.dir}"
        loop = self.loop
        if loop is None or not loop.source.ready:
            return False, "source not connected or no partitions assigned"
        return True, "ok"

    def _wait_for_model(self) -> bool:
        logged = False
        while not self._stop.is_set():
            self.last_heartbeat = self.clock.monotonic()
            if self.model.wait_ready(0.2):
                return True
            if not logged:
                log.info(
                    "waiting for a first snapshot in %s", self.settings.snapshots.dir,
                    extra={"event": "waiting_for_snapshot"},
                )  # fmt: skip
                logged = True
        return False

    def _connect(self, make: Callable[[], _Client], what: str) -> _Client | None:
        """``make()``, retried while the broker is unreachable; None if stopped meanwhile."""
        return connect_with_backoff(make, what, stop=self._stop, on_attempt=self._heartbeat)

    def _heartbeat(self) -> None:
        self.last_heartbeat = self.clock.monotonic()

    def _build_loop(self) -> InferenceLoop | None:
        settings = self.settings
        ignoring_labels = settings.event.model_copy(update={"y_field": NO_LABEL_FIELD})
        decoder = make_decoder(
            settings.model_copy(update={"event": ignoring_labels}), self.model.n_features
        )
        source = self._connect(self.make_source, "source")
        sink = None if source is None else self._connect(self.make_sink, "prediction sink")
        dead_letters = (
            None if sink is None else self._connect(self.make_dead_letters, "dead-letter sink")
        )
        if source is None or sink is None or dead_letters is None:
            for client in (source, sink):
                if client is not None:
                    client.close()
            return None
        return InferenceLoop(
            source=source,
            decoder=decoder,
            predictor=self.model,
            sink=sink,
            dead_letters=dead_letters,
            telemetry=self.telemetry,
            clock=self.clock,
            batch_size=settings.learner.batch_size,
            poll_timeout_s=settings.learner.poll_timeout_s,
            lag_schedule=EveryNStepsOrTSeconds(
                every_steps=None, every_seconds=settings.metrics.lag_every_seconds, clock=self.clock
            ),
            id_field=settings.event.id_field,
            labels=settings.event.labels,
            flush_timeout_s=settings.infer.flush_timeout_s,
            invalid_log_every_s=settings.log.invalid_every_seconds,
        )


def build_inference_worker(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    source: Callable[[], RecordSource] | None = None,
    sink: Callable[[], PredictionSink] | None = None,
    dead_letters: Callable[[], DeadLetterSink] | None = None,
    serve_metrics: bool | None = None,
) -> InferenceWorker:
    """Wire the worker from settings; ``source``, ``sink`` and ``dead_letters`` are factories."""
    clock = clock or SystemClock()
    torch.set_num_threads(settings.learner.torch_threads)
    registry = registry or CollectorRegistry()
    telemetry = PrometheusInferenceTelemetry(registry, clock=clock)
    kafka = settings.kafka.model_copy(
        update={"topics": list(settings.infer.input_topics), "group_id": settings.infer.group_id}
    )
    try:
        model = _hot_model(settings, clock, telemetry)
    except ImportError as error:  # snapshots.dir is a URL this install cannot read
        raise ConfigurationError(f"snapshots.dir: {error}") from error
    worker = InferenceWorker(
        settings=settings,
        model=model,
        telemetry=telemetry,
        registry=registry,
        clock=clock,
        make_source=source or (lambda: KafkaInferenceSource(kafka)),
        make_sink=sink or (lambda: KafkaPredictionSink(kafka, settings.infer.output_topic)),
        make_dead_letters=dead_letters or (lambda: dead_letter_sink(settings)),
        last_heartbeat=clock.monotonic(),
    )
    if serve_metrics if serve_metrics is not None else settings.metrics.enabled:
        server = MetricsServer(
            registry,
            settings.metrics.host,
            settings.metrics.port,
            health=worker.health,
            readiness=worker.readiness,
        )
        port = server.start()
        worker.server = server
        log.info(
            "metrics on http://%s:%d/metrics", settings.metrics.host, port,
            extra={"event": "metrics_listening", "port": port},
        )  # fmt: skip
    return worker


def _hot_model(
    settings: Settings, clock: Clock, telemetry: PrometheusInferenceTelemetry
) -> HotModel:
    """The model following ``snapshots.dir`` (a directory or an object-store URL)."""
    return HotModel(
        settings.snapshots.dir,
        storage_options=settings.snapshots.storage_options,
        poll_interval_s=settings.infer.reload_interval_s,
        device=resolve_device(settings.model.device),
        n_features=configured_n_features(settings),
        clock=clock,
        on_swapped=telemetry.model_swapped,
        on_refused=telemetry.reload_refused,
        int8=settings.infer.int8,
    )
