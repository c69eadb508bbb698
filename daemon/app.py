"""The composition root: settings in, a wired training daemon out.

The only module that knows both the core and the adapters. Everything a test or the demo wants
to swap (source, clock, metrics registry) can be passed in; the rest follows the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from driftd.adapters.file_snapshot_reader import FileSnapshotReader
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.http_endpoint import MetricsServer
from driftd.adapters.kafka_dead_letter import KafkaDeadLetterSink
from driftd.adapters.kafka_process_source import KafkaProcessSource
from driftd.adapters.kafka_snapshot_notifier import KafkaSnapshotNotifier
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.prometheus_rank_labels import RankLabelledCollector
from driftd.adapters.prometheus_telemetry import PrometheusTelemetry
from driftd.adapters.torch_distributed_group import TorchDistributedGroup
from driftd.connect import StoppedWhileConnectingError, close_all, connect_with_backoff
from driftd.decode import DecodedBatch
from driftd.distributed.group_loop import GroupTrainingLoop
from driftd.learning.learner import StepReport
from driftd.learning.models import count_parameters, sparsity
from driftd.learning.warm import warm_up
from driftd.loop import LoopProgress, StopWhen, TrainingLoop
from driftd.loop_progress import ProgressLogSchedule
from driftd.ports import (
    Clock,
    DeadLetterSink,
    NullSnapshotNotifier,
    RecordSource,
    Snapshot,
    SnapshotNotifier,
    SnapshotStore,
    SystemClock,
    Telemetry,
    TrainerGroup,
)
from driftd.pruning.stage import report_model_size
from driftd.records import PartitionShare, TopicPartition
from driftd.serving.publish_gate import PublishGate
from driftd.settings.root import ConfigurationError, Settings
from driftd.training_state import TrainingState
from driftd.triggers import EveryNStepsOrTSeconds
from driftd.wiring.adaptation import make_monitor
from driftd.wiring.distributed import (
    LaunchedRank,
    check_group_settings,
    group_backend,
    group_device,
    join_group,
    launched_rank,
)
from driftd.wiring.learning import (
    make_decoder,
    resolve_device,
    step_size_controller,
)
from driftd.wiring.restore import make_publish_gate, restore_state

log = logging.getLogger("driftd.app")


def read_transfer_source(path: Path) -> Snapshot | None:
    """The newest readable snapshot (weights only) of another run's directory."""
    return FileSnapshotReader(path, weights_only=True).load_latest()


def make_snapshot_store(settings: Settings, clock: Clock) -> SnapshotStore:
    """The local-directory store, or the fsspec one for a URL ``snapshots.dir`` (s3://...)."""
    snapshots = settings.snapshots
    if snapshots.url is not None:
        from driftd.adapters.fsspec_snapshot_store import FsspecSnapshotStore

        try:
            return FsspecSnapshotStore(
                snapshots.url,
                keep=snapshots.keep,
                storage_options=snapshots.storage_options,
                clock=clock,
            )
        except ImportError as error:  # the driftd[s3] extra is missing
            raise ConfigurationError(f"snapshots.dir: {error}") from error
    return FileSnapshotStore(Path(snapshots.dir), keep=snapshots.keep, clock=clock)


@dataclass
class Trainer:
    """A wired training daemon and the resources it owns."""

    loop: TrainingLoop
    source: RecordSource
    dead_letters: DeadLetterSink
    store: SnapshotStore
    registry: CollectorRegistry
    notifier: SnapshotNotifier = field(default_factory=NullSnapshotNotifier)
    server: MetricsServer | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def run(self, stop: StopWhen | None = None) -> LoopProgress:
        """Run the loop until it stops; then release everything."""
        try:
            return self.loop.run(stop)
        finally:
            self.close()

    def close(self) -> None:
        """Close the source, sinks, notifier and metrics server (idempotent)."""
        close_all((self.source.close, self.dead_letters.close, self.notifier.close, *self.closers))
        if self.server is not None:
            self.server.stop()
            self.server = None


def drift_signals(settings: Settings) -> list[tuple[str, str]]:
    """The ``(detector, signal)`` pairs the drift monitor watches (none when it is off)."""
    monitor = make_monitor(settings.drift, task=settings.model.task)
    if monitor is None:
        return []
    watches = [monitor.concept, *monitor.covariate]
    return [(watch.name, watch.signal) for watch in watches if watch is not None]


def dead_letter_sink(settings: Settings) -> DeadLetterSink:
    """The dead-letter topic's sink, or one that only counts when no topic is configured."""
    if settings.kafka.dead_letter_topic:
        return KafkaDeadLetterSink(settings.kafka)
    return DiscardingDeadLetterSink()


