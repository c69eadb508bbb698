"""A trainer restarted after ``kill -9`` consumes at once: it never waits for its group.

With group membership, a restarted trainer's JoinGroup waits until the broker expires the
killed member's session (``kafka.session_timeout_ms``, 45 s by default; issue 12 measured 81 s
to the first learned event). With ``kafka.assignment = manual`` (the default) the trainer
assigns its partitions itself and resumes from its snapshot, so nothing waits: the group stays
EMPTY on the broker (no member ever joins) while offsets are still committed to it.

These tests run with the default session timeout and heartbeat (not the short test ones), in
both consumer modes (child process, and in-process), and prove exactly-once the usual way: the
final weights and optimizer state equal an uninterrupted in-memory run's, bit for bit.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from driftd.adapters.embedded_broker import EmbeddedBroker
from tests.faults.conftest import (
    assert_same_tensors,
    audit_snapshot_dir,
    committed_offsets,
    good_payloads,
    snapshot_tensors,
    wait_until,
)
from tests.faults.test_kill_restart import _reference_tensors
from tests.integration.driftd_process import DriftdProcess, driftd_env, produce

pytestmark = pytest.mark.integration

BEFORE, AFTER = 120, 40  # events learned before the kill; events produced after the restart


def group_state(bootstrap: str, group: str) -> ConsumerGroupState:
    """The group's state as the broker reports it (confluent-kafka's admin client)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    state: ConsumerGroupState = admin.describe_consumer_groups([group])[group].result(10).state
    return state


def learned(snapshots: Path) -> int:
    """Events in the newest snapshot; -1 while a live writer changed the dir under us."""
    try:
        newest = audit_snapshot_dir(snapshots).newest
    except (OSError, AssertionError, ValueError):
        return -1
    return 0 if newest is None else int(newest["events_learned"])


@pytest.mark.parametrize("consumer_process", ["true", "false"])
def test_a_trainer_restarted_after_kill_9_learns_at_once_without_joining_its_group(
    consumer_process: str,
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    tmp_path: Path,
    no_driftd_env: None,
) -> None:
    bootstrap = broker.bootstrap_servers
    payloads = good_payloads(BEFORE + AFTER, seed=9)
    expected = _reference_tensors(tmp_path, payloads, batch_size=1)
    topic, snapshots = unique_topic(partitions=1), tmp_path / "snapshots"
    group = f"restart-{time.monotonic_ns()}"
    produce(bootstrap, topic, payloads[:BEFORE])
    env = driftd_env(bootstrap)
    env.update(
        DRIFTD_KAFKA__TOPICS=topic,
        DRIFTD_KAFKA__GROUP_ID=group,
        DRIFTD_KAFKA__CONSUMER_PROCESS=consumer_process,
        # The defaults, not the tests' 3 s: a group join would wait out a 45 s session.
        DRIFTD_KAFKA__SESSION_TIMEOUT_MS="45000",
        DRIFTD_KAFKA__HEARTBEAT_INTERVAL_MS="3000",
        DRIFTD_MODEL__N_CLASSES="3",
        DRIFTD_MODEL__SEED="3",
        DRIFTD_LEARNER__BATCH_SIZE="1",  # steps independent of how Kafka splits fetches
        DRIFTD_SNAPSHOTS__DIR=str(snapshots),
        DRIFTD_SNAPSHOTS__EVERY_STEPS="5",
        DRIFTD_SNAPSHOTS__EVERY_SECONDS="0.5",
        DRIFTD_SNAPSHOTS__KEEP="2",
        DRIFTD_SNAPSHOTS__GATE_ENABLED="false",
    )
    processes: list[DriftdProcess] = []
    try:
        processes.append(DriftdProcess("run", env, tmp_path))
        wait_until(lambda: learned(snapshots) == BEFORE, 120, f"{BEFORE} events learned")
        committed = partial(committed_offsets, bootstrap, group, topic, 1)
        wait_until(lambda: committed() == {0: BEFORE}, 30, "the offsets committed to the group")
        processes[0].process.send_signal(signal.SIGKILL)
        assert processes[0].process.wait(timeout=30) == -signal.SIGKILL
        assert group_state(bootstrap, group) == ConsumerGroupState.EMPTY  # no member left behind

        started = time.monotonic()
        processes.append(DriftdProcess("run", env, tmp_path))
        produce(bootstrap, topic, payloads[BEFORE:])
        processes[1].wait_for_log("resumed", 120)  # torch's import alone takes ~10 s under load
        resumed = time.monotonic()
        # Generous: a group join would wait for the killed member's 45 s session first.
        try:
            wait_until(lambda: learned(snapshots) > BEFORE, 20, "the first new event learned")
        except AssertionError:
            raise AssertionError(f"{learned(snapshots)}: {processes[1].logs[-12:]}") from None
        first_new, after_resume = time.monotonic() - started, time.monotonic() - resumed
        wait_until(partial(_all_learned, snapshots), 30, "every event learned")
        assert group_state(bootstrap, group) == ConsumerGroupState.EMPTY  # still no member
        assert processes[1].stop() == 0
    finally:
        for process in processes:
            process.close()

    audit = audit_snapshot_dir(snapshots)
    assert audit.newest is not None
    assert audit.newest["events_learned"] == BEFORE + AFTER  # nothing lost or doubled
    assert committed_offsets(bootstrap, group, topic, 1) == {0: BEFORE + AFTER}
    assert_same_tensors(snapshot_tensors(snapshots, audit.versions[-1]), expected)
    print(
        f"consumer_process={consumer_process}: first new event learned {first_new:.1f} s after "
        f"the start, {after_resume:.1f} s after the snapshot was restored"
    )


def _all_learned(snapshots: Path) -> bool:
    return learned(snapshots) == BEFORE + AFTER
