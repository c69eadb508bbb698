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

from driftd import __version__
from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_clients import build_producer
from driftd.app import build_trainer
from driftd.logs import add_json_log_file, configure_logging
from driftd.loop import LoopProgress, StopWhen
from driftd.settings.root import Settings, load_settings
from driftd.tools.invocation import driftd_command
from driftd.tools.progress_line import ProgressLine
from driftd.tools.report import write_report
from driftd.tools.streams import DriftingStream

TOPIC = "driftd-demo-events"
DEAD_LETTER_TOPIC = "driftd-demo-dead-letters"
demo_log = logging.getLogger("driftd.demo")
BAD_RECORDS = (b"not json", b'{"x": [1, 2], "y": 0}', b'{"x": "oops"}', b'{"y": 1}')
BAD_EVERY = 1000  # one bad record after every 1000 events
#: Stop this long after the last record (counted from the first: joining is not idle).
IDLE_SECONDS = 30.0
REPLAY_SECONDS = 15.0  # the stream is produced over this long at most (a quarter of --seconds)


def run_demo(*, events: int, directory: str, seconds: float) -> int:
    """Run the demo end to end; returns the process exit code."""
    configure_logging("ERROR", json_lines=False)  # the progress line and summary say it all
    root = Path(directory)
    snapshots = root / "snapshots"
    if snapshots.exists():
        shutil.rmtree(snapshots)  # a new broker has new offsets: old snapshots do not apply
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "driftd.jsonl"
    log_path.unlink(missing_ok=True)  # one run per log, as the snapshots above are one run's
    log_file = add_json_log_file(log_path)  # for `driftd report`
    try:
        demo_log.info("driftd %s demo starting", __version__, extra={"event": "start"})
        progress = _run(events, snapshots, seconds)
        _log_stopped(progress)
    finally:
        logging.getLogger("driftd").removeHandler(log_file)
        log_file.close()
    if progress.events_learned == 0:
        print(f"driftd demo: learned nothing: {_why_nothing(progress, seconds)}", file=sys.stderr)
        return 1
    _summary(progress, snapshots, events)
    driftd = driftd_command()
    report = root / "report.html"
    write_report(log=log_path, snapshots=snapshots, out=report)
    print(f"  report  : {report.resolve()} (a timeline of this run; open it in a browser)")
    print(f"  redraw  : {driftd} report --log {log_path} --snapshots {snapshots} --out {report}")
    print(f"  next: `{driftd} broker` starts this broker alone for `{driftd} run` — see README.md")
    return 0


def _why_nothing(progress: LoopProgress, seconds: float) -> str:
    """Why a demo run learned nothing, in words a first-time user can act on."""
    if progress.events_consumed == 0:
        return (
            f"no record arrived within {seconds:g} s (--seconds): the consumer did not start "
            "in time; on a busy machine try a larger --seconds"
        )
    if progress.events_invalid == progress.events_consumed:
        return f"all {progress.events_consumed} records consumed were invalid"
    return f"stopped ({progress.stopped_by}) after {progress.events_consumed} records, no step"


def _run(events: int, snapshots: Path, seconds: float) -> LoopProgress:
    """Broker, producer and daemon for one demo run; returns the loop's progress."""
    started = time.monotonic()  # --seconds bounds the whole run, starting the daemon included
    stream = DriftingStream(n_events=events, change_every=max(1, events // 3))
    replay_s = min(seconds / 4, REPLAY_SECONDS)
    print(
        f"driftd demo: {events:,} events replayed over ~{replay_s:.0f} s, "
        f"concept changes every {stream.change_every:,}"
    )
    with EmbeddedBroker() as broker:
        broker.create_topics([TOPIC], partitions=3)
        broker.create_topics([DEAD_LETTER_TOPIC], partitions=1)
        print(f"  broker   : Kafka-compatible (tansu) on {broker.bootstrap_servers}")
        settings = demo_settings(broker.bootstrap_servers, snapshots)
        producer = threading.Thread(
            target=_replay, args=(settings, stream, replay_s), name="demo-producer"
        )
        producer.start()
        progress_line = ProgressLine(sys.stdout)
        trainer = build_trainer(settings, on_step=progress_line.update)
        assert trainer.server is not None
        print(f"  metrics  : http://127.0.0.1:{trainer.server.port}/metrics")
        print(f"  snapshots: {snapshots.resolve()}")
        try:
            records = events + events // BAD_EVERY  # stop once every record produced is read
            left = max(0.0, seconds - (time.monotonic() - started))
            stop = StopWhen(max_events=records, max_seconds=left, idle_seconds=IDLE_SECONDS)
            progress = trainer.run(stop)
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
        log={"progress_every_events": 256, "progress_every_seconds": 0.0},  # report points
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
            if index % BAD_EVERY == BAD_EVERY - 1:
                bad = BAD_RECORDS[(index // BAD_EVERY) % len(BAD_RECORDS)]
                producer.send(TOPIC, value=bad)
            ahead = index / per_second - (time.monotonic() - started)
            if ahead > 0.05:
                time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()


def _log_stopped(progress: LoopProgress) -> None:
    """The ``stopped`` line ``driftd report`` sums, as ``driftd run`` writes it."""
    demo_log.info(
        "stopped: %d events consumed, %d learned, %d invalid, snapshot %s",
        progress.events_consumed, progress.events_learned, progress.events_invalid,
        progress.snapshot_version,
        extra={"event": "stopped", "events_consumed": progress.events_consumed,
               "events_learned": progress.events_learned,
               "events_invalid": progress.events_invalid},
    )  # fmt: skip


def _summary(progress: LoopProgress, snapshots: Path, events: int) -> None:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(progress.invalid_by_reason.items()))
    latest = (snapshots / "LATEST").read_text().strip() if (snapshots / "LATEST").exists() else "-"
    print(f"done: {progress.events_learned:,} events learned in {progress.steps:,} steps")
    if progress.stopped_by == "max_seconds":
        print(f"  stopped at the time bound (--seconds) with {progress.events_learned:,} of "
              f"{events:,} events learned: a larger --seconds reads all")  # fmt: skip
    indent = "\n" + " " * 18  # two lines each: the summary stays within 80 columns
    print(
        f"  concept drifts: {progress.concept_drifts} (the loss rose: the stream changes concept "
        f"twice,{indent}and a change is often caught again while the model re-learns)"
    )
    print(
        f"  input alarms  : {progress.input_drifts} (the inputs' distribution moved, as each "
        f"change here{indent}also does; an input alarm can start or switch a head)"
    )
    print(f"  adaptations   : {progress.adaptations}, live head {progress.domain or '-'}")
    prunes = ", ".join(f"{k} {v}" for k, v in sorted(progress.prunes.items())) or "none yet"
    print(f"  pruning (structured, 50% of the trunk's units): {prunes}; "
          f"parameters now {progress.parameters or '-'}")  # fmt: skip
    print(f"  invalid records: {progress.events_invalid} ({reasons or 'none'}), dead-lettered")
    if latest != "-":
        print(f"  newest snapshot: {snapshots / latest}/manifest.json")
