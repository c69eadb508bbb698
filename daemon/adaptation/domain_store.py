"""The known domains, each stored as its trunk and head: bounded, least recently used evicted.

The live model is one shared trunk and one head. Every known domain keeps a copy of both as they
were when it was last active (:class:`StoredDomain`): the head's tensors, the optimizer state of
its parameters (e.g. Adam moments), the prequential loss it had then and the trunk it was
trained over. The live trunk keeps learning on other domains, so an old head is scored over (and,
when reused after a detected recurrence, restored with) its own trunk.

Switching domain copies a stored head's weights *into* the live head and swaps the optimizer
state of its parameters, so parameter identity (and the optimizer's param groups) never change.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from driftd.adaptation.recurrence import InputStats
from driftd.learning.learner import OnlineLearner
from driftd.learning.standardize import standardizer_of
from driftd.learning.tensor_state import TensorState


@dataclass
class StoredDomain:
    """A known domain's stored trunk and head.

    Attributes:
        head: The head's ``state_dict`` (parameters and buffers), detached copies.
        head_moments: Optimizer state per head parameter name (tensors only).
        reference_loss: Prequential loss of the head when stored (its domain's level).
        trunk: The trunk's ``state_dict`` when stored (empty: score over the live trunk).
        inputs: Fingerprint of the domain's inputs (label-free recognition of a recurrence).
        scaling: The input standardiser's ``state_dict`` when stored (empty: the model has
            none, or the entry predates it): a domain's inputs are standardised by its own
            statistics, since a domain of other inputs moves the live ones.
    """

    head: dict[str, torch.Tensor]
    head_moments: dict[str, dict[str, torch.Tensor]]
    reference_loss: float | None
    trunk: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: InputStats = field(default_factory=InputStats)
    scaling: dict[str, torch.Tensor] = field(default_factory=dict)


def capture(
    learner: OnlineLearner, *, reference_loss: float | None = None, inputs: InputStats | None = None
) -> StoredDomain:
    """Copies of the live model's trunk, head, head moments and input statistics."""
    head = head_of(learner)
    state = learner.optimizer.state
    moments = {
        key: {k: v.detach().clone() for k, v in state[p].items() if isinstance(v, torch.Tensor)}
        for key, p in head.named_parameters()
        if p in state
    }
    model: Any = learner.model
    standardizer = standardizer_of(model)
    return StoredDomain(
        head=_copy(head.state_dict()), head_moments=moments, reference_loss=reference_loss,
        trunk=_copy(model.shared.state_dict()),
        inputs=InputStats() if inputs is None else inputs.copy(),
        scaling={} if standardizer is None else _copy(standardizer.state_dict()),
    )  # fmt: skip


def fits_live(entry: StoredDomain, learner: OnlineLearner) -> bool:
    """Whether ``entry`` has the live model's tensor names and shapes (not grown since)."""
    model: Any = learner.model
    head, trunk = head_of(learner).state_dict(), model.shared.state_dict()
    return _shapes(entry.head) == _shapes(head) and _shapes(entry.trunk) == _shapes(trunk)


def head_of(learner: OnlineLearner) -> nn.Module:
    """The live head module of a split model."""
    head = learner.model.head
    assert isinstance(head, nn.Module)
    return head


