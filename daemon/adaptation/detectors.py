"""River drift detectors: built by name, and their state saved as JSON, never pickled.

:func:`detector_state` walks a detector's attributes and writes plain JSON: numbers (non-finite
floats marked), deques, ``random.Random`` states, river ``stats`` objects and other plain objects
attribute by attribute. The Rust-backed parts of river (ADWIN's window, ``EWMean``) expose their
own serde encoding through ``__getstate__``: those bytes (bincode of plain numbers, not a pickle
stream) are stored base64-encoded. :func:`load_detector_state` writes the values back into a
freshly built detector of the same configuration, so it continues bit-identically.
"""

from __future__ import annotations

import base64
import collections
import math
import random
from collections.abc import Iterable
from typing import Any

from river import stats

from driftd.adaptation.river_drift import binary, drift


class _Mean(stats.Mean):
    """river's running mean, cloned by copying its two numbers.

    river's generic ``clone`` inspects the constructor's signature each time; HDDM_A clones its
    means at most updates, which took a third of a 32-event step's time.
    """

    def clone(
        self, new_params: dict[str, Any] | None = None, include_attributes: bool = False
    ) -> Any:
        """A new mean: empty, or (``include_attributes``) with this one's count and value."""
        if new_params:
            return super().clone(new_params, include_attributes)
        twin = _Mean()
        if include_attributes:
            twin.n, twin._mean = self.n, self._mean
        return twin


class HDDMA(binary.HDDMA):
    """river's HDDM_A, detecting exactly as river's does, at a fraction of its cost per value.

    :meth:`update_many` is river's ``update`` over a batch, with the running means, their clones
    and the Hoeffding bounds written out on local floats: the same float operations in the same
    order, written back to the same attributes (so a saved state loads either way).
    """

    def _reset(self) -> None:
        super()._reset()  # type: ignore[no-untyped-call]
        self._x_min, self._x_max, self._z = _Mean(), _Mean(), _Mean()

    def update(self, x: float) -> None:
        """Feed one value (1 = an error), as river's ``HDDM_A.update``."""
        self.update_many((x,))

    def update_many(self, values: Iterable[float]) -> list[tuple[int, bool, bool]]:  # noqa: C901 - one flat hot loop
        """Feed values in order, up to the first drift; where the flags changed.

        Changes are ``(index, warning, drift)``; a drift, always a change, ends the call (the
        caller reads the detector as it is then, and feeds the rest in another call).
        """
        sqrt, changes = math.sqrt, []
        cut_log = math.log(1.0 / self.drift_confidence)
        drift_log = math.log(2.0 / self.drift_confidence)
        warning_log = math.log(2.0 / self.warning_confidence)
        two_sided = self.two_sided_test
        warning, drift = self._warning_detected, self._drift_detected
        z, low, high = self._z, self._x_min, self._x_max
        zn, zm, ln, lm, hn, hm = z.n, z._mean, low.n, low._mean, high.n, high._mean
        for index, x in enumerate(values):
            if drift:  # river's _reset: fresh means
                zn, zm, ln, lm, hn, hm = 0, 0.0, 0, 0.0, 0, 0.0
            zn += 1.0
            zm += (1.0 / zn) * (x - zm)
            if ln == 0:
                ln, lm = zn, zm
            if hn == 0:
                hn, hm = zn, zm
            eps_z = sqrt(1.0 / (2 * zn) * cut_log)
            if lm + sqrt(1.0 / (2 * ln) * cut_log) >= zm + eps_z:  # cut for a rise
                ln, lm = zn, zm
            if hm - sqrt(1.0 / (2 * hn) * cut_log) <= zm - eps_z:  # cut for a fall
                hn, hm = zn, zm
            now_warning = now_drift = False
            if ln != zn:  # river's _mean_incr: has the mean risen since the cut?
                m = (zn - ln) / ln * (1.0 / zn)
                if zm - lm >= sqrt(m / 2 * drift_log):
                    now_drift = True
                elif zm - lm >= sqrt(m / 2 * warning_log):
                    now_warning = True
            if two_sided and hn != zn:  # _mean_decr: has it fallen?
                m = (zn - hn) / hn * (1.0 / zn)
                if hm - zm >= sqrt(m / 2 * drift_log):
                    now_drift = True
                elif hm - zm >= sqrt(m / 2 * warning_log):
                    now_warning = True
            if now_drift or now_warning != warning or drift:
                changes.append((index, now_warning, now_drift))
            warning, drift = now_warning, now_drift
            if drift:
                break
        z.n, z._mean, low.n, low._mean, high.n, high._mean = zn, zm, ln, lm, hn, hm
        self._warning_detected, self._drift_detected = warning, drift
        return changes


