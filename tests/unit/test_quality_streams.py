"""The quality benchmark's streams: seeded, with the drift points and shapes they claim."""

from __future__ import annotations

import numpy as np
import pytest

from driftd.tools.quality_bench import detection_figures, recovery_to_earlier
from driftd.tools.quality_streams import (
    QualityStream,
    glyph_shift,
    glyph_unlabelled_return,
    moving_centroids,
    quality_streams,
    rotating_hyperplane,
    sea_switches,
    stationary,
)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    makers = (sea_switches, rotating_hyperplane, moving_centroids, stationary, glyph_shift,
              glyph_unlabelled_return)  # fmt: skip
    for make in makers:
        first, again, other = make(seed=1), make(seed=1), make(seed=2)
        np.testing.assert_array_equal(first.features, again.features)
        np.testing.assert_array_equal(first.labels, again.labels)
        assert not np.array_equal(first.features, other.features), make.__name__


def test_shapes_classes_and_event_format() -> None:
    for stream in quality_streams(quick=True):
        assert stream.features.shape[0] == stream.labels.shape[0] == stream.n_events
        assert stream.features.dtype == np.float32
        assert set(np.unique(stream.labels)) == set(range(stream.n_classes)), stream.name
        assert len(stream.widths) == len(stream.drifts)
        assert len(stream.concepts) == len(stream.drifts) + 1
        event = next(stream.events())
        assert set(event) == {"id", "x", "y", "domain"}
        assert len(event["x"]) == stream.features.shape[1]  # type: ignore[arg-type]
        assert event["domain"] is None


def test_sea_labels_follow_each_variants_threshold() -> None:
    stream = sea_switches(segment=500, variants=(2, 3, 2))
    assert stream.drifts == (500, 1000)
    assert stream.recurring == (1000,)
    assert stream.first_seen(1000) == (0, 500)
    total = stream.features[:, 0] + stream.features[:, 1]  # scaled by 1/10
    for (start, end), threshold in zip(
        [(0, 500), (500, 1000), (1000, 1500)], [0.7, 0.95, 0.7], strict=True
    ):
        np.testing.assert_array_equal(stream.labels[start:end], total[start:end] > threshold)


def test_hyperplane_is_fixed_between_drifts_and_turns_within_them() -> None:
    stream = rotating_hyperplane(n_events=4000, drifts=(2000,), width=500, angle=np.pi)
    # Refit the plane on each stretch: labels agree with a linear rule before, flip after.
    x, y = stream.features.astype(np.float64), stream.labels
    w, *_ = np.linalg.lstsq(x[:2000], 2.0 * y[:2000] - 1.0, rcond=None)
    assert ((x[:2000] @ w > 0) == y[:2000]).mean() > 0.9
    assert ((x[2500:] @ w > 0) == y[2500:]).mean() < 0.1  # turned by 180 degrees
    assert ((x[2000:2500] @ w > 0) == y[2000:2500]).mean() == pytest.approx(0.5, abs=0.2)


def test_centroids_move_only_at_drifts() -> None:
    stream = moving_centroids(n_events=6000, drifts=(3000,), width=100, noise=0.1)
    means = [
        [stream.features[part][stream.labels[part] == c].mean(axis=0) for c in range(5)]
        for part in (slice(0, 1500), slice(1500, 3000), slice(3100, 6000))
    ]
    np.testing.assert_allclose(means[0], means[1], atol=0.05)
    assert np.abs(np.array(means[2]) - np.array(means[1])).max() > 0.5
    assert stationary(n_events=100).drifts == ()


def test_glyph_domains_rotate_invert_and_recur() -> None:
    stream = glyph_shift(segment=400)
    assert stream.model == {"kind": "cnn", "input_shape": [1, 8, 8]}
    assert stream.drifts == (400, 800, 1200)
    assert stream.recurring == (1200,)
    images = stream.features.reshape(-1, 8, 8)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    ink = [images[k * 400 : (k + 1) * 400].mean() for k in range(4)]
    assert ink[2] > 0.5 > ink[0]  # inverted: mostly ink
    assert abs(ink[0] - ink[3]) < 0.02
    assert abs(ink[0] - ink[1]) < 0.02
    # Class means: rotated ones are the originals turned by 90 degrees.
    for digit in (1, 7):
        original = images[:400][stream.labels[:400] == digit].mean(axis=0)
        rotated = images[400:800][stream.labels[400:800] == digit].mean(axis=0)
        assert np.abs(np.rot90(original) - rotated).mean() < 0.1


def test_detection_delays_and_false_alarms() -> None:
    stream = QualityStream(
        name="t", description="", features=np.zeros((3000, 1), np.float32),
        labels=np.zeros(3000, np.int64), n_classes=2, drifts=(1000, 2000), widths=(1, 1),
        concepts=("a", "b", "a"),
    )  # fmt: skip
    delays, false_alarms = detection_figures([500, 1040, 1100, 2999], stream, alarm_window=500)
    assert delays == [40, 999]
    assert false_alarms == 2  # 500 (before any drift) and 2999 (past the window)
    assert detection_figures([], stream) == ([None, None], 0)


def test_recovery_to_earlier_counts_events_to_the_first_segments_level() -> None:
    stream = QualityStream(
        name="t", description="", features=np.zeros((3000, 1), np.float32),
        labels=np.zeros(3000, np.int64), n_classes=2, drifts=(1000, 2000), widths=(1, 1),
        concepts=("a", "b", "a"),
    )  # fmt: skip
    correct = np.ones(3000, dtype=bool)
    correct[1000:2300] = False
    assert recovery_to_earlier(correct, stream, 2000, window=100, tolerance=0.0) == 400
    assert (
        recovery_to_earlier(correct, stream, 2000, window=100, tolerance=0.0, counted_to="start")
        == 300
    ), "the first at-level window starts where the errors end"
    correct[2000:] = False
    assert recovery_to_earlier(correct, stream, 2000, window=100) is None
    assert recovery_to_earlier(correct, stream, 2000, window=100, counted_to="start") is None


def test_the_unlabelled_return_hides_only_the_last_segments_labels() -> None:
    stream = glyph_unlabelled_return(segment=300)
    assert stream.concepts == ("original", "inverted", "original")
    assert stream.recurring == (600,)
    assert stream.variants == ("ignore",)
    labels = [event["y"] for event in stream.events()]
    assert labels[:600] == stream.labels[:600].tolist()
    assert labels[600:] == [None] * 300
    inverted = stream.features[300:600].mean()
    assert inverted > stream.features[600:].mean() + 0.2, "inverted glyphs are mostly ink"
