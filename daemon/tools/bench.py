"""``driftd bench``: throughput, latency and memory, measured on the machine it runs on.

Figures (medians over repetitions; ratios matter more than absolute times on shared machines):

(a) end to end from the real broker (decode, predict, learn, snapshot, commit), with the
    consumer in its child process (the default) and, (a'), in the loop's own process;
(b) the same loop fed by an in-process source (the broker taken out);
(c) the compute bound: forward + backward + step of the same model on pre-made tensors;
(d) p50/p99 event-to-update latency with a producer in another process at a fixed rate;
(e) peak RSS of a fresh daemon process over the same topic;
(f) the raw consume rate of the same Kafka client on the same topic, no processing.

``--section startup`` (:mod:`~driftd.tools.startup_bench`): restart after kill -9 to the first
learned event, target 5 s (issue 12). ``--section distributed``
(:mod:`~driftd.tools.distributed_bench_report`): a trainer group's events/s with one and two
ranks, per sync mode, default and compute-heavy model; no target (minutes: only when asked).

Targets (issue 13), printed PASS/MISS; the command exits 1 when one is missed: (a) at least
40,000 events/s, and (e) within 10 % of the peak RSS recorded in ``bench_reference.json`` from
the code the quality bench was rebuilt on. ``--section quality`` has its own targets
(:mod:`~driftd.tools.quality_targets`).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from prometheus_client import CollectorRegistry

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_clients import build_producer
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.prometheus_telemetry import PrometheusTelemetry
from driftd.app import build_trainer
from driftd.logs import configure_logging
from driftd.loop import LoopProgress, StopWhen
from driftd.records import Record
from driftd.settings.root import Settings, load_settings
from driftd.tools.step_bench import MICRO_BATCH, TARGET_RATIO, small_step_ratio
from driftd.tools.streams import DriftingStream
from driftd.wiring.learning import learner_builder, model_config_from_settings

N_FEATURES = 10
N_CLASSES = 3
END_TO_END_TARGET = 40_000.0  # events/s, (a)
PEAK_RSS_SLACK = 1.10  # (e) at most 10 % above the reference


@dataclass
class _Timer:
    """Time from the first completed step to the last, and events after the first step."""

    first: float | None = None
    first_events: int = 0
    last: float = 0.0
    events: int = 0

    def on_step(self, progress: LoopProgress) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_events = now, progress.events_consumed
        self.last, self.events = now, progress.events_consumed

    @property
    def rate(self) -> float:
        if self.first is None or self.last <= self.first:
            return float("nan")
        return (self.events - self.first_events) / (self.last - self.first)


class _LatencyTap(PrometheusTelemetry):
    """Prometheus telemetry that also keeps every event-to-update latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.latencies: list[np.ndarray] = []

    def event_latencies(self, seconds: np.ndarray) -> None:
        super().event_latencies(seconds)
        self.latencies.append(np.asarray(seconds, dtype=np.float64))


def run_bench(
    *,
    events: int,
    batch_size: int,
    quick: bool,
    sections: list[str],
    json_path: str | None = None,
    jobs: int = 1,
) -> int:
    """Run the chosen measurements and print the report; returns the exit code (1: a miss)."""
    configure_logging("ERROR", json_lines=False)
    torch.set_num_threads(load_settings().learner.torch_threads)
    missed = 0
    if "throughput" in sections:
        missed += _throughput(events=events, batch_size=batch_size, quick=quick)
    if "startup" in sections:
        from driftd.tools.startup_bench import print_startup

        missed += print_startup(quick=quick)
    if "distributed" in sections:
        from driftd.tools.distributed_bench_report import print_distributed

        missed += print_distributed(quick=quick)
    if "adaptation" in sections:
        _adaptation(quick=quick)
    if "serving" in sections:
        _serving(quick=quick)
    if "pruning" in sections:
        from driftd.tools.pruning_bench_report import print_pruning

        print_pruning(quick=quick)
    if "quality" in sections:
        from driftd.tools.quality_bench import print_quality

        missed += print_quality(quick=quick, json_path=json_path, jobs=jobs)
        torch.set_num_threads(load_settings().learner.torch_threads)
    return 1 if missed else 0


