"""The ``driftd`` command line: run, infer, demo, config, bench, report, replay."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from driftd import __version__
from driftd.logs import configure_logging
from driftd.ports import UnreadableSnapshotsError
from driftd.settings.root import ConfigurationError, Settings, load_settings, redacted

log = logging.getLogger("driftd.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftd`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "config":
            print(json.dumps(redacted(load_settings(args.config)), indent=2))
            return 0
        if args.command == "run":
            return _run(load_settings(args.config))
        if args.command == "infer":
            return _infer(load_settings(args.config))
        if args.command == "demo":
            from driftd.tools.demo import run_demo

            return run_demo(events=args.events, directory=args.dir, seconds=args.seconds)
        if args.command in ("report", "replay"):
            return _report(args) if args.command == "report" else _replay(args)
        if args.command == "broker":
            from driftd.tools.broker import run_broker

            topics = [topic.strip() for topic in args.topics.split(",") if topic.strip()]
            return run_broker(port=args.port, topics=topics, partitions=args.partitions)
        if args.command == "bench":
            from driftd.tools.bench import run_bench

            return run_bench(
                events=args.events,
                batch_size=args.batch_size,
                quick=args.quick,
                sections=args.section or ["throughput", "startup", "adaptation", "serving"],
                json_path=args.json,
                jobs=args.jobs,
            )
    except ConfigurationError as error:
        print(f"driftd: {error}", file=sys.stderr)
        return 2
    except UnreadableSnapshotsError as error:
        print(f"driftd: {error}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each option's default (unless none or off); keep the descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


_GROUP_HELP = (
    " Launched by torchrun (`torchrun --nproc-per-node 2 --no-python driftd run`, or any launcher"
    " setting RANK and WORLD_SIZE > 1) it is one rank of a trainer group learning one model: each"
    " rank reads its share of the partitions, rank 0 writes the snapshots (the distributed.*"
    " settings; README: Scaling training out)."
)
_SETTINGS_HELP = """\
settings come from, strongest first: DRIFTD_* environment variables (sections and
fields joined by a double underscore), a .env file, the --config TOML file, defaults:
  DRIFTD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 DRIFTD_KAFKA__TOPICS=events \\
  DRIFTD_MODEL__N_CLASSES=3 DRIFTD_SNAPSHOTS__DIR=./snap driftd run
