"""Whether the shared trunk still serves a new domain, judged on the post-drift events."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from driftd.adaptation.trunk_evidence import trunk_still_serves
from driftd.learning.models import SplitModel, build_model


def _model() -> SplitModel:
    config = {
        "kind": "mlp", "task": "classification", "n_features": 6, "n_outputs": 2,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [], "hidden": [3],
    }  # fmt: skip
    return build_model(config, torch.Generator().manual_seed(0))


def _train(model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _losses(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, y, reduction="none")


def test_a_trunk_kept_when_only_the_head_changed_and_released_when_the_signal_moved() -> None:
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(2_000, 6, generator=rng)
    model = _model()
    _train(model, x, (x[:, 0] + x[:, 1] > 0).long())  # a narrow trunk learns columns 0 and 1
    new = torch.randn(384, 6, generator=rng)
    flipped = (new[:, 0] + new[:, 1] < 0).long()  # same features, the head's mapping flips
    moved = (new[:, 4] + new[:, 5] > 0).long()  # the signal moved to columns 4 and 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = trunk_still_serves(
        model, new, flipped, loss_fn=_losses, generator=torch.Generator().manual_seed(2)
    )
    released = trunk_still_serves(
        model, new, moved, loss_fn=_losses, generator=torch.Generator().manual_seed(2)
    )
    assert kept.serves, kept.describe()
    assert not released.serves, released.describe()
    assert released.free_loss < released.frozen_loss <= released.constant_loss + 0.05
    assert kept.events == released.events == 384
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the live model is untouched"
