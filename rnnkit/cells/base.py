"""The cell contract: one transition ``s_t = f_s(s_{t-1}, x_t)`` plus ``y_t = f_o(s_t)``.

A cell is a single, batched time step. Runners (:mod:`rnnkit.engines`) carry it
through time and never ask which cell they run; they only use this contract:

- ``initial_state(batch_size, *, device=None, dtype=None) -> State``
- ``forward(x_t, state) -> State``         one step, ``x_t`` is ``(B, input_size)``
- ``output(state) -> Tensor``              ``(B, output_size)``, what a layer emits

and optional capabilities that faster engines look for:

- ``project_inputs(x) -> Tensor``  the input part of the update for every step at
  once (one GEMM over ``(B, T, input_size)``), and ``step(projected_t, state)``,
  the recurrent part. When a cell defines both, ``forward`` is derived from them.
- ``native_mode() -> str | None``  the name of a fused torch kernel (``"LSTM"``,
  ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``) that computes exactly this cell, with
  weights laid out as ``torch.nn`` lays them out (the ``native`` engine).
- ``fused_kernel() -> str | None``  the name of the kernel of :mod:`rnnkit.engines.fused`
  that computes exactly this cell (``"lstm"``, ``"gru"``, ...), and ``fused_parameters()``,
  everything that kernel computes with, as the frozen record of its family
  (:mod:`rnnkit.cells.fused`): besides ``output``, the kernels read nothing else of the cell.
- ``linear_coefficients(x) -> (A, b)``  the update as ``A_t s + b_t`` for every step at
  once, for a cell linear in its state (the ``scan`` engine).

A capability describes the maths of the class that defines it. A subclass that rewrites
any of the methods in :data:`MATHS` loses every capability it inherits (unless it defines
the capability again itself), so that no fast engine runs a cell whose equations it
does not know: such a cell runs on the ``loop`` engine, which only calls ``forward``.

A ``State`` is a tensor or a tuple of tensors (LSTM's ``(h, c)``), each ``(B, size)``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Tuple, Union

import torch
from torch import Tensor, nn

from .._arguments import check_int
from .._state import State, state_tensors
from .fused import GateParameters

__all__ = ["Cell", "State", "map_state", "state_tensors", "state_where", "MATHS", "CAPABILITIES",
           "recurrent_mask", "ACTIVATIONS", "spectral_radius"]


def map_state(fn: Callable[..., Tensor], *states: State) -> State:
    """Apply ``fn`` component-wise to one or more states of the same structure."""
    if isinstance(states[0], Tensor):
        return fn(*states)
    return tuple(fn(*parts) for parts in zip(*states))


def state_where(keep_new: Tensor, new: State, old: State) -> State:
    """Per batch row, take ``new`` where ``keep_new`` (B,) is true, else ``old``."""
    mask = keep_new.unsqueeze(-1)
    return map_state(lambda n, o: torch.where(mask, n, o), new, old)


# the methods that say what a cell computes, and the capabilities that describe it to fast engines
MATHS = ("forward", "step", "project_inputs", "output", "_recur", "_recurrent_input", "_recurrent_norm",
         "_project", "recurrent_weights", "alpha")
CAPABILITIES = ("native_mode", "fused_kernel", "linear_coefficients", "run_masks")


def _unavailable(self, *args, **kwargs):
    """A capability a subclass lost by rewriting the maths: no fast engine runs it."""
    return None


# (cell, mask) of every open recurrent_mask block, innermost last. A plain list, not a ContextVar:
# torch.compile traces reading it (a ContextVar broke the graph at every step). A block only
# affects its own cell, so runs of different models in different threads do not meet here.
_RECURRENT_MASKS: list = []


def _mask_of(cell):
    for entry in reversed(_RECURRENT_MASKS):
        if entry[0] is cell:
            return entry[1]
    return None


@contextlib.contextmanager
def recurrent_mask(cell, mask: Tensor):
    """Within the block, ``cell`` multiplies ``h`` by ``mask`` (B, H) where ``h`` enters ``weight_hh``
    (variational hidden dropout, :class:`rnnkit.regularizers.VariationalDropout`); an enclosing
    block's mask for the same cell multiplies in. Nothing is written into the cell."""
    outer = _mask_of(cell)
    entry = (cell, mask if outer is None else outer * mask)
    _RECURRENT_MASKS.append(entry)
    try:
        yield
    finally:
        for i in range(len(_RECURRENT_MASKS) - 1, -1, -1):
            if _RECURRENT_MASKS[i] is entry:
                del _RECURRENT_MASKS[i]
                break


