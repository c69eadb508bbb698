"""``driftd demo``: the embedded default, with no Kafka install and no Docker.

Starts the bundled Kafka-compatible broker on a free loopback port, replays the built-in
drifting stream into it (with a few malformed records, to show the dead-letter path), runs the
daemon against it with a live progress line, and stops by itself.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_clients import build_producer
from driftd.app import build_trainer
from driftd.logs import add_json_log_file, configure_logging
from driftd.loop import LoopProgress, StopWhen
from driftd.settings.root import Settings, load_settings
from driftd.tools.streams import DriftingStream

TOPIC = "driftd-demo-events"
DEAD_LETTER_TOPIC = "driftd-demo-dead-letters"
BAD_RECORDS = (b"not json", b'{"x": [1, 2], "y": 0}', b'{"x": "oops"}', b'{"y": 1}')


def run_demo(*, events: int, directory: str, seconds: float) -> int:
    """Run the demo end to end; returns the process exit code."""
    configure_logging("ERROR", json_lines=False)  # the progress line and summary say it all
    root = Path(directory)
    snapshots = root / "snapshots"
    if snapshots.exists():
        shutil.rmtree(snapshots)  # a new broker has new offsets: old snapshots do not apply
    root.mkdir(parents=True, exist_ok=True)
    log_file = add_json_log_file(root / "driftd.jsonl")  # for `driftd report`
    try:
        progress = _run(events, snapshots, seconds)
    finally:
        logging.getLogger("driftd").removeHandler(log_file)
        log_file.close()
    _summary(progress, snapshots)
    print(
        f"  timeline: driftd report --log {root / 'driftd.jsonl'} --snapshots {snapshots} "
        f"--out {root / 'report.html'}"
    )
    return 0


def _run(events: int, snapshots: Path, seconds: float) -> LoopProgress:
    """Broker, producer and daemon for one demo run; returns the loop's progress."""
    stream = DriftingStream(n_events=events, change_every=max(1, events // 3))
    print(
        f"driftd demo: {events:,} events replayed over ~{seconds / 4:.0f} s, "
        f"concept changes every {stream.change_every:,}"
    )
    with EmbeddedBroker() as broker:
        broker.create_topics([TOPIC], partitions=3)
        broker.create_topics([DEAD_LETTER_TOPIC], partitions=1)
        print(f"  broker   : Kafka-compatible (tansu) on {broker.bootstrap_servers}")
        settings = demo_settings(broker.bootstrap_servers, snapshots)
        producer = threading.Thread(
            target=_replay, args=(settings, stream, seconds / 4), name="demo-producer"
        )
        producer.start()
        progress_line = _ProgressLine()
        trainer = build_trainer(settings, on_step=progress_line.update)
        assert trainer.server is not None
        print(f"  metrics  : http://127.0.0.1:{trainer.server.port}/metrics")
        print(f"  snapshots: {snapshots.resolve()}")
        try:
            progress = trainer.run(StopWhen(max_seconds=seconds, idle_seconds=4.0))
        finally:
            producer.join()
        progress_line.finish(progress)
    return progress


def demo_settings(bootstrap: str, snapshots: Path) -> Settings:
    """Settings for the embedded broker (short group timeouts: see NOTES on the test broker)."""
    return load_settings(
        kafka={
            "bootstrap_servers": [bootstrap],
            "topics": [TOPIC],
            "group_id": "driftd-demo",
            "dead_letter_topic": DEAD_LETTER_TOPIC,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 1000,
        },
        model={"n_classes": 3},
        learner={"batch_size": 64, "lr": 0.005},
        snapshots={"dir": str(snapshots), "every_steps": 100, "every_seconds": 5.0},
        metrics={"port": 0, "lag_every_seconds": 1.0},
        pruning={"enabled": True, "structured": True, "every_steps": 40, "n_events": 3},
    )


def _replay(settings: Settings, stream: DriftingStream, duration_s: float) -> None:
    """Produce the stream, paced to last about ``duration_s``, with a few bad records."""
    producer: Any = build_producer(settings.kafka, linger_ms=20)
    per_second = max(1.0, stream.n_events / duration_s)
    started = time.monotonic()
    try:
        for index, event in enumerate(stream.events()):
            event["ts"] = time.time()
            producer.send(TOPIC, key=str(index).encode(), value=orjson.dumps(event))
            if index % 1000 == 999:
                producer.send(TOPIC, value=BAD_RECORDS[(index // 1000) % len(BAD_RECORDS)])
            ahead = index / per_second - (time.monotonic() - started)
            if ahead > 0.05:
                time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()


class _ProgressLine:
    """A single, rewritten status line (at most a few updates per second)."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._last = 0.0

    def update(self, progress: LoopProgress) -> None:
        now = time.monotonic()
        if now - self._last >= 0.25:
            self._last = now
            sys.stdout.write("\r" + self._text(progress, now))
            sys.stdout.flush()

    def finish(self, progress: LoopProgress) -> None:
        sys.stdout.write("\r" + self._text(progress, time.monotonic()) + "\n")

    def _text(self, progress: LoopProgress, now: float) -> str:
        rate = progress.events_consumed / max(now - self._started, 1e-9)
        accuracy = f"{progress.accuracy:.3f}" if progress.accuracy is not None else "  -  "
        lr = f"{progress.lr:.1e}" if progress.lr is not None else "-"
        return (
            f"  events {progress.events_consumed:>7,} | {rate:>6,.0f} ev/s | "
            f"accuracy {accuracy} | lr {lr} | drifts {progress.drifts} | "
            f"head {progress.domain or '-'} | params {progress.parameters or '-'} | "
            f"invalid {progress.events_invalid} | snapshot v{progress.snapshot_version or 0}  "
        )


def _summary(progress: LoopProgress, snapshots: Path) -> None:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(progress.invalid_by_reason.items()))
    latest = (snapshots / "LATEST").read_text().strip() if (snapshots / "LATEST").exists() else "-"
    print(f"done: {progress.events_learned:,} events learned in {progress.steps:,} steps")
    print(f"  drifts detected: {progress.drifts}, adaptations: {progress.adaptations}")
    prunes = ", ".join(f"{k} {v}" for k, v in sorted(progress.prunes.items())) or "none yet"
    print(f"  pruning (structured, 50% of the trunk's units): {prunes}; "
          f"parameters now {progress.parameters or '-'}")  # fmt: skip
    print(f"  invalid records: {progress.events_invalid} ({reasons or 'none'}), dead-lettered")
    print(f"  newest snapshot: {snapshots / latest}/manifest.json")
    print("  next: `driftd run` against your own Kafka — see README.md, Configuration")
