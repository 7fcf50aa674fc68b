"""The fused kernels of the cells whose state is one vector updated by a leak: Elman, leaky,
firing-rate (:class:`LeakyKernel`) and gated (:class:`GatedKernel`).
Their slow twin is the same loop on :class:`~._cpu.TorchOps`; tests/test_fused.py checks both
against the ``loop`` engine."""
from __future__ import annotations

import torch
from torch import Tensor

from ...cells.fused import GateParameters, LeakyParameters
from .adjoint import (PHI, Kernel, act_grad, adjoint_single, bias_sum, dense, empty, per_step, phi_grad, phi_op,
                      previous_states, sigmoid_scale, times, weight_grad)
from .projection import linear

__all__ = ["LeakyKernel", "RateKernel", "GatedKernel"]


class LeakyKernel(Kernel):
    r"""Elman, leaky and firing-rate cells: ``z_t = lerp(z_{t-1}, y_t, β_t)``, ``y_t = f(P_t + W ψ(z_{t-1}))``.

    Elman: ``f`` tanh/relu, ``ψ`` identity, no ``β`` (``z_t = y_t``); leaky: ``β = α``;
    rate: ``f`` identity, ``ψ = φ``, ``β = α = dt/τ`` (a number), and noise ``σ ξ_t`` on the state,
    which enters as ``σ/α ξ_t`` on the input side (``β = α`` multiplies it). With a keep mask
    ``β_t = α (1 - k_t)``. Backward: ``R = β ⊙ f'``, ``E = 1 - β``, ``ρ = ψ'(z_{t-1}) ⊙ m``;
    ``∂L/∂α = Σ dz_t ⊙ (1 - k_t) ⊙ (y_t - z_{t-1})``.
    """
    record = LeakyParameters

    def supports(self, parameters):
        reason = super().supports(parameters)
        if reason is None and parameters.phi is not None and parameters.phi not in PHI:
            return f"activation {parameters.phi!r} has no fused derivative"
        return reason

    def prepare(self, parameters, xs):
        p, alpha = parameters, parameters.alpha
        P = linear(xs, p.weight_ih, bias_sum(p.bias_ih, p.bias_hh))                   # = project_inputs + b_hh
        if p.noise_std is not None:
            P = P + (p.noise_std / alpha) * torch.randn_like(P)
        tracked = alpha if isinstance(alpha, Tensor) else None          # a number is an option, not an extra
        return P, p.weight_hh, (tracked,), {"act": p.activation, "phi": p.phi,
                                            "alpha_value": None if tracked is not None else alpha}

    def emitted(self, cell, Z0):
        return cell.output(Z0)

    def operator_outputs(self, run, extras, H, G):
        has_beta = extras[0] is not None or run.alpha_value is not None or run.keep[0] is not None
        return [("Z", H)] + ([("Y", H)] if has_beta else [])     # without β, Y is Z itself

    def operator_inputs(self, ops, run, extras, saved, grads):
        Z = saved["Z"]
        saved["beta"] = self._beta(run, extras[0], Z)                # recomputed: a function of the inputs
        saved.setdefault("Y", Z)
        return super().operator_inputs(ops, run, extras, saved, grads)

    @staticmethod
    def _beta(run, alpha, like: Tensor):
        """β: None, (H,) or a 0-d tensor, or per step (T, B, H)."""
        a = alpha
        if a is None and run.alpha_value is not None:
            a = torch.tensor(run.alpha_value, dtype=like.dtype, device=like.device)
        k = run.keep[0]
        if k is None:
            return a
        T, B, H = like.shape
        return per_step((1 - k) if a is None else a * (1 - k), T, B, H)

    def forward(self, ops, run, P, W, states, extras):
        (z0,), (alpha,) = states, extras
        T, B, H = P.shape
        beta = self._beta(run, alpha, P)
        Z = empty(P, T, B, H)
        Y = Z if beta is None else empty(P, T, B, H)
        a = ops.array
        P_, Z_, Y_, Wt = a(P), a(Z), a(Y), ops.matrix(W.t(), B)
        per_step = beta is not None and beta.dim() == 3
        beta_ = None if beta is None else a(beta)
        act = None if run.act is None else getattr(ops, run.act)
        phi = phi_op(ops, run.phi)
        mask = None if run.mask is None else a(run.mask)
        r_buf = a(empty(P, B, H))
        z = a(z0)
        for t in range(T):
            r = z
            if phi is not None:
                r = phi(z, out=r_buf)
            if mask is not None:
                r = ops.mul(r, mask, out=r_buf)
            y = ops.gemm(r, Wt, out=Y_[t], add=P_[t])
            if act is not None:
                act(y, out=y)
            if beta_ is not None:
                z = ops.lerp(z, y, beta_[t] if per_step else beta_, out=Z_[t])
            else:
                z = y
        return (Z,), {"Y": Y, "beta": beta}

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (z0,), (alpha,), (Z,), (dZ,) = states, extras, outputs, grads
        T, B, H = Z.shape
        Y, beta = saved["Y"], saved["beta"]
        per_step = beta is not None and beta.dim() == 3
        phi, mask = run.phi if run.phi != "identity" else None, run.mask

        def coefficients(t0, t1):
            n = t1 - t0
            b = None if beta is None else (beta[t0:t1] if per_step else beta)
            R = act_grad(run.act, Y[t0:t1]) if run.act is not None else None
            if b is not None:
                R = b.expand(n, B, H) if R is None else R * b
            E = None if b is None else (1 - b).expand(n, B, H)
            rho = mask
            if phi is not None:
                rho = phi_grad(phi, previous_states(z0, Z, t0, t1))
                rho = rho if mask is None else rho * mask
            return R.contiguous(), None if E is None else E.contiguous(), rho, None

        DU, _, DZ, dz0 = adjoint_single(ops, coefficients, W, dense(dZ))
        d_alpha = None
        if alpha is not None and needs[3]:
            diff = Y - previous_states(z0, Z)
            if run.keep[0] is not None:
                diff = diff * (1 - run.keep[0])
            d_alpha = (DZ * diff).sum((0, 1))

        def transform(z):
            r = z if phi is None else PHI[phi](z)
            return r if mask is None else r * mask
        return DU, weight_grad(DU, z0, Z, transform), (dz0,), (d_alpha,)