class ADWIN(drift.ADWIN):
    """river's ADWIN, with :meth:`update_many`: a batch fed without a Python call per value."""

    def update_many(self, values: Iterable[float]) -> list[tuple[int, bool, bool]]:
        """Feed values in order, up to the first drift (see :meth:`HDDMA.update_many`)."""
        changes: list[tuple[int, bool, bool]] = []
        drift = self._drift_detected
        for index, x in enumerate(values):
            if drift:
                self._reset()  # type: ignore[no-untyped-call]  # river's: a fresh window
            was, drift = drift, self._helper.update(x)
            if drift or was:
                changes.append((index, False, drift))
            if drift:
                break
        self._drift_detected = drift
        return changes


#: Detector name -> (river class, whether it watches a 0/1 error and raises warnings).
DETECTORS: dict[str, tuple[type[Any], bool]] = {
    "adwin": (ADWIN, False),
    "page_hinkley": (drift.PageHinkley, False),
    "kswin": (drift.KSWIN, False),
    "ddm": (binary.DDM, True),
    "eddm": (binary.EDDM, True),
    "hddm_a": (HDDMA, True),
    "hddm_w": (binary.HDDMW, True),
}

Params = dict[str, float | int | bool | str]


def is_binary(name: str) -> bool:
    """Whether detector ``name`` watches a 0/1 error stream (and can raise warnings)."""
    return DETECTORS[name][1]


def fires_on_falls(name: str, params: Params) -> bool:
    """Whether detector ``name`` with ``params`` may also flag a *fall* of what it watches.

    HDDM_A/W one-sided (river's default), DDM and EDDM test for a rise only; ADWIN, KSWIN,
    Page-Hinkley in ``both``/``down`` mode (its default: both) and two-sided HDDM test either way.
    """
    if name in ("hddm_a", "hddm_w"):
        return bool(params.get("two_sided_test", False))
    if name == "page_hinkley":
        return params.get("mode", "both") != "up"
    return name in ("adwin", "kswin")


def make_detector(name: str, params: Params) -> Any:
    """A fresh river detector.

    Args:
        name: A key of :data:`DETECTORS`.
        params: Keyword arguments of the river class (e.g. ``{"delta": 0.01}`` for ADWIN).

    Raises:
        ValueError: Unknown name or parameters river refuses.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown drift detector {name!r}: expected one of {sorted(DETECTORS)}")
    try:
        return DETECTORS[name][0](**params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"drift detector {name!r} refuses {params!r}: {error}") from None


def detector_state(detector: Any) -> dict[str, Any]:
    """The detector's attributes as JSON-ready data (see the module docstring)."""
    return {key: _encode(value) for key, value in vars(detector).items() if not callable(value)}


def load_detector_state(detector: Any, state: dict[str, Any]) -> None:
    """Write :func:`detector_state` output back into ``detector`` (built with the same config).

    Raises:
        ValueError: The state does not fit the detector's structure.
    """
    _load_into(detector, state)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, collections.deque):
        return {"__deque__": [_encode(item) for item in value], "maxlen": value.maxlen}
    if isinstance(value, random.Random):
        version, internal, gauss = value.getstate()
        return {"__random__": [version, list(internal), gauss]}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if type(value).__module__.startswith("river._river_rust"):
        raw: bytes = value.__getstate__()
        return {"__rust__": base64.b64encode(raw).decode("ascii")}
    if hasattr(value, "__dict__"):
        return {"__object__": detector_state(value)}
    raise TypeError(f"cannot save a {type(value).__name__} of a drift detector without pickle")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    if isinstance(value, dict) and "__deque__" in value:
        return collections.deque((_decode(v) for v in value["__deque__"]), value["maxlen"])
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _load_into(target: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        current = getattr(target, key, None)
        if isinstance(value, dict) and "__object__" in value:
            if current is None or not hasattr(current, "__dict__"):
                raise ValueError(f"detector state: {key!r} is not an object here")
            _load_into(current, value["__object__"])
        elif isinstance(value, dict) and "__rust__" in value:
            if current is None or not hasattr(current, "__setstate__"):
                raise ValueError(f"detector state: {key!r} is not a river Rust object here")
            current.__setstate__(base64.b64decode(value["__rust__"]))
        elif isinstance(value, dict) and "__random__" in value:
            version, internal, gauss = value["__random__"]
            generator = random.Random()  # noqa: S311 - river's detector RNG, restored as saved
            generator.setstate((version, tuple(internal), gauss))
            setattr(target, key, generator)
        else:
            setattr(target, key, _decode(value))
