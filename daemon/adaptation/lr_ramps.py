"""The LR multipliers after a drift: a boosted head, a held then ramped trunk (pure maths)."""

from __future__ import annotations


def head_scale(since: int, *, boost: float, boost_steps: int) -> float:
    """Head LR multiplier ``since`` steps after a drift: ``boost`` decaying linearly to 1."""
    return 1.0 + (boost - 1.0) * max(0.0, 1.0 - since / boost_steps)


def trunk_scale(
    since: int, *, hold_scale: float, hold_steps: int, resume_scale: float, ramp_steps: int
) -> float:
    """Trunk LR multiplier ``since`` steps after a drift.

    ``hold_scale`` (0 freezes) for ``hold_steps`` steps, then from ``resume_scale`` up to 1
    linearly over ``ramp_steps`` steps.
    """
    if since < hold_steps:
        return hold_scale
    ramped = (since - hold_steps) / ramp_steps
    return min(1.0, resume_scale + (1.0 - resume_scale) * ramped)
