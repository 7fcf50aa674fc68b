"""The network of the default recipe: a bidirectional gated recurrent layer over a padded batch, pooled
over each case's own steps, and a linear readout."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..shortcuts import GRU, LSTM

__all__ = ["PooledRNN", "POOLINGS", "CELLS"]

POOLINGS = ("meanmax", "attention", "last")
CELLS = {"gru": GRU, "lstm": LSTM}


class PooledRNN(nn.Module):
    r"""``h_{1:T} = \mathrm{BiRNN}(x_{1:T})``, a summary ``s`` of the states over the case's valid steps,
    ``y = W\,\mathrm{dropout}(s) + b``.

    ``pooling``: ``"meanmax"`` is ``s = [\mathrm{mean}_t h_t;\ \max_t h_t]``; ``"attention"`` is
    ``s = [\sum_t \alpha_t h_t;\ \max_t h_t]`` with ``\alpha = \mathrm{softmax}_t(v^\top \tanh(U h_t))``;
    ``"last"`` is the forward half at the last step and the backward half at the first. Every
    summary reads only a case's own steps (padding is masked), so a case gives the same output alone
    as in a batch of longer ones.

    ``forward(x, lengths)``: ``x`` (B, T, input_size), ``lengths`` (B,) -> (B, outputs).

    >>> net = PooledRNN(3, 2, hidden_size=8)
    >>> tuple(net(torch.randn(4, 9, 3), torch.tensor([9, 5, 2, 1])).shape)
    (4, 2)
    """

    def __init__(self, input_size: int, outputs: int, hidden_size: int = 64, *, num_layers: int = 1,
                 cell: str = "gru", pooling: str = "meanmax", dropout: float = 0.2, dtype=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"PooledRNN: pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if cell not in CELLS:
            raise ValueError(f"PooledRNN: cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.pooling, self.hidden_size = pooling, hidden_size
        self.rnn = CELLS[cell](input_size, hidden_size, num_layers, bidirectional=True,
                               dropout=dropout if num_layers > 1 else 0.0, batch_first=True, dtype=dtype)
        width = 2 * hidden_size
        if pooling == "attention":
            self.score = nn.Sequential(nn.Linear(width, hidden_size, dtype=dtype), nn.Tanh(),
                                       nn.Linear(hidden_size, 1, bias=False, dtype=dtype))
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(width if pooling == "last" else 2 * width, outputs, dtype=dtype)

    def summarize(self, h: Tensor, lengths: Tensor) -> Tensor:
        """``h`` (B, T, 2H) -> (B, 2H) or (B, 4H), reading each case's first ``lengths`` steps."""
        batch, steps, _ = h.shape
        lengths = lengths.to(h.device)
        if self.pooling == "last":
            forward = h[torch.arange(batch, device=h.device), lengths - 1, : self.hidden_size]
            return torch.cat([forward, h[:, 0, self.hidden_size:]], -1)
        valid = (torch.arange(steps, device=h.device) < lengths.unsqueeze(1)).unsqueeze(-1)   # (B, T, 1)
        peak = h.masked_fill(~valid, float("-inf")).amax(1)
        if self.pooling == "meanmax":
            return torch.cat([h.sum(1) / lengths.unsqueeze(1).to(h.dtype), peak], -1)
        weights = torch.softmax(self.score(h).masked_fill(~valid, float("-inf")), 1)         # (B, T, 1)
        return torch.cat([(weights * h).sum(1), peak], -1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(x, lengths=lengths)                                   # (B, T, 2H), zero past each end
        return self.readout(self.dropout(self.summarize(h, lengths)))
