"""Attention over a sequence of encoder states: additive (Bahdanau et al. 2015) or multiplicative
(Luong et al. 2015), masked by the source lengths; what :class:`rnnkit.models.Seq2Seq` reads with."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..cells.base import check_sizes

__all__ = ["Attention", "ATTENTIONS"]

ATTENTIONS = (None, "additive", "multiplicative")


class Attention(nn.Module):
    r"""Attention over a memory of ``values`` (B, S, value_size), masked by lengths.

    .. math::
        \text{additive:}\ \ e_j = v^\top \tanh(W_q q + W_k m_j) \qquad
        \text{multiplicative:}\ \ e_j = q^\top W m_j \\
        \alpha = \mathrm{softmax}(e) \ \text{over valid } j \text{ (padding gets exactly 0)}, \qquad
        a = \textstyle\sum_j \alpha_j m_j

    ``keys = prepare(values)`` computes :math:`W_k m` (or :math:`W m`) once per
    source; ``forward(query, keys, values, mask)`` takes ``query`` (B, query_size)
    or (B, T, query_size) and ``mask`` (B, S) bool, and returns ``(a, alpha)`` of
    shapes (B[, T], value_size) and (B[, T], S).

    >>> import torch
    >>> attend = Attention(4, 6, "additive")
    >>> values, mask = torch.randn(2, 5, 6), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    >>> context, weights = attend(torch.randn(2, 4), attend.prepare(values), values, mask)
    >>> tuple(context.shape), weights[1, 3:].tolist()
    ((2, 6), [0.0, 0.0])
    """

    def __init__(self, query_size: int, value_size: int, kind: str = "additive",
                 attention_size: Optional[int] = None):
        super().__init__()
        name = type(self).__name__
        if kind not in ATTENTIONS[1:]:
            raise ValueError(f"{name}: kind must be 'additive' or 'multiplicative', got {kind!r}")
        attention_size = query_size if attention_size is None else attention_size
        check_sizes(name, query_size=query_size, value_size=value_size, attention_size=attention_size)
        self.kind = kind
        if kind == "additive":
            self.query_projection = nn.Linear(query_size, attention_size, bias=False)
            self.key_projection = nn.Linear(value_size, attention_size)
            self.energy = nn.Linear(attention_size, 1, bias=False)
        else:
            self.key_projection = nn.Linear(value_size, query_size, bias=False)

    def prepare(self, values: Tensor) -> Tensor:
        return self.key_projection(values)                                   # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor):
        one_step = query.dim() == 2
        q = query.unsqueeze(1) if one_step else query                         # (B, T, Q)
        if self.kind == "additive":
            hidden = torch.tanh(self.query_projection(q).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
            scores = self.energy(hidden).squeeze(-1)                           # (B, T, S)
        else:
            scores = q @ keys.transpose(1, 2)                                  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)                                # exp(-inf) = 0 exactly
        context = weights @ values                                             # (B, T, value_size)
        return (context.squeeze(1), weights.squeeze(1)) if one_step else (context, weights)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
