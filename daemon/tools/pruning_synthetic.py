"""A seeded, stationary 8x8 "digits-like" stream for the pruning benchmark (no download).

Each class is a smooth random 8x8 pattern (uniform noise blurred by a 3x3 box filter,
standardised). An event is its class's pattern shifted by up to one pixel in each direction,
plus Gaussian noise: a CNN's translation tolerance helps, an MLP has to learn the shifts.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import Tensor


def digits_like_stream(
    n_events: int, *, n_classes: int = 10, size: int = 8, noise: float = 0.8, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``n_events`` flat ``1 x size x size`` images and their labels."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.rand(n_classes, 1, size + 2, size + 2, generator=generator)
    templates = F.avg_pool2d(raw, kernel_size=3, stride=1)
    flat = templates.flatten(1)
    templates = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(templates)
    y = torch.randint(0, n_classes, (n_events,), generator=generator)
    shifts = torch.randint(0, 9, (n_events,), generator=generator)
    images = templates[y].clone()
    for code, (dy, dx) in enumerate(itertools.product((-1, 0, 1), repeat=2)):
        rows = (shifts == code).nonzero().flatten()
        images[rows] = torch.roll(images[rows], shifts=(dy, dx), dims=(2, 3))
    images += noise * torch.randn(images.shape, generator=generator)
    return images.flatten(1), y