def kafka_source(
    settings: Settings,
    start_offsets: dict[TopicPartition, int],
    *,
    stop: Event | None = None,
    on_attempt: Callable[[], None] | None = None,
    share: PartitionShare | None = None,
) -> RecordSource:
    """The Kafka source: in this process, or in a child on another core (see the setting).

    Either waits for a broker that does not answer yet (the child retries inside); in this
    process, ``stop`` ends that wait and ``on_attempt`` is called before each try. ``share``:
    only the partitions this rank of a trainer group owns.

    Raises:
        StoppedWhileConnectingError: If ``stop`` was set before the broker answered.
    """
    if settings.kafka.consumer_process:
        return KafkaProcessSource(
            settings.kafka, start_offsets, max_records=settings.learner.batch_size, share=share
        )
    source = connect_with_backoff(
        lambda: KafkaRecordSource(settings.kafka, start_offsets=start_offsets, share=share),
        "source",
        stop=stop,
        on_attempt=on_attempt,
        close=KafkaRecordSource.close,
    )
    if source is None:
        raise StoppedWhileConnectingError("stopped before a Kafka broker answered")
    return source


def build_trainer(
    settings: Settings,
    *,
    source: RecordSource | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    telemetry: Telemetry | None = None,
    store: SnapshotStore | None = None,
    dead_letters: DeadLetterSink | None = None,
    notifier: SnapshotNotifier | None = None,
    serve_metrics: bool | None = None,
    on_step: Callable[[LoopProgress], None] | None = None,
    on_report: Callable[[StepReport, DecodedBatch], None] | None = None,
    stop: Event | None = None,
    group: TrainerGroup | None = None,
) -> Trainer:
    """Wire the daemon: snapshot store, gate, state, metrics, source, sinks, notifier, loop.

    The metrics server (``/healthz``, ``/readyz``) starts before the source waits for a broker.
    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), or given a ``group``, the daemon is one rank
    of a trainer group (:mod:`driftd.distributed`).

    Raises:
        StoppedWhileConnectingError: If ``stop`` was set while waiting for the broker.
        ConfigurationError: If the settings or the launcher's variables do not fit a group.
    """
    clock = clock or SystemClock()
    torch.set_num_threads(settings.learner.torch_threads)
    launched = launched_rank() if group is None else None
    group = _trainer_group(settings, group, launched)
    closers: list[Callable[[], None]] = []
    if launched is not None and group is not None:
        closers.append(group.close)  # the group this call created
    registry = registry or CollectorRegistry()
    measured = registry if group is None else _rank_registry(registry, group.rank)
    store = store or make_snapshot_store(settings, clock)
    gate = make_publish_gate(settings)
    state = restore_state(settings, store, gate, clock, read_other=read_transfer_source)
    share = None if group is None else join_group(group, state)
    n_features = state.model_config["n_features"] if state.model_config else None
    decoder = make_decoder(settings, n_features)
    telemetry = telemetry or PrometheusTelemetry(
        measured, clock=clock, drift_signals=drift_signals(settings)
    )
    _report_restored(state, gate, telemetry)
    if notifier is None:
        notifier = (
            KafkaSnapshotNotifier(
                settings.kafka,
                settings.snapshots.notify_topic,
                on_failure=telemetry.snapshot_notification_failed,
            )
            if settings.snapshots.notify_topic
            else NullSnapshotNotifier()
        )
    probes = _Probes(heartbeat=clock.monotonic())
    server = None
    if serve_metrics if serve_metrics is not None else settings.metrics.enabled:
        port = settings.metrics.port
        if port and launched is not None:  # one port per rank on a host
            port += launched.local_rank
        server = _start_metrics_server(settings, registry, probes, clock, port)
    given = source
    try:
        source = source or kafka_source(
            settings, dict(state.offsets), stop=stop, on_attempt=probes.beat(clock), share=share
        )
        # /readyz waits for the source: the first step's one-off costs are paid before it can
        # be ready.
        seconds = warm_up(resolve_device(settings.model.device))
    except BaseException:  # e.g. a stop signal before the loop exists: release what was made
        if server is not None:
            server.stop()
        if source is not None and source is not given:
            source.close()
        raise
    log.debug("warmed up in %.2f s", seconds, extra={"event": "warmed_up", "seconds": seconds})
    probes.source = source
    if dead_letters is None:
        dead_letters = dead_letter_sink(settings)
    loop_parts: dict[str, Any] = dict(
        source=source,
        decoder=decoder,
        state=state,
        store=store,
        dead_letters=dead_letters,
        telemetry=telemetry,
        clock=clock,
        batch_size=settings.learner.batch_size,
        poll_timeout_s=settings.learner.poll_timeout_s,
        snapshot_schedule=EveryNStepsOrTSeconds(
            every_steps=settings.snapshots.every_steps,
            every_seconds=settings.snapshots.every_seconds,
            clock=clock,
        ),
        lag_schedule=EveryNStepsOrTSeconds(
            every_steps=None, every_seconds=settings.metrics.lag_every_seconds, clock=clock
        ),
        invalid_log_every_s=settings.log.invalid_every_seconds,
        flush_timeout_s=settings.kafka.dead_letter_flush_timeout_s,
        max_dead_letter_backlog=settings.kafka.dead_letter_max_backlog,
        on_step=on_step,
        on_report=on_report,
        gate=gate,
        notifier=notifier,
        progress_log=ProgressLogSchedule(
            every_events=settings.log.progress_every_events,
            every_seconds=settings.log.progress_every_seconds,
        ),
        step_sizes=step_size_controller(settings.learner),
    )
    loop = _training_loop(settings, loop_parts, group, share)
    probes.loop = loop
    return Trainer(
        loop, source, dead_letters, store, registry, notifier, server=server, closers=closers
    )


