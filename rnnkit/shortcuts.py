"""Torch-like multi-layer RNNs: ``rnnkit.LSTM``, ``GRU``, ``ElmanRNN``, ``GatedRNN``, ``LeakyRNN``.

Each one is a :class:`~rnnkit.layers.Stack` of :class:`~rnnkit.layers.Recurrent`
(or :class:`~rnnkit.layers.Bidirectional`) layers over one cell type, with the
argument names, defaults (``batch_first=False``: inputs are (time, batch, features)),
state format and weight names of ``torch.nn.LSTM``: a ``torch.nn.LSTM``/``GRU``/``RNN``
state dict loads directly and gives identical outputs, and ``to_torch()`` goes back.
rnnkit's own layers (:class:`~rnnkit.layers.Recurrent`, :class:`~rnnkit.layers.Stack`)
read (batch, time, features).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ._checks import check_tensor_like
from ._torch_private import sequence_kernels
from .cells import CELLS, ElmanCell, GatedCell, GRUCell, LeakyCell, LSTMCell, ProjectedLSTMCell
from .cells.base import check_sizes, state_tensors
from .engines.native import flatten_cell
from .engines.select import network_kernel
from .layers import Bidirectional, Recurrent, Stack, autocast_state

__all__ = ["LSTM", "GRU", "ElmanRNN", "GatedRNN", "LeakyRNN", "cell_networks"]

_TORCH_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


class _StackedRNN(nn.Module):
    cell_class: type
    state_names: tuple = ("h_0",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, engine: str = "auto", *,
                 batch_first: bool = False, bias: bool = True, residual: bool = False,
                 device=None, dtype=None, cell_wrapper=None, locked_dropout: bool = False, proj_size: int = 0,
                 **cell_options):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first, self.bias = bidirectional, batch_first, bias
        directions = 2 if bidirectional else 1

        if proj_size and self.cell_class is not LSTMCell:
            raise ValueError(f"{name}: proj_size is an LSTM option (torch.nn.LSTM's); {name} has no projection")
        self.proj_size = proj_size
        cell_class = self._cell_class
        if proj_size:
            cell_options["proj_size"] = proj_size

        def runner(size: int, reverse: bool) -> Recurrent:
            cell = cell_class(size, hidden_size, bias=bias, device=device, dtype=dtype, **cell_options)
            if cell_wrapper is not None:        # e.g. a regularizer around every cell
                cell = cell_wrapper(cell)
            return Recurrent(cell, engine, batch_first, reverse, name=name)

        layers = []
        for layer in range(num_layers):
            size = input_size if layer == 0 else (proj_size or hidden_size) * directions
            layers.append(Bidirectional(runner(size, False), runner(size, True))
                          if bidirectional else runner(size, False))
        self.stack = Stack(layers, dropout=dropout, residual=residual, locked=locked_dropout)
        self._register_load_state_dict_pre_hook(_accept_torch_names, with_module=True)

    @property
    def _cell_class(self) -> type:
        return ProjectedLSTMCell if self.proj_size else self.cell_class

    @property
    def output_size(self) -> int:
        return self.stack.output_size

    @property
    def engine(self) -> str:
        return self._runners()[0].engine

    def _runners(self) -> list:
        return [m for m in self.stack.modules() if isinstance(m, Recurrent)]

    def forward(self, x: Tensor, state=None, lengths=None):
        """``x`` (T, B, input_size), or (B, T, input_size) with ``batch_first=True``, → ``(outputs,
        final_state)``, the outputs in the input's layout with D·H features.

        States use torch's layout: ``(num_layers·D, B, H)`` per tensor, and
        ``(h, c)`` for the LSTM. ``lengths`` (B,) marks a padded batch. A
        ``PackedSequence`` in gives a ``PackedSequence`` out, as ``torch.nn.LSTM`` does.
        """
        if isinstance(x, PackedSequence):
            return self._packed(x, state, lengths)
        mode = network_kernel(lambda: [runner.cell for runner in self._runners()], x, lengths,
                              training=self.training, residual=self.stack.residual)
        if mode is not None:
            return self._one_kernel(mode, x, state)
        per_layer = None if state is None else self._split(state, x)
        outputs, finals = self.stack(x, per_layer, lengths)
        return outputs, self._merge(finals)

    def _packed(self, packed: PackedSequence, state, lengths):
        if lengths is not None:
            raise ValueError(f"{type(self).__name__}: a PackedSequence carries its lengths; pass no lengths= "
                             f"with it")
        padded, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)   # original order
        out, final = self.forward(padded, state, lengths)
        batch = 0 if self.batch_first else 1
        order = packed.sorted_indices
        if order is not None:
            out, lengths = out.index_select(batch, order.to(out.device)), lengths.index_select(0, order.cpu())
        data = pack_padded_sequence(out, lengths, batch_first=self.batch_first).data
        return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), final

    def flatten_parameters(self) -> None:
        """On CUDA, lay each layer's weights (each direction's) out in one block of memory, so that
        cuDNN takes them as they are instead of copying them at every call (and warning that they are
        "not part of single contiguous chunk of memory"), as ``torch.nn.LSTM.flatten_parameters()``
        does. Done again after ``.to()``/``.cuda()``, and by the native engine itself when the weights
        have moved; nothing to do on the CPU. The parameters stay the same tensors, with the same values."""
        for runner in self._runners():
            flatten_cell(runner.cell)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)            # .to(), .cuda(), .half(): the weights moved
        self.flatten_parameters()
        return result

    def _one_kernel(self, mode: str, x: Tensor, state):
        directions = 2 if self.bidirectional else 1
        batch = x.shape[0 if self.batch_first else 1]
        if state is None:
            h0 = x.new_zeros(self.num_layers * directions, batch, self.proj_size or self.hidden_size)
            state = (h0, x.new_zeros(self.num_layers * directions, batch, self.hidden_size)) \
                if len(self.state_names) == 2 else h0
        weights = [w for runner in self._runners() for w in runner.cell.flat_weights()]
        out, *final = sequence_kernels[mode](x, state, weights, self.bias, self.num_layers, 0.0, False,
                                             self.bidirectional, self.batch_first)
        return out, (tuple(final) if len(final) == 2 else final[0])

    # torch layout (L·D, B, H) <-> one cell state per layer and direction
    def _split(self, state, x: Tensor) -> list:
        name, count = type(self).__name__, len(self.state_names)
        tensors = state_tensors(state) if isinstance(state, (Tensor, tuple, list)) else ()
        if len(tensors) != count or (count == 1) != isinstance(state, Tensor):
            want = "a tensor" if count == 1 else f"a tuple ({', '.join(self.state_names)})"
            raise TypeError(f"{name}: expected the initial state to be {want}")
        directions = 2 if self.bidirectional else 1
        unbatched = x.dim() == 2 if isinstance(x, Tensor) else False
        batch = () if unbatched else (x.shape[0 if self.batch_first else 1],)
        sizes = (self.proj_size or self.hidden_size, self.hidden_size)      # h (projected), c
        tensors = autocast_state(tuple(tensors), x)
        for label, tensor, size in zip(self.state_names, tensors, sizes):
            shape = (self.num_layers * directions, *batch, size)
            check_tensor_like(name, f"hidden state {label}", tensor, shape, x)
        cells = [tuple(t[i] for t in tensors) for i in range(self.num_layers * directions)]
        cells = [c[0] if count == 1 else c for c in cells]
        if directions == 1:
            return cells
        return [(cells[2 * layer], cells[2 * layer + 1]) for layer in range(self.num_layers)]

    def _merge(self, finals: list):
        flat = [s for f in finals for s in (f if self.bidirectional else (f,))]
        parts = [state_tensors(s) for s in flat]
        stacked = tuple(torch.stack([p[k] for p in parts]) for k in range(len(self.state_names)))
        return stacked[0] if len(stacked) == 1 else stacked

    @classmethod
    def from_torch(cls, module: nn.Module, engine: str = "auto"):
        """Build the rnnkit twin of a ``torch.nn`` RNN, with the same weights."""
        torch_class = {LSTM: nn.LSTM, GRU: nn.GRU, ElmanRNN: nn.RNN}.get(cls)
        if torch_class is None or type(module) is not torch_class:
            raise TypeError(f"{cls.__name__}.from_torch: expected a torch.nn."
                            f"{torch_class.__name__ if torch_class else 'LSTM/GRU/RNN'}, "
                            f"got {type(module).__name__}")
        extra = {"nonlinearity": module.nonlinearity} if cls is ElmanRNN else {}
        if getattr(module, "proj_size", 0):
            extra["proj_size"] = module.proj_size
        ref = next(module.parameters())
        twin = cls(module.input_size, module.hidden_size, module.num_layers, module.bidirectional,
                   module.dropout, engine, batch_first=module.batch_first, bias=module.bias,
                   device=ref.device, dtype=ref.dtype, **extra)
        twin.load_state_dict(module.state_dict())
        return twin.train(module.training)

    def _torch_class(self, owner: str):
        """torch.nn's class for this network, after checking that it computes exactly what this one does."""
        name = f"{type(self).__name__}.{owner}"
        torch_class = {LSTM: nn.LSTM, GRU: nn.GRU, ElmanRNN: nn.RNN}.get(type(self))
        if torch_class is None:
            raise TypeError(f"{name}: torch.nn has no {type(self).__name__}; LSTM, GRU and ElmanRNN have "
                            f"torch.nn twins")
        if self.stack.residual or self.stack.locked:
            raise ValueError(f"{name}: torch.nn.{torch_class.__name__} has no "
                             f"{'residual connections' if self.stack.residual else 'locked dropout'}; "
                             f"build this network without it")
        for runner in self._runners():
            if type(runner.cell) is not self._cell_class or runner.cell.native_mode() is None:
                raise ValueError(f"{name}: its cells ({type(runner.cell).__name__}) compute something "
                                 f"torch.nn.{torch_class.__name__} does not (a wrapper, layer norm or "
                                 f"another option); only the plain cells have a torch.nn twin")
        return torch_class

    def torch_state_dict(self) -> dict:
        """The weights under torch.nn's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), as
        :meth:`to_torch`'s module (or any torch.nn RNN of the same sizes) loads them."""
        self._torch_class("torch_state_dict")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ()) \
            + (("weight_hr",) if self.proj_size else ())
        state = {}
        for layer, item in enumerate(self.stack.layers):
            pairs = ([(item.forward_layer, ""), (item.backward_layer, "_reverse")] if self.bidirectional
                     else [(item, "")])
            for runner, suffix in pairs:
                for name, weight in zip(names, runner.cell.flat_weights()):
                    state[f"{name}_l{layer}{suffix}"] = weight.detach().clone()
        return state

    def to_torch(self) -> nn.Module:
        """The ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` that computes what this network computes: same
        sizes, weights (copied), dropout, ``batch_first``, device, dtype and training mode."""
        torch_class = self._torch_class("to_torch")
        extra = {"nonlinearity": self._runners()[0].cell.nonlinearity} if torch_class is nn.RNN else {}
        if self.proj_size:
            extra["proj_size"] = self.proj_size
        ref = next(self.parameters())
        module = torch_class(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                             batch_first=self.batch_first, dropout=self.stack.dropout,
                             bidirectional=self.bidirectional, device=ref.device, dtype=ref.dtype, **extra)
        module.load_state_dict(self.torch_state_dict())
        return module.train(self.training)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"{f'proj_size={self.proj_size}, ' if self.proj_size else ''}"
                f"bidirectional={self.bidirectional}, engine={self.engine!r}")


