"""Learning-rate policies: pure schedule maths behind small stateful classes.

Every policy has one interface. ``lr`` is the rate for the next optimisation step. Call
``step(loss)`` once per optimisation step, after it, with that batch's mean prequential loss
(``None`` or a non-finite loss is ignored); it returns the rate for the step after. Every rate
is clamped to ``[min_lr, max_lr]``. ``rescale(factor)`` multiplies the current rate (e.g. after a
drift); the policy then settles it as usual. ``state_dict()`` is JSON-ready and holds only what
changes while running; hyperparameters come from the constructor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``."""
    return min(max(value, low), high)


def step_decay_lr(step: int, *, base_lr: float, gamma: float, step_size: int) -> float:
    """``base_lr`` times ``gamma`` for every full ``step_size`` steps taken."""
    return base_lr * gamma ** (step // step_size)


def exponential_lr(step: int, *, base_lr: float, gamma: float, step_size: int) -> float:
    """``base_lr`` decayed continuously by ``gamma`` per ``step_size`` steps."""
    return base_lr * math.pow(gamma, step / step_size)


def cycle_position(step: int, *, cycle_steps: int, cycle_mult: float) -> tuple[float, float]:
    """Steps into the current cosine cycle and that cycle's length (cycles grow by cycle_mult)."""
    if cycle_mult == 1.0:
        return float(step % cycle_steps), float(cycle_steps)
    index = math.floor(math.log1p(step * (cycle_mult - 1) / cycle_steps) / math.log(cycle_mult))

    def start(n: int) -> float:
        return cycle_steps * (cycle_mult**n - 1) / (cycle_mult - 1)

    while index > 0 and start(index) > step:  # guard the closed form against rounding
        index -= 1
    while start(index + 1) <= step:
        index += 1
    return step - start(index), cycle_steps * cycle_mult**index


def cosine_restarts_lr(
    step: int, *, base_lr: float, min_lr: float, cycle_steps: int, cycle_mult: float
) -> float:
    """Cosine annealing from ``base_lr`` down towards ``min_lr``, restarting at each new cycle."""
    position, length = cycle_position(step, cycle_steps=cycle_steps, cycle_mult=cycle_mult)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * position / length)) / 2


def ema(previous: float | None, value: float, smoothing: float) -> float:
    """Exponential moving average; the first value starts it."""
    return value if previous is None else smoothing * previous + (1 - smoothing) * value


def improved(current: float, best: float, threshold: float) -> bool:
    """Whether ``current`` beats ``best`` by more than the relative ``threshold``."""
    return current < best - threshold * abs(best)


class LRPolicy:
    """Base of every policy: step counting, clamping, rescaling and state.

    Args:
        base_lr: Starting rate (clamped into the bounds).
        min_lr: Lowest rate ever returned.
        max_lr: Highest rate ever returned.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, base_lr: float, min_lr: float, max_lr: float) -> None:
        if not 0 < min_lr <= max_lr or not math.isfinite(max_lr):
            raise ValueError(f"need 0 < min_lr <= max_lr < inf, got {min_lr}, {max_lr}")
        _check(base_lr > 0 and math.isfinite(base_lr), "base_lr must be positive", base_lr)
        self.min_lr = min_lr
        self.max_lr = max_lr
        self._base_lr = clamp(base_lr, min_lr, max_lr)
        self._steps = 0

    @property
    def lr(self) -> float:
        """The rate for the next optimisation step."""
        return clamp(self._scheduled(), self.min_lr, self.max_lr)

    @property
    def base_lr(self) -> float:
        """The rate the schedule scales (the current rate itself for adaptive policies)."""
        return self._base_lr

    @property
    def steps(self) -> int:
        """Optimisation steps counted so far."""
        return self._steps

    def step(self, loss: float | None = None) -> float:
        """Count one optimisation step and observe its loss; return the next rate."""
        self._steps += 1
        if loss is not None and math.isfinite(loss):
            self._observe(float(loss))
        return self.lr

    def rescale(self, factor: float) -> float:
        """Multiply the current LR (e.g. after a drift), then the policy settles it as usual.

        Schedules scale their base rate, so they continue from the new level; the result is
        clamped to the bounds. Returns the new rate.
        """
        _check(factor > 0 and math.isfinite(factor), "factor must be positive", factor)
        self._base_lr = clamp(self._base_lr * factor, self.min_lr, self.max_lr)
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """What changes while running, as JSON-ready plain values."""
        return {"policy": self.name, "steps": self._steps, "base_lr": self._base_lr}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: The state belongs to another policy or is malformed.
        """
        if state.get("policy") != self.name:
            raise ValueError(f"LR state is for policy {state.get('policy')!r}, not {self.name!r}")
        steps, base_lr = state.get("steps"), state.get("base_lr")
        _check(isinstance(steps, int) and steps >= 0, "steps must be an integer >= 0", steps)
        _check(isinstance(base_lr, int | float) and base_lr > 0, "bad base_lr", base_lr)
        self._steps = int(steps)  # type: ignore[arg-type]
        self._base_lr = clamp(float(base_lr), self.min_lr, self.max_lr)  # type: ignore[arg-type]

    def _scheduled(self) -> float:
        """The unclamped rate at the current step."""
        return self._base_lr

    def _observe(self, loss: float) -> None:
        """React to a finite loss (only loss-aware policies do)."""


class ConstantLR(LRPolicy):
    """The base rate, unchanged but for rescaling."""

    name = "constant"


