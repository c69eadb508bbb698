"""Drift monitor: exact detection indices on seeded streams, feeding policies, saved state."""

from __future__ import annotations

import json
import random

import pytest
import torch

from driftd.adaptation.detectors import DETECTORS, detector_state, is_binary, load_detector_state
from driftd.adaptation.drift import DriftMonitor, SignalMonitor
from driftd.settings.root import DriftSettings
from driftd.wiring.adaptation import make_monitor


def _mean_shift(seed: int = 12345) -> list[float]:
    """River's example: 1,000 values from {0, 1}, then 1,000 from {4..7}."""
    rng = random.Random(seed)
    return [float(v) for v in rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)]


def _error_rise(seed: int = 42) -> list[float]:
    """River's example: a 0/1 error at 50 %, then at 70 %."""
    rng = random.Random(seed)
    first = rng.choices([0, 1], k=1000)
    return [float(v) for v in first + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])]


def _feed(monitor: SignalMonitor, values: list[float], batch: int = 100) -> list[tuple[str, int]]:
    found = []
    for start in range(0, len(values), batch):
        for kind, position, *_ in monitor.update_many(values[start : start + batch]):
            found.append((kind, start + position))
    return found


def _monitor(detector: str, **options: object) -> SignalMonitor:
    signal = "error" if is_binary(detector) else "loss"
    return SignalMonitor(detector=detector, params=options.pop("params", {}), signal=signal,  # type: ignore[arg-type]
                         batch_mean=False, **options)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("detector", "values", "drifts"),
    [
        ("adwin", _mean_shift(), [1023]),  # river's documented indices, batched by 100
        ("page_hinkley", _mean_shift(), [1006]),
        ("ddm", _error_rise(), [1334]),
        ("eddm", _error_rise(), [1278]),
    ],
)
def test_detects_at_rivers_indices(detector: str, values: list[float], drifts: list[int]) -> None:
    params = {"alpha": 0.8, "beta": 0.75} if detector == "eddm" else {}  # river's example
    found = _feed(_monitor(detector, params=params), values)
    assert [index for kind, index in found if kind == "drift"] == drifts


def test_hddm_a_flags_exactly_what_rivers_own_flags() -> None:
    """driftd's HDDM_A only runs faster: every flag and every running mean is river's."""
    from river.drift import binary

    from driftd.adaptation.detectors import HDDMA

    rng = random.Random(7)
    rates = [0.1] * 3000 + [0.4] * 2000 + [0.05] * 3000 + [0.3] * 2000
    errors = [float(rng.random() < rate) for rate in rates]
    for two_sided in (True, False):
        ours, rivers = HDDMA(two_sided_test=two_sided), binary.HDDMA(two_sided_test=two_sided)
        flags = []
        for error in errors:
            ours.update(error)
            rivers.update(error)
            flags.append((ours.warning_detected, ours.drift_detected))
            assert flags[-1] == (rivers.warning_detected, rivers.drift_detected)
            for mean in ("_z", "_x_min", "_x_max"):
                mine, theirs = getattr(ours, mean), getattr(rivers, mean)
                assert (mine.n, mine.get()) == (theirs.n, theirs.get())
        assert sum(drift for _, drift in flags) >= 2 + two_sided, "the changes were seen"
        batched, changes = HDDMA(two_sided_test=two_sided), []
        start = 0
        while start < len(errors):  # as the monitor feeds it: batches, each call up to a drift
            found = batched.update_many(errors[start : start + 256])
            changes += [(start + index, warning, drift) for index, warning, drift in found]
            start += found[-1][0] + 1 if found and found[-1][2] else 256
        previous = [(False, False), *flags[:-1]]
        assert changes == [
            (index, *now)
            for index, (now, before) in enumerate(zip(flags, previous, strict=True))
            if now != before or now[1]
        ]


def test_adwin_fed_a_batch_drifts_where_rivers_drifts_value_by_value() -> None:
    from river.drift import ADWIN as RiverADWIN  # noqa: N811 - river's, beside driftd's

    from driftd.adaptation.detectors import ADWIN

    rng = random.Random(11)
    values = [rng.gauss(level, 0.3) for level in [0.0] * 2000 + [1.0] * 2000 + [0.2] * 2000]
    rivers, drifts = RiverADWIN(), []
    for index, value in enumerate(values):
        rivers.update(value)
        if rivers.drift_detected:
            drifts.append(index)
    ours, found, start = ADWIN(), [], 0
    while start < len(values):
        changes = ours.update_many(values[start : start + 256])
        found += [start + index for index, _, drift in changes if drift]
        start += changes[-1][0] + 1 if changes and changes[-1][2] else 256
    assert found == drifts
    assert len(drifts) >= 2
    assert ours.width == rivers.width