def _accept_torch_names(module, state_dict, prefix, *_):
    """Rename ``weight_ih_l0_reverse``-style keys (torch.nn) to this module's names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        match = _TORCH_KEY.fullmatch(key[len(prefix):])
        if match is None:
            continue
        kind, which, layer, reverse = match.groups()
        if reverse and not module.bidirectional:
            continue          # left under its torch name: strict loading reports it, nothing is overwritten
        where = f"stack.layers.{layer}."
        if module.bidirectional:
            where += "backward_layer." if reverse else "forward_layer."
        state_dict[f"{prefix}{where}cell.{kind}_{which}"] = state_dict.pop(key)


class LSTM(_StackedRNN):
    """Multi-layer LSTM with torch's interface (see :class:`rnnkit.cells.LSTMCell`).

    >>> import torch, rnnkit
    >>> lstm = rnnkit.LSTM(10, 20, num_layers=2, bidirectional=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(7, 3, 10))            # (time, batch, features), as torch.nn
    >>> tuple(out.shape), tuple(h_n.shape)
    ((7, 3, 40), (4, 3, 20))
    """
    cell_class = LSTMCell
    state_names = ("h_0", "c_0")


class GRU(_StackedRNN):
    """Multi-layer GRU with torch's interface (see :class:`rnnkit.cells.GRUCell`)."""
    cell_class = GRUCell


class ElmanRNN(_StackedRNN):
    """Multi-layer Elman RNN, ``torch.nn.RNN``'s twin; ``nonlinearity="tanh"|"relu"``."""
    cell_class = ElmanCell


class GatedRNN(_StackedRNN):
    """Multi-layer simple gated RNN (see :class:`rnnkit.cells.GatedCell`)."""
    cell_class = GatedCell


class LeakyRNN(_StackedRNN):
    """Multi-layer leaky RNN; ``alpha=``, ``learn_alpha=`` go to :class:`rnnkit.cells.LeakyCell`."""
    cell_class = LeakyCell


def cell_networks() -> dict:
    """``{name: network class}`` for the names of :data:`rnnkit.cells.CELLS` that have a torch-like
    multi-layer network here (the cells' one registry decides the names)."""
    by_cell = {network.cell_class: network for network in _StackedRNN.__subclasses__()}
    return {name: by_cell[cell] for name, cell in CELLS.items() if cell in by_cell}
