"""The reference engine: the cell applied once per step, autograd does the rest.

It is slow and obviously right, and every other engine is tested against it.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..cells.base import Cell, State, state_where
from .handover import tracing_tool

__all__ = ["LoopEngine"]


class LoopEngine:
    name = "loop"

    def supports(self, cell: Cell) -> str | None:
        return None                                  # runs any cell

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        """``x`` (B, T, X) batch-first; ``lengths`` (B,) or None. Returns (outputs, final_state)."""
        steps = x.shape[1]
        if tracing_tool() == "export":
            warnings.warn(f"{type(cell).__name__}: exported as the step loop, unrolled over the {steps} steps of "
                          f"the example input; the program holds for that length only (a cell with a torch "
                          f"kernel, LSTM, GRU or Elman, exports as one op of any length)", stacklevel=2)
        outputs = []
        if lengths is None:
            for t in range(steps):
                state = cell(x[:, t], state)
                outputs.append(cell.output(state))
            return torch.stack(outputs, dim=1), state   # (B, T, O)
        alive = torch.arange(steps, device=x.device) < lengths.to(x.device).unsqueeze(1)  # (B, T)
        for t in range(steps):
            # a finished sequence keeps its last state: that is its final state
            state = state_where(alive[:, t], cell(x[:, t], state), state)
            outputs.append(cell.output(state))
        outputs = torch.stack(outputs, dim=1) * alive.unsqueeze(-1).to(x.dtype)
        return outputs, state