def test_warnings_are_separate_and_reported_when_they_switch_on() -> None:
    found = _feed(_monitor("ddm"), _error_rise())
    warnings = [index for kind, index in found if kind == "warning"]
    assert warnings[0] == 1084  # river's first warning
    assert all(index < 1334 or index >= 1492 for index in warnings)
    assert ("drift", 1334) in found


def test_no_alarm_on_a_stationary_stream() -> None:
    rng = random.Random(3)
    values = [rng.gauss(0.5, 0.2) for _ in range(20_000)]
    for detector in ("adwin", "page_hinkley"):
        assert _feed(_monitor(detector), values) == [], detector


def test_subsampling_feeds_one_event_in_k_across_batches() -> None:
    values = _mean_shift()
    every = _monitor("adwin", every=4)
    found = _feed(every, values, batch=37)  # batches not aligned with the stride
    direct = _feed(_monitor("adwin"), values[::4], batch=100)
    assert [index for _, index in found] == [4 * index for _, index in direct]
    assert every.seen == len(values)


def test_batch_mean_feeds_one_value_per_batch() -> None:
    monitor = SignalMonitor(detector="adwin", params={"clock": 1}, signal="loss", batch_mean=True)
    values = _mean_shift()
    found = _feed(monitor, values, batch=20)
    means = [sum(values[i : i + 20]) / 20 for i in range(0, 2000, 20)]
    direct = _feed(SignalMonitor(detector="adwin", params={"clock": 1}, signal="loss",
                                 batch_mean=False), means, batch=1)  # fmt: skip
    assert direct == [("drift", 58)]
    assert found == [("drift", 58 * 20 + 19)], "reported at the last row of the 59th batch"


def test_levels_before_and_after_describe_the_shift() -> None:
    monitor = _monitor("adwin")
    found = []
    values = _mean_shift()
    for start in range(0, len(values), 100):
        found += monitor.update_many(values[start : start + 100])
    fired = found[0]
    assert 0.5 < fired.before < 1.0, "mostly the old level"
    assert fired.after > 4.0, "the latest values are the new level"
    assert fired.span == 32, "ADWIN kept 32 values after its cut: the change is in the last 32"
    assert 1023 - fired.span + 1 <= 1000, "the span reaches back past the true change (1000)"


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_state_round_trip_continues_bit_identically(detector: str) -> None:
    values = _error_rise() if is_binary(detector) else _mean_shift()
    values = values[: 600 if detector == "kswin" else 2000]
    cut = len(values) // 3
    original = _monitor(detector, params={"seed": 1} if detector == "kswin" else {})
    _feed(original, values[:cut])
    saved = json.loads(json.dumps(original.state_dict()))  # what a manifest stores
    restored = _monitor(detector, params={"seed": 1} if detector == "kswin" else {})
    assert restored.matches(saved)
    restored.load_state_dict(saved)
    assert _feed(original, values[cut:]) == _feed(restored, values[cut:])
    assert detector_state(original.detector) == detector_state(restored.detector)


def test_state_of_another_configuration_is_not_loaded() -> None:
    monitor = _monitor("adwin")
    _feed(monitor, _mean_shift()[:500])
    other = _monitor("adwin", params={"delta": 0.1})
    assert not other.matches(monitor.state_dict())
    with pytest.raises(ValueError, match="adwin"):
        other.load_state_dict(monitor.state_dict())
    assert other.seen == 0


def test_a_monitor_restores_what_fits_and_names_the_signals_that_start_afresh() -> None:
    def monitor(delta: float) -> DriftMonitor:
        concept = _monitor("adwin", params={"delta": delta})
        covariate = SignalMonitor(
            detector="adwin", params={"delta": 0.002}, signal="input_mean", batch_mean=True
        )
        return DriftMonitor(concept=concept, covariate=[covariate])

    saved = monitor(0.002)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    losses = x[:, 0].abs()
    labels = torch.zeros(64, dtype=torch.int64)
    labelled = torch.ones(64, dtype=torch.bool)
    saved.update(x=x, y=labels, labelled=labelled, event_losses=losses, predictions=labels)
    same, changed = monitor(0.002), monitor(0.1)
    same.load_state_dict(saved.state_dict())
    changed.load_state_dict(saved.state_dict())
    assert (same.reset_signals, changed.reset_signals) == ([], ["loss"])
    assert changed.concept is not None
    assert changed.concept.seen == 0, "the changed detector starts afresh"
    assert changed.covariate[0].seen == same.covariate[0].seen == 1, "the input monitor fits"
    changed.load_state_dict({"concept": None, "covariate": []})
    assert changed.reset_signals == ["loss", "input_mean"], "nothing saved: both start afresh"


