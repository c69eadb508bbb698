"""Pruning while learning: criteria, masks, shrinking, schedule, verification, int8 export.

The pure pieces, each usable alone:

* criteria: :func:`magnitude_scores`, :class:`TaylorAccumulator`, :func:`l1_penalty` /
  :func:`group_l1_penalty` (sparse optimisation), :func:`unit_output_error_scores` /
  :func:`weight_output_error_scores` (measured output error), :func:`activation_entropy_scores`;
* unstructured: :class:`MaskSet`, :func:`masks_from_scores`;
* structured: :func:`unit_layers`, :func:`shrink_model`, :func:`rebind_optimizer`,
  :func:`structured_mask` (the same cut as masks, for comparison);
* schedule: :func:`cubic_sparsity`, :class:`SparsitySchedule`, :func:`select_units`;
* decision: :class:`PruningController`; fine-tuning: :func:`fine_tune`,
  :func:`distillation_loss`;
* serving: :func:`quantize_int8`, :func:`int8_accuracy_delta`, :func:`load_int8`,
  :func:`flops_per_event`.

:class:`Pruner` composes them into the prune / fine-tune / verify / keep-recover-rollback cycle
that the training loop drives.
"""

from driftd.pruning.controller import PruningController, StepTrigger, Verdict
from driftd.pruning.criteria import (
    TaylorAccumulator,
    group_l1_penalty,
    l1_penalty,
    magnitude_scores,
    proximal_group_l1_,
    proximal_l1_,
    unit_magnitude_scores,
)
from driftd.pruning.cycle import PruneReport, Replay, Trainable
from driftd.pruning.distill import distillation_loss, fine_tune
from driftd.pruning.flops import flops_per_event
from driftd.pruning.layers import StructureError, UnitLayer, prunable_weights, unit_layers
from driftd.pruning.masks import MaskSet, masks_from_scores, structured_mask
from driftd.pruning.measured import (
    activation_entropy_scores,
    unit_output_error_scores,
    weight_output_error_scores,
)
from driftd.pruning.policy import PruningPolicy
from driftd.pruning.pruner import Pruner
from driftd.pruning.quantize import (
    Int8DynamicLinear,
    int8_accuracy_delta,
    load_int8,
    quantize_int8,
)
from driftd.pruning.schedule import SparsitySchedule, cubic_sparsity, select_units
from driftd.pruning.shrink import ShrinkResult, rebind_optimizer, shrink_model, slice_head_state

__all__ = [
    "Int8DynamicLinear",
    "MaskSet",
    "PruneReport",
    "Pruner",
    "PruningController",
    "PruningPolicy",
    "Replay",
    "ShrinkResult",
    "SparsitySchedule",
    "StepTrigger",
    "StructureError",
    "TaylorAccumulator",
    "Trainable",
    "UnitLayer",
    "Verdict",
    "activation_entropy_scores",
    "cubic_sparsity",
    "distillation_loss",
    "fine_tune",
    "flops_per_event",
    "group_l1_penalty",
    "int8_accuracy_delta",
    "l1_penalty",
    "load_int8",
    "magnitude_scores",
    "masks_from_scores",
    "proximal_group_l1_",
    "proximal_l1_",
    "prunable_weights",
    "quantize_int8",
    "rebind_optimizer",
    "select_units",
    "shrink_model",
    "slice_head_state",
    "structured_mask",
    "unit_layers",
    "unit_magnitude_scores",
    "unit_output_error_scores",
    "weight_output_error_scores",
]