class RateKernel(LeakyKernel):
    """The firing-rate cell's kernel: the leaky kernel (``f`` the identity, ``ψ = φ``, one number ``α``)."""


class GatedKernel(Kernel):
    r"""Gated cell: blocks ``[g, c]``, ``z_t = lerp(z_{t-1}, tanh(c), β)`` with ``β = σ(g) (1 - k_t)``.

    Backward: ``R = [(tanh(c) - z_{t-1}) (1 - k) σ'(g), β (1 - tanh²(c))]``, ``E = 1 - β``, ``ρ = m``.
    """

    record, blocks = GateParameters, 2

    def operator_outputs(self, run, extras, H, G):
        return [("Z", H), ("A", G)]

    def prepare(self, parameters, xs):
        p = parameters
        P = linear(xs, p.weight_ih, bias_sum(p.bias_ih, p.bias_hh))                   # = project_inputs + b_hh
        return P, p.weight_hh, (), {}

    def forward(self, ops, run, P, W, states, extras):
        (z0,) = states
        T, B, G = P.shape
        H = G // 2
        A, Z = empty(P, T, B, G), empty(P, T, B, H)
        Wt, half = W.t().contiguous(), sigmoid_scale(ops, P, H)
        if half is not None:
            P, Wt = times(P, half), Wt * half
        a = ops.array
        P_, A_, Z_, Wt = a(P), a(A), a(Z), ops.matrix(Wt, B)
        gates, cands = a(A[..., :H]), a(A[..., H:])
        keep = run.keep[0]
        omk = None if keep is None else a(per_step(1 - keep, T, B, H))
        mask = None if run.mask is None else a(run.mask)
        r_buf, beta_buf = a(empty(P, B, H)), a(empty(P, B, H))
        z = a(z0)
        for t in range(T):
            r = z if mask is None else ops.mul(z, mask, out=r_buf)
            ops.gemm(r, Wt, out=A_[t], add=P_[t])
            g, c = gates[t], cands[t]
            if half is not None:
                ops.tanh(A_[t], out=A_[t])
                ops.tanh_to_sigmoid(g)
            else:
                ops.sigmoid(g, out=g)
                ops.tanh(c, out=c)
            beta = g if omk is None else ops.mul(g, omk[t], out=beta_buf)
            z = ops.lerp(z, c, beta, out=Z_[t])
        return (Z,), {"A": A}

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (z0,), (Z,), (dZ,) = states, outputs, grads
        A, keep = saved["A"], run.keep[0]
        H = Z.shape[-1]

        def coefficients(t0, t1):
            g, c = A[t0:t1, :, :H], A[t0:t1, :, H:]
            dg = (c - previous_states(z0, Z, t0, t1)) * g * (1 - g)
            beta = g
            if keep is not None:
                omk = 1 - keep[t0:t1]
                dg, beta = dg * omk, g * omk
            return torch.stack([dg, beta * (1 - c * c)], 2), 1 - beta, run.mask, None

        DU, _, _, dz0 = adjoint_single(ops, coefficients, W, dense(dZ))
        transform = None if run.mask is None else (lambda z: z * run.mask)
        return DU, weight_grad(DU, z0, Z, transform), (dz0,), ()
