"""Broker outage: SIGKILL the broker under a running trainer and inference worker, restart it.

The broker stores in a local S3 server (moto), so topics, records and committed offsets survive
its kill. While it is gone both processes must stay alive, answer 503 on ``/readyz`` and not
spin a core; once it is back on the same port they must be ready again, learn every good event
exactly once (snapshot manifest) and predict the events produced after the outage.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_dead_letter import REASON_HEADER
from driftd.adapters.kafka_process_source import KafkaProcessSource
from driftd.settings.root import KafkaSettings
from driftd.tools.streams import DriftingStream
from tests.faults.s3_broker import (  # noqa: F401 (fixtures)
    HEAVY,
    cpu_seconds,
    driftd_on,
    newest_manifest,
    process_tree,
    readyz,
    s3_broker,
    wait_until,
)
from tests.integration.driftd_process import DriftdProcess, produce, scrape

pytestmark = [pytest.mark.integration, pytest.mark.faults_heavy]

PARTITIONS = 2
EVENTS_PER_WAVE = 300
IN_FLIGHT = 150
# Each wave carries these (value → the reason it is dead-lettered with), in its middle.
BAD_RECORDS = {b"not json": b"not_json", b'{"x": [1, 2], "y": 0}': b"wrong_dimension"}
# How long the broker stays down once both processes said not ready (longer when heavy).
OUTAGE_SECONDS = 60.0 if HEAVY else 5.0
# Well under one core: a retry loop without backoff would use ~100% here.
MAX_OUTAGE_CPU_SHARE = 0.5


def _wave(wave: int, size: int) -> list[bytes]:
    stream = DriftingStream(n_events=size, change_every=10_000, seed=wave)
    good = [
        orjson.dumps({**event, "id": f"w{wave}-{index}", "ts": time.time()})
        for index, event in enumerate(stream.events())
    ]
    return good[: size // 2] + list(BAD_RECORDS) + good[size // 2 :]


def _ids(wave: int, size: int) -> set[str]:
    return {f"w{wave}-{index}" for index in range(size)}


def _learned(snapshots: Path) -> int:
    manifest = newest_manifest(snapshots)
    return -1 if manifest is None else int(manifest["events_learned"])


class Predictions:
    """Reads the prediction topic from the beginning with assign() (no group join)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "log_level": 0}
        )
        self.consumer.assign(
            [ConfluentTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self.ids: list[str] = []

    def read(self) -> set[str]:
        while (message := self.consumer.poll(0.2)) is not None:
            if not message.error():
                self.ids.append(orjson.loads(message.value())["id"])
        return set(self.ids)

    def close(self) -> None:
        self.consumer.close()


def _metric(process: DriftdProcess, name: str) -> float:
    return scrape(process.port).get(name, 0.0)


def _warnings(process: DriftdProcess) -> int:
    """How many warnings and errors the process logged (kafka-python's included)."""
    return sum(entry.get("level") in ("warning", "error") for entry in process.logs)


def _cpu_shares(processes: list[DriftdProcess], seconds: float) -> list[float]:
    """CPU share (1.0 = one core) of each process with its children over the next ``seconds``."""
    trees = [process_tree(process.process.pid) for process in processes]
    before, started = [cpu_seconds(tree) for tree in trees], time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return [(cpu_seconds(tree) - used) / elapsed for tree, used in zip(trees, before, strict=True)]


def _dead_letters(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    """(reason header, value) of the dead-letter topic's records, read from the beginning."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([ConfluentTopicPartition(topic, 0, OFFSET_BEGINNING)])
    found: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                headers = dict(message.headers() or [])
                found.append((headers[REASON_HEADER], message.value() or b""))
    finally:
        consumer.close()
    return found


def test_trainer_and_worker_survive_a_broker_kill_and_resume(
    s3_broker: EmbeddedBroker,  # noqa: F811
    driftd_on: Callable[..., DriftdProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    broker, snapshots = s3_broker, tmp_path / "snapshots"
    suffix = uuid.uuid4().hex[:8]
    events, outputs, dead = f"events-{suffix}", f"predictions-{suffix}", f"dead-{suffix}"
    broker.create_topics([events, outputs], partitions=PARTITIONS)
    broker.create_topics([dead], partitions=1)
    common = {
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "64",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_METRICS__LAG_EVERY_SECONDS": "1",
        # Short request timeouts keep each failing call short while the broker is gone.
        "DRIFTD_KAFKA__REQUEST_TIMEOUT_MS": "5000",
    }
    trainer = driftd_on(
        broker,
        "run",
        {
            **common,
            "DRIFTD_KAFKA__TOPICS": events,
            "DRIFTD_KAFKA__GROUP_ID": f"trainer-{suffix}",
            "DRIFTD_KAFKA__DEAD_LETTER_TOPIC": dead,
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
            "DRIFTD_SNAPSHOTS__GATE_ENABLED": "false",
        },
    )
    produce(broker.bootstrap_servers, events, _wave(1, EVENTS_PER_WAVE))
    wait_until(lambda: _learned(snapshots) == EVENTS_PER_WAVE, "trainer learned wave 1")
    worker = driftd_on(
        broker,
        "infer",
        {
            **common,
            "DRIFTD_INFER__INPUT_TOPICS": events,
            "DRIFTD_INFER__OUTPUT_TOPIC": outputs,
            "DRIFTD_INFER__GROUP_ID": f"infer-{suffix}",
        },
    )
    predictions = Predictions(broker.bootstrap_servers, outputs)
    try:
        wait_until(lambda: _ids(1, EVENTS_PER_WAVE) <= predictions.read(), "wave 1 predicted")
        wait_until(lambda: readyz(trainer.port) == readyz(worker.port) == 200, "both ready")

        # Work in flight at the kill: the trainer's loop is frozen while its consumer child
        # fetches wave 2, so it learns, dead-letters and commits it while the broker is gone.
        trainer.process.send_signal(signal.SIGSTOP)
        produce(broker.bootstrap_servers, events, _wave(2, IN_FLIGHT))
        wait_until(lambda: _ids(2, IN_FLIGHT) <= predictions.read(), "wave 2 predicted")
        time.sleep(2)  # the consumer child polls every 50 ms: it has fetched wave 2 by now
        broker.kill()
        trainer.process.send_signal(signal.SIGCONT)
        not_ready_after = wait_until(
            lambda: readyz(trainer.port) == 503 and readyz(worker.port) == 503,
            "both report not ready",
            timeout=45,
        )
        trainer_cpu, worker_cpu = _cpu_shares([trainer, worker], OUTAGE_SECONDS)
        assert trainer.process.poll() is None, trainer.logs[-5:]
        assert worker.process.poll() is None, worker.logs[-5:]
        print(
            f"\noutage: not ready after {not_ready_after:.1f} s; CPU over the next "
            f"{OUTAGE_SECONDS:.0f} s: trainer {trainer_cpu:.1%}, worker {worker_cpu:.1%}"
        )
        if HEAVY:
            # Wave 2 is learned while the broker is gone. Slowly: after each batch the loop's
            # dead-letter flush blocks (30 s the first time, then the producer's bootstrap
            # timeout), so only a long outage sees all of it.
            learned = EVENTS_PER_WAVE + IN_FLIGHT
            wait_until(lambda: _metric(trainer, "driftd_events_learned_total") == learned, "w2")
        assert trainer_cpu < MAX_OUTAGE_CPU_SHARE
        assert worker_cpu < MAX_OUTAGE_CPU_SHARE
        assert readyz(trainer.port) == readyz(worker.port) == 503

        broker.restart()
        produce(broker.bootstrap_servers, events, _wave(3, EVENTS_PER_WAVE))
        ready_after = wait_until(
            lambda: readyz(trainer.port) == readyz(worker.port) == 200, "both ready again", 90
        )
        good = 2 * EVENTS_PER_WAVE + IN_FLIGHT
        learned_after = ready_after + wait_until(
            lambda: _learned(snapshots) == good, "every good event learned", 90
        )
        predicted_after = learned_after + wait_until(
            lambda: _ids(3, EVENTS_PER_WAVE) <= predictions.read(), "wave 3 predicted", 90
        )
        print(
            f"outage: after the restart, both ready in {ready_after:.1f} s, all learned and "
            f"snapshotted in {learned_after:.1f} s, wave 3 predicted in {predicted_after:.1f} s"
        )
        print(
            f"outage: warnings and errors logged: trainer {_warnings(trainer)}, "
            f"worker {_warnings(worker)}"
        )

        manifest = newest_manifest(snapshots)
        assert manifest is not None
        assert manifest["events_learned"] == good  # none lost, none learned twice
        assert manifest["events_rejected"] == 3 * len(BAD_RECORDS)
        next_offsets = sum(entry["next_offset"] for entry in manifest["offsets"])
        assert next_offsets == good + 3 * len(BAD_RECORDS)
        assert scrape(trainer.port)["driftd_events_learned_total"] == good
        # At least once: a retried delivery may repeat one, but none is missing.
        dead_letters = _dead_letters(broker.bootstrap_servers, dead, 3 * len(BAD_RECORDS))
        assert len(dead_letters) >= 3 * len(BAD_RECORDS)
        assert set(dead_letters) == {(reason, value) for value, reason in BAD_RECORDS.items()}
        assert trainer.process.poll() is None
        assert worker.process.poll() is None
        # log.json=true holds for the consumer child's (kafka-python's) warnings too.
        assert [entry["raw"] for entry in trainer.logs if "raw" in entry] == []
    finally:
        predictions.close()
    assert trainer.stop() == 0
    assert worker.stop() == 0


def test_a_consumer_started_during_an_outage_waits_and_reads_once_the_broker_is_back(
    s3_broker: EmbeddedBroker,  # noqa: F811
) -> None:
    broker, topic = s3_broker, f"late-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=1)
    produce(broker.bootstrap_servers, topic, [b"%d" % i for i in range(20)])
    settings = KafkaSettings(
        bootstrap_servers=[broker.bootstrap_servers],
        topics=[topic],
        group_id=f"late-{uuid.uuid4().hex[:8]}",
        request_timeout_ms=1000,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    broker.kill()
    source = KafkaProcessSource(settings, max_records=50)
    try:
        # Its child retries the bootstrap with backoff instead of exiting (it used to die, and
        # the next poll raised a bare EOFError); a poll checks the child is alive.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert source.poll(50, 0.2) == []
            assert source.ready is False
        broker.restart()
        values: list[bytes | None] = []

        def read_all() -> bool:
            values.extend(record.value for record in source.poll(50, 0.2))
            return len(values) >= 20

        wait_until(read_all, "the records once the broker is back")
        assert values == [b"%d" % i for i in range(20)]
        # ready is what the polling thread last heard from the child: poll on meanwhile.
        wait_until(lambda: not source.poll(50, 0.2) and source.ready, "ready once back")
    finally:
        source.close()
