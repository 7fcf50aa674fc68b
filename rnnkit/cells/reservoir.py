"""Reservoir cell: the fixed random recurrent layer of an echo state network."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .base import Cell, check_sizes

__all__ = ["ReservoirCell", "spectral_radius"]


def spectral_radius(weight: Tensor) -> float:
    """Largest ``|eigenvalue|`` of a square matrix, computed in float64."""
    return torch.linalg.eigvals(weight.detach().to(torch.float64)).abs().max().item()


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

    None of the weights is trained: they are buffers (``weight``, ``weight_in``,
    ``bias``), so they move with ``.to()`` and land in the state dict but never
    receive a gradient and are invisible to optimisers. ``seed`` makes the
    reservoir reproducible without touching the global RNG.

    >>> import torch
    >>> cell = ReservoirCell(2, 50, spectral_radius=0.9, seed=0)
    >>> round(spectral_radius(cell.weight), 6)
    0.9
    >>> tuple(cell(torch.randn(4, 2), cell.initial_state(4)).shape)
    (4, 50)
    """

    def __init__(self, input_size: int, hidden_size: int, spectral_radius: float = 0.9,
                 sparsity: float = 0.9, input_scaling: float = 1.0, bias_scaling: float = 0.0,
                 leak_rate: float = 1.0, seed: int | None = None, *, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size)
        if not spectral_radius > 0:
            raise ValueError(f"{name}: spectral_radius must be > 0, got {spectral_radius}")
        if not 0 < leak_rate <= 1:
            raise ValueError(f"{name}: leak_rate must lie in (0, 1], got {leak_rate}")
        if not 0 <= sparsity < 1:
            raise ValueError(f"{name}: sparsity (the fraction of zero recurrent weights) must lie "
                             f"in [0, 1), got {sparsity}")
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.spectral_radius = float(spectral_radius)
        self.sparsity = float(sparsity)
        self.input_scaling = float(input_scaling)
        self.bias_scaling = float(bias_scaling)
        self.leak_rate = float(leak_rate)
        self.seed = seed
        dtype = dtype or torch.get_default_dtype()

        gen = torch.Generator()
        gen.manual_seed(int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed))
        h = hidden_size
        nonzero = int(round((1.0 - self.sparsity) * h * h))
        w = torch.zeros(h * h, dtype=torch.float64)
        where = torch.randperm(h * h, generator=gen)[:nonzero]
        w[where] = torch.rand(nonzero, generator=gen, dtype=torch.float64) * 2 - 1
        w = w.view(h, h)
        radius = torch.linalg.eigvals(w).abs().max().item() if nonzero else 0.0
        if radius < 1e-12:
            raise ValueError(f"{name}: the random recurrent matrix ({nonzero} non-zeros for "
                             f"hidden_size={h}, sparsity={sparsity}) has spectral radius 0 and "
                             f"cannot be rescaled to {spectral_radius}; lower sparsity or change seed")
        w = w * (self.spectral_radius / radius)
        w_in = (torch.rand(h, input_size, generator=gen, dtype=torch.float64) * 2 - 1) * self.input_scaling
        b = (torch.rand(h, generator=gen, dtype=torch.float64) * 2 - 1) * self.bias_scaling
        kw = {"device": device, "dtype": dtype}
        self.register_buffer("weight", w.to(**kw))
        self.register_buffer("weight_in", w_in.to(**kw))
        self.register_buffer("bias", b.to(**kw))

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

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, spectral_radius={self.spectral_radius}, "
                f"sparsity={self.sparsity}, leak_rate={self.leak_rate}")