class DomainStore:
    """At most ``capacity`` named domains' trunks and heads, least recently used evicted first.

    Args:
        capacity: Bound on stored domains (the active one included; ``adaptation.max_heads``).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredDomain] = OrderedDict()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """Stored domains, least recently used first."""
        return list(self._entries)

    def entry(self, name: str) -> StoredDomain:
        """The stored entry of ``name`` (KeyError if unknown)."""
        return self._entries[name]

    def store(
        self,
        name: str,
        learner: OnlineLearner,
        *,
        reference_loss: float | None,
        inputs: InputStats | None = None,
    ) -> list[str]:
        """Save the live trunk and head as ``name``'s (most recently used); return the evicted."""
        stored = capture(learner, reference_loss=reference_loss, inputs=inputs)
        return self.put(name, stored)

    def put(self, name: str, entry: StoredDomain) -> list[str]:
        """Insert or replace ``name`` as most recently used; return the evicted names."""
        self._entries[name] = entry
        self._entries.move_to_end(name)
        evicted: list[str] = []
        while len(self._entries) > self.capacity:
            evicted.append(self._entries.popitem(last=False)[0])
        return evicted

    def load(self, name: str, learner: OnlineLearner, *, trunk: bool = False) -> None:
        """Copy ``name``'s head into the live model and optimizer; mark it most recently used.

        ``trunk``: also restore the trunk and input statistics it was stored with (a recurrence
        found by scoring, which judged the head over them); the trunk's optimizer state is kept.
        """
        entry = self._entries[name]
        self._entries.move_to_end(name)
        head = head_of(learner)
        head.load_state_dict(entry.head)  # in place: the parameters stay the same objects
        model: Any = learner.model
        if trunk and entry.trunk:
            model.shared.load_state_dict(entry.trunk)
        standardizer = standardizer_of(model)
        if trunk and entry.scaling and standardizer is not None:
            standardizer.load_state_dict(entry.scaling)
        state = learner.optimizer.state
        for key, p in head.named_parameters():
            saved = entry.head_moments.get(key)
            if saved:
                state[p] = {k: _moment_for(p, k, v) for k, v in saved.items()}
            else:
                state.pop(p, None)

    def scores(self, learner: OnlineLearner, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Mean loss of every stored head on ``(x, y)`` over its stored trunk (eval mode).

        Scored like its ``reference_loss`` was (the live model when stored): on the inputs
        standardised by its stored statistics, through its stored trunk; an entry without them
        is scored with the live ones.
        """
        return {
            name: float(losses.mean()) for name, losses in self.event_scores(learner, x, y).items()
        }

    @torch.no_grad()
    def event_scores(
        self, learner: OnlineLearner, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-event losses of every stored head on ``(x, y)``, as :meth:`scores` averages."""
        model: Any = learner.model
        model.eval()
        x, y = x.to(learner.device), y.to(learner.device)
        standardizer = standardizer_of(model)
        live_x = x if standardizer is None else standardizer(x)  # as the model's forward does
        live = model.shared(live_x)
        head = head_of(learner)
        scores = {}
        for name, entry in self._entries.items():
            domain_x = live_x
            if entry.scaling and standardizer is not None:
                scaling = _on_device(entry.scaling, x.device)
                domain_x = functional_call(standardizer, scaling, (x,))
            trunk = _on_device(entry.trunk, x.device)  # restored from a snapshot: on the CPU
            if trunk:
                embedding = functional_call(model.shared, trunk, (domain_x,))
            else:
                embedding = live if domain_x is live_x else model.shared(domain_x)
            outputs = functional_call(head, _on_device(entry.head, x.device), (embedding,))
            scores[name] = learner.event_losses(outputs, y).detach().to("cpu")
        return scores

    def score_live(self, learner: OnlineLearner, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean loss of the live model on ``(x, y)`` (eval mode), scored like :meth:`scores`."""
        return float(self.live_event_losses(learner, x, y).mean())

    @torch.no_grad()
    def live_event_losses(
        self, learner: OnlineLearner, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Per-event losses of the live model on ``(x, y)`` (eval mode)."""
        learner.model.eval()
        outputs = learner.model(x.to(learner.device))
        return learner.event_losses(outputs, y.to(learner.device)).detach().to("cpu")

    def pad_rows(self, key: str, rows: torch.Tensor) -> None:
        """Append output rows to weight/bias ``key`` of every stored head (class growth).

        The moments of the new rows start at zero.
        """
        for entry in self._entries.values():
            old = entry.head[key]
            entry.head[key] = torch.cat([old, rows.to(old.device, old.dtype)])
            for name, value in entry.head_moments.get(key, {}).items():
                if value.dim() and value.shape[0] == old.shape[0]:
                    pad = value.new_zeros((len(rows), *value.shape[1:]))
                    entry.head_moments[key][name] = torch.cat([value, pad])

    def state_dict(self) -> TensorState:
        """Tensors and ``{"entries": [...]}``: one JSON entry per domain, in LRU order.

        Tensors of the ``i``-th entry are keyed ``<i>.w.<key>`` (head), ``<i>.m.<key>.<name>``
        (head moments), ``<i>.t.<key>`` (trunk), ``<i>.s.<key>`` (input standardiser) and
        ``<i>.i.<name>`` (input fingerprint).
        """
        tensors: dict[str, torch.Tensor] = {}
        entries: list[dict[str, Any]] = []
        for i, (name, entry) in enumerate(self._entries.items()):
            for key, value in entry.head.items():
                tensors[f"{i}.w.{key}"] = value
            for key, values in entry.head_moments.items():
                for state_name, value in values.items():
                    tensors[f"{i}.m.{key}.{state_name}"] = value
            for key, value in entry.trunk.items():
                tensors[f"{i}.t.{key}"] = value
            for key, value in entry.scaling.items():
                tensors[f"{i}.s.{key}"] = value
            inputs, inputs_meta = entry.inputs.state_dict()
            tensors |= {f"{i}.i.{key}": value for key, value in inputs.items()}
            moments = {key: sorted(values) for key, values in entry.head_moments.items()}
            entries.append({
                "name": name, "reference_loss": entry.reference_loss, "weights": list(entry.head),
                "moments": moments, "trunk": list(entry.trunk), "inputs": inputs_meta["count"],
                "scaling": list(entry.scaling),
            })  # fmt: skip
        return tensors, {"entries": entries}

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | list[dict[str, Any]]
    ) -> None:
        """Restore :meth:`state_dict` output (order = recency).

        ``meta`` may also be the bare list of entries that snapshots before issue 11 hold.
        """
        self._entries.clear()
        entries = meta if isinstance(meta, list) else meta["entries"]
        for i, item in enumerate(entries):
            weights = {key: tensors[f"{i}.w.{key}"] for key in item["weights"]}
            moments = {
                key: {name: tensors[f"{i}.m.{key}.{name}"] for name in names}
                for key, names in item["moments"].items()
            }
            trunk = {key: tensors[f"{i}.t.{key}"] for key in item.get("trunk", [])}
            scaling = {key: tensors[f"{i}.s.{key}"] for key in item.get("scaling", [])}
            prefix = f"{i}.i."
            inputs = InputStats.from_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                {"count": item.get("inputs", 0)},
            )
            self._entries[str(item["name"])] = StoredDomain(
                head=weights, head_moments=moments, reference_loss=item["reference_loss"],
                trunk=trunk, inputs=inputs, scaling=scaling,
            )  # fmt: skip


def _copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in tensors.items()}


def _shapes(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in tensors.items()}


def _on_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``tensors`` on ``device`` (the same dict when they are there already)."""
    if all(value.device == device for value in tensors.values()):
        return tensors
    return {key: value.to(device) for key, value in tensors.items()}


def _moment_for(param: torch.Tensor, key: str, value: torch.Tensor) -> torch.Tensor:
    """A copy of optimizer state ``key`` for ``param``, placed as torch's optimizers place it.

    ``step`` stays where it was (Adam keeps it on the CPU), the rest goes to the parameter's
    device (stored heads restored from a snapshot come back on the CPU).
    """
    if key == "step" or value.device == param.device:
        return value.clone()
    return value.to(param.device)