`driftd config` validates them and prints every effective setting with its value;
README.md, Configuration, lists them."""
_DEMO_HELP = """\
Start the bundled Kafka-compatible broker on a free loopback port, replay a drifting
stream into it (two concept changes and a few malformed records), train on it with a
live progress line, write snapshots, a JSON log and an HTML report under --dir, and
stop by itself. Needs no Kafka and no Docker."""
_BROKER_HELP = """\
Start the Kafka-compatible broker the demo uses (Tansu, bundled) on a loopback port,
in memory, create the topics, print the DRIFTD_* settings that point `driftd run` at
it, and run until Ctrl-C or SIGTERM. Nothing survives a stop."""
_REPORT_HELP = """\
Draw a run's timeline: accuracy, loss, learning rate, model size over the steps, with
its drifts, adaptations, pruning and snapshots, into one self-contained HTML page.
The log is the daemon's JSON lines (DRIFTD_LOG__JSON=true); `driftd demo` writes
one, and this report, by itself."""
_REPLAY_HELP = """\
Evaluate settings on a recorded stream before deploying them: the daemon's own loop
reads a JSON-lines file of events (the daemon's event format, one per line) as it would
read a topic from its start, and prints its prequential accuracy (or MAE), the drifts
and the adaptations; --report also draws `driftd report`'s HTML page of the run.
--topic replays a range of a Kafka topic instead, partition by partition, without a
consumer group: nothing is committed."""
_BENCH_HELP = """\
Measure, on this machine: events/s from a real broker through decode, predict, learn
and commit; the same without the broker; the model's compute bound; event-to-update
latency; update-to-serving time; peak memory; restart after kill -9 to the first learned
event; on request, a trainer group's events/s with one and two ranks (--section distributed).
Ratios to the compute bound are what compare across machines."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftd", description="Keep a PyTorch model learning from a Kafka stream."
    )
    parser.add_argument("--version", action="version", version=f"driftd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the training daemon"),
        ("infer", "run a streaming inference worker on the newest snapshot"),
        ("config", "validate and print the effective configuration"),
    ):
        description = text + "." + (_GROUP_HELP if name == "run" else "")
        command = commands.add_parser(
            name, help=text, description=description, epilog=_SETTINGS_HELP, formatter_class=_Help
        )
        command.add_argument("--config", help="TOML settings file (or set DRIFTD_CONFIG)")
    text = "run the embedded demo: broker, drifting stream, daemon, report"
    demo = commands.add_parser("demo", help=text, description=_DEMO_HELP, formatter_class=_Help)
    demo.add_argument("--events", type=int, default=30_000, help="events in the stream")
    demo.add_argument(
        "--dir", default="./driftd-demo", help="where snapshots, the log and the report go"
    )
    demo.add_argument(
        "--seconds", type=float, default=180.0,
        help="upper bound on run time (a run ends when the stream is read)",
    )  # fmt: skip
    text = "start the embedded broker alone, to try `driftd run` without a Kafka"
    broker = commands.add_parser(
        "broker", help=text, description=_BROKER_HELP, formatter_class=_Help
    )
    broker.add_argument("--port", type=int, default=0, help="loopback port; 0: a free one")
    broker.add_argument("--topics", default="driftd-events", help="topics to create (a,b)")
    broker.add_argument("--partitions", type=int, default=3, help="partitions per topic")
    text = "write an HTML timeline of a run from its JSON log and/or snapshots"
    report = commands.add_parser(
        "report", help=text, description=_REPORT_HELP, formatter_class=_Help
    )
    report.add_argument(
        "--log", help="the run's JSON-lines log (DRIFTD_LOG__JSON=true); - reads stdin"
    )
    report.add_argument("--snapshots", help="a local snapshot directory: its manifests add points")
    report.add_argument("--out", default="driftd-report.html", help="the HTML file to write")
    text = "evaluate the settings on a recorded stream (JSON lines), prequentially"
    replay = commands.add_parser(
        "replay", help=text, description=_REPLAY_HELP, epilog=_SETTINGS_HELP, formatter_class=_Help
    )
    replay.add_argument("--config", help="TOML settings file (or set DRIFTD_CONFIG)")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="the events, one JSON object per line")
    source.add_argument("--topic", help="replay this Kafka topic's records instead")
    replay.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="--topic: a broker (default: kafka.bootstrap_servers)",
    )
    replay.add_argument(
        "--from-offset", type=int, metavar="N", help="--topic: first offset in each partition"
    )
    replay.add_argument(
        "--to-offset",
        type=int,
        metavar="M",
        help="--topic: stop before this offset (default: the end)",
    )
    replay.add_argument("--report", help="also write the run's HTML report to this file")
    text = "measure throughput, latency and memory"
    bench = commands.add_parser("bench", help=text, description=_BENCH_HELP, formatter_class=_Help)
    bench.add_argument("--events", type=int, default=200_000, help="events per measurement")
    bench.add_argument("--batch-size", type=int, default=256, help="events per mini-batch")
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    bench.add_argument(
        "--section",
        action="append",
        choices=[
            "throughput",
            "startup",
            "adaptation",
            "serving",
            "quality",
            "pruning",
            "distributed",
        ],
        help="run only this part (repeatable; default: all but quality, pruning and "
        "distributed, the slow ones)",
    )
    bench.add_argument("--json", metavar="PATH", help="write the quality section's results here")
    bench.add_argument(
        "--jobs", type=int, default=1, help="quality: seeds measured at once, in worker processes"
    )
    return parser