class StepDecayLR(LRPolicy):
    """Multiply the rate by ``gamma`` every ``step_size`` steps."""

    name = "step"

    def __init__(self, *, step_size: int, gamma: float, **bounds: float) -> None:
        super().__init__(**bounds)
        _check(step_size >= 1, "step_size must be >= 1", step_size)
        _check(0 < gamma <= 1, "gamma must be in (0, 1]", gamma)
        self.step_size, self.gamma = step_size, gamma

    def _scheduled(self) -> float:
        return step_decay_lr(
            self._steps, base_lr=self._base_lr, gamma=self.gamma, step_size=self.step_size
        )


class ExponentialLR(StepDecayLR):
    """Decay the rate smoothly by ``gamma`` per ``step_size`` steps."""

    name = "exponential"

    def _scheduled(self) -> float:
        return exponential_lr(
            self._steps, base_lr=self._base_lr, gamma=self.gamma, step_size=self.step_size
        )


class CosineRestartsLR(LRPolicy):
    """Cosine annealing from the base rate to ``min_lr``; cycles grow by ``cycle_mult``."""

    name = "cosine_restarts"

    def __init__(self, *, cycle_steps: int, cycle_mult: float, **bounds: float) -> None:
        super().__init__(**bounds)
        _check(cycle_steps >= 1, "cycle_steps must be >= 1", cycle_steps)
        _check(1 <= cycle_mult < math.inf, "cycle_mult must be >= 1", cycle_mult)
        self.cycle_steps, self.cycle_mult = cycle_steps, cycle_mult

    def _scheduled(self) -> float:
        return cosine_restarts_lr(
            self._steps,
            base_lr=self._base_lr,
            min_lr=self.min_lr,
            cycle_steps=self.cycle_steps,
            cycle_mult=self.cycle_mult,
        )


class AdaptiveLR(LRPolicy):
    """Loss-aware rate: shrink on a plateau, grow while the loss keeps improving.

    The loss is smoothed by an EMA. A step improves when the EMA beats the best EMA so far by
    more than ``threshold`` (relative). After ``patience`` steps without improvement the rate is
    multiplied by ``decrease_factor`` and the best is reset to the current EMA (a new level, e.g.
    after a drift, becomes the reference); after ``improve_streak`` improving steps in a row it
    is multiplied by ``increase_factor``. ``rescale`` also restarts this tracking.
    """

    name = "adaptive"

    def __init__(
        self,
        *,
        smoothing: float,
        patience: int,
        decrease_factor: float,
        increase_factor: float,
        improve_streak: int,
        threshold: float,
        **bounds: float,
    ) -> None:
        super().__init__(**bounds)
        _check(0 <= smoothing < 1, "smoothing must be in [0, 1)", smoothing)
        _check(patience >= 1, "patience must be >= 1", patience)
        _check(improve_streak >= 1, "improve_streak must be >= 1", improve_streak)
        _check(0 < decrease_factor <= 1, "decrease_factor must be in (0, 1]", decrease_factor)
        _check(1 <= increase_factor < math.inf, "increase_factor must be >= 1", increase_factor)
        _check(threshold >= 0, "threshold must be >= 0", threshold)
        self.smoothing, self.patience, self.improve_streak = smoothing, patience, improve_streak
        self.decrease_factor, self.increase_factor = decrease_factor, increase_factor
        self.threshold = threshold
        self._ema: float | None = None
        self._best: float | None = None
        self._bad_steps = 0
        self._streak = 0

    @property
    def smoothed_loss(self) -> float | None:
        """The loss EMA, or ``None`` before the first finite loss."""
        return self._ema

    def rescale(self, factor: float) -> float:
        """Multiply the current LR, clamped, and restart plateau tracking from the next loss."""
        rate = super().rescale(factor)
        self._best, self._bad_steps, self._streak = None, 0, 0
        return rate

    def state_dict(self) -> dict[str, Any]:
        """Step count, rate, loss EMA, best EMA and the two counters."""
        return super().state_dict() | {
            "ema": self._ema,
            "best": self._best,
            "bad_steps": self._bad_steps,
            "streak": self._streak,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        values = [state.get(key) for key in ("ema", "best", "bad_steps", "streak")]
        _check(all(v is None or isinstance(v, int | float) for v in values), "bad state", state)
        _check(isinstance(values[2], int) and isinstance(values[3], int), "bad counters", state)
        self._ema, self._best = [None if v is None else float(v) for v in values[:2]]
        self._bad_steps, self._streak = int(values[2]), int(values[3])  # type: ignore[arg-type]

    def _observe(self, loss: float) -> None:
        smoothed = ema(self._ema, loss, self.smoothing)
        if not math.isfinite(smoothed):  # only near float overflow: keep the state finite
            return
        self._ema = smoothed
        if self._best is None:
            self._best = self._ema
        elif improved(self._ema, self._best, self.threshold):
            self._best, self._bad_steps, self._streak = self._ema, 0, self._streak + 1
            if self._streak >= self.improve_streak:
                self._streak = 0
                self._base_lr = clamp(
                    self._base_lr * self.increase_factor, self.min_lr, self.max_lr
                )
        else:
            self._bad_steps, self._streak = self._bad_steps + 1, 0
            if self._bad_steps >= self.patience:
                self._best, self._bad_steps = self._ema, 0
                self._base_lr = clamp(
                    self._base_lr * self.decrease_factor, self.min_lr, self.max_lr
                )


def _check(condition: bool, message: str, value: object) -> None:
    if not condition:
        raise ValueError(f"{message}, got {value!r}")