def _report_restored(state: TrainingState, gate: PublishGate, telemetry: Telemetry) -> None:
    """What the metrics show from the start: the published version, the restored model."""
    if gate.reference is not None:
        telemetry.snapshot_published(gate.reference.version)
    if state.learner is not None:
        learner = state.learner
        telemetry.model_shape(count_parameters(learner.model), sparsity(learner.model))
        telemetry.learning_rate(learner.lr_policy.lr)
        if state.pruning is not None:
            report_model_size(state.pruning, telemetry)


def _trainer_group(
    settings: Settings, given: TrainerGroup | None, launched: LaunchedRank | None
) -> TrainerGroup | None:
    """The trainer group: the one given, or the launcher's (joined here), or None (alone)."""
    if given is None and launched is None:
        return None
    check_group_settings(settings)
    if given is not None:
        return given
    assert launched is not None
    device = group_device(settings, launched.local_rank)
    return TorchDistributedGroup(
        backend=group_backend(settings, device),
        timeout_s=settings.distributed.timeout_s,
        device=device,
    )


def _training_loop(
    settings: Settings,
    parts: dict[str, Any],
    group: TrainerGroup | None,
    share: PartitionShare | None,
) -> TrainingLoop:
    """The loop alone, or one rank's loop of a trainer group."""
    if group is None or share is None:
        return TrainingLoop(**parts)
    return GroupTrainingLoop(
        group=group,
        sync=settings.distributed.sync,
        average_every=settings.distributed.average_every_steps,
        share=share,
        **parts,
    )


def _rank_registry(served: CollectorRegistry, rank: int) -> CollectorRegistry:
    """The registry the telemetry writes to; ``served`` shows it with a ``rank`` label."""
    measured = CollectorRegistry()
    served.register(RankLabelledCollector(measured, rank))
    return measured


@dataclass
class _Probes:
    """What ``/healthz`` and ``/readyz`` read, filled in as the daemon is wired."""

    heartbeat: float  #: the last connection attempt, until the loop turns
    source: RecordSource | None = None
    loop: TrainingLoop | None = None

    def beat(self, clock: Clock) -> Callable[[], None]:
        """A callback that records a connection attempt as a heartbeat."""

        def beat() -> None:
            self.heartbeat = clock.monotonic()

        return beat


def _start_metrics_server(
    settings: Settings, registry: CollectorRegistry, probes: _Probes, clock: Clock, port: int
) -> MetricsServer:
    stale_after = max(60.0, 20 * settings.learner.poll_timeout_s)

    def health() -> tuple[bool, str]:
        beat = probes.heartbeat if probes.loop is None else probes.loop.last_heartbeat
        idle = clock.monotonic() - beat
        if idle > stale_after:
            return False, f"loop has not turned for {idle:.0f} s"
        return True, "ok"

    def readiness() -> tuple[bool, str]:
        if probes.source is None:
            return False, "waiting for a Kafka broker"
        if probes.source.ready:
            return True, "ok"
        return False, "source not connected or no partitions assigned"

    server = MetricsServer(
        registry, settings.metrics.host, port, health=health, readiness=readiness
    )
    port = server.start()
    log.info(
        "metrics on http://%s:%d/metrics", settings.metrics.host, port,
        extra={"event": "metrics_listening", "port": port},
    )  # fmt: skip
    return server
