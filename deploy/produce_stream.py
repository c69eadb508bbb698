"""Replay driftd's built-in drifting stream into a Kafka topic: the compose stack's producer.

The stream is :class:`driftd.tools.streams.DriftingStream` (Gaussian class blobs whose centres jump
to another concept every ``--change-every`` events, concepts recurring), so the daemon has
drifts to detect and domains to re-adapt to. Each event gets ``ts`` = the time it is sent, which
the event-to-update and event-to-serving latencies are measured from. ``--invalid-every N``
slips one malformed record in after every N events so the invalid-events panel and alert have
something to show. ``--rate`` paces the stream (events per second; 0: as fast as the broker
takes them); ``--loop`` starts over with the next seed when the stream ends, forever.

Runs wherever driftd is installed (it uses driftd's own kafka-python dependency)::

    python deploy/produce_stream.py --bootstrap 127.0.0.1:9092 --topic driftd-events --rate 500
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from types import FrameType

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from driftd.tools.streams import DriftingStream

log = logging.getLogger("driftd.produce_stream")

#: What a malformed record looks like: not JSON, so the daemon rejects it as ``not_json``.
MALFORMED_RECORD = b"this is not an event"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="host:port[,host:port]")
    parser.add_argument("--topic", default="driftd-events")
    parser.add_argument("--events", type=int, default=30_000, help="events per pass")
    parser.add_argument("--change-every", type=int, default=10_000, help="events per concept")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: unpaced")
    parser.add_argument("--invalid-every", type=int, default=0, help="0: no malformed records")
    parser.add_argument("--loop", action="store_true", help="replay forever, next seed each pass")
    parser.add_argument(
        "--connect-timeout", type=float, default=120.0, help="seconds to wait for the broker"
    )
    return parser.parse_args(argv)


def records(args: argparse.Namespace) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs: the stream's events, malformed ones slipped in, pass after pass."""
    passes = itertools.count() if args.loop else range(1)
    for number in passes:
        stream = DriftingStream(
            n_events=args.events,
            n_features=args.features,
            n_classes=args.classes,
            change_every=args.change_every,
            seed=args.seed + number,
        )
        for index, event in enumerate(stream.events(), start=1):
            key = f"{number}-{event['id']}".encode()
            yield key, orjson.dumps({**event, "id": key.decode(), "ts": time.time()})
            if args.invalid_every and index % args.invalid_every == 0:
                yield key + b"-malformed", MALFORMED_RECORD


def connect(bootstrap: str, timeout_s: float) -> KafkaProducer:
    """A producer, retrying while the broker is still starting (compose starts all at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=20)
        except KafkaError as error:
            if time.monotonic() >= deadline:
                raise
            log.warning("broker %s not reachable yet (%s); retrying", bootstrap, error)
            time.sleep(2.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Produce until the stream ends (or forever with ``--loop``); SIGTERM flushes and exits 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    stopping = {"now": False}

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    producer = connect(args.bootstrap, args.connect_timeout)
    started, sent = time.monotonic(), 0
    try:
        for key, value in records(args):
            if stopping["now"]:
                break
            producer.send(args.topic, key=key, value=value)
            sent += 1
            if args.rate > 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if sent % 10_000 == 0:
                log.info("%d records sent to %s", sent, args.topic)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    log.info("done: %d records sent to %s", sent, args.topic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
