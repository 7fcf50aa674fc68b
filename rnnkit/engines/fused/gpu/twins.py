"""The fused kernels with their recurrences on Triton (:mod:`.kernels`): each class is its CPU kernel
(same ``prepare``, same saved tensors, same gradients around the recursion) with the forward loop,
and the adjoint loop, replaced by one launch each. The backward coefficients, the weight gradients
and the norms' parameter gradients stay the CPU kernel's torch code, which runs on any device."""
from __future__ import annotations

import torch
from torch import Tensor

from .._cpu import SETTINGS, TorchOps
from ..gru import GRUKernel
from ..leaky import GatedKernel, LeakyKernel, RateKernel
from ..lstm import LSTMKernel

__all__ = ["TWINS", "TritonOps"]


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _blocks(H: int):
    """(rows, hidden, inner) tile sizes: 16 rows; hidden and inner tiles of the padded width up to 64."""
    if SETTINGS.triton_blocks is not None:
        return SETTINGS.triton_blocks
    width = min(64, max(16, _pow2(H)))
    return 16, width, width


def _strided(t: Tensor | None, like: Tensor, T: int, B: int, H: int):
    """A (T, B, H) view of a broadcastable tensor and its strides (0 where broadcast); ``like`` and
    zeros when absent (the kernel then never reads it)."""
    if t is None:
        return (like, 0, 0, 0)
    v = t.to(like.dtype).expand(T, B, H)
    return (v, *v.stride())


