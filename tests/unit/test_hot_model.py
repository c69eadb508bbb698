"""HotModel: serving real snapshots written by FileSnapshotStore, reloads under load, refusals."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from driftd.adapters.file_snapshot_store import FileSnapshotStore, SnapshotError
from driftd.adapters.hot_model import HotModel
from driftd.learning.models import SplitModel, build_model
from driftd.ports import ModelNotReadyError, ModelSwapped, ReloadRefused, Snapshot
from driftd.settings.root import ModelSettings
from driftd.wiring.learning import model_config_from_settings
from tests.fakes import FakeClock

CLASSIFIER = model_config_from_settings(ModelSettings(n_classes=3, hidden=[8]), 4)
REGRESSOR = model_config_from_settings(ModelSettings(task="regression", n_outputs=2, hidden=[8]), 4)
X = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0], [-3.0, 0.0, 0.5, 2.0]]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def store(directory: Path) -> FileSnapshotStore:
    return FileSnapshotStore(directory, keep=3, clock=FakeClock())


def publish(
    store: FileSnapshotStore, version: int, config: dict[str, Any] = CLASSIFIER, **manifest: Any
) -> SplitModel:
    """Save a freshly initialised model (seeded by version) as a trainer would."""
    model = build_model(config, torch.Generator().manual_seed(version))
    training = {"optimizer.state.0.exp_avg": torch.ones(3)}
    manifest = {"model": config, "watermark": 1_000.0 + version, **manifest}
    store.save(Snapshot(version, model.state_dict(), training, manifest))
    return model


def expected_probabilities(model: SplitModel) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.eval()(torch.tensor(X)), dim=1).numpy()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_serves_the_newest_snapshot_and_predicts_exactly_like_its_model(
    store: FileSnapshotStore, directory: Path
) -> None:
    publish(store, 1)
    newest = publish(store, 2)
    with HotModel(directory, start=False) as hot:
        assert (hot.version, hot.watermark, hot.created_at) == (2, 1_002.0, FakeClock().time())
        assert hot.manifest["model"] == CLASSIFIER
        for batch in (X, np.array(X), torch.tensor(X, dtype=torch.float64)):
            predictions = hot.predict(batch)
            assert predictions.version == 2
            assert predictions.probabilities is not None
            assert predictions.classes is not None
            np.testing.assert_allclose(predictions.probabilities, expected_probabilities(newest))
            assert predictions.classes.tolist() == predictions.probabilities.argmax(1).tolist()
            assert predictions.values is None
            assert len(predictions) == 3


def test_regression_returns_values(store: FileSnapshotStore, directory: Path) -> None:
    model = publish(store, 1, REGRESSOR)
    with HotModel(directory, start=False) as hot:
        predictions = hot.predict(X)
    assert predictions.classes is None
    assert predictions.probabilities is None
    assert predictions.values is not None
    assert predictions.values.shape == (3, 2)
    with torch.no_grad():
        np.testing.assert_allclose(predictions.values, model.eval()(torch.tensor(X)).numpy())


def test_a_batch_of_the_wrong_width_is_a_value_error(
    store: FileSnapshotStore, directory: Path
) -> None:
    publish(store, 1)
    with HotModel(directory, start=False) as hot, pytest.raises(ValueError, match=r"\(n, 4\)"):
        hot.predict([[1.0, 2.0]])


def test_waits_for_a_first_snapshot_without_creating_anything(directory: Path) -> None:
    with HotModel(directory, start=False) as hot:
        assert not hot.ready
        assert hot.version is None
        with pytest.raises(ModelNotReadyError):
            hot.predict(X)
        assert not directory.exists()
        publish(FileSnapshotStore(directory, keep=3), 1)
        assert hot.refresh()
        assert hot.version == 1
        assert hot.wait_ready(0)


def test_never_touches_a_writers_temp_entries_and_never_reads_training_state(
    store: FileSnapshotStore, directory: Path
) -> None:
    publish(store, 1)
    (directory / ".tmp-0000000002-live").mkdir()  # a writer in another process, mid-save
    (directory / ".lock").unlink()
    damage(directory / "0000000001" / "training.safetensors")  # would fail its sha256 check
    before = sorted(p.name for p in directory.iterdir())
    with HotModel(directory, poll_interval_s=0.01) as hot:
        assert hot.version == 1
        hot.predict(X)
    assert sorted(p.name for p in directory.iterdir()) == before


def test_corrupt_snapshot_is_refused_once_and_the_current_one_keeps_serving(
    store: FileSnapshotStore, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = publish(store, 1)
    refusals: list[ReloadRefused] = []
    with HotModel(directory, start=False, on_refused=refusals.append) as hot:
        publish(store, 2)
        damage(directory / "0000000002" / "model.safetensors")
        with caplog.at_level(logging.WARNING, logger="driftd"):
            assert not hot.refresh()
        assert hot.version == 1
        np.testing.assert_allclose(hot.predict(X).probabilities, expected_probabilities(first))
        assert "refused snapshot 2 (corrupt)" in caplog.text
        assert "sha256 mismatch" in caplog.text
        assert not hot.refresh()  # not retried, not counted twice
        assert (hot.refused, hot.refused_by_reason) == (1, {"corrupt": 1})
        assert [(r.version, r.reason) for r in refusals] == [(2, "corrupt")]
        publish(store, 3)
        assert hot.refresh()
        assert (hot.version, hot.reloads) == (3, 1)


def _delete_weights(directory: Path, store: FileSnapshotStore) -> None:
    (directory / "0000000002" / "model.safetensors").unlink()


def _delete_manifest(directory: Path, store: FileSnapshotStore) -> None:
    (directory / "0000000002" / "manifest.json").unlink()


def _future_format(directory: Path, store: FileSnapshotStore) -> None:
    manifest = directory / "0000000002" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 99'))


def _weights_of_another_network(directory: Path, store: FileSnapshotStore) -> None:
    wider = build_model({**CLASSIFIER, "hidden": [16]}, torch.Generator())
    store.save(Snapshot(3, wider.state_dict(), {}, {"model": CLASSIFIER}))


def _more_features(directory: Path, store: FileSnapshotStore) -> None:
    publish(store, 3, {**CLASSIFIER, "n_features": 5})


def _regression_now(directory: Path, store: FileSnapshotStore) -> None:
    publish(store, 3, {**REGRESSOR, "n_outputs": 3})


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_delete_weights, "missing"),
        (_delete_manifest, "missing"),
        (_future_format, "unsupported"),
        (_weights_of_another_network, "bad_model"),
        (_more_features, "incompatible"),
        (_regression_now, "incompatible"),
    ],
)
def test_partial_or_incompatible_snapshots_are_refused(
    store: FileSnapshotStore,
    directory: Path,
    spoil: Callable[[Path, FileSnapshotStore], None],
    reason: str,
) -> None:
    publish(store, 1)
    with HotModel(directory, start=False) as hot:
        publish(store, 2)
        spoil(directory, store)
        newest = max(p.name for p in directory.iterdir() if p.name.isdigit())
        (directory / "LATEST").write_text(f"{newest}\n")
        assert not hot.refresh()
        assert hot.version == 1
        assert hot.refused_by_reason == {reason: 1}
        assert hot.predict(X).version == 1


def test_a_configured_feature_count_is_the_contract(
    store: FileSnapshotStore, directory: Path
) -> None:
    publish(store, 1)
    with HotModel(directory, start=False, n_features=5) as hot:
        assert not hot.ready
        assert hot.refused_by_reason == {"incompatible": 1}


def test_first_load_falls_back_to_the_newest_readable_version(
    store: FileSnapshotStore, directory: Path
) -> None:
    publish(store, 1)
    publish(store, 2)
    damage(directory / "0000000002" / "model.safetensors")
    with HotModel(directory, start=False) as hot:
        assert hot.version == 1
        assert hot.refused_by_reason == {"corrupt": 1}
        assert not hot.refresh()


def test_pin_unpin_and_rollback(store: FileSnapshotStore, directory: Path) -> None:
    for version in (1, 2, 3):
        publish(store, version)
    swaps: list[ModelSwapped] = []
    with HotModel(directory, start=False, on_swapped=swaps.append) as hot:
        with pytest.raises(RuntimeError, match="roll back"):
            hot.rollback()
        hot.pin(1)
        assert (hot.version, hot.pinned) == (1, 1)
        publish(store, 4)
        assert not hot.refresh()  # pinned: LATEST is not followed
        damage(directory / "0000000002" / "model.safetensors")
        with pytest.raises(SnapshotError) as refused:
            hot.pin(2)
        assert refused.value.reason == "corrupt"
        assert (hot.version, hot.pinned) == (1, 1)
        hot.unpin()
        assert hot.refresh()
        assert (hot.version, hot.pinned) == (4, None)
        hot.rollback()
        assert (hot.version, hot.pinned) == (1, 1)
        assert hot.predict(X).version == 1
    assert [(s.version, s.previous_version, s.cause, s.newest) for s in swaps] == [
        (3, None, "latest", True),
        (1, 3, "pin", False),
        (4, 1, "latest", True),
        (1, 4, "rollback", False),
    ]
    assert swaps[2].watermark == 1_004.0
    assert swaps[3].load_seconds == 0.0
    assert hot.reloads == 3


def test_pinned_at_construction(store: FileSnapshotStore, directory: Path) -> None:
    publish(store, 1)
    publish(store, 2)
    with HotModel(directory, pin_version=1, poll_interval_s=0.01) as hot:
        assert (hot.version, hot.pinned) == (1, 1)
    with pytest.raises(SnapshotError):
        HotModel(directory, pin_version=7)


def test_background_reload_with_a_fast_poll(store: FileSnapshotStore, directory: Path) -> None:
    publish(store, 1)
    with HotModel(directory, poll_interval_s=0.01) as hot:
        publish(store, 2)
        wait_until(lambda: hot.version == 2)
        assert hot.reloads == 1
    assert not [t for t in threading.enumerate() if t.name == "driftd-hot-model"]


def test_threads_hammering_predict_while_versions_are_published(
    store: FileSnapshotStore, directory: Path
) -> None:
    expected = {1: expected_probabilities(publish(store, 1))}
    failures: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(4)]
    stop = threading.Event()

    def hammer(versions: list[int]) -> None:
        while not stop.is_set():
            try:
                predictions = hot.predict(X)
                # The version reported is the model that made every row of the batch.
                np.testing.assert_allclose(
                    predictions.probabilities, expected[predictions.version], rtol=1e-6
                )
                versions.append(predictions.version)
            except BaseException as error:
                failures.append(error)
                return

    with HotModel(directory, poll_interval_s=0.002) as hot:
        threads = [threading.Thread(target=hammer, args=(versions,)) for versions in seen]
        for thread in threads:
            thread.start()
        for version in range(2, 41):
            model = build_model(CLASSIFIER, torch.Generator().manual_seed(version))
            expected[version] = expected_probabilities(model)
            store.save(Snapshot(version, model.state_dict(), {}, {"model": CLASSIFIER}))
            time.sleep(0.003)
        wait_until(lambda: hot.version == 40)
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    for versions in seen:
        assert versions
        assert versions == sorted(versions)  # only ever forward
    assert len({v for versions in seen for v in versions}) > 2
    assert hot.refused == 0
    assert 1 <= hot.reloads <= 39


def test_pruned_weights_are_folded_into_plain_ones(
    store: FileSnapshotStore, directory: Path
) -> None:
    model = build_model(CLASSIFIER, torch.Generator().manual_seed(5))
    prune.l1_unstructured(model.shared[0], name="weight", amount=0.5)
    assert "shared.0.weight_mask" in model.state_dict()
    store.save(Snapshot(1, model.state_dict(), {}, {"model": CLASSIFIER}))
    with HotModel(directory, start=False) as hot:
        np.testing.assert_allclose(
            hot.predict(X).probabilities, expected_probabilities(model), rtol=1e-6
        )


def test_import_driftd_stays_light_and_exports_hot_model() -> None:
    code = (
        "import sys, driftd\n"
        "heavy = ['torch', 'numpy', 'kafka', 'prometheus_client']\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "from driftd import HotModel, Predictions\n"
        "assert 'kafka' not in sys.modules\n"
        "print(HotModel.__module__, Predictions.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["driftd.adapters.hot_model", "Predictions"]
    import driftd

    with pytest.raises(AttributeError):
        _ = driftd.NoSuchThing  # type: ignore[attr-defined]
