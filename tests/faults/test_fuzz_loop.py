"""Fuzzed record bytes through the whole training loop, in memory and against the real broker.

tests/unit/test_decode.py fuzzes the decoder alone; here Hypothesis mixes good events with one
bad record kind each (huge, deeply nested, wrong dimension mid-stream, label out of range,
NaN/inf, empty, binary, wrong types) and runs them through ``build_trainer``'s loop: nothing
may crash, every bad record is dead-lettered with the reason its single defect calls for
(counted per reason), every good labelled event is learned exactly once, and the offsets move
past every record.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_dead_letter import REASON_HEADER
from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.prometheus_telemetry import PrometheusTelemetry
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import Record, TopicPartition
from driftd.settings.root import load_settings
from tests.fakes import FakeClock
from tests.faults.s3_broker import HEAVY, newest_manifest, wait_until
from tests.integration.driftd_process import DriftdProcess

N_FEATURES, N_CLASSES, MAX_BYTES = 4, 3, 64 * 1024
BROKER_RECORDS = 300
LEARNED, UNLABELLED = "learned", "unlabelled"  # the outcomes of good events
FIRST = orjson.dumps({"x": [0.5, -1.0, 2.0, 0.0], "y": 1})  # fixes the feature count at 4

numbers = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
features = st.lists(numbers, min_size=N_FEATURES, max_size=N_FEATURES)
labels = st.integers(0, N_CLASSES - 1) | st.sampled_from([0.0, 1.0, 2.0])


@st.composite
def good_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event: maybe unlabelled, maybe with id, ts, domain and a harmless extra field."""
    event: dict[str, Any] = {"x": draw(features)}
    if draw(st.booleans()):
        event["y"] = draw(labels)
    elif draw(st.booleans()):
        event["y"] = None
    optional = {
        "id": st.text(max_size=20),
        "ts": st.floats(0, 2e9) | st.integers(0, 2_000_000_000) | st.none(),
        "domain": st.sampled_from(["a", "b"]) | st.none(),
        "meta": st.text(max_size=2000) | st.integers(1, 200).map(_nested),  # nested, parsable
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            event[name] = draw(values)
    return event


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _good(event: dict[str, Any]) -> tuple[bytes, str]:
    return orjson.dumps(event), LEARNED if event.get("y") is not None else UNLABELLED


def _with(event: dict[str, Any], **fields: Any) -> bytes:
    """The event with fields replaced, written by Python's json (NaN/Infinity literals)."""
    return json.dumps({**event, **fields}).encode()


def _non_finite(literal: str, order: list[int]) -> bytes:
    """Four features, one of them ``literal`` (a float32 overflow or a NaN/inf literal)."""
    x = [literal if i == 0 else str(i) for i in order]
    return f'{{"x": [{", ".join(x)}], "y": 0}}'.encode()


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Each bad case: (value, reason). Depth 20 000 is past both orjson's (1024) and Python's limit.
bad_records = st.one_of(
    st.sampled_from([(b"", "empty"), (None, "empty")]),
    good_events().map(lambda e: (_with(e, pad="p" * MAX_BYTES), "oversized")),
    st.binary(max_size=300).map(lambda b: (b"\x80" + b, "not_json")),
    good_events().map(lambda e: (orjson.dumps(e)[:-1], "not_json")),
    st.just((_deep(20_000), "not_json")),
    st.just((b'{"x": [1, 2, 3, 4], "y": 0, "meta": ' + _deep(20_000) + b"}", "not_json")),
    st.sampled_from([b"[1, 2]", b"3", b'"x"', b"null", b"true"]).map(lambda v: (v, "not_object")),
    good_events().map(lambda e: (_with(e, x=None), "missing_x")),
    st.sampled_from(
        ["abc", 5, True, {}, [1, "2", 3, 4], [1, True, 3, 4], [[1], [2], [3], [4]]]
    ).flatmap(lambda x: good_events().map(lambda e: (_with(e, x=x), "wrong_type"))),
    st.integers(0, 40)
    .filter(lambda n: n != N_FEATURES)
    .flatmap(lambda n: st.lists(numbers, min_size=n, max_size=n))
    .flatmap(lambda x: good_events().map(lambda e: (_with(e, x=x), "wrong_dimension"))),
    (st.integers(N_CLASSES, 10**30) | st.integers(-(10**6), -1) | st.just(float("inf"))).flatmap(
        lambda y: good_events().map(lambda e: (_with(e, y=y), "unknown_label"))
    ),
    st.sampled_from([1.5, True, [1], {"a": 1}, float("nan")]).flatmap(
        lambda y: good_events().map(lambda e: (_with(e, y=y), "wrong_type"))
    ),
    st.tuples(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e39"]), st.permutations(range(4))
    ).map(lambda bad: (_non_finite(*bad), "non_finite")),
    st.sampled_from([{"ts": "yesterday"}, {"ts": float("nan")}, {"domain": 5}]).flatmap(
        lambda bad: good_events().map(lambda e: (_with(e, **bad), "wrong_type"))
    ),
)
# About half good, half bad; at least 20, so a drawn stream spans several batches of 16.
case = st.booleans().flatmap(lambda good: good_events().map(_good) if good else bad_records)
cases = st.lists(
    case,
    min_size=20,
    max_size=300 if HEAVY else 80,
)


def _records(values: list[bytes | None], topic: str = "fuzz") -> list[Record]:
    """Two partitions, alternating, offsets counting up in each; the fixed first event first."""
    ends = [0, 0]
    records = []
    for index, value in enumerate([FIRST, *values]):
        partition = index % 2
        records.append(Record(topic, partition, ends[partition], value, str(index).encode()))
        ends[partition] += 1
    return records


def _expected(outcomes: list[str]) -> tuple[int, Counter[str]]:
    learned = 1 + outcomes.count(LEARNED)  # FIRST is labelled
    return learned, Counter(o for o in outcomes if o not in (LEARNED, UNLABELLED))


@pytest.mark.faults_heavy
@settings(
    max_examples=2000 if HEAVY else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(drawn=cases)
def test_fuzzed_records_through_the_loop_are_learned_or_dead_lettered(
    drawn: list[tuple[bytes | None, str]],
) -> None:
    values, outcomes = [value for value, _ in drawn], [outcome for _, outcome in drawn]
    records = _records(values)
    registry, dead_letters = CollectorRegistry(), InMemoryDeadLetterSink()
    source = InMemoryRecordSource(records)
    trainer = build_trainer(
        load_settings(
            model={"n_classes": N_CLASSES},
            learner={"batch_size": 16},
            kafka={"max_record_bytes": MAX_BYTES},
            snapshots={"dir": "unused", "every_steps": 3, "every_seconds": 10**6},
            metrics={"enabled": False},
        ),
        source=source,
        store=InMemorySnapshotStore(keep=2),
        dead_letters=dead_letters,
        clock=FakeClock(),
        telemetry=PrometheusTelemetry(registry),
        serve_metrics=False,
    )
    progress = trainer.run(StopWhen(max_events=len(records)))

    learned, reasons = _expected(outcomes)
    assert progress.events_consumed == len(records)
    assert progress.events_learned == learned
    assert Counter(r.reason for r in dead_letters.rejections) == reasons
    assert progress.invalid_by_reason == dict(reasons)
    for reason, count in reasons.items():
        assert registry.get_sample_value("driftd_events_invalid_total", {"reason": reason}) == count
    bad_values = [
        v for v, o in zip(values, outcomes, strict=True) if o not in (LEARNED, UNLABELLED)
    ]
    assert sorted(r.record.value or b"" for r in dead_letters.rejections) == sorted(
        v or b"" for v in bad_values
    )
    assert all(r.detail for r in dead_letters.rejections)
    ends = {TopicPartition("fuzz", p): sum(1 for r in records if r.partition == p) for p in (0, 1)}
    assert trainer.loop.state.offsets == {tp: end for tp, end in ends.items() if end}
    assert source.committed == trainer.loop.state.offsets  # the final snapshot committed all
    newest = trainer.store.load_newest()
    assert newest is not None
    assert newest.manifest["events_learned"] == learned
    assert newest.manifest["events_rejected"] == sum(reasons.values())


def _dead_letters(bootstrap: str, topic: str, expected: int) -> list[tuple[str, bytes]]:
    """(reason header, value) of every dead letter, read from the beginning (no group join)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([ConfluentTopicPartition(topic, 0, OFFSET_BEGINNING)])
    found: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                reason = dict(message.headers() or [])[REASON_HEADER].decode()
                found.append((reason, message.value() or b""))
        assert consumer.poll(1.0) is None  # nothing beyond the expected
    finally:
        consumer.close()
    return found


def fuzzed_corpus(size: int) -> list[tuple[bytes | None, str]]:
    """``size`` records from Hypothesis examples of :data:`cases`, concatenated.

    One example of hundreds of records comes out degenerate (Hypothesis caps an example's
    size), so varied ordinary ones are concatenated. The test prints what the corpus holds.
    """
    corpus: list[tuple[bytes | None, str]] = []

    @settings(
        max_examples=size // 5,
        derandomize=not HEAVY,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=cases)
    def collect(drawn: list[tuple[bytes | None, str]]) -> None:
        if len({outcome for _, outcome in drawn}) < 4:
            return  # the first examples are minimal ones (all empty records): take varied ones
        corpus.extend(drawn[: size - len(corpus)])

    collect()
    assert len(corpus) == size
    return corpus


@pytest.mark.integration
@pytest.mark.faults_heavy
def test_fuzzed_records_through_the_real_broker_reach_the_dead_letter_topic(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    drawn = fuzzed_corpus(BROKER_RECORDS * (3 if HEAVY else 1))
    print(f"\nfuzz corpus: {dict(Counter(outcome for _, outcome in drawn))}")
    events, dead = unique_topic(partitions=2), unique_topic(prefix="dlq")
    snapshots = tmp_path / f"snapshots-{uuid.uuid4().hex[:8]}"
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "log_level": 0}
    )
    for index, (value, _) in enumerate(drawn):
        producer.produce(events, value=value, key=str(index).encode())
    assert producer.flush(15) == 0
    daemon = start_driftd(
        "run",
        {
            "DRIFTD_KAFKA__TOPICS": events,
            "DRIFTD_KAFKA__GROUP_ID": f"fuzz-{uuid.uuid4().hex[:8]}",
            "DRIFTD_KAFKA__DEAD_LETTER_TOPIC": dead,
            "DRIFTD_KAFKA__MAX_RECORD_BYTES": str(MAX_BYTES),
            "DRIFTD_KAFKA__AUTO_OFFSET_RESET": "earliest",
            # Two partitions arrive in any order: fix the width, not the first event.
            "DRIFTD_MODEL__N_FEATURES": str(N_FEATURES),
            "DRIFTD_MODEL__N_CLASSES": str(N_CLASSES),
            "DRIFTD_LEARNER__BATCH_SIZE": "32",
            "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.3",
        },
    )
    outcomes = [outcome for _, outcome in drawn]
    learned, reasons = outcomes.count(LEARNED), sum(_expected(outcomes)[1].values())

    def all_consumed() -> bool:
        manifest = newest_manifest(snapshots)
        offsets = [] if manifest is None else manifest["offsets"]
        return sum(entry["next_offset"] for entry in offsets) == len(drawn)

    wait_until(all_consumed, "a snapshot past every record", timeout=60)
    manifest = newest_manifest(snapshots)
    assert manifest is not None
    assert manifest["events_learned"] == learned
    assert manifest["events_rejected"] == reasons
    expected = sorted(
        (outcome, value or b"") for value, outcome in drawn if outcome not in (LEARNED, UNLABELLED)
    )
    assert sorted(_dead_letters(broker.bootstrap_servers, dead, len(expected))) == expected
    assert daemon.stop() == 0
