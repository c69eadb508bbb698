"""``driftd replay``: the daemon's loop over a JSON-lines file, scored prequentially."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftd.cli import main
from driftd.library import DriftDetected, Learner
from driftd.settings.root import load_settings
from driftd.tools.replay import read_records, replay
from driftd.tools.streams import DriftingStream

STREAM = DriftingStream(n_events=3_000, change_every=1_500, seed=5)
OPTIONS: dict[str, Any] = {
    "model": {"n_classes": 3, "seed": 2},
    "learner": {"batch_size": 64, "micro_batch": 16},
    "metrics": {"enabled": False},
}


def _write_events(path: Path, *, bad: bool = True) -> list[dict[str, Any]]:
    events = list(STREAM.events())
    with path.open("wb") as lines:
        for index, event in enumerate(events):
            lines.write(orjson.dumps(event) + b"\n")
            if bad and index == 100:
                lines.write(b"{not json\n\n")  # a bad record, then a blank line (skipped)
    return events


def test_replay_prints_the_score_drifts_adaptations_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    source, report = tmp_path / "events.jsonl", tmp_path / "report.html"
    _write_events(source)
    config = tmp_path / "driftd.toml"
    config.write_text("[model]\nn_classes = 3\nseed = 2\n[learner]\nbatch_size = 64\n")

    code = main(
        ["replay", "--config", str(config), "--input", str(source), "--report", str(report)]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "3,001 records: 3,000 learnt, 1 invalid" in out
    accuracy = re.search(r"prequential accuracy (0\.\d+) over 3,000 labelled events", out)
    assert accuracy is not None
    assert float(accuracy.group(1)) > 0.8
    drifts = re.search(r"drifts: (\d+)\n((?:  .*\n)*)adaptations: (\d+)", out)
    assert drifts is not None
    assert int(drifts.group(1)) >= 1
    assert int(drifts.group(3)) >= 1
    first_drift = re.search(r"by event ([\d,]+)", drifts.group(2))
    assert first_drift is not None
    assert int(first_drift.group(1).replace(",", "")) > 1_500  # after the concept change
    page = report.read_text()
    assert "<svg" in page
    assert "concept drift" in page


def test_replay_scores_what_the_daemon_predicted_before_learning(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    events = _write_events(source, bad=False)  # polls of 64 events, as the learner's below
    settings = load_settings(**OPTIONS)

    result, progress = replay(settings, read_records(source))

    # The library learner, fed the same polls (64 at a time), predicts the same events alike.
    learner = Learner(**OPTIONS)
    x = np.array([event["x"] for event in events])
    y = np.array([event["y"] for event in events])
    predicted = np.concatenate(
        [learner.learn_many(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    )
    assert result.scored == 3_000
    assert result.correct == int((predicted == y).sum())
    assert result.accuracy == pytest.approx(result.correct / 3_000)
    assert result.invalid == progress.events_invalid == 0
    drifts = [(e.kind, e.events_seen) for e in result.events if isinstance(e, DriftDetected)]
    assert drifts
    assert drifts == [
        (e.kind, e.events_seen) for e in learner.events if isinstance(e, DriftDetected)
    ]


def test_replay_of_a_regression_stream_reports_its_mae(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"".join(orjson.dumps({"x": row.tolist(), "y": float(row.sum())}) + b"\n" for row in x)
    )
    settings = load_settings(model={"task": "regression"}, metrics={"enabled": False})

    result, _ = replay(settings, read_records(source))

    assert result.accuracy is None
    assert result.mae is not None
    assert 0 < result.mae < np.abs(x.sum(axis=1)).mean()


def test_a_missing_input_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    assert main(["replay", "--input", str(tmp_path / "absent.jsonl")]) == 1
    assert "absent.jsonl" in capsys.readouterr().err


def test_a_csv_table_replays_as_its_json_lines_do(tmp_path: Path) -> None:
    import pandas

    events = list(DriftingStream(n_events=600, n_features=4, change_every=300, seed=8).events())
    lines, table = tmp_path / "events.jsonl", tmp_path / "events.csv"
    lines.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    frame = pandas.DataFrame([e["x"] for e in events], columns=["a", "b", "c", "d"])
    frame["y"] = [e["y"] for e in events]
    frame["id"] = [e["id"] for e in events]
    frame.to_csv(table, index=False)
    settings = load_settings(**OPTIONS)

    from_table, _ = replay(settings, read_records(table, settings.event))
    from_lines, _ = replay(settings, read_records(lines))

    assert from_table.records == from_lines.records == 600
    assert from_table.correct == from_lines.correct
    assert [e.events_seen for e in from_table.events] == [e.events_seen for e in from_lines.events]
    frame.loc[5, "y"] = None  # an empty cell: an unlabelled event
    frame.to_csv(table, index=False)
    unlabelled, _ = replay(settings, read_records(table, settings.event))
    assert (unlabelled.scored, unlabelled.learned, unlabelled.invalid) == (599, 599, 0)


def test_a_parquet_table_replays_too(tmp_path: Path) -> None:
    import pandas

    events = list(DriftingStream(n_events=200, n_features=3, seed=8).events())
    table = tmp_path / "events.parquet"
    frame = pandas.DataFrame([e["x"] for e in events], columns=["a", "b", "c"])
    frame["y"] = [e["y"] for e in events]
    frame.to_parquet(table)

    records = read_records(table)

    assert len(records) == 200
    assert orjson.loads(records[7].value or b"") == {"x": events[7]["x"], "y": events[7]["y"]}


def test_a_table_without_a_configured_feature_is_refused(tmp_path: Path) -> None:
    import pandas

    table = tmp_path / "events.csv"
    pandas.DataFrame({"a": [1.0], "y": [0]}).to_csv(table, index=False)
    event = load_settings(event={"feature_names": ["a", "b"]}).event

    with pytest.raises(ValueError, match=r"events\.csv: no feature column 'b'"):
        read_records(table, event)


def test_a_topic_range_that_ends_before_it_starts_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    topic = ["replay", "--topic", "t", "--bootstrap", "127.0.0.1:1"]  # nothing listens on port 1

    assert main([*topic, "--from-offset", "10", "--to-offset", "5"]) == 2
    assert "--to-offset 5 is before --from-offset 10" in capsys.readouterr().err
    assert main([*topic, "--from-offset", "-1"]) == 2
    assert "--from-offset must not be negative, got -1" in capsys.readouterr().err


def test_kafka_options_need_a_topic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    source = tmp_path / "events.jsonl"
    _write_events(source, bad=False)

    assert main(["replay", "--input", str(source), "--from-offset", "3"]) == 2
    assert "need --topic" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --input and --topic exclude each other
        main(["replay", "--input", str(source), "--topic", "t"])