class Cell(nn.Module):
    """Base class of every recurrent cell.

    Subclasses set ``input_size``, ``hidden_size``, ``state_sizes`` (an ``int`` for
    a one-tensor state, a tuple of ints for a tuple state) and, if the emitted
    vector is not the hidden state, ``output_size``. They implement either
    ``forward`` or the pair ``project_inputs``/``step``.
    """

    input_size: int
    hidden_size: int
    state_sizes: Union[int, Tuple[int, ...]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A capability describes the maths of the class that defines it: when a class between this
        # one and that owner (mixins included) rewrites the maths, the capability is lost here.
        for capability in CAPABILITIES:
            mro = cls.__mro__
            owner = next((i for i, klass in enumerate(mro) if capability in klass.__dict__), None)
            if owner is None or mro[owner] is Cell or mro[owner].__dict__[capability] in (None, _unavailable):
                continue                                          # nothing to lose
            if any(name in klass.__dict__ for klass in mro[:owner] for name in MATHS):
                setattr(cls, capability, None if capability == "linear_coefficients" else _unavailable)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    # ----- contract -------------------------------------------------------
    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Zeros of the right structure: ``(B, size)`` per state tensor."""
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        sizes = self.state_sizes
        if isinstance(sizes, int):
            return torch.zeros(batch_size, sizes, device=device, dtype=dtype)
        return tuple(torch.zeros(batch_size, s, device=device, dtype=dtype) for s in sizes)

    def forward(self, x_t: Tensor, state: State) -> State:
        return self.step(self.project_inputs(x_t), state)

    def output(self, state: State) -> Tensor:
        return state if isinstance(state, Tensor) else state[0]

    def native_mode(self) -> str | None:
        return None

    def fused_kernel(self) -> str | None:
        return None

    def fused_parameters(self):
        """What the kernel ``fused_kernel()`` names computes with: a record of :mod:`rnnkit.cells.fused`."""
        return None

    def begin_sequence(self, batch_size: int, steps: int, *, device=None, dtype=None) -> None:
        """Called once per run, before the first step: where per-sequence randomness is drawn.

        The regularizers of :mod:`rnnkit.regularizers` draw their dropout and zoneout
        masks here, so that every engine sees the same masks for the whole sequence.
        A plain cell has nothing to draw.
        """

    # ----- optional capabilities -------------------------------------------
    def has_projection(self) -> bool:
        """True when the cell splits its update into ``project_inputs`` + ``step``."""
        return type(self).project_inputs is not Cell.project_inputs

    def project_inputs(self, x: Tensor) -> Tensor:  # pragma: no cover - documented hook
        raise NotImplementedError(f"{type(self).__name__} does not define project_inputs")

    def step(self, projected_t: Tensor, state: State) -> State:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not define step")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class GatedWeightsMixin:
    """Weights of cells whose update is ``num_chunks`` stacked affine maps.

    Creates ``weight_ih`` ``(num_chunks·H, input_size)``, ``weight_hh``
    ``(num_chunks·H, H)`` and, with ``bias``, ``bias_ih`` and ``bias_hh`` of
    ``(num_chunks·H,)`` — the layout of ``torch.nn.RNN/LSTM/GRU``, so their
    state dicts load unchanged. Initialised ``U(-1/√H, 1/√H)`` like torch.
    """

    def _make_weights(self, input_size: int, hidden_size: int, num_chunks: int,
                      bias: bool, device=None, dtype=None) -> None:
        kw = {"device": device, "dtype": dtype}
        rows = num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
            self.bias_hh = nn.Parameter(torch.empty(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.bias = bias

    def _init_uniform(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        with torch.no_grad():
            for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
                if p is not None:
                    p.uniform_(-bound, bound)

    def _set_chunk_bias(self, chunk: int, value: float) -> None:
        """Start gate ``chunk``'s total bias (``bias_ih + bias_hh``) at ``value``."""
        rows = slice(chunk * self.hidden_size, (chunk + 1) * self.hidden_size)
        with torch.no_grad():
            self.bias_ih[rows] = value
            self.bias_hh[rows] = 0.0

    def _project(self, x: Tensor) -> Tensor:
        return torch.nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def _recurrent_input(self, h: Tensor) -> Tensor:
        """What enters ``weight_hh``: ``h``, times the variational dropout mask of an enclosing
        :func:`recurrent_mask` block for this cell."""
        mask = _mask_of(self) if _RECURRENT_MASKS else None
        return h if mask is None else h * mask

    def _recur(self, h: Tensor) -> Tensor:
        return torch.nn.functional.linear(self._recurrent_input(h), self.weight_hh, self.bias_hh)

    def fused_parameters(self) -> GateParameters:
        """The gate blocks as the fused kernels read them (:class:`~rnnkit.cells.fused.GateParameters`)."""
        return GateParameters(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self._layer_norms())

    def _layer_norms(self):
        return None

    def flat_weights(self) -> list:
        """Weights in the order torch's fused kernels take them."""
        ws = [self.weight_ih, self.weight_hh]
        if self.bias:
            ws += [self.bias_ih, self.bias_hh]
        return ws


def check_sizes(owner: str, **sizes: int) -> None:
    for name, value in sizes.items():
        check_int(owner, name, value)


# the pointwise activations cells take by name (the fused engine differentiates the same table)
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "softplus": torch.nn.functional.softplus,
               "sigmoid": torch.sigmoid, "identity": lambda x: x}


def resolve_activation(owner: str, name: str, allowed=("tanh", "relu")) -> Callable[[Tensor], Tensor]:
    if name not in allowed:
        raise ValueError(f"{owner}: unknown nonlinearity {name!r}; choose one of {sorted(allowed)}")
    return ACTIVATIONS[name]


def spectral_radius(weight: Tensor) -> float:
    """Largest ``|eigenvalue|`` of a square matrix, computed in float64.

    >>> spectral_radius(torch.tensor([[0.0, 2.0], [0.5, 0.0]]))
    1.0
    """
    return torch.linalg.eigvals(weight.detach().to(torch.float64)).abs().max().item()


