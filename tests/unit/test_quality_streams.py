"""The quality benchmark's streams: seeded, offline, with the drift points and shapes they claim."""

from __future__ import annotations

import numpy as np
import pytest

from driftd.tools import quality_streams as synthetic
from driftd.tools.quality_datasets import bananas, bench_streams, digits_domains
from driftd.tools.quality_runs import (
    accuracy_after,
    detection_figures,
    quiet_events,
    recovery_to_earlier,
)
from driftd.tools.quality_streams import QualityStream

SMALL = {
    "sea_abrupt": {"segment": 200},
    "sea_gradual": {"n_events": 800, "width": 200},
    "hyperplane_moving": {"n_events": 500},
    "agrawal_raw": {"segment": 200},
    "rbf_moving": {"n_events": 500},
    "led_permuted": {"segment": 300},
    "stagger_recurring": {"segment": 200},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_stream_other_seed_other_stream(name: str) -> None:
    make = synthetic.SYNTHETIC[name]
    first, again, other = (make(seed=s, **SMALL[name]) for s in (1, 1, 2))
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.features, other.features)


def test_real_data_sets_are_seeded_too() -> None:
    for make in (bananas, digits_domains):
        first, again, other = make(seed=1), make(seed=1), make(seed=2)
        np.testing.assert_array_equal(first.features, again.features)
        assert not np.array_equal(first.features, other.features), make.__name__


def test_every_bench_stream_has_the_shape_it_claims() -> None:
    streams = bench_streams(seed=0, quick=True)
    assert len(streams) >= 7
    kinds = {stream.drift for stream in streams}
    assert {"abrupt", "gradual", "continuous", "none"} <= kinds
    assert any(stream.recurring for stream in streams)
    for stream in streams:
        assert stream.features.shape[0] == stream.labels.shape[0] == stream.n_events
        assert stream.features.dtype == np.float32
        assert set(np.unique(stream.labels)) == set(range(stream.n_classes)), stream.name
        assert len(stream.widths) == len(stream.drifts)
        assert len(stream.concepts) == len(stream.drifts) + 1
        event = next(stream.events())
        assert event["x"] == stream.features[0].tolist()
        assert event["y"] == int(stream.labels[0])
    full = {stream.name: stream.n_events for stream in bench_streams(seed=0)}
    assert all(5_000 <= n <= 20_000 for n in full.values()), full


def test_sea_abrupt_follows_each_variants_threshold_with_ten_percent_noise() -> None:
    stream = synthetic.sea_abrupt(segment=2_000)
    assert stream.drifts == (2_000, 4_000, 6_000)
    assert stream.recurring == (6_000,)
    assert stream.first_seen(6_000) == (0, 2_000)
    total = stream.features[:, 0] + stream.features[:, 1]  # raw [0, 10] scale
    assert stream.features.max() > 9.0
    for k, threshold in enumerate((8.0, 7.0, 9.5, 8.0)):
        part = slice(2_000 * k, 2_000 * (k + 1))
        agree = ((total[part] > threshold) == stream.labels[part]).mean()
        assert agree == pytest.approx(0.9, abs=0.03)


def test_agrawal_keeps_raw_scales_and_flips_five_percent_of_labels() -> None:
    stream = synthetic.agrawal_raw(segment=2_000)
    assert stream.features[:, 0].max() > 10_000  # salary
    assert stream.features[:, 2].max() < 100  # age
    clean = synthetic.agrawal_raw(segment=2_000)  # same seed, same flips
    np.testing.assert_array_equal(stream.labels, clean.labels)
    from river.datasets import synth

    truth = [int(y) for _, y in synth.Agrawal(classification_function=0, seed=0).take(2_000)]
    assert (np.asarray(truth) != stream.labels[:2_000]).mean() == pytest.approx(0.05, abs=0.015)