def _throughput(*, events: int, batch_size: int, quick: bool) -> int:
    repeats = 1 if quick else 3
    events = min(events, 20_000) if quick else events
    payloads = _payloads(events)
    print(
        f"driftd bench: {events:,} events x {repeats} runs, batch {batch_size}, "
        f"MLP {N_FEATURES}->64->64->{N_CLASSES}, torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory(prefix="driftd-bench-") as scratch, EmbeddedBroker() as broker:
        base = Path(scratch)
        topic = _fill_topic(broker, payloads)
        compute = _median(repeats + 2, lambda: _compute_bound(batch_size, events))
        in_process = _median(repeats, lambda: _in_process(base, payloads, batch_size))
        raw = _median(repeats, lambda: _raw_consume(broker, topic, events, batch_size))
        end_to_end = _median(repeats, lambda: _end_to_end(base, broker, topic, events, batch_size))
        inline = _median(
            repeats,
            lambda: _end_to_end(base, broker, topic, events, batch_size, consumer_process=False),
        )
        p50, p99, paced_rate = _latency(base, broker, batch_size, rate=min(20_000, events // 2))
        peak_rss_mib = _daemon_peak_rss_mib(
            base, broker.bootstrap_servers, topic, events, batch_size
        )
    small_loop, small_plain, small_ratio = small_step_ratio(
        events=min(events, 20_000), repeats=repeats
    )
    rows = [
        ("(a) end to end, real broker", end_to_end, "events/s"),
        ("(a') same, consumer in-process", inline, "events/s"),
        ("(b) in-process source", in_process, "events/s"),
        ("(c) compute bound", compute, "events/s"),
        ("(f) raw consume, same client", raw, "records/s"),
    ]
    for name, value, unit in rows:
        print(f"  {name:<32} {value:>12,.0f} {unit}")
    print(
        f"  (d) event-to-update latency      p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"at {paced_rate:,.0f} events/s offered"
    )
    print(f"  (e) peak RSS of a daemon process {peak_rss_mib:,.0f} MiB (consuming all events)")
    print(
        f"  (g) micro-batches of {MICRO_BATCH}, in-process: driftd {small_loop:,.0f}, plain "
        f"PyTorch predict-then-train loop {small_plain:,.0f} events/s (interleaved, median ratio "
        f"{small_ratio:.2f})"
    )
    print(
        f"  ratios: a/f {end_to_end / raw:.2f}, a/c {end_to_end / compute:.3f}, "
        f"b/c {in_process / compute:.3f}, a/b {end_to_end / in_process:.2f}"
    )
    missed = _throughput_targets(end_to_end, peak_rss_mib)
    met = small_ratio >= TARGET_RATIO
    print(f"  {'PASS' if met else 'MISS'}  (g) small steps >= {TARGET_RATIO}x the plain loop: "
          f"{small_ratio:.2f}x")  # fmt: skip
    return missed + (not met)


def _throughput_targets(end_to_end: float, peak_rss_mib: float) -> int:
    """Print the throughput section's PASS/MISS lines; returns the number missed."""
    from driftd.tools.quality_targets import load_reference

    reference = load_reference()
    rss_reference = reference.get("peak_rss_mib")
    checks: list[tuple[bool | None, str]] = [
        (end_to_end >= END_TO_END_TARGET,
         f"(a) end to end >= {END_TO_END_TARGET:,.0f} events/s: {end_to_end:,.0f}"),
        (None if rss_reference is None else peak_rss_mib <= PEAK_RSS_SLACK * rss_reference,
         f"(e) peak RSS within {PEAK_RSS_SLACK - 1:.0%} of the reference: {peak_rss_mib:,.0f} vs "
         f"{rss_reference or float('nan'):,.0f} MiB (commit "
         f"{str(reference.get('commit', '?'))[:8]}, {reference.get('peak_rss_setup', '?')})"),
    ]  # fmt: skip
    for met, text in checks:
        print(f"  {({True: 'PASS', False: 'MISS', None: 'n/a '})[met]}  {text}")
    return sum(met is False for met, _ in checks)


def _median(repeats: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeats))


def _payloads(events: int) -> list[bytes]:
    stream = DriftingStream(n_events=events, n_features=N_FEATURES, n_classes=N_CLASSES)
    now = time.time()
    return [orjson.dumps({**event, "ts": now}) for event in stream.events()]


def _settings(
    base: Path,
    bootstrap: str,
    topic: str,
    batch_size: int,
    *,
    kafka: dict[str, Any] | None = None,
    learner: dict[str, Any] | None = None,
) -> Settings:
    """The bench's settings; ``kafka`` and ``learner`` add to those sections."""
    return load_settings(
        kafka={
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "group_id": f"bench-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 1000,
            **(kafka or {}),
        },
        model={"n_classes": N_CLASSES, "n_features": N_FEATURES},
        learner={"batch_size": batch_size, **(learner or {})},
        snapshots={"dir": str(base / uuid.uuid4().hex), "every_steps": 200},
        metrics={"enabled": False},
    )


def _fill_topic(broker: EmbeddedBroker, payloads: list[bytes]) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=1)
    settings = _settings(Path("."), broker.bootstrap_servers, topic, 1)
    producer: Any = build_producer(settings.kafka, linger_ms=20, batch_size=262_144)
    for payload in payloads:
        producer.send(topic, value=payload)
    producer.flush()
    producer.close()
    return topic


def _compute_bound(batch_size: int, events: int) -> float:
    settings = load_settings(
        model={"n_classes": N_CLASSES, "n_features": N_FEATURES}, learner={"batch_size": batch_size}
    )
    config = model_config_from_settings(settings.model, N_FEATURES)
    learner = learner_builder(settings)(config)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, N_FEATURES, generator=generator)
    y = torch.randint(0, N_CLASSES, (batch_size,), generator=generator)
    loss_fn = torch.nn.CrossEntropyLoss()
    model, optimizer = learner.model, learner.optimizer
    model.train()
    steps = max(50, events // batch_size)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def _in_process(base: Path, payloads: list[bytes], batch_size: int) -> float:
    records = [Record("bench", 0, offset, payload) for offset, payload in enumerate(payloads)]
    settings = _settings(base, "127.0.0.1:1", "bench", batch_size)
    timer = _Timer()
    trainer = build_trainer(settings, source=InMemoryRecordSource(records), on_step=timer.on_step)
    trainer.run(StopWhen(max_events=len(records)))
    return timer.rate


def _end_to_end(
    base: Path,
    broker: EmbeddedBroker,
    topic: str,
    events: int,
    batch: int,
    *,
    consumer_process: bool = True,
) -> float:
    kafka = {"consumer_process": consumer_process}
    settings = _settings(base, broker.bootstrap_servers, topic, batch, kafka=kafka)
    timer = _Timer()
    trainer = build_trainer(settings, on_step=timer.on_step)
    trainer.run(StopWhen(max_events=events, max_seconds=300))
    return timer.rate


def _raw_consume(broker: EmbeddedBroker, topic: str, events: int, batch_size: int) -> float:
    from kafka import KafkaConsumer

    settings = _settings(Path("."), broker.bootstrap_servers, topic, batch_size)
    consumer = KafkaConsumer(
        topic,
        **settings.kafka.client_options(),
        group_id=settings.kafka.group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    seen, first_batch, first = 0, 0, None
    deadline = time.monotonic() + 300
    try:
        while seen < events and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=batch_size)
            count = sum(len(batch) for batch in polled.values())
            if count and first is None:  # time from the first batch, as for the daemon
                first, first_batch = time.perf_counter(), count
            seen += count
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        consumer.close()
    return (seen - first_batch) / elapsed if elapsed > 0 else float("nan")


def _latency(
    base: Path, broker: EmbeddedBroker, batch_size: int, rate: int
) -> tuple[float, float, float]:
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=1)
    learner = {"poll_timeout_s": 0.05}
    settings = _settings(base, broker.bootstrap_servers, topic, batch_size, learner=learner)
    tap = _LatencyTap(CollectorRegistry())
    trainer = build_trainer(settings, telemetry=tap)
    seconds = 5.0
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    producer = context.Process(
        target=_paced_producer, args=(broker.bootstrap_servers, topic, rate, seconds, ready)
    )
    deadline = time.monotonic() + 30
    while not trainer.loop.source.ready and time.monotonic() < deadline:
        trainer.loop.source.poll(1, 0.2)  # join the group before the clock starts (topic empty)
    producer.start()
    ready.wait(timeout=120)  # a spawned process imports torch first: don't count that as idle
    trainer.run(StopWhen(max_seconds=seconds + 5.0, idle_seconds=2.0))
    producer.join()
    latencies = np.concatenate(tap.latencies) if tap.latencies else np.array([np.nan])
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), float(rate)