def test_rust_backed_state_is_base64_not_pickle() -> None:
    monitor = _monitor("adwin")
    _feed(monitor, _mean_shift()[:300])
    helper = monitor.state_dict()["state"]["_helper"]
    assert set(helper) == {"__rust__"}
    fresh = _monitor("adwin")
    load_detector_state(fresh.detector, monitor.state_dict()["state"])
    assert fresh.detector.width == monitor.detector.width == 300


def test_drift_monitor_reports_rows_and_skips_improvements() -> None:
    monitor = DriftMonitor(concept=_monitor("adwin"), covariate=[])
    values = torch.tensor(_mean_shift())
    reversed_values = torch.flip(values, [0])  # a fall in loss: an improvement, not a drift
    labelled = torch.tensor([True, False] * 100)
    rows, drifts = [], []
    for series in (values, reversed_values):
        for start in range(0, 2000, 100):
            x = torch.zeros(200, 2)
            found = monitor.update(
                x=x, y=torch.zeros(200, dtype=torch.int64), labelled=labelled,
                event_losses=series[start : start + 100], predictions=torch.zeros(200),
            )  # fmt: skip
            drifts += found
            rows += [(start, d.row) for d in found]
    assert [d.index for d in drifts] == [1023]
    assert rows == [(1000, 46)], "the 24th labelled row of its batch is row 46"
    assert monitor.improvements >= 1


def test_error_signal_and_covariate_shift() -> None:
    settings = DriftSettings(detector="ddm", params={"warm_start": 500}, covariate=True)
    monitor = make_monitor(settings, task="classification")
    assert monitor is not None
    assert monitor.concept_signal == "error"
    generator = torch.Generator().manual_seed(0)
    found = []
    for step in range(200):
        shift = 3.0 if step >= 100 else 0.0
        x = torch.randn(64, 5, generator=generator) + shift
        y = torch.zeros(64, dtype=torch.int64)
        predictions = (torch.rand(64, generator=generator) < (0.7 if step >= 100 else 0.1)).long()
        found += [(step, d.signal, d.kind) for d in monitor.update(
            x=x, y=y, labelled=torch.ones(64, dtype=torch.bool),
            event_losses=torch.ones(64), predictions=predictions,
        )]  # fmt: skip
    signals = {signal for step, signal, kind in found if kind == "drift" and step >= 100}
    assert {"error", "input_mean", "input_rms"} <= signals
    assert not [f for f in found if f[0] < 100 and f[2] == "drift"], "no alarm before the shift"


def test_settings_refuse_binary_detectors_on_loss() -> None:
    with pytest.raises(ValueError, match="0/1 error"):
        DriftSettings(detector="ddm", signal="loss")
    with pytest.raises(ValueError, match="classification"):
        make_monitor(DriftSettings(detector="eddm"), task="regression")


def _input_shift_alarms(*, confirm: bool, labelled: bool) -> list[tuple[str, str]]:
    """(signal, kind) of every alarm on a stream whose inputs jump while the error stays flat."""
    settings = DriftSettings(detector="hddm_a", covariate=True, covariate_confirm=confirm)
    monitor = make_monitor(settings, task="classification")
    assert monitor is not None
    generator = torch.Generator().manual_seed(0)
    found = []
    for step in range(200):
        x = torch.randn(64, 5, generator=generator) + (3.0 if step >= 100 else 0.0)
        predictions = (torch.rand(64, generator=generator) < 0.1).long()  # 10 % wrong throughout
        flags = torch.full((64,), labelled)
        found += [(d.signal, d.kind) for d in monitor.update(
            x=x, y=torch.zeros(64, dtype=torch.int64), labelled=flags,
            event_losses=torch.ones(64)[flags], predictions=predictions,
        )]  # fmt: skip
    return found


def test_an_input_alarm_the_error_does_not_confirm_is_a_warning_while_labels_flow() -> None:
    alarms = _input_shift_alarms(confirm=True, labelled=True)
    assert {signal for signal, kind in alarms if kind == "warning"} >= {"input_mean", "input_rms"}
    assert not [alarm for alarm in alarms if alarm[1] == "drift"], "the error never moved"
    unconfirmed = _input_shift_alarms(confirm=False, labelled=True)
    assert ("input_mean", "drift") in unconfirmed, "covariate_confirm=false: always a drift"


def test_without_labels_an_input_alarm_stays_a_drift() -> None:
    alarms = _input_shift_alarms(confirm=True, labelled=False)
    assert {signal for signal, kind in alarms if kind == "drift"} >= {"input_mean", "input_rms"}
