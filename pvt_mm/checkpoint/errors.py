"""The types every checkpoint module shares: :data:`StateDict` and :class:`CheckpointError`."""
from typing import Dict

from torch import Tensor

#: A model's tensors by parameter / buffer name.
StateDict = Dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


__all__ = ['StateDict', 'CheckpointError']
