"""What a recurrent state is: a tensor, or a tuple of tensors (LSTM's ``(h, c)``), each ``(B, size)``.

The bottom layer, beside the input checks (:mod:`rnnkit._checks`) that look at states: cells, engines and
layers take these names from :mod:`rnnkit.cells.base`, which re-exports them."""
from __future__ import annotations

from typing import Tuple, Union

from torch import Tensor

__all__ = ["State", "state_tensors"]

State = Union[Tensor, Tuple[Tensor, ...]]


def state_tensors(state: State) -> Tuple[Tensor, ...]:
    """The tensors of a state as a tuple (a lone tensor becomes a 1-tuple)."""
    return (state,) if isinstance(state, Tensor) else tuple(state)