def _common(P: Tensor, H: int) -> dict:
    BB, BH, BK = _blocks(H)
    prec = "tf32" if (P.dtype == torch.float32 and P.device.type == "cuda"
                      and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    return dict(IS64=P.dtype == torch.float64, PREC=prec, BB=BB, BH=BH, BK=BK)


def _grid(B: int, options: dict):
    """One program per block of rows."""
    return (-(-B // options["BB"]),)


def _history(first: Tensor, T: int) -> Tensor:
    """(T + 1, B, H) with ``first`` at 0: the kernels read step t's previous state at index t."""
    out = torch.empty((T + 1, *first.shape), dtype=first.dtype, device=first.device)
    out[0] = first
    return out


def _eps(run, like: Tensor, G: int, H: int) -> Tensor:
    return torch.tensor([G * run.eps, H * run.eps], dtype=like.dtype, device=like.device)


def _kernels():
    from . import kernels
    return kernels


class TritonOps(TorchOps):
    """torch operations, except that the single-state adjoint recursion is one Triton launch."""

    @staticmethod
    def adjoint_single(coefficients, W: Tensor, dZ: Tensor, ln_weight=None):
        K = _kernels()
        T, B, H = dZ.shape
        G = W.shape[0]
        R, E, rho, ln = coefficients(0, T)
        R = R.reshape(T, B, G).contiguous()
        DU = torch.empty(T, B, G, dtype=dZ.dtype, device=dZ.device)
        DV = DU if ln is None else torch.empty_like(DU)
        DZ = torch.empty(T + 1, B, H, dtype=dZ.dtype, device=dZ.device)
        DZ[T] = dZ[T - 1]
        X, rstd, r2 = (DU, DU, DU) if ln is None else (v.contiguous() for v in ln)
        o = _common(dZ, H)
        K.single_backward[_grid(B, o)](
            R, *_strided(E, dZ, T, B, H), *_strided(rho, dZ, T, B, H), X, rstd, r2,
            DU if ln_weight is None else ln_weight.contiguous(), W.contiguous(), dZ.contiguous(), DU, DV, DZ,
            T, B, H, G, HAS_E=E is not None, HAS_RHO=rho is not None, LN=ln is not None, **o)
        return DU, DV, DZ[1:], DZ[0]


class _SingleBackward:
    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        return super().backward(TritonOps, run, saved, W, states, extras, outputs, grads, needs)


class TritonLeaky(_SingleBackward, LeakyKernel):
    def forward(self, ops, run, P, W, states, extras):
        (z0,), (alpha,) = states, extras
        T, B, H = P.shape
        beta = self._beta(run, alpha, P)
        Z = _history(z0, T)
        Y = Z[1:] if beta is None else torch.empty_like(P)
        o = _common(P, H)
        _kernels().leaky_forward[_grid(B, o)](
            P.contiguous(), W.contiguous(), Z, Y, *_strided(beta, P, T, B, H), *_strided(run.mask, P, T, B, H),
            T, B, H, ACT=_code(run.act), PHI=_code(run.phi), HAS_BETA=beta is not None,
            HAS_MASK=run.mask is not None, **o)
        return (Z[1:],), {"Y": Y, "beta": beta}


class TritonRate(TritonLeaky, RateKernel):
    pass


class TritonGated(_SingleBackward, GatedKernel):
    def forward(self, ops, run, P, W, states, extras):
        (z0,) = states
        T, B, G = P.shape
        H = G // 2
        Z, A = _history(z0, T), torch.empty_like(P)
        keep = run.keep[0]
        o = _common(P, H)
        _kernels().gated_forward[_grid(B, o)](
            P.contiguous(), W.contiguous(), Z, A, *_strided(None if keep is None else 1 - keep, P, T, B, H),
            *_strided(run.mask, P, T, B, H), T, B, H, HAS_KEEP=keep is not None, HAS_MASK=run.mask is not None, **o)
        return (Z[1:],), {"A": A}


class TritonGRU(_SingleBackward, GRUKernel):
    def forward(self, ops, run, P, W, states, extras):
        (h0,) = states
        T, B, G = P.shape
        H = G // 3
        Z, U, RZ, N = _history(h0, T), torch.empty_like(P), torch.empty(T, B, 2 * H, dtype=P.dtype,
                                                                          device=P.device), torch.empty_like(P[..., :H])
        saved = {"U": U, "RZ": RZ, "N": N}
        keep = run.keep[0]
        V = S = ln_w = ln_b = bias = None
        if self.layer_norm:
            V, S = torch.empty_like(P), torch.empty(T, B, 1, dtype=P.dtype, device=P.device)
            saved.update(V=V, S=S)
            ln_w, ln_b = (extras[0] * G ** 0.5).to(P.dtype).contiguous(), extras[1]
        else:
            bias = extras[0]
        has_bias = (ln_b if self.layer_norm else bias) is not None
        o = _common(P, H)
        _kernels().gru_forward[_grid(B, o)](
            P.contiguous(), W.contiguous(), Z, U, RZ, N, P if V is None else V, P if S is None else S,
            P if ln_w is None else ln_w, P if ln_b is None else ln_b.contiguous(),
            P if bias is None else bias.contiguous(), *_strided(keep, P, T, B, H), *_strided(run.mask, P, T, B, H),
            T, B, H, _eps(run, P, G, H), LN=self.layer_norm, HAS_BIAS=has_bias, HAS_KEEP=keep is not None,
            HAS_MASK=run.mask is not None, **o)
        return (Z[1:],), saved


class TritonLSTM(LSTMKernel):
    def forward(self, ops, run, P, W, states, extras):
        h0, c0 = states
        T, B, G = P.shape
        H = G // 4
        Hs, Cs, A = _history(h0, T), _history(c0, T), torch.empty_like(P)
        TC = torch.empty(T, B, H, dtype=P.dtype, device=P.device)
        saved = {"A": A, "TC": TC, "C": Cs[1:]}
        kh, kc = run.keep
        ln = self.layer_norm
        if ln:
            V, S, Cc, Sc = (torch.empty_like(P), torch.empty(T, B, 1, dtype=P.dtype, device=P.device),
                            torch.empty_like(TC), torch.empty(T, B, 1, dtype=P.dtype, device=P.device))
            saved.update(V=V, S=S, Cc=Cc, Sc=Sc)
            ln_h = (extras[0] * G ** 0.5).to(P.dtype).contiguous()
            ln_c = (extras[1] * H ** 0.5).to(P.dtype).contiguous()
            ln_cb = P if extras[2] is None else extras[2].contiguous()
        else:
            V = S = Cc = Sc = ln_h = ln_c = ln_cb = P
        o = _common(P, H)
        _kernels().lstm_forward[_grid(B, o)](
            P.contiguous(), W.contiguous(), Hs, Cs, A, TC, V, S, Cc, Sc, ln_h, ln_c, ln_cb,
            *_strided(kh, P, T, B, H), *_strided(kc, P, T, B, H), *_strided(run.mask, P, T, B, H),
            T, B, H, _eps(run, P, G, H), LN=ln, HAS_CB=ln and extras[2] is not None, HAS_KH=kh is not None,
            HAS_KC=kc is not None, HAS_MASK=run.mask is not None, **o)
        return (Hs[1:], Cs[-1]), saved

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        h0, c0 = states
        dH, dcT = grads
        T, B, H = dH.shape
        G = 4 * H
        dH = dH.contiguous()
        ro, ac, rc, f, kh, kc, _, ln = self._coefficients(TorchOps, run, saved, c0, T, B, H, T)(0, T)
        DU = torch.empty(T, B, G, dtype=dH.dtype, device=dH.device)
        layer_norm = self.layer_norm
        DV = torch.empty_like(DU) if layer_norm else DU
        DLNC = torch.empty_like(dH) if layer_norm else None
        DH, DC = torch.empty(T + 1, B, H, dtype=dH.dtype, device=dH.device), torch.empty(
            T + 1, B, H, dtype=dH.dtype, device=dH.device)
        DH[T] = dH[T - 1]
        DC[T] = dcT
        if layer_norm:
            (xh, rs_h, r2_h), (xc, rs_c, r2_c) = ln
            lns = [v.contiguous() for v in (xh, rs_h, r2_h, xc, rs_c, r2_c)] + [extras[0].contiguous(),
                                                                                 extras[1].contiguous()]
        else:
            lns = [DU] * 8
        o = _common(dH, H)
        _kernels().lstm_backward[_grid(B, o)](
            ro.contiguous(), ac.contiguous(), rc.reshape(T, B, 3 * H).contiguous(), *_strided(f, dH, T, B, H),
            *_strided(kh, dH, T, B, H), *_strided(kc, dH, T, B, H), *_strided(run.mask, dH, T, B, H), *lns,
            W.contiguous(), dH, DU, DV, DU if DLNC is None else DLNC, DH, DC, T, B, H,
            LN=layer_norm, HAS_KH=kh is not None, HAS_KC=kc is not None, HAS_MASK=run.mask is not None, **o)
        return self._gradients(run, saved, extras, needs, h0, outputs, DU, DV, DLNC, DH[0], DC[0])


def _code(name):
    from .kernels import CODES
    return CODES[name]


TWINS = {"elman": TritonLeaky(), "leaky": TritonLeaky(), "rate": TritonRate(),
         "gated": TritonGated(), "gru": TritonGRU(layer_norm=False), "layernorm-gru": TritonGRU(layer_norm=True),
         "lstm": TritonLSTM(layer_norm=False), "layernorm-lstm": TritonLSTM(layer_norm=True)}