def _run(settings: Settings) -> int:
    configure_logging(settings.log.level, json_lines=settings.log.json_lines)
    log.info("driftd %s starting", __version__, extra={"event": "start"})
    # Handlers first: until the loop exists there is nothing to snapshot, so a stop while
    # torch loads or while no broker answers exits 0 at once.
    stop = threading.Event()
    loops: list[Callable[[], None]] = []

    def request_stop() -> None:
        stop.set()
        if not loops:
            raise _StoppedBeforeStart
        for request in loops:
            request()

    install_stop_handlers(request_stop, grace_s=settings.lifecycle.shutdown_grace_s)
    trainer = None
    try:
        from driftd.app import build_trainer
        from driftd.connect import StoppedWhileConnectingError

        try:
            trainer = build_trainer(settings, stop=stop)
            loops.append(trainer.loop.request_stop)
        except StoppedWhileConnectingError:
            raise _StoppedBeforeStart from None
    except _StoppedBeforeStart:
        if trainer is not None:
            trainer.close()
        _kill_children()  # a consumer child not yet owned by a trainer
        log.info("stopped before the daemon started: nothing to snapshot",
                 extra={"event": "stopped"})  # fmt: skip
        gc.freeze()  # no final collection over torch's heap: seconds on a busy machine
        return 0
    progress = trainer.run()
    log.info(
        "stopped: %d events consumed, %d learned, %d invalid, snapshot %s",
        progress.events_consumed, progress.events_learned, progress.events_invalid,
        progress.snapshot_version, extra={"event": "stopped"},
    )  # fmt: skip
    gc.freeze()
    return 0


class _StoppedBeforeStart(BaseException):
    """A stop signal before the training loop existed (raised from the signal handler)."""


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from driftd.tools.report import write_report

    if args.log is None and args.snapshots is None:
        print("driftd report: give --log, --snapshots or both", file=sys.stderr)
        return 2
    try:
        timeline = write_report(
            log=Path(args.log) if args.log else None,
            snapshots=Path(args.snapshots) if args.snapshots else None,
            out=Path(args.out),
        )
    except OSError as error:
        print(f"driftd report: {error}", file=sys.stderr)
        return 1
    summary = timeline.summary
    print(
        f"driftd report: {args.out}: {timeline.log_lines} log lines "
        f"({timeline.malformed_lines} not JSON), {summary.drifts} concept drifts, "
        f"{summary.input_alarms} input alarms, "
        f"{sum(summary.adaptations.values())} adaptations, {summary.snapshots} snapshots"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from driftd.tools.replay import run_replay

    report = Path(args.report) if args.report else None
    kafka_only = (args.bootstrap, args.from_offset, args.to_offset)
    if args.input is not None and any(option is not None for option in kafka_only):
        print("driftd replay: --bootstrap and the offsets need --topic", file=sys.stderr)
        return 2
    if args.topic is not None:
        from driftd.tools.replay_kafka import run_topic_replay

        offsets = (args.from_offset, args.to_offset)
        return run_topic_replay(
            load_settings(args.config), args.topic, offsets, bootstrap=args.bootstrap, report=report
        )
    return run_replay(load_settings(args.config), Path(args.input), report=report)


def _infer(settings: Settings) -> int:
    from driftd.infer import build_inference_worker

    configure_logging(settings.log.level, json_lines=settings.log.json_lines)
    log.info("driftd %s inference worker starting", __version__, extra={"event": "infer_start"})
    worker = build_inference_worker(settings)
    install_stop_handlers(
        worker.request_stop,
        grace_s=settings.lifecycle.shutdown_grace_s,
        stopping="finishing the batch, then flush predictions and commit",
    )
    progress = worker.run()
    log.info(
        "stopped: %d events consumed, %d predicted, %d invalid",
        progress.events_consumed, progress.predictions, progress.events_invalid,
        extra={"event": "stopped"},
    )  # fmt: skip
    return 0


def install_stop_handlers(
    request_stop: Callable[[], None],
    *,
    grace_s: float,
    stopping: str = "finishing the batch, then snapshot and commit",
) -> None:
    """First SIGTERM/SIGINT: stop gracefully within ``grace_s``; a second SIGINT: exit now.

    ``stopping`` says in the log what a graceful stop does.
    """
    state = {"stopping": False}

    def handle(signum: int, frame: FrameType | None) -> None:
        if state["stopping"]:
            if signum == signal.SIGINT:
                _kill_children()
                os._exit(130)
            return
        state["stopping"] = True
        log.info("signal %d: %s", signum, stopping)
        request_stop()
        watchdog = threading.Timer(grace_s, _give_up, args=(grace_s,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _give_up(grace_s: float) -> None:
    log.error("shutdown took longer than %.0f s: exiting without a final snapshot", grace_s)
    _kill_children()
    os._exit(1)


def _kill_children() -> None:
    """Kill the consumer process (and any other child): an immediate exit must not orphan it."""
    for child in multiprocessing.active_children():
        child.kill()


if __name__ == "__main__":
    sys.exit(main())
