"""Reservoir cell: the fixed random recurrent layer of an echo state network."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .._arguments import check_number, check_positive
from .._checks import check_input, check_state
from .base import Cell, check_sizes, spectral_radius

__all__ = ["ReservoirCell", "spectral_radius"]

# Below this fraction of non-zero recurrent weights, a CSR matrix-vector product
# beats the dense one on CPU (its cost is proportional to the non-zeros; on two
# cores the two break even near 30 % for 500 units, float64).
_SPARSE_DENSITY = 0.25


def _check_leak_rate(name: str, leak_rate) -> float:
    return check_number(name, "leak_rate", leak_rate, low=0.0, high=1.0, low_closed=False)


def _check_scaling(name: str, what: str, value) -> float:
    return check_number(name, what, value, low=0.0, high_closed=False, what="a finite number >= 0")


_radius = spectral_radius              # the function (ReservoirCell takes a spectral_radius argument)


class ReservoirCell(Cell):
    r"""Leaky tanh units with fixed random weights (Jaeger's echo state reservoir).

    .. math::  h_t = (1 - a)\, h_{t-1} + a \tanh(W_{in} x_t + W h_{t-1} + b)

    Shapes: ``x_t`` (B, X), ``h`` (B, H), ``W_in`` (H, X), ``W`` (H, H), ``b`` (H,).

    - ``W``: a fraction ``sparsity`` of its entries is exactly zero (chosen at
      random, ``round((1 - sparsity)·H²)`` non-zeros drawn from ``U(-1, 1)``), then
      the whole matrix is rescaled so that its largest ``|eigenvalue|`` equals
      ``spectral_radius`` (eigenvalues via ``torch.linalg.eigvals`` in float64).
    - ``W_in = input_scaling · U(-1, 1)``, ``b = bias_scaling · U(-1, 1)``.
    - ``a = leak_rate`` in (0, 1]; ``a = 1`` is the classic non-leaky reservoir.

    The default ``bias_scaling=0.5`` is not zero on purpose: without a bias,
    ``tanh`` is odd and the reservoir maps ``-x`` to ``-h``, so a linear readout
    can only produce odd functions of the input history (plus a constant).
    Series that are not symmetric about zero (Mackey–Glass) then get a readout
    that predicts one step well but drifts off within a few dozen steps in
    closed loop; a small bias breaks the symmetry.

    None of the weights is trained: they are buffers (``weight``, ``weight_in``,
    ``bias``), so they move with ``.to()`` and land in the state dict but never
    receive a gradient and are invisible to optimisers. ``seed`` makes the
    reservoir reproducible without touching the global RNG. Weights made
    elsewhere (another library, a saved run) go in with :meth:`from_weights`.

    Two ways to run it over a sequence compute the same thing:
    ``rnnkit.Recurrent(cell, engine="loop")`` (one :meth:`forward` per step, with
    autograd) and :meth:`run` (no gradients, a tight loop over a precomputed
    input projection, a sparse ``W`` when it pays; what the echo state network
    uses).

    >>> import torch
    >>> cell = ReservoirCell(2, 50, spectral_radius=0.9, seed=0)
    >>> round(spectral_radius(cell.weight), 6)
    0.9
    >>> tuple(cell(torch.randn(4, 2), cell.initial_state(4)).shape)
    (4, 50)
    """

    def __init__(self, input_size: int, hidden_size: int, spectral_radius: float = 0.9,
                 sparsity: float = 0.9, input_scaling: float = 1.0, bias_scaling: float = 0.5,
                 leak_rate: float = 1.0, seed: int | None = None, *, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size)
        spectral_radius = check_positive(name, "spectral_radius", spectral_radius)
        leak_rate = _check_leak_rate(name, leak_rate)
        sparsity = check_number(name, "sparsity", sparsity, low=0.0, high=1.0, high_closed=False,
                                what="a fraction of zero recurrent weights in [0, 1)")
        input_scaling = _check_scaling(name, "input_scaling", input_scaling)
        bias_scaling = _check_scaling(name, "bias_scaling", bias_scaling)

        gen = torch.Generator()
        gen.manual_seed(int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed))
        h = hidden_size
        nonzero = int(round((1.0 - sparsity) * h * h))
        w = torch.zeros(h * h, dtype=torch.float64)
        where = torch.randperm(h * h, generator=gen)[:nonzero]
        w[where] = torch.rand(nonzero, generator=gen, dtype=torch.float64) * 2 - 1
        w = w.view(h, h)
        radius = _radius(w) if nonzero else 0.0
        if radius < 1e-12:
            raise ValueError(f"{name}: the random recurrent matrix ({nonzero} non-zeros for "
                             f"hidden_size={h}, sparsity={sparsity}) has spectral radius 0 and "
                             f"cannot be rescaled to {spectral_radius}; lower sparsity or change seed")
        w = w * (spectral_radius / radius)
        w_in = (torch.rand(h, input_size, generator=gen, dtype=torch.float64) * 2 - 1) * input_scaling
        b = (torch.rand(h, generator=gen, dtype=torch.float64) * 2 - 1) * bias_scaling
        kw = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self._install(w.to(**kw), w_in.to(**kw), b.to(**kw), leak_rate)
        self.spectral_radius, self.sparsity = float(spectral_radius), float(sparsity)
        self.input_scaling, self.bias_scaling, self.seed = input_scaling, bias_scaling, seed

    def _install(self, weight: Tensor, weight_in: Tensor, bias: Tensor, leak_rate: float) -> None:
        self.input_size, self.hidden_size = weight_in.shape[1], weight.shape[0]
        self.state_sizes = self.hidden_size
        self.leak_rate = leak_rate
        self._operator = None                  # (key of weight, recurrent_operator()) once computed
        self.register_buffer("weight", weight)
        self.register_buffer("weight_in", weight_in)
        self.register_buffer("bias", bias)

    @classmethod
    def from_weights(cls, weight: Tensor, weight_in: Tensor, bias=None,
                     leak_rate: float = 1.0) -> ReservoirCell:
        r"""A reservoir with given weights ``W`` (H, H), ``W_in`` (H, X) and ``b`` (H,).

        ``bias`` may also be ``None`` (no bias) or a number (the same for every
        unit). The tensors are copied, keep their dtype and device, and are used
        as they are: no rescaling. ``spectral_radius`` and ``sparsity`` are then
        measured from ``W``; ``input_scaling``, ``bias_scaling`` and ``seed`` are
        ``None``. This is how a reservoir from another library (ReservoirPy's
        ``W``, ``Win``, ``bias``, made dense with ``.toarray()``) or from a saved
        run is reproduced exactly.

        >>> import torch
        >>> w = torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=torch.float64)
        >>> cell = ReservoirCell.from_weights(w, torch.ones(2, 1, dtype=torch.float64), bias=0.1)
        >>> round(cell.spectral_radius, 12), cell.sparsity, cell.bias.tolist()
        (0.5, 0.5, [0.1, 0.1])
        """
        name = f"{cls.__name__}.from_weights"
        for what, value in (("weight", weight), ("weight_in", weight_in)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name}: expected {what} to be a torch.Tensor, got {type(value).__name__}; "
                                f"convert it with torch.as_tensor (a scipy sparse matrix with .toarray() first)")
            if not value.is_floating_point():
                raise TypeError(f"{name}: expected a floating-point {what}, got {value.dtype}")
        if weight.dim() != 2 or weight.shape[0] != weight.shape[1] or weight.shape[0] == 0:
            raise ValueError(f"{name}: expected weight (the recurrent matrix W) of shape "
                             f"(hidden_size, hidden_size) with hidden_size >= 1, got {tuple(weight.shape)}")
        h = weight.shape[0]
        if weight_in.dim() != 2 or weight_in.shape[0] != h or weight_in.shape[1] == 0:
            raise ValueError(f"{name}: expected weight_in (the input matrix W_in, one row per unit) of "
                             f"shape ({h}, input_size) with input_size >= 1, got {tuple(weight_in.shape)}")
        if bias is None or isinstance(bias, (int, float)) and not isinstance(bias, bool):
            bias = torch.full((h,), 0.0 if bias is None else float(bias), dtype=weight.dtype,
                              device=weight.device)
        elif not isinstance(bias, Tensor) or bias.shape != (h,):
            got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
            raise ValueError(f"{name}: expected bias of shape ({h},), a number or None, got {got}; "
                             f"a column (H, 1) becomes (H,) with .reshape(-1)")
        for what, value in (("weight_in", weight_in), ("bias", bias)):
            if value.dtype != weight.dtype or value.device != weight.device:
                raise TypeError(f"{name}: {what} is {value.dtype} on {value.device} but weight is "
                                f"{weight.dtype} on {weight.device}; convert them alike with .to()")
        for what, value in (("weight", weight), ("weight_in", weight_in), ("bias", bias)):
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: {what} contains NaN or infinite values")
        leak_rate = _check_leak_rate(name, leak_rate)
        cell = cls.__new__(cls)
        Cell.__init__(cell)
        cell._install(*(t.detach().clone() for t in (weight, weight_in, bias)), leak_rate)
        cell.spectral_radius = spectral_radius(weight)
        cell.sparsity = (weight == 0).double().mean().item()
        cell.input_scaling = cell.bias_scaling = cell.seed = None
        return cell

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Zeros ``(B, H)`` on the reservoir's device and dtype unless told otherwise."""
        return torch.zeros(batch_size, self.hidden_size,
                           device=device if device is not None else self.weight.device,
                           dtype=dtype if dtype is not None else self.weight.dtype)

    def project_inputs(self, x: Tensor) -> Tensor:
        """``W_in x + b`` for any leading shape ``(..., X) -> (..., H)``."""
        return F.linear(x, self.weight_in, self.bias)

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        """``h + a (tanh(projected_t + W h) - h)``, i.e. ``(1 - a) h + a tanh(.)``."""
        target = torch.tanh(projected_t + F.linear(h, self.weight))
        if self.leak_rate == 1.0:
            return target
        return h + self.leak_rate * (target - h)

    def recurrent_operator(self) -> Tensor:
        """``W`` as the fastest operand for ``W @ h``: CSR when sparse enough on CPU, else dense.

        The CSR matrix has int32 indices (a third faster than int64 for 500 units)
        and is kept until ``weight`` changes (another tensor, or written in place).
        """
        w = self.weight
        if w.device.type != "cpu" or w.dtype not in (torch.float32, torch.float64):
            return w                            # (torch's CPU sparse kernels take only these)
        key = (w.data_ptr(), w._version, w.dtype, tuple(w.shape))
        cached = self._operator
        if cached is not None and cached[0] == key:
            return cached[1]
        operator = w
        if torch.count_nonzero(w).item() <= _SPARSE_DENSITY * w.numel():
            with warnings.catch_warnings():     # torch flags its sparse CSR support as beta
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                csr = w.to_sparse_csr()
                operator = csr if csr.values().numel() >= 2**31 else torch.sparse_csr_tensor(
                    csr.crow_indices().int(), csr.col_indices().int(), csr.values(), size=w.shape,
                    check_invariants=False)     # valid by construction: made by torch just above
        self._operator = (key, operator)
        return operator

    def __getstate__(self):
        # the cached operator is derived from weight (and a CSR tensor cannot be deep-copied)
        return {**self.__dict__, "_operator": None}

    @torch.no_grad()
    def native_mode(self):
        """A non-leaky reservoir is exactly torch's RNN_TANH kernel (used by ``Recurrent``)."""
        return "RNN_TANH" if self.leak_rate == 1.0 else None

    def flat_weights(self):
        """The weights in torch.nn's order: ``W_in``, ``W`` (dense), ``b`` and a zero second bias."""
        return [self.weight_in, self.weight, self.bias, torch.zeros_like(self.bias)]

    @torch.no_grad()
    def run(self, x: Tensor, state: Tensor | None = None):
        """States over a whole batch of series, fast and without gradients.

        ``x`` (B, T, X), ``state`` (B, H) or ``None`` (zeros); returns ``(states
        (B, T, H), final_state (B, H))``, the same as ``Recurrent(cell,
        engine="loop")(x, state)`` up to rounding. The input part ``W_in x + b`` is
        computed for all steps at once; each step is then one ``addmm`` (``addmv``
        for a single series) into a preallocated buffer (with a CSR ``W`` when at
        most a quarter of it is non-zero, see :meth:`recurrent_operator`), an
        in-place ``tanh`` and, for ``leak_rate < 1``, the in-place leak. For several series the state is
        kept as columns (H, B), so that the sparse ``W`` multiplies from the left,
        and copied into the output at every step.

        >>> import torch, rnnkit
        >>> cell = ReservoirCell(1, 20, leak_rate=0.5, seed=0, dtype=torch.float64)
        >>> x = torch.randn(3, 7, 1, dtype=torch.float64)
        >>> slow, h_slow = rnnkit.Recurrent(cell, engine="loop")(x)
        >>> fast, h_fast = cell.run(x)
        >>> bool(torch.allclose(fast, slow, rtol=0, atol=1e-14) and torch.equal(h_fast, fast[:, -1]))
        True
        """
        name = f"{type(self).__name__}.run"
        check_input(name, x, self.input_size, self.weight, batch_first=True)
        if x.dim() != 3 or x.shape[0] == 0:
            raise ValueError(f"{name}: expected x of shape (batch, time, {self.input_size}) with "
                             f"batch >= 1, got {tuple(x.shape)}")
        batch, steps = x.shape[:2]
        if state is None:
            state = self.initial_state(batch)
        else:
            check_state(name, state, self.hidden_size, batch, x)
        projected = self.project_inputs(x.transpose(0, 1))                  # (T, B, H)
        w, a = self.recurrent_operator(), self.leak_rate
        # The elementwise part runs on NumPy views of the same memory on CPU: np.tanh on 500
        # numbers costs a third of torch's dispatch. Both take (array, out=array).
        as_numpy = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        view, tanh = (Tensor.numpy, np.tanh) if as_numpy else (lambda t: t, torch.tanh)

        def squash(o, h):                   # o <- h + a (tanh(o) - h), in place
            tanh(o, out=o)
            if a != 1.0:
                o -= h
                o *= a
                o += h

        if batch == 1:      # a matrix-vector product, written straight into row t of the output
            out = torch.empty(steps, self.hidden_size, dtype=x.dtype, device=x.device)   # (T, H)
            h = state[0].clone()
            h_e = view(h)
            for p_t, o, o_e in zip(projected[:, 0].unbind(0), out.unbind(0), view(out)):
                torch.addmv(p_t, w, h, out=o)                                # W h + W_in x + b
                squash(o_e, h_e)
                h, h_e = o, o_e
            return out.unsqueeze(0), out[-1:].clone()
        out = torch.empty(batch, steps, self.hidden_size, dtype=x.dtype, device=x.device)  # (B, T, H)
        h = state.T.clone(memory_format=torch.contiguous_format)             # (H, B): W acts from the left
        new = torch.empty_like(h)
        h_e, new_e = view(h), view(new)
        for t, p_t in enumerate(projected.unbind(0)):
            torch.addmm(p_t.T, w, h, out=new)                                # W h + W_in x + b
            squash(new_e, h_e)
            out[:, t] = new.T
            h, new, h_e, new_e = new, h, new_e, h_e
        return out, h.T.contiguous()

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, spectral_radius={self.spectral_radius}, "
                f"sparsity={self.sparsity}, leak_rate={self.leak_rate}")
