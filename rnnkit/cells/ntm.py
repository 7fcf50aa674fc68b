r"""The neural Turing machine's cell (Graves, Wayne & Danihelka 2014, arXiv:1410.5401).

An LSTM controller talks to an external memory :math:`M_t` (``memory_slots`` rows
:math:`N` of ``memory_width`` :math:`M`) through heads. Each head produces a
weighting :math:`w_t` over the rows, by content and then by location:

.. math::
    w^c_t(i) &= \frac{\exp(\beta_t K[k_t, M_t(i)])}{\sum_j \exp(\beta_t K[k_t, M_t(j)])},
        \qquad K[u, v] = \frac{u \cdot v}{\max(\lVert u\rVert \lVert v\rVert, \epsilon)}  && (5, 6) \\
    w^g_t &= g_t w^c_t + (1 - g_t) w_{t-1}                                           && (7) \\
    \tilde w_t(i) &= \sum_{j} w^g_t(j)\, s_t(i - j) \quad (\text{indices mod } N)   && (8) \\
    w_t(i) &= \tilde w_t(i)^{\gamma_t} \big/ \textstyle\sum_j \tilde w_t(j)^{\gamma_t}  && (9)

A read head returns :math:`r_t = \sum_i w_t(i) M_t(i)` (2); a write head erases,
then adds: :math:`\tilde M_t(i) = M_{t-1}(i) \odot [1 - w_t(i) e_t]` (3),
:math:`M_t(i) = \tilde M_t(i) + w_t(i) a_t` (4). The equation numbers are the paper's.

The maths are plain functions (:func:`content_weighting`, :func:`circular_shift`,
:func:`sharpen`, :func:`address`, :func:`read_memory`, :func:`write_memory`);
:class:`NTMCell` holds the parameters and is an ordinary rnnkit cell, so
:class:`rnnkit.Recurrent` runs it; :class:`rnnkit.models.NeuralTuringMachine` adds
the loss of the copy task, which :func:`rnnkit.data.synthetic.copy_task` generates.
"""
from __future__ import annotations

from numbers import Real
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._arguments import check_int
from .base import Cell, State, check_sizes
from .lstm import LSTMCell

__all__ = ["NTMCell", "NTMStateView", "content_weighting", "circular_shift", "sharpen", "address", "read_memory",
           "write_memory"]

EPSILON = 1e-8


# ----- addressing and memory access (pure functions) ----------------------------------
def content_weighting(memory: Tensor, key: Tensor, strength: Tensor, eps: float = EPSILON) -> Tensor:
    r"""Content addressing: :math:`\mathrm{softmax}_i(\beta\, K[k, M(i)])` with cosine similarity ``K``.

    Shapes: ``memory`` (B, N, M), ``key`` (B, H, M), ``strength`` :math:`\beta` (B, H)
    -> (B, H, N). ``eps`` bounds the denominator below, so an all-zero key or row
    gets similarity 0 instead of NaN; other similarities are exact.

    >>> memory = torch.tensor([[[1., 0.], [0., 1.]]])
    >>> content_weighting(memory, torch.tensor([[[1., 0.]]]), torch.tensor([[0.]]))
    tensor([[[0.5000, 0.5000]]])
    """
    dot = key @ memory.transpose(-1, -2)                                          # (B, H, N)
    norms = key.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(-2)  # (B, H, N)
    return torch.softmax(strength.unsqueeze(-1) * dot / norms.clamp_min(eps), dim=-1)


def circular_shift(weights: Tensor, shift: Tensor) -> Tensor:
    r"""Location addressing: circular convolution :math:`\tilde w(i) = \sum_k s(k)\, w(i - k)`.

    ``shift`` (..., 2S+1) is a distribution over the offsets :math:`k = -S, \dots, S`
    (entry ``S + k``); ``weights`` (..., N) -> (..., N). Offset +1 moves the focus one
    row forward, and the last row wraps round to the first.

    >>> circular_shift(torch.tensor([0., 0., 1.]), torch.tensor([0., 0., 1.]))
    tensor([1., 0., 0.])
    """
    if shift.shape[-1] % 2 != 1:
        raise ValueError(f"circular_shift: expected an odd number of shift offsets (2·shift_range + 1) "
                         f"in the last dimension, got {shift.shape[-1]}")
    reach = shift.shape[-1] // 2
    rolled = torch.stack([weights.roll(k, dims=-1) for k in range(-reach, reach + 1)], dim=-1)  # (..., N, 2S+1)
    return (rolled * shift.unsqueeze(-2)).sum(-1)


