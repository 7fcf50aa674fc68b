r"""The fused kernel of the LSTM and the layer-norm LSTM (:class:`LSTMKernel`).

Three ways to run the same equations, each checked against the others and against the ``loop``
engine (tests/test_fused.py): the loop on :class:`~._cpu.TorchOps` (any device and dtype), the
same loop on :class:`~._cpu.NumpyOps` (CPU float32/float64) with its backward coefficients
computed into reused buffers, and, with numba installed (``pip install -e ".[fast]"``), the
compiled steps of :mod:`.lstm_compiled`: the whole sequence in one call for small steps
(``B·G·H ≤ COMPILED_MAX``), one compiled step after each GEMM for large float32 ones. The NumPy
loop is their twin (``configured(compiled="off")``). The first compiled call compiles for a few
seconds; numba caches the result on disk.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...cells.fused import GateParameters
from ._cpu import SETTINGS, NumpyOps, compiled, numpy_or_none
from .adjoint import (Kernel, bias_sum, centred_rows, dense, empty, norm_weight_grad, norms_match, or_zeros, per_step,
                      sigmoid_scale, step_chunks, weight_grad)
from .projection import linear, linear_layer_norm

__all__ = ["LSTMKernel", "COMPILED_MAX"]

# steps with at most this many multiply-adds (B·G·H) run the compiled loops when numba is installed: there the
# cost of a step is the call overhead of its NumPy operations; beyond, NumPy's BLAS and vectorized ufuncs win
# over the compiled row-by-row loops
COMPILED_MAX = 2 ** 18


def compiled_for(ops, B: int, G: int, H: int) -> bool:
    """Whether an LSTM run takes the compiled steps: float32 always (its tanh is vectorized), float64
    only as a whole small sequence (its C-library tanh is slower than NumPy's at large batches);
    ``stepwise`` settings: every NumPy dtype, a step at a time."""
    if not isinstance(ops, NumpyOps) or compiled() is None:
        return False
    return SETTINGS.compiled == "stepwise" or ops.dtype == np.float32 or compiled_whole(ops, B, G, H)


def compiled_whole(ops, B: int, G: int, H: int) -> bool:
    return SETTINGS.compiled == "auto" and not ops.torch_gemm and B * G * H <= COMPILED_MAX


# the gates are laid out as [o, i, f, g]: one sigmoid over the first three blocks, one tanh over the last,
# and in the backward the i, f, g blocks (all driven by dc) are contiguous too
def lstm_order(hidden_size: int, device) -> Tensor:
    H = hidden_size
    return torch.cat([torch.arange(3 * H, 4 * H), torch.arange(0, 3 * H)]).to(device)   # from i, f, g, o


class LSTMKernel(Kernel):
    r"""LSTM (with ``layer_norm``, the layer-norm LSTM); state ``(h, c)``, gates ``[o, i, f, g]``.

    Forward: ``c̃ = f c + i g``, ``h̃ = o tanh(c̃)`` (layer norm: ``o tanh(LN(c̃))``), then
    ``c_t = lerp(c̃, c_{t-1}, k^c_t)``, ``h_t = lerp(h̃, h_{t-1}, k^h_t)``.
    Backward, with ``A = (1 - k^h) o (1 - tanh²)``: ``dc̃ = (1 - k^c) dc + A dh`` (layer norm:
    the LN backward of ``A dh``), ``du = [(1 - k^h) tanh(·) σ'(o) dh, g σ'(i) dc̃, c_{t-1} σ'(f) dc̃,
    i (1 - g²) dc̃]``, ``dc_{t-1} = f dc̃ + k^c dc``, ``dh_{t-1} = dH_{t-1} + k^h dh + (du W) ⊙ m``.
    """
    components, record, blocks = 2, GateParameters, 4

    def __init__(self, layer_norm: bool):
        self.layer_norm = layer_norm

    def supports(self, parameters):
        return super().supports(parameters) or norms_match(self.layer_norm, parameters)

    def histories(self, outputs):
        return outputs["Hs"], outputs["C"][-1]

    def operator_outputs(self, run, extras, H, G):
        return ([("Hs", H), ("A", G), ("TC", H), ("C", H)]
                + ([("V", G), ("S", 1), ("Cc", H), ("Sc", 1)] if self.layer_norm else []))

    def operator_inputs(self, ops, run, extras, saved, grads):
        Hs, C = saved["Hs"], saved["C"]
        B, H = Hs.shape[1:]
        saved["compiled"] = compiled_for(ops, B, 4 * H, H)      # the forward's choice, from the same facts
        return (Hs, C[-1]), (or_zeros(grads["Hs"], Hs), or_zeros(None if grads["C"] is None else grads["C"][-1], C[-1]))

    def prepare(self, parameters, xs):
        p, norm = parameters, parameters.layer_norm
        order = lstm_order(p.weight_hh.shape[1], xs.device)
        W_ih, W_hh = p.weight_ih[order], p.weight_hh[order]
        bias = bias_sum(p.bias_ih, p.bias_hh)
        if self.layer_norm:
            P = linear_layer_norm(xs, W_ih, norm.input_weight[order], None if bias is None else bias[order], norm.eps)
            extras = (norm.hidden_weight[order], norm.cell_weight, norm.cell_bias)
            return P, centred_rows(W_hh), extras, {"eps": norm.eps}
        return linear(xs, W_ih, None if bias is None else bias[order]), W_hh, (), {}

    def forward(self, ops, run, P, W, states, extras):
        T, B, G = P.shape
        if compiled_for(ops, B, G, W.shape[1]):
            return self._forward_compiled(ops, run, P, W, states, extras)
        h0, c0 = states
        H = G // 4
        kh, kc = (per_step(k, T, B, H) for k in run.keep)
        binary = run.binary           # 0/1 masks: a masked copy in place of a lerp (3 operations)
        A, Hs, C, TC = empty(P, T, B, G), empty(P, T, B, H), empty(P, T, B, H), empty(P, T, B, H)
        Ct = C if kc is None or binary else empty(P, T, B, H)            # c̃ before zoneout
        Wt, half = W.t().contiguous(), sigmoid_scale(ops, P, 3 * H)
        a = ops.array
        P_, A_, Hs_, C_, Ct_, TC_, Wt = a(P), a(A), a(Hs), a(C), a(Ct), a(TC), ops.matrix(Wt, B)
        half = None if half is None else a(half)       # o, i, f halved a step at a time: no (T, B, G) copy
        sig, tanh_g = a(A[..., :3 * H]), a(A[..., 3 * H:])
        o_, i_, f_ = a(A[..., :H]), a(A[..., H:2 * H]), a(A[..., 2 * H:3 * H])
        kh_ = None if kh is None else a(kh > 0.5 if binary else kh)
        kc_ = None if kc is None else a(kc > 0.5 if binary else kc)
        mask = None if run.mask is None else a(run.mask)
        layer_norm = self.layer_norm
        saved = {"A": A, "TC": TC, "C": C}
        if layer_norm:
            ln_h = extras[0] * G ** 0.5
            ln_h, ln_c_weight = a(ln_h), a(extras[1] * H ** 0.5)
            ln_c_bias = None if extras[2] is None else a(extras[2])
            V, S, Cc, Sc = empty(P, T, B, G), empty(P, T, B, 1), empty(P, T, B, H), empty(P, T, B, 1)
            V_, S_, Cc_, Sc_ = a(V), a(S), a(Cc), a(Sc)
            saved.update(V=V, S=S, Cc=Cc, Sc=Sc)
        r_buf, tmp, hn_buf = a(empty(P, B, H)), a(empty(P, B, H)), a(empty(P, B, H))
        h, c = a(h0), a(c0)
        for t in range(T):
            r_in = h if mask is None else ops.mul(h, mask, out=r_buf)
            if layer_norm:
                v = ops.gemm(r_in, Wt, out=V_[t])                        # centred: W has zero-mean rows
                ops.layer_norm(v, ln_h, None, run.eps, out=A_[t], scale=S_[t])
                ops.add(A_[t], P_[t], out=A_[t])
            else:
                ops.gemm(r_in, Wt, out=A_[t], add=P_[t])
            if half is not None:
                ops.mul(A_[t], half, out=A_[t])
                ops.tanh(A_[t], out=A_[t])
                ops.tanh_to_sigmoid(sig[t])
                g = tanh_g[t]
            else:
                ops.sigmoid(sig[t], out=sig[t])
                g = ops.tanh(tanh_g[t], out=tanh_g[t])
            ct = ops.mul(f_[t], c, out=Ct_[t])
            ops.add(ct, ops.mul(i_[t], g, out=tmp), out=ct)               # c̃ = f c + i g
            if layer_norm:
                ops.layer_norm(ct, ln_c_weight, ln_c_bias, run.eps, out=TC_[t], scale=Sc_[t], centred=Cc_[t])
                tc = ops.tanh(TC_[t], out=TC_[t])
            else:
                tc = ops.tanh(ct, out=TC_[t])
            hn = ops.mul(o_[t], tc, out=Hs_[t] if kh_ is None or binary else hn_buf)
            if kc_ is None:
                c = ct
            else:
                c = ops.keep_where(ct, c, kc_[t]) if binary else ops.lerp(ct, c, kc_[t], out=C_[t])
            if kh_ is None:
                h = hn
            else:
                h = ops.keep_where(hn, h, kh_[t]) if binary else ops.lerp(hn, h, kh_[t], out=Hs_[t])
        return (Hs, C[-1]), saved

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        if saved.get("compiled"):
            return self._backward_compiled(ops, run, saved, W, states, extras, outputs, grads, needs)
        h0, c0 = states
        dH, dcT = grads
        T, B, H = dH.shape
        G = 4 * H
        layer_norm = self.layer_norm
        chunks = step_chunks(T, B * G)
        coefficients = self._coefficients(ops, run, saved, c0, T, B, H, max(t1 - t0 for t0, t1 in chunks))
        DU = empty(dH, T, B, G)
        DV = empty(dH, T, B, G) if layer_norm else DU
        DLNC = empty(dH, T, B, H) if layer_norm else None
        a = ops.array
        du_, du4, dv_, dH_, W_ = a(DU), a(DU.view(T, B, 4, H)), a(DV), a(dense(dH)), ops.matrix(W, B)
        mask = None if run.mask is None else a(run.mask)
        if layer_norm:
            ln_h, ln_c_weight, dlnc_ = a(extras[0]), a(extras[1]), a(DLNC)
        dh, dc = a(dense(dH[T - 1], copy=True)), a(dense(dcT, copy=True))
        dh_new, dc_new, dct, tmp = (a(empty(dH, B, H)) for _ in range(4))
        for t0, t1 in chunks:
            Ro_, Ac_, Rc_, F_, kh_, kc_, omkc, ln = coefficients(t0, t1)
            if ln is not None:
                (x_h, rstd_h, r2_h), (x_c, rstd_c, r2_c) = ln
            for t in range(t1 - 1, t0 - 1, -1):
                j = t - t0
                if layer_norm:
                    dl = ops.mul(dh, Ac_[j], out=dlnc_[t])
                    ops.layer_norm_backward(dl, ln_c_weight, x_c[j], rstd_c[j], r2_c[j], out=dct)
                else:
                    ops.mul(dh, Ac_[j], out=dct)
                ops.add(dct, dc if kc_ is None else ops.mul(dc, omkc[j], out=tmp), out=dct)
                du4t = du4[t]
                ops.mul(dh, Ro_[j], out=du4t[:, 0])
                ops.mul(Rc_[j], dct[:, None], out=du4t[:, 1:])
                dv = du_[t]
                if layer_norm:
                    dv = ops.layer_norm_backward(dv, ln_h, x_h[j], rstd_h[j], r2_h[j], out=dv_[t], centred=False)
                ops.mul(dct, F_[j], out=dc_new)
                if kc_ is not None:
                    ops.add(dc_new, ops.mul(dc, kc_[j], out=tmp), out=dc_new)
                ops.gemm(dv, W_, out=dh_new)
                if mask is not None:
                    ops.mul(dh_new, mask, out=dh_new)
                if kh_ is not None:
                    ops.add(dh_new, ops.mul(dh, kh_[j], out=tmp), out=dh_new)
                if t > 0:
                    ops.add(dh_new, dH_[t - 1], out=dh_new)
                dh, dh_new, dc, dc_new = dh_new, dh, dc_new, dc
        dh0, dc0 = (torch.as_tensor(v).clone() for v in (dh, dc))
        return self._gradients(run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0)

    def _gradients(self, run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0):
        """What the backward returns, from the per-step adjoints: weight gradients as one GEMM over all steps."""
        transform = None if run.mask is None else (lambda z: z * run.mask)
        dW = weight_grad(DV, h0, outputs[0], transform)
        if not self.layer_norm:
            return DU, dW, (dh0, dc0), ()
        d_ln_h = norm_weight_grad(DU, saved["V"], saved["S"]) if needs[4] else None
        d_c_weight = norm_weight_grad(DLNC, saved["Cc"], saved["Sc"]) if needs[5] else None
        d_c_bias = DLNC.sum((0, 1)) if needs[6] and extras[2] is not None else None
        return DU, dW, (dh0, dc0), (d_ln_h, d_c_weight, d_c_bias)

    def _forward_compiled(self, ops, run, P, W, states, extras):
        """The forward on the compiled steps of :mod:`.lstm_compiled`: the whole sequence in one call
        for small steps, else a compiled pointwise step after each GEMM of ``ops``."""
        kernels = compiled()
        h0, c0 = states
        T, B, G = P.shape
        H = G // 4
        A, Hs, C, TC = empty(P, T, B, G), empty(P, T, B, H), empty(P, T, B, H), empty(P, T, B, H)
        kh, kc = (per_step(k, T, B, H) for k in run.keep)
        saved = {"A": A, "TC": TC, "C": C, "compiled": True}
        ln = (None,) * 7
        if self.layer_norm:
            V, S, Cc, Sc = empty(P, T, B, G), empty(P, T, B, 1), empty(P, T, B, H), empty(P, T, B, 1)
            saved.update(V=V, S=S, Cc=Cc, Sc=Sc)
            ln = (extras[0] * G ** 0.5, extras[1] * H ** 0.5, extras[2], V, S, Cc, Sc)
        n, eps = numpy_or_none, run.eps
        P_, Wt, h0_, c0_, A_, Hs_, C_, TC_ = (n(v) for v in (P, W.t().contiguous(), h0.contiguous(),
                                                              c0.contiguous(), A, Hs, C, TC))
        if compiled_whole(ops, B, G, H):
            kernels.forward(P_, Wt, h0_, c0_, n(run.mask), n(kh), n(kc), run.binary, n(ln[0]), n(ln[1]),
                                   n(ln[2]), eps, A_, Hs_, C_, TC_, *(n(v) for v in ln[3:]))
            return (Hs, C[-1]), saved
        (mask, kh_, kc_), ln_w, hist = kernels.forward_args(P_.dtype, n(run.mask), n(kh), n(kc),
                                                                   *(n(v) for v in ln))
        k = kernels.forward_constants(P_.dtype, G, H, eps)
        U, R = n(empty(P, B, G)), n(empty(P, B, H))
        if mask.size:
            np.multiply(h0_, mask, out=R)
        else:
            np.copyto(R, h0_)
        Wm, step = ops.matrix(torch.from_numpy(Wt), B), kernels.step_forward
        V_ = hist[0]
        for t in range(T):
            u = ops.gemm(R, Wm, out=V_[t] if self.layer_norm else U)
            step(t, u, P_, h0_ if t == 0 else Hs_[t - 1], c0_ if t == 0 else C_[t - 1], mask, kh_, kc_, run.binary,
                 *ln_w, k, A_, Hs_, C_, TC_, *hist[1:], R)
        return (Hs, C[-1]), saved

    def _backward_compiled(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        kernels = compiled()
        h0, c0 = states
        dH, dcT = grads
        T, B, H = dH.shape
        G = 4 * H
        DU = empty(dH, T, B, G)
        DV = empty(dH, T, B, G) if self.layer_norm else DU
        DLNC = empty(dH, T, B, H) if self.layer_norm else None
        dh0, dc0 = empty(dH, B, H), empty(dH, B, H)
        kh, kc = (per_step(k, T, B, H) for k in run.keep)
        n = numpy_or_none
        ln_h, ln_c = (extras[0], extras[1]) if self.layer_norm else (None, None)
        dH_, c0_, C_, A_, TC_ = n(dense(dH)), n(c0.contiguous()), n(saved["C"]), n(saved["A"]), n(saved["TC"])
        hist = tuple(n(saved.get(name)) for name in ("V", "S", "Cc", "Sc"))
        if compiled_whole(ops, B, G, H):
            kernels.backward(dH_, n(dense(dcT)), n(W.t().contiguous()), c0_, C_, n(run.mask), n(kh),
                                    n(kc), A_, TC_, *hist, n(ln_h), n(ln_c), n(DU), n(DV), n(DLNC), n(dh0), n(dc0))
        else:
            dt = dH_.dtype
            (mask, kh_, kc_), (ln_h_, ln_c_, _), hist = kernels.forward_args(
                dt, n(run.mask), n(kh), n(kc), n(ln_h), n(ln_c), None, *hist)
            k = kernels.backward_constants(dt, G, H)
            DU_, DV_, DLNC_ = n(DU), n(DV), kernels.or_empty(n(DLNC), dt, 3)
            dh, dc, dW = n(dh0), n(dc0), n(empty(dH, B, H))
            np.copyto(dh, dH_[T - 1])
            np.copyto(dc, n(dcT))
            Wm, step, tail = ops.matrix(W, B), kernels.step_backward, kernels.step_backward_tail
            for t in range(T - 1, -1, -1):
                step(t, dh, dc, c0_ if t == 0 else C_[t - 1], kh_, kc_, A_, TC_, *hist, ln_h_, ln_c_, k, DU_, DV_,
                     DLNC_)
                ops.gemm(DV_[t], Wm, out=dW)
                tail(t, dW, dh, mask, kh_, dH_)
        return self._gradients(run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0)

    def _coefficients(self, ops, run, saved, c0, T, B, H, n_max):
        """``coefficients(t0, t1)``: what the backward loop multiplies by at steps ``t0 .. t1-1``, as ``ops``
        arrays written into buffers that every chunk reuses (no fresh (n, B, H) array per operation):
        ``Ro = (1 - k^h) tanh(·) σ'(o)``, ``Ac = (1 - k^h) o (1 - tanh²)``, ``Rc = [g σ'(i), c_{t-1} σ'(f),
        i (1 - g²)]``, ``f``, the keep masks and ``1 - k^c``, and the layer norms' ``(X, rstd, rstd²/m)``.
        One derivation for both loops: on NumPy arrays (:class:`~._cpu.NumpyOps`) and on tensors of any
        device (:class:`~._cpu.TorchOps`); ``σ'(a) = a - a²`` keeps constants out of the products."""
        a, mul, sub = ops.array, ops.mul, ops.sub
        like = saved["A"]
        A_, TC_, C_ = a(saved["A"]), a(saved["TC"]), a(saved["C"])
        Ro, Ac, prev0 = (a(empty(like, n_max, B, H)) for _ in range(3))
        Rc = a(empty(like, n_max, B, 3, H))
        kh, kc = (None if k is None else a(per_step(k, T, B, H)) for k in run.keep)
        omkh, omkc = (None if k is None else 1 - k for k in (kh, kc))
        if self.layer_norm:
            G = 4 * H
            V_, S_, Cc_, Sc_ = a(saved["V"]), a(saved["S"]), a(saved["Cc"]), a(saved["Sc"])
            scales = [a(empty(like, n_max, B, 1)) for _ in range(4)]

        def coefficients(t0, t1):
            n = t1 - t0
            gates = A_[t0:t1]
            o, i, f, g = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H], gates[..., 3 * H:]
            tc, ro, ac, rc = TC_[t0:t1], Ro[:n], Ac[:n], Rc[:n]
            mul(sub(o, mul(o, o, out=ro), out=ro), tc, out=ro)                      # tanh(·) σ'(o)
            sub(o, mul(mul(tc, tc, out=ac), o, out=ac), out=ac)                     # o (1 - tanh²)
            if omkh is not None:
                mul(ro, omkh[t0:t1], out=ro)
                mul(ac, omkh[t0:t1], out=ac)
            if t0 > 0:
                prev = C_[t0 - 1:t1 - 1]
            else:
                prev = prev0[:n]
                prev[0] = a(c0)
                prev[1:] = C_[:t1 - 1]
            r = rc[:, :, 0]
            mul(sub(i, mul(i, i, out=r), out=r), g, out=r)                          # g σ'(i)
            r = rc[:, :, 1]
            mul(sub(f, mul(f, f, out=r), out=r), prev, out=r)                       # c_{t-1} σ'(f)
            r = rc[:, :, 2]
            sub(i, mul(mul(g, g, out=r), i, out=r), out=r)                          # i (1 - g²)
            ln = None
            if self.layer_norm:
                rs_h, r2_h, rs_c, r2_c = (v[:n] for v in scales)
                mul(S_[t0:t1], G ** 0.5, out=rs_h)
                mul(mul(rs_h, rs_h, out=r2_h), 1.0 / G, out=r2_h)
                mul(Sc_[t0:t1], H ** 0.5, out=rs_c)
                mul(mul(rs_c, rs_c, out=r2_c), 1.0 / H, out=r2_c)
                ln = ((V_[t0:t1], rs_h, r2_h), (Cc_[t0:t1], rs_c, r2_c))
            return (ro, ac, rc, f, None if kh is None else kh[t0:t1], None if kc is None else kc[t0:t1],
                    None if omkc is None else omkc[t0:t1], ln)

        return coefficients
