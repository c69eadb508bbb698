"""Replay buffer bounds and order; stored domains: LRU bound, exact swaps; class growth."""

from __future__ import annotations

import pytest
import torch

from driftd.adaptation.domain_store import DomainStore, head_of
from driftd.adaptation.growth import grow_outputs
from driftd.adaptation.recurrence import InputStats
from driftd.adaptation.replay import ReplayBuffer
from driftd.decode import JsonDecoder
from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model
from driftd.records import Record


def _events(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + n)
    return ids.float().unsqueeze(1).repeat(1, 3), ids


@pytest.mark.parametrize("mode", ["sliding", "reservoir"])
def test_replay_never_holds_more_than_its_capacity(mode: str) -> None:
    buffer = ReplayBuffer(50, mode=mode, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    for start in range(0, 1000, 70):
        buffer.extend(*_events(start, 70))
        assert len(buffer) == min(50, start + 70)
    x, y = buffer.since(0)
    assert len(x) == 50
    assert torch.equal(x[:, 0].long(), y)
    assert y.unique().numel() == 50, "each kept event once"
    assert buffer.arrivals == 1050


def test_sliding_keeps_the_newest_in_arrival_order() -> None:
    buffer = ReplayBuffer(8, mode="sliding", generator=torch.Generator())
    buffer.extend(*_events(0, 5))
    buffer.extend(*_events(5, 13))  # wraps around, more than the capacity
    assert buffer.since(0)[1].tolist() == list(range(10, 18))
    assert buffer.since(14)[1].tolist() == [14, 15, 16, 17]
    assert buffer.since(11, 13)[1].tolist() == [11, 12]


def test_reservoir_is_a_seeded_uniform_sample_since_the_last_clear() -> None:
    def run() -> list[int]:
        buffer = ReplayBuffer(100, mode="reservoir", generator=torch.Generator().manual_seed(3))
        buffer.extend(*_events(0, 500))
        buffer.clear()
        for start in range(500, 10_500, 250):
            buffer.extend(*_events(start, 250))
        return buffer.since(0)[1].tolist()

    kept = run()
    assert kept == run(), "same seed, same sample"
    assert min(kept) >= 500, "nothing from before the clear"
    assert 3_000 < sum(kept) / len(kept) - 500 < 7_000, "spread over the stream, not the tail"


@pytest.mark.parametrize("mode", ["sliding", "reservoir"])
def test_replay_state_round_trip(mode: str) -> None:
    generator = torch.Generator().manual_seed(1)
    buffer = ReplayBuffer(40, mode=mode, generator=generator)  # type: ignore[arg-type]
    buffer.extend(*_events(0, 90))
    tensors, meta = buffer.state_dict()
    copy = ReplayBuffer(40, mode=mode, generator=torch.Generator())  # type: ignore[arg-type]
    copy.load_state_dict(tensors, meta)
    copy._generator.set_state(generator.get_state())
    buffer.extend(*_events(90, 33))
    copy.extend(*_events(90, 33))
    assert torch.equal(buffer.since(0)[1], copy.since(0)[1])


def _learner(n_outputs: int = 3) -> OnlineLearner:
    config = {
        "kind": "mlp", "task": "classification", "n_features": 4, "n_outputs": n_outputs,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [], "hidden": [8],
    }  # fmt: skip
    model = build_model(config, torch.Generator().manual_seed(0))
    optimizer = make_optimizer("adam", model, lr=0.01, momentum=0.0, weight_decay=0.0)
    return OnlineLearner(
        model=model, optimizer=optimizer, lr_policy=ConstantLR(base_lr=0.01, min_lr=1e-6, max_lr=1),
        task="classification", loss="cross_entropy", metrics_window=100,
    )  # fmt: skip


def _learn(learner: OnlineLearner, seed: int, steps: int = 3, n_classes: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=generator)
        y = torch.randint(0, n_classes, (16,), generator=generator)
        learner.learn_many(x, y, torch.ones(16, dtype=torch.bool))


def test_stored_domains_are_bounded_least_recently_used_evicted() -> None:
    learner, domains = _learner(), DomainStore(3)
    for name in "abc":
        assert domains.store(name, learner, reference_loss=None) == []
    domains.load("a", learner)  # a becomes most recent
    assert domains.store("d", learner, reference_loss=None) == ["b"]
    assert domains.names == ["c", "a", "d"]
    assert domains.store("e", learner, reference_loss=None) == ["c"]
    assert len(domains) == 3


def test_switching_heads_restores_weights_and_moments_exactly() -> None:
    learner, domains = _learner(), DomainStore(4)
    _learn(learner, 1)
    head = head_of(learner)
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    moments = {k: learner.optimizer.state[p]["exp_avg"].clone() for k, p in head.named_parameters()}
    domains.store("a", learner, reference_loss=0.5)
    params_before = [id(p) for p in head.parameters()]
    _learn(learner, 2)  # the live head moves on (as domain b)
    domains.store("b", learner, reference_loss=None)
    domains.load("a", learner)
    assert [id(p) for p in head.parameters()] == params_before, "same parameter objects"
    for key, value in head.state_dict().items():
        assert torch.equal(value, saved[key]), key
    for key, p in head.named_parameters():
        assert torch.equal(learner.optimizer.state[p]["exp_avg"], moments[key]), key
    _learn(learner, 3)
    assert torch.equal(domains.entry("a").head["0.weight"], saved["0.weight"]), "copy kept"


def test_stored_domains_state_round_trip() -> None:
    learner, domains = _learner(), DomainStore(4)
    _learn(learner, 1)
    inputs = InputStats()
    inputs.update(torch.arange(12.0).reshape(3, 4))
    domains.store("x.y", learner, reference_loss=0.25, inputs=inputs)
    domains.store("z", learner, reference_loss=None)
    inputs.update(torch.ones(1, 4))  # the store keeps its own copy
    tensors, meta = domains.state_dict()
    assert [entry["name"] for entry in meta["entries"]] == ["x.y", "z"]
    copy = DomainStore(4)
    copy.load_state_dict(dict(tensors), meta)
    assert copy.names == ["x.y", "z"]
    assert copy.entry("x.y").reference_loss == 0.25
    fingerprint = copy.entry("x.y").inputs
    assert fingerprint.count == 3
    assert fingerprint.total is not None
    assert fingerprint.total.tolist() == [12.0, 15.0, 18.0, 21.0]
    assert copy.entry("z").inputs.count == 0
    for key, value in domains.entry("x.y").head_moments.items():
        for name, tensor in value.items():
            assert torch.equal(copy.entry("x.y").head_moments[key][name], tensor)
    for key, value in domains.entry("z").trunk.items():
        assert torch.equal(copy.entry("z").trunk[key], value)
    before_issue_11 = DomainStore(4)  # snapshots then held the bare list of entries
    before_issue_11.load_state_dict(dict(tensors), meta["entries"])
    assert before_issue_11.names == ["x.y", "z"]
    assert before_issue_11.entry("x.y").inputs.count == 3


def test_growing_classes_keeps_learned_weights_and_moments_bit_identical() -> None:
    learner, domains = _learner(), DomainStore(4)
    _learn(learner, 1)
    domains.store("other", learner, reference_loss=None)
    layer = head_of(learner)[0]
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    state = {k: v.clone() for k, v in learner.optimizer.state[layer.weight].items()}
    rows = grow_outputs(learner, 5, torch.Generator().manual_seed(9))
    for key, new_rows in rows.items():
        domains.pad_rows(key, new_rows)
    assert layer.weight.shape == (5, 8)
    assert learner.model.config["n_outputs"] == 5
    assert torch.equal(layer.weight[:3], weight)
    assert torch.equal(layer.bias[:3], bias)
    grown = learner.optimizer.state[layer.weight]
    assert torch.equal(grown["step"], state["step"])
    assert torch.equal(grown["exp_avg"][:3], state["exp_avg"])
    assert torch.equal(grown["exp_avg"][3:], torch.zeros(2, 8))
    assert domains.entry("other").head["0.weight"].shape == (5, 8)
    assert learner.param_group("head")["params"][0] is layer.weight  # type: ignore[index]
    _learn(learner, 2, n_classes=5)  # learns the new classes: the optimizer owns the new rows
    assert not torch.equal(layer.weight[3:], rows["0.weight"])


def test_decoder_accepts_labels_up_to_the_growth_bound() -> None:
    decoder = JsonDecoder(task="classification", n_features=2, n_classes=3, n_outputs=1,
                          max_record_bytes=1000, label_limit=6)  # fmt: skip
    batch = decoder.decode_many(
        [Record("t", 0, i, b'{"x": [1.0, 2.0], "y": %d}' % y) for i, y in enumerate([1, 5, 6])]
    )
    assert batch.y.tolist() == [1, 5]
    assert [r.reason for r in batch.rejections] == ["unknown_label"]


def test_a_head_is_scored_over_the_trunk_it_was_stored_with() -> None:
    learner, domains = _learner(), DomainStore(4)
    _learn(learner, 1)
    generator = torch.Generator().manual_seed(9)
    x, y = torch.randn(32, 4, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    when_stored = domains.score_live(learner, x, y)
    domains.store("a", learner, reference_loss=when_stored)
    _learn(learner, 2, steps=20)  # the trunk moves on with another domain
    assert domains.scores(learner, x, y)["a"] == pytest.approx(when_stored, rel=1e-6)
    per_event = domains.event_scores(learner, x, y)["a"]
    assert per_event.shape == (32,)
    assert float(per_event.mean()) == pytest.approx(when_stored, rel=1e-6)
    domains.load("a", learner, trunk=True)  # a recurrence found by scoring restores both
    assert domains.score_live(learner, x, y) == pytest.approx(when_stored, rel=1e-6)
    assert torch.allclose(domains.live_event_losses(learner, x, y), per_event)
