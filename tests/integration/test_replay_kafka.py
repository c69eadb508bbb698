"""``driftd replay --topic``: a range of a topic on the real broker, scored as its file would be."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.cli import main
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import committed_offsets

pytestmark = pytest.mark.integration

PER_PARTITION = 150
CONFIG = """\
[model]
n_classes = 3
seed = 2
[learner]
batch_size = 32
[metrics]
enabled = false
[kafka]
group_id = "{group}"
"""


def produce_by_partition(bootstrap: str, topic: str, payloads: list[bytes]) -> list[list[bytes]]:
    """Send event ``i`` to partition ``i % 2`` with confluent-kafka; return each one's payloads."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for index, payload in enumerate(payloads):
        producer.produce(topic, value=payload, partition=index % 2)
    assert producer.flush(15) == 0
    return [payloads[0::2], payloads[1::2]]


def printed(out: str) -> tuple[str, str]:
    """The counts and the score lines of the replay's summary."""
    counts = re.search(r"^([\d,]+ records: [\d,]+ learnt, [\d,]+ invalid)", out, re.MULTILINE)
    score = re.search(r"^prequential accuracy .*$", out, re.MULTILINE)
    assert counts is not None, out
    assert score is not None, out
    return counts.group(1), score.group(0)


@pytest.fixture
def group() -> str:
    """The settings' consumer group: fresh, so that any offset committed to it is the replay's."""
    return f"replay-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(tmp_path: Path, group: str) -> Path:
    path = tmp_path / "driftd.toml"
    path.write_text(CONFIG.format(group=group))
    return path


def test_a_range_of_a_topic_replays_as_its_file_does_and_commits_nothing(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    config: Path,
    group: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=2)
    events = DriftingStream(n_events=2 * PER_PARTITION, change_every=150, seed=5).events()
    partitions = produce_by_partition(bootstrap, topic, [orjson.dumps(e) for e in events])
    in_range = tmp_path / "range.jsonl"  # partition 0's offsets 20..119, then partition 1's
    in_range.write_bytes(b"".join(p + b"\n" for part in partitions for p in part[20:120]))

    code = main(
        ["replay", "--config", str(config), "--topic", topic, "--bootstrap", bootstrap,
         "--from-offset", "20", "--to-offset", "120"]
    )  # fmt: skip
    from_topic = capsys.readouterr().out
    assert code == 0
    assert main(["replay", "--config", str(config), "--input", str(in_range)]) == 0
    from_file = capsys.readouterr().out

    assert printed(from_topic)[0] == "200 records: 200 learnt, 0 invalid"
    assert printed(from_topic) == printed(from_file)
    assert "over 200 labelled events" in printed(from_topic)[1]
    # No offset committed for the settings' group (the replay's consumer has none at all).
    assert committed_offsets(bootstrap, group, topic, 2) == {0: -1001, 1: -1001}


def test_the_default_range_is_every_record_of_the_topic(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=2)
    events = DriftingStream(n_events=2 * PER_PARTITION, change_every=150, seed=7).events()
    partitions = produce_by_partition(bootstrap, topic, [orjson.dumps(e) for e in events])
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b"".join(p + b"\n" for part in partitions for p in part))

    replay = ["replay", "--config", str(config)]
    assert main([*replay, "--topic", topic, "--bootstrap", bootstrap]) == 0
    from_topic = capsys.readouterr().out
    assert main([*replay, "--input", str(whole)]) == 0

    assert printed(from_topic)[0] == "300 records: 300 learnt, 0 invalid"
    assert printed(from_topic) == printed(capsys.readouterr().out)


def test_a_start_past_the_end_replays_nothing_and_a_missing_topic_is_named(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    config: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=2)
    events = DriftingStream(n_events=20, seed=3).events()
    produce_by_partition(bootstrap, topic, [orjson.dumps(e) for e in events])
    replay = ["replay", "--config", str(config), "--bootstrap", bootstrap]

    assert main([*replay, "--topic", topic, "--from-offset", "50"]) == 0
    assert capsys.readouterr().out.startswith("0 records: 0 learnt, 0 invalid")

    absent = f"absent-{uuid.uuid4().hex[:12]}"
    assert main([*replay, "--topic", absent]) == 1
    assert f"no topic {absent!r}" in capsys.readouterr().err
