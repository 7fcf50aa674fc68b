r"""Layer-normalized LSTM and GRU cells (Ba, Kiros & Hinton 2016).

Layer normalization of a vector ``v`` of ``n`` features, per batch row:

.. math::  \mathrm{LN}(v;\, \gamma, \beta) = \gamma \odot \frac{v - \mu(v)}{\sqrt{\sigma^2(v) + \epsilon}} + \beta,
           \qquad \mu(v) = \tfrac1n \textstyle\sum_k v_k,\quad \sigma^2(v) = \tfrac1n \sum_k (v_k - \mu)^2

The input part ``W_ih x_t`` and the recurrent part ``W_hh h_{t-1}`` of the gate
pre-activations are normalized separately, each over all its stacked gates
(4H for the LSTM, 3H for the GRU), as in Ba et al.; the LSTM also normalizes
its cell state before the output ``tanh``. The shifts of the two gate
normalizations are ``bias_ih`` and ``bias_hh``, so the weights keep the names and
layout of ``torch.nn.LSTM``/``GRU``; the gains are ``ln_input_weight``,
``ln_hidden_weight`` (and ``ln_cell_weight``, ``ln_cell_bias`` for the cell state).
Gains start at one and shifts at zero (but the LSTM's forget-gate shift, see
``forget_bias``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._arguments import check_positive
from .base import Cell, GatedWeightsMixin, check_sizes
from .fused import LayerNormParameters

__all__ = ["LayerNormLSTMCell", "LayerNormGRUCell"]


class _LayerNormGates(GatedWeightsMixin):
    """Weights of a gated cell whose input and recurrent parts are each layer-normalized."""

    def _make_layer_norm_weights(self, input_size: int, hidden_size: int, num_chunks: int, bias: bool,
                                 eps: float, device, dtype) -> None:
        name = type(self).__name__
        self.eps = check_positive(name, "eps", eps)
        self._make_weights(input_size, hidden_size, num_chunks, bias, device, dtype)
        kw = {"device": device, "dtype": dtype}
        self.ln_input_weight = nn.Parameter(torch.ones(num_chunks * hidden_size, **kw))
        self.ln_hidden_weight = nn.Parameter(torch.ones(num_chunks * hidden_size, **kw))

    def _init_layer_norm(self) -> None:
        self._init_uniform()
        with torch.no_grad():
            for p in (self.bias_ih, self.bias_hh):
                if p is not None:
                    p.zero_()
            self.ln_input_weight.fill_(1.0)
            self.ln_hidden_weight.fill_(1.0)

    def project_inputs(self, x: Tensor) -> Tensor:
        a = F.linear(x, self.weight_ih)                                   # (..., G)
        return F.layer_norm(a, a.shape[-1:], self.ln_input_weight, self.bias_ih, self.eps)

    def _layer_norms(self, **cell_norm) -> LayerNormParameters:
        return LayerNormParameters(self.ln_input_weight, self.ln_hidden_weight, self.eps, **cell_norm)

    def _recurrent_norm(self, h: Tensor) -> Tensor:
        u = F.linear(self._recurrent_input(h), self.weight_hh)            # (B, G)
        return F.layer_norm(u, u.shape[-1:], self.ln_hidden_weight, self.bias_hh, self.eps)


class LayerNormLSTMCell(_LayerNormGates, Cell):
    r"""LSTM with layer normalization (Ba et al. 2016, section 3.1 and appendix).

    .. math::
        [i, f, g, o] &= \mathrm{LN}(W_{ih} x_t;\, \gamma_x, b_{ih}) + \mathrm{LN}(W_{hh} h_{t-1};\, \gamma_h, b_{hh}) \\
        c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
        h_t &= \sigma(o) \odot \tanh(\mathrm{LN}(c_t;\, \gamma_c, \beta_c))

    Both gate normalizations run over all 4H stacked gate pre-activations (gate
    order i, f, g, o as in ``torch.nn.LSTM``); the cell normalization over the H
    units of ``c_t``. The carried cell state ``c_t`` itself is not normalized.
    ``bias=False`` drops every shift (``b_ih``, ``b_hh``, ``β_c``).

    >>> import torch, rnnkit
    >>> from rnnkit.cells.layernorm import LayerNormLSTMCell
    >>> cell = LayerNormLSTMCell(3, 5)
    >>> h, c = cell(torch.randn(2, 3), cell.initial_state(2))
    >>> tuple(h.shape), rnnkit.Recurrent(cell).engine
    ((2, 5), 'fused')
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float | None = 1.0,
                 eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_sizes = (hidden_size, hidden_size)
        self.forget_bias = forget_bias
        self._make_layer_norm_weights(input_size, hidden_size, 4, bias, eps, device, dtype)
        kw = {"device": device, "dtype": dtype}
        self.ln_cell_weight = nn.Parameter(torch.ones(hidden_size, **kw))
        self.ln_cell_bias = nn.Parameter(torch.zeros(hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_layer_norm()
        with torch.no_grad():
            self.ln_cell_weight.fill_(1.0)
            if self.ln_cell_bias is not None:
                self.ln_cell_bias.zero_()
        if self.bias and self.forget_bias is not None:
            self._set_chunk_bias(1, self.forget_bias)        # gate order i, f, g, o

    def fused_kernel(self) -> str:
        return "layernorm-lstm"                # the kernel of rnnkit.engines.fused

    def _layer_norms(self) -> LayerNormParameters:
        return super()._layer_norms(cell_weight=self.ln_cell_weight, cell_bias=self.ln_cell_bias)

    def step(self, projected_t: Tensor, state):
        h, c = state
        i, f, g, o = (projected_t + self._recurrent_norm(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_norm = F.layer_norm(c, c.shape[-1:], self.ln_cell_weight, self.ln_cell_bias, self.eps)
        return torch.sigmoid(o) * torch.tanh(c_norm), c

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.bias}, forget_bias={self.forget_bias}, "
                f"eps={self.eps}")


class LayerNormGRUCell(_LayerNormGates, Cell):
    r"""GRU with layer normalization, in the variant ``torch.nn.GRU`` computes.

    .. math::
        [x_r, x_z, x_n] &= \mathrm{LN}(W_{ih} x_t;\, \gamma_x, b_{ih}) \qquad
        [h_r, h_z, h_n] = \mathrm{LN}(W_{hh} h_{t-1};\, \gamma_h, b_{hh}) \\
        r &= \sigma(x_r + h_r) \qquad z = \sigma(x_z + h_z) \\
        n &= \tanh(x_n + r \odot h_n) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    Each normalization runs over all 3H stacked pre-activations (order r, z, n).

    >>> import torch
    >>> from rnnkit.cells.layernorm import LayerNormGRUCell
    >>> cell = LayerNormGRUCell(3, 5)
    >>> tuple(cell(torch.randn(2, 3), cell.initial_state(2)).shape)
    (2, 5)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, eps: float = 1e-5, *,
                 device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self._make_layer_norm_weights(input_size, hidden_size, 3, bias, eps, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_layer_norm()

    def fused_kernel(self) -> str:
        return "layernorm-gru"                # the kernel of rnnkit.engines.fused

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        x_r, x_z, x_n = projected_t.chunk(3, dim=-1)
        h_r, h_z, h_n = self._recurrent_norm(h).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return n + z * (h - n)                      # = (1 - z) n + z h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, eps={self.eps}"