def _paced_producer(bootstrap: str, topic: str, rate: int, seconds: float, ready: Any) -> None:
    """Produce ``rate`` events/s for ``seconds``, each stamped with its send time."""
    settings = _settings(Path("."), bootstrap, topic, 1)
    producer: Any = build_producer(settings.kafka, linger_ms=2)
    stream = DriftingStream(n_events=int(rate * seconds), n_features=N_FEATURES)
    ready.set()
    started = time.monotonic()
    for index, event in enumerate(stream.events()):
        ahead = index / rate - (time.monotonic() - started)
        if ahead > 0.001:
            time.sleep(ahead)
        event["ts"] = time.time()
        producer.send(topic, value=orjson.dumps(event))
    producer.flush()
    producer.close()


def _daemon_peak_rss_mib(base: Path, bootstrap: str, topic: str, events: int, batch: int) -> float:
    """Peak RSS of a fresh process that runs the daemon over the topic (no benchmark data)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=_rss_child, args=(base, bootstrap, topic, events, batch, results)
    )
    child.start()
    peak = float(results.get(timeout=600))
    child.join()
    return peak


def _rss_child(
    base: Path, bootstrap: str, topic: str, events: int, batch: int, results: Any
) -> None:
    configure_logging("ERROR", json_lines=False)
    settings = _settings(base, bootstrap, topic, batch)
    torch.set_num_threads(settings.learner.torch_threads)
    build_trainer(settings).run(StopWhen(max_events=events, max_seconds=300))
    results.put(_peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _adaptation(*, quick: bool) -> None:
    """Events to recover after abrupt, recurring concept changes, per adaptation variant."""
    from driftd.tools.adaptation_bench import measure_monitor_cost, measure_recovery

    n_events, change_every = (12_000, 2_000) if quick else (60_000, 10_000)
    for batch_size in (32, 256):
        result = measure_recovery(
            n_events=n_events, change_every=change_every, batch_size=batch_size
        )
        print(
            f"adaptation: DriftingStream, {n_events:,} events, change every {change_every:,}, "
            f"batch {batch_size}; events to recover within 0.05 of the pre-change accuracy"
        )
        for name, variant in result["variants"].items():
            print(
                f"  {name:<24} accuracy {variant['accuracy']:.3f} | recover mean "
                f"{_maybe(variant['recover_mean'])} | recurring "
                f"{_maybe(variant['recurring_mean'])} | drifts {variant['drifts']} | "
                f"{variant['events_per_s']:,.0f} events/s"
            )
    costs = measure_monitor_cost(n_events=50_000 if quick else 200_000)
    print("  detector cost, us/event: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
    torch.set_num_threads(load_settings().learner.torch_threads)


def _serving(*, quick: bool) -> None:
    """Publish-to-first-prediction latency under load, and HotModel throughput."""
    from driftd.tools.serving_bench import measure_inference_worker, measure_serving

    reloads = measure_serving(publishes=20 if quick else 100)
    print(
        f"serving: publish -> first prediction with it p50 "
        f"{reloads['publish_to_prediction_p50_s'] * 1000:.0f} ms, p99 "
        f"{reloads['publish_to_prediction_p99_s'] * 1000:.0f} ms over {reloads['reloads']} "
        f"reloads (poll {reloads['poll_interval_s']} s); predictions under reload "
        f"{reloads['predictions_under_reload']:,}, failed {reloads['failed_predictions']}, "
        f"blocked >10x median {reloads['blocked_predictions']}"
    )
    print(
        f"  HotModel.predict: {reloads['rows_per_s']:,.0f} rows/s at batch "
        f"{reloads['predict_batch']}, {reloads['calls_per_s_batch_1']:,.0f} calls/s at batch 1"
    )
    events = 20_000 if quick else 100_000
    alone = measure_inference_worker(events=events)
    with EmbeddedBroker() as broker:
        served = measure_inference_worker(events=events, broker=broker)
    print(
        f"  one driftd infer worker: {served['events_per_s']:,.0f} events/s from the broker, "
        f"{alone['events_per_s']:,.0f} events/s in-process"
    )
    print(f"  raw: {json.dumps({'reloads': reloads, 'worker': served}, default=str)}")


def _maybe(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"