def test_led_permutation_moves_the_digit_to_other_columns() -> None:
    stream = synthetic.led_permuted(segment=3_000)
    before, after = slice(0, 3_000), slice(3_000, 6_000)

    def informative(part: slice) -> set[int]:
        x, y = stream.features[part], stream.labels[part]
        spread = [np.ptp([x[y == c, j].mean() for c in range(10)]) for j in range(24)]
        return {j for j, value in enumerate(spread) if value > 0.5}

    assert informative(before) == set(range(7))
    moved = informative(after)
    assert len(moved) == 7
    assert not moved & set(range(7))


def test_continuous_streams_have_no_change_points() -> None:
    for make in (synthetic.hyperplane_moving, synthetic.rbf_moving):
        stream = make(n_events=500)
        assert stream.drift == "continuous"
        assert stream.drifts == ()
        assert quiet_events(stream) == 500


def test_gradual_sea_mixes_both_concepts_within_its_width() -> None:
    stream = synthetic.sea_gradual(n_events=6_000, width=1_000)
    assert stream.drift == "gradual"
    assert stream.drifts == (2_500,)
    assert stream.widths == (1_000,)
    total = stream.features[:, 0] + stream.features[:, 1]
    old = (total > 8.0) == stream.labels
    assert old[:2_000].mean() > 0.9
    assert old[4_000:].mean() < old[:2_000].mean() - 0.05  # variant 3 (9.5) disagrees there


def test_digits_rotate_invert_and_recur_on_the_raw_pixel_scale() -> None:
    stream = digits_domains(segment=500)
    assert stream.model == {"kind": "cnn", "input_shape": [1, 8, 8]}
    assert stream.drifts == (500, 1_000, 1_500)
    assert stream.recurring == (1_500,)
    images = stream.features.reshape(-1, 8, 8)
    assert images.min() >= 0.0
    assert images.max() <= 16.0
    ink = [images[k * 500 : (k + 1) * 500].mean() for k in range(4)]
    assert ink[2] == pytest.approx(16.0 - ink[0], abs=0.5)  # inverted
    assert abs(ink[0] - ink[3]) < 0.5
    for digit in (1, 7):
        original = images[:500][stream.labels[:500] == digit].mean(axis=0)
        rotated = images[500:1_000][stream.labels[500:1_000] == digit].mean(axis=0)
        assert np.abs(np.rot90(original) - rotated).mean() < 1.5
        assert np.abs(original - rotated).mean() > 2.0


def test_bananas_is_river_bundled_data_set_in_a_seeded_order() -> None:
    stream = bananas(seed=0)
    assert stream.n_events == 5_300
    assert stream.drift == "none"
    assert quiet_events(stream) == 5_300  # every detection on it is a false alarm


def _toy(n: int = 3_000) -> QualityStream:
    return QualityStream(
        name="t", description="", features=np.zeros((n, 1), np.float32),
        labels=np.zeros(n, np.int64), n_classes=2, drifts=(1_000, 2_000), widths=(1, 1),
        concepts=("a", "b", "a"),
    )  # fmt: skip


def test_detection_delays_false_alarms_and_quiet_events() -> None:
    stream = _toy()
    delays, false_alarms = detection_figures([500, 1040, 1100, 2999], stream, alarm_window=500)
    assert delays == [40, 999]
    assert false_alarms == 2  # 500 (before any drift) and 2999 (past the window)
    assert detection_figures([], stream) == ([None, None], 0)
    assert quiet_events(stream, alarm_window=500) == 3_000 - 2 * 501


def test_recovery_counts_events_lost_before_the_first_segments_level() -> None:
    stream = _toy()
    correct = np.ones(3_000, dtype=bool)
    correct[1_000:2_300] = False
    assert recovery_to_earlier(correct, stream, 2_000, window=100, tolerance=0.0) == 300
    assert accuracy_after(correct, stream) == [0.0, 0.7]
    correct[2_000:] = False
    assert recovery_to_earlier(correct, stream, 2_000, window=100) is None
