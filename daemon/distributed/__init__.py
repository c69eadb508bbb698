"""Several trainer processes learning one model: the ranks of a ``torchrun`` trainer group.

* :class:`GroupTrainingLoop` (:mod:`~driftd.distributed.group_loop`): one rank's loop, rounds in
  lockstep, the coordinated snapshot;
* :mod:`~driftd.distributed.rounds`: what the ranks agree on each round;
* :mod:`~driftd.distributed.replicas`: gradients, parameters and input statistics made the
  group's.

The collectives go through the :class:`~driftd.ports.TrainerGroup` port.
"""

from driftd.distributed.group_loop import GroupTrainingLoop

__all__ = ["GroupTrainingLoop"]