def sharpen(weights: Tensor, sharpness: Tensor, eps: float = EPSILON) -> Tensor:
    r"""Sharpening :math:`w(i)^\gamma / \sum_j w(j)^\gamma`: ``weights`` (..., N), ``sharpness`` (...,).

    The weights are first divided by their largest entry (which leaves the result
    unchanged) so that :math:`w^\gamma` cannot underflow to all zeros for a large
    :math:`\gamma`; ``eps`` bounds both divisors below (only an all-zero weighting reaches it).

    >>> sharpen(torch.tensor([0.2, 0.8]), torch.tensor(2.))
    tensor([0.0588, 0.9412])
    """
    scaled = weights / weights.amax(-1, keepdim=True).clamp_min(eps)
    powered = scaled.pow(sharpness.unsqueeze(-1))
    return powered / powered.sum(-1, keepdim=True).clamp_min(eps)


def address(memory: Tensor, previous: Tensor, key: Tensor, strength: Tensor, gate: Tensor, shift: Tensor,
            sharpness: Tensor) -> Tensor:
    r"""The full addressing of Graves et al. (eqs. 5–9): content, interpolation, shift, sharpening.

    Shapes: ``memory`` (B, N, M); ``previous`` weighting :math:`w_{t-1}` (B, H, N);
    ``key`` (B, H, M); ``strength`` :math:`\beta`, ``gate`` :math:`g` and
    ``sharpness`` :math:`\gamma` (B, H); ``shift`` :math:`s` (B, H, 2S+1) -> (B, H, N).
    """
    gate = gate.unsqueeze(-1)
    interpolated = gate * content_weighting(memory, key, strength) + (1 - gate) * previous
    return sharpen(circular_shift(interpolated, shift), sharpness)


def read_memory(memory: Tensor, weights: Tensor) -> Tensor:
    r"""Read :math:`r = \sum_i w(i) M(i)`: ``memory`` (B, N, M), ``weights`` (B, R, N) -> (B, R, M)."""
    return weights @ memory


