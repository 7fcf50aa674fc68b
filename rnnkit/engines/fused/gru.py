"""The fused kernel of the GRU and the layer-norm GRU (:class:`GRUKernel`); its slow twin is the same
loop on :class:`~._cpu.TorchOps`, checked with it against the ``loop`` engine in tests/test_fused.py."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ...cells.fused import GateParameters
from .adjoint import (Kernel, adjoint_single, bias_sum, centred_rows, dense, empty, layer_norm_scales, norm_weight_grad,
                      norms_match, per_step, previous_states, sigmoid_scale, times, weight_grad)
from .projection import linear, linear_layer_norm

__all__ = ["GRUKernel"]


class GRUKernel(Kernel):
    r"""GRU, torch's variant (with ``layer_norm``, the layer-norm GRU): blocks ``[r, z, n]``.

    ``u = W h + b_hh`` (layer norm: ``u = LN(W h; γ_h, b_hh)``), ``r, z = σ(P_rz + u_rz)``,
    ``n = tanh(P_n + r ⊙ u_n)``, ``h_t = lerp(n, h_{t-1}, ζ)`` with ``ζ = z + k (1 - z)``.
    Backward, with ``a = (1 - ζ)(1 - n²)``: ``R = [a u_n σ'(r), (h_{t-1} - n)(1 - k) σ'(z), a r]``
    on ``u``, ``E = ζ``, ``ρ = m``; the input side gets ``[du_r, du_z, a ⊙ dh]``.
    """

    record, blocks = GateParameters, 3

    def __init__(self, layer_norm: bool):
        self.layer_norm = layer_norm

    def supports(self, parameters):
        return super().supports(parameters) or norms_match(self.layer_norm, parameters)

    def operator_outputs(self, run, extras, H, G):
        return [("Z", H), ("U", G), ("RZ", 2 * H), ("N", H)] + ([("V", G), ("S", 1)] if self.layer_norm else [])

    def prepare(self, parameters, xs):
        p, norm = parameters, parameters.layer_norm
        H = p.weight_hh.shape[1]
        if self.layer_norm:                                                           # = project_inputs
            P = linear_layer_norm(xs, p.weight_ih, norm.input_weight, p.bias_ih, norm.eps)
            return P, centred_rows(p.weight_hh), (norm.hidden_weight, p.bias_hh), {"eps": norm.eps}
        if p.bias_hh is None:
            return linear(xs, p.weight_ih, p.bias_ih), p.weight_hh, (None,), {}
        # the r and z parts of b_hh add to the inputs; the n part sits inside r ⊙ (W_hn h + b_hn)
        P = linear(xs, p.weight_ih, bias_sum(p.bias_ih, F.pad(p.bias_hh[:2 * H], (0, H))))
        return P, p.weight_hh, (p.bias_hh[2 * H:],), {}

    def forward(self, ops, run, P, W, states, extras):
        (h0,) = states
        T, B, G = P.shape
        H = G // 3
        a = ops.array
        U, RZ, N, Z = empty(P, T, B, G), empty(P, T, B, 2 * H), empty(P, T, B, H), empty(P, T, B, H)
        Wt, half = W.t().contiguous(), sigmoid_scale(ops, P, 2 * H)
        if half is not None:                           # r, z halved; the LN input W h is not
            P = times(P, half)
            Wt = Wt if self.layer_norm else Wt * half
        U_, RZ_, N_, Z_, Wt = a(U), a(RZ), a(N), a(Z), ops.matrix(Wt, B)
        Prz, Pn = a(P[..., :2 * H]), a(P[..., 2 * H:])
        u_rz, u_n, r_, z_ = a(U[..., :2 * H]), a(U[..., 2 * H:]), a(RZ[..., :H]), a(RZ[..., H:])
        keep = run.keep[0]
        if keep is not None:
            keep_, omk = a(per_step(keep, T, B, H)), a(per_step(1 - keep, T, B, H))
        mask = None if run.mask is None else a(run.mask)
        saved = {}
        if self.layer_norm:
            ln_weight, ln_bias = extras[0] * G ** 0.5, extras[1]
            if half is not None:
                ln_weight, ln_bias = ln_weight * half, None if ln_bias is None else ln_bias * half
            ln_weight, ln_bias = a(ln_weight), None if ln_bias is None else a(ln_bias)
            V, S = empty(P, T, B, G), empty(P, T, B, 1)
            V_, S_ = a(V), a(S)
            saved.update(V=V, S=S)
            bias = None
        else:
            b_n = extras[0]
            bias = None if b_n is None else a(F.pad(b_n, (2 * H, 0)))
        r_buf, zeta_buf = a(empty(P, B, H)), a(empty(P, B, H))
        h = a(h0)
        for t in range(T):
            r_in = h if mask is None else ops.mul(h, mask, out=r_buf)
            if self.layer_norm:
                v = ops.gemm(r_in, Wt, out=V_[t])                        # centred: W has zero-mean rows
                ops.layer_norm(v, ln_weight, ln_bias, run.eps, out=U_[t], scale=S_[t])
            else:
                ops.gemm(r_in, Wt, out=U_[t], add=bias)
            rz = ops.add(Prz[t], u_rz[t], out=RZ_[t])
            if half is not None:
                ops.tanh_to_sigmoid(ops.tanh(rz, out=rz))
            else:
                ops.sigmoid(rz, out=rz)
            n = ops.mul(r_[t], u_n[t], out=N_[t])
            ops.add(n, Pn[t], out=n)
            ops.tanh(n, out=n)
            zeta = z_[t]
            if keep is not None:
                zeta = ops.mul(zeta, omk[t], out=zeta_buf)
                ops.add(zeta, keep_[t], out=zeta)
            h = ops.lerp(n, h, zeta, out=Z_[t])
        saved.update(U=U, RZ=RZ, N=N)
        return (Z,), saved

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (h0,), (Z,), (dZ,) = states, outputs, grads
        T, B, H = Z.shape
        RZ, N, U, keep = saved["RZ"], saved["N"], saved["U"], run.keep[0]

        def gates(t0, t1):
            r, z = RZ[t0:t1, :, :H], RZ[t0:t1, :, H:]
            zeta = z if keep is None else keep[t0:t1] + z * (1 - keep[t0:t1])
            return r, z, zeta.expand(t1 - t0, B, H), (1 - zeta) * (1 - N[t0:t1] * N[t0:t1])

        def coefficients(t0, t1):
            r, z, zeta, a = gates(t0, t1)
            dz_gate = (previous_states(h0, Z, t0, t1) - N[t0:t1]) * z * (1 - z)
            if keep is not None:
                dz_gate = dz_gate * (1 - keep[t0:t1])
            R = torch.stack([a * U[t0:t1, :, 2 * H:] * r * (1 - r), dz_gate, a * r], 2)     # (n, B, 3, H)
            ln = None
            if self.layer_norm:
                ln = layer_norm_scales(saved["V"][t0:t1], saved["S"][t0:t1])
            return R, zeta.contiguous(), run.mask, ln

        DU, DV, DZ, dh0 = adjoint_single(ops, coefficients, W, dense(dZ),
                                          extras[0] if self.layer_norm else None)
        transform = None if run.mask is None else (lambda z: z * run.mask)
        dW = weight_grad(DV, h0, Z, transform)
        grads_extra = (None,)
        if self.layer_norm:
            grads_extra = (norm_weight_grad(DU, saved["V"], saved["S"]) if needs[3] else None,
                           DU.sum((0, 1)) if needs[4] and extras[1] is not None else None)
        elif extras[0] is not None and needs[3]:
            grads_extra = (DU[..., 2 * H:].sum((0, 1)),)
        # the input side: [du_r, du_z] and, for n, a ⊙ dh (not r a ⊙ dh): reuse DU's memory
        torch.mul(gates(0, T)[3], DZ, out=DU[..., 2 * H:])
        return DU, dW, (dh0,), grads_extra


# the LSTM kernels lay the gates out as [o, i, f, g]: one sigmoid over the first three blocks, one tanh
