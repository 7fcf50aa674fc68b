"""The emission likelihoods ``e_t(k) = p(x_t | z_t = k)`` of a batch, in the two forms the recursions
want: log-space (B, T, K) for the reference and log-depth routines, scaled time-major likelihoods for
the fast ones."""
from __future__ import annotations

import torch
from torch import Tensor

from ..._buffers import empty

__all__ = ["_Emissions", "_CategoricalEmissions"]


class _Emissions:
    """``log p(x_t | z_t = k)`` for every step, in the two forms the recursions want.

    ``log()`` is (B, T, K) for the reference and log-space routines; ``scaled()`` is
    ``(e, shift)`` for the fast ones: ``e`` (T, B, K) time-major likelihoods divided by
    ``exp(shift)`` (shift (T, B), or None when no shift is needed) and exactly 1 at
    padded steps, in a fresh buffer the caller may overwrite."""

    def __init__(self, log_e: Tensor, mask: Tensor):
        self._log, self.mask = log_e, mask

    @property
    def requires_grad(self) -> bool:
        return self._log.requires_grad

    def log(self) -> Tensor:
        return self._log

    def scaled(self):
        with torch.no_grad():
            maskT = self.mask.t()
            log_e = self._log.detach().transpose(0, 1)
            shift = log_e.amax(-1).masked_fill_(~maskT, 0.0)
            e = torch.exp(log_e - shift.unsqueeze(-1)).masked_fill_(~maskT.unsqueeze(-1), 1.0)
            return e.contiguous(), shift


class _CategoricalEmissions(_Emissions):
    """``log C[:, x_t]``; the fast form is one gather from ``Cᵀ`` with a row of ones for padding."""

    def __init__(self, log_C: Tensor, symbols: Tensor, mask: Tensor):
        self.log_C, self.symbols, self.mask = log_C, symbols, mask

    @property
    def requires_grad(self) -> bool:
        return self.log_C.requires_grad

    def log(self) -> Tensor:
        return self.log_C.t()[self.symbols]

    def scaled(self):
        with torch.no_grad():
            v, k = self.log_C.shape[1], self.log_C.shape[0]
            table = torch.cat([self.log_C.detach().exp().t(), self.log_C.new_ones(1, k)])
            index = self.symbols if bool(self.mask.all()) else self.symbols.masked_fill(~self.mask, v)
            t, b = index.shape[1], index.shape[0]
            out = empty(table, t, b, k)
            torch.index_select(table, 0, index.t().reshape(-1), out=out.view(t * b, k))
            return out, None