def write_memory(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    r"""Erase, then add: :math:`M(i) \prod_h [1 - w_h(i) e_h] + \sum_h w_h(i) a_h`.

    Shapes: ``memory`` (B, N, M); ``weights`` (B, W, N); ``erase`` and ``add``
    (B, W, M) -> (B, N, M). With several write heads all erasures come before all
    additions; each kind commutes, so the head order does not matter (Graves et al. §3.2).

    >>> write_memory(torch.ones(1, 2, 2), torch.tensor([[[1., 0.]]]),
    ...              torch.tensor([[[1., 0.]]]), torch.tensor([[[5., 5.]]]))
    tensor([[[5., 6.],
             [1., 1.]]])
    """
    keep = torch.prod(1 - weights.unsqueeze(-1) * erase.unsqueeze(-2), dim=1)     # (B, N, M)
    return memory * keep + weights.transpose(1, 2) @ add


# ----- the cell -------------------------------------------------------------------------
class NTMStateView(NamedTuple):
    """An :class:`NTMCell` state with its parts in their natural shapes."""

    h: Tensor               # (B, controller_size)
    c: Tensor               # (B, controller_size)
    memory: Tensor          # (B, memory_slots, memory_width)
    read_weights: Tensor    # (B, read_heads, memory_slots)
    write_weights: Tensor   # (B, write_heads, memory_slots)
    reads: Tensor           # (B, read_heads, memory_width)


class NTMCell(Cell):
    r"""Neural Turing machine step (Graves et al. 2014) with an LSTM controller, as an rnnkit cell.

    One step, from :math:`x_t` and the state at :math:`t-1`:

    1. the controller (an :class:`~rnnkit.cells.LSTMCell`) reads :math:`[x_t, r_{t-1}]`;
    2. a linear map of its :math:`h_t` gives every head its key :math:`k`, key strength
       :math:`\beta = \mathrm{softplus}(\cdot)`, gate :math:`g = \sigma(\cdot)`, shift
       :math:`s = \mathrm{softmax}(\cdot)` over :math:`2S+1` offsets and sharpness
       :math:`\gamma = 1 + \mathrm{softplus}(\cdot)`; write heads also an erase vector
       :math:`e = \sigma(\cdot)` and an add vector :math:`a = \tanh(\cdot)` (bounded,
       so memory stays of order one; the paper leaves it open);
    3. the write heads address :math:`M_{t-1}` and write (erase, then add), giving :math:`M_t`;
    4. the read heads address :math:`M_t` and read :math:`r_t` (so a read can see this
       step's write).

    The output is :math:`y_t = W_o [h_t, r_t] + b_o` (``output_size``; logits for the
    copy task). It is recomputed from the state by ``output(state)``, not stored.

    State: a tuple ``(h, c, memory, read_weights, write_weights, reads)`` of (B, size)
    tensors with sizes ``(C, C, N·M, R·N, W·N, R·M)`` (``state_sizes``); the memory
    and weightings are flattened row-major — :meth:`view_state` unflattens them. The
    initial memory is the constant ``memory_init`` everywhere (Collier & Beel 2018 found
    a small constant to train faster and more reliably than random or learned
    initialisations); every initial weighting is focused on row 0; initial reads are
    what those weightings read; the controller starts at zero.

    Args:
        input_size, output_size: sizes of :math:`x_t` and :math:`y_t`.
        controller_size: hidden size :math:`C` of the LSTM controller (``hidden_size``).
        memory_slots, memory_width: :math:`N` rows of width :math:`M`.
        read_heads, write_heads: :math:`R` and :math:`W`.
        shift_range: :math:`S`, the largest offset a head can shift by in one step.
        memory_init: the value every memory entry starts at.

    >>> import torch, rnnkit
    >>> cell = NTMCell(6, 4, controller_size=16, memory_slots=8, memory_width=5)
    >>> out, state = rnnkit.Recurrent(cell)(torch.randn(2, 7, 6))
    >>> tuple(out.shape), tuple(cell.view_state(state).memory.shape)
    ((2, 7, 4), (2, 8, 5))
    """

    def __init__(self, input_size: int, output_size: int, controller_size: int = 100, memory_slots: int = 128,
                 memory_width: int = 20, read_heads: int = 1, write_heads: int = 1, shift_range: int = 1,
                 memory_init: float = 1e-6, *, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, output_size=output_size, controller_size=controller_size,
                    memory_slots=memory_slots, memory_width=memory_width, read_heads=read_heads,
                    write_heads=write_heads)
        shift_range = check_int(name, "shift_range", shift_range, 0)
        if 2 * shift_range + 1 > memory_slots:
            raise ValueError(f"{name}: shift_range {shift_range} gives {2 * shift_range + 1} offsets, more "
                             f"than the {memory_slots} memory slots, so distinct offsets would land on the "
                             f"same row; use shift_range <= {(memory_slots - 1) // 2}")
        if isinstance(memory_init, bool) or not isinstance(memory_init, Real):
            raise TypeError(f"{name}: memory_init must be a real number, got {type(memory_init).__name__}")
        self.input_size, self.hidden_size, self._output_size = input_size, controller_size, output_size
        self.controller_size, self.memory_slots, self.memory_width = controller_size, memory_slots, memory_width
        self.read_heads, self.write_heads, self.shift_range = read_heads, write_heads, shift_range
        self.memory_init = float(memory_init)
        self.state_sizes = (controller_size, controller_size, memory_slots * memory_width,
                            read_heads * memory_slots, write_heads * memory_slots, read_heads * memory_width)
        # per head: key (M), strength, gate, shift (2S+1), sharpness; write heads add erase (M) and add (M)
        self._read_split = [memory_width, 1, 1, 2 * shift_range + 1, 1]
        self._write_split = self._read_split + [memory_width, memory_width]
        kw = {"device": device, "dtype": dtype}
        self.controller = LSTMCell(input_size + read_heads * memory_width, controller_size, **kw)
        self.heads = nn.Linear(controller_size, read_heads * sum(self._read_split)
                               + write_heads * sum(self._write_split), **kw)
        self.output_layer = nn.Linear(controller_size + read_heads * memory_width, output_size, **kw)

    @property
    def output_size(self) -> int:
        return self._output_size

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        ref = self.output_layer.weight
        kw = {"device": device if device is not None else ref.device,
              "dtype": dtype if dtype is not None else ref.dtype}
        n, m, r, w = self.memory_slots, self.memory_width, self.read_heads, self.write_heads
        controller = torch.zeros(batch_size, self.controller_size, **kw)
        memory = torch.full((batch_size, n * m), self.memory_init, **kw)
        focus = F.one_hot(torch.zeros((), dtype=torch.long, device=kw["device"]), n).to(kw["dtype"])  # (N,)
        reads = torch.full((batch_size, r * m), self.memory_init, **kw)     # row 0 of the constant memory
        return (controller, controller.clone(), memory, focus.repeat(batch_size, r),
                focus.repeat(batch_size, w), reads)

    def view_state(self, state: State) -> NTMStateView:
        """The state's parts reshaped: memory (B, N, M), weightings (B, heads, N), reads (B, R, M)."""
        h, c, memory, read_weights, write_weights, reads = state
        b, n, m = h.shape[0], self.memory_slots, self.memory_width
        return NTMStateView(h, c, memory.reshape(b, n, m), read_weights.reshape(b, self.read_heads, n),
                            write_weights.reshape(b, self.write_heads, n), reads.reshape(b, self.read_heads, m))

    def _head_parameters(self, raw: Tensor, split: list) -> list:
        """Constrain a head's raw outputs (B, H, P): key, β, g, s, γ[, e, a]."""
        key, strength, gate, shift, sharpness, *erase_add = raw.split(split, dim=-1)
        params = [key, F.softplus(strength.squeeze(-1)), torch.sigmoid(gate.squeeze(-1)),
                  torch.softmax(shift, dim=-1), 1 + F.softplus(sharpness.squeeze(-1))]
        if erase_add:
            params += [torch.sigmoid(erase_add[0]), torch.tanh(erase_add[1])]
        return params

    def forward(self, x_t: Tensor, state: State) -> State:
        view = self.view_state(state)
        batch = x_t.shape[0]
        h, c = self.controller(torch.cat([x_t, view.reads.flatten(1)], dim=-1), (view.h, view.c))
        raw_read, raw_write = self.heads(h).split(
            [self.read_heads * sum(self._read_split), self.write_heads * sum(self._write_split)], dim=-1)
        key, strength, gate, shift, sharpness, erase, add = self._head_parameters(
            raw_write.view(batch, self.write_heads, -1), self._write_split)
        write_weights = address(view.memory, view.write_weights, key, strength, gate, shift, sharpness)
        memory = write_memory(view.memory, write_weights, erase, add)                 # (B, N, M)
        read_weights = address(memory, view.read_weights, *self._head_parameters(
            raw_read.view(batch, self.read_heads, -1), self._read_split))
        reads = read_memory(memory, read_weights)                                     # (B, R, M)
        return h, c, memory.flatten(1), read_weights.flatten(1), write_weights.flatten(1), reads.flatten(1)

    def output(self, state: State) -> Tensor:
        return self.output_layer(torch.cat([state[0], state[5]], dim=-1))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.output_size}, controller_size={self.controller_size}, "
                f"memory_slots={self.memory_slots}, memory_width={self.memory_width}, "
                f"read_heads={self.read_heads}, write_heads={self.write_heads}, shift_range={self.shift_range}")


