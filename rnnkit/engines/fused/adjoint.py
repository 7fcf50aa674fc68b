r"""The adjoint recursion every fused kernel's backward runs, and what it needs around it.

The backward equations, for a state ``z`` with recurrent GEMM output ``u_t = W ψ(z_{t-1})``
and a per-step keep mask ``k_t`` (zoneout, and 1 past a sequence's end so that a finished
sequence keeps its state)::

    z_t = lerp(f(P_t + u_t, z_{t-1}), z_{t-1}, k_t)
    du_t = R_t ⊙ dz_t                                  R: the step's derivative, per gate block
    dz_{t-1} = dZ_{t-1} + E_t ⊙ dz_t + (du_t W) ⊙ ρ_t    E: the direct path, ρ = ψ' ⊙ dropout mask
    dW = Σ_t du_t^T ψ(z_{t-1})

Each kernel states its ``R``, ``E`` and ``ρ``. Everything that does not depend on the adjoint
(gate derivatives, zoneout and length masks) is computed vectorized, a cache-sized chunk of
steps at a time (:func:`step_chunks`), leaving a per-step loop of a few multiplies and one
GEMM (:func:`adjoint_single`); the gradient of ``W`` is then one GEMM over all steps
(:func:`weight_grad`). A layer norm of the recurrent part runs on ``W_c = W - mean_g W``
(:func:`centred_rows`, by autograd outside): ``W_c h`` has zero mean, so the loops skip the
mean in the forward and the ``mean(dy)`` term in the backward (``1^T W_c = 0``), and autograd
projects ``dW_c`` back onto ``W``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...cells.base import ACTIVATIONS, Cell
from ..._buffers import dense, empty, numpy_backed, times
from ._cpu import SETTINGS, gemm_tn

__all__ = ["Kernel", "Run", "adjoint_single", "weight_grad", "step_chunks", "previous_states", "per_step",
           "act_grad", "phi_grad", "phi_op", "PHI", "layer_norm_scales", "norm_weight_grad", "centred_rows",
           "sigmoid_scale", "bias_sum", "dense", "empty", "times", "or_zeros", "norms_match"]


def act_grad(name: str, y: Tensor) -> Tensor:
    """f'(a) from y = f(a)."""
    return 1 - y * y if name == "tanh" else (y > 0).to(y.dtype)


def phi_grad(name: str, x: Tensor) -> Tensor:
    """φ'(x) for the firing-rate activations."""
    if name == "tanh":
        t = torch.tanh(x)
        return 1 - t * t
    if name == "relu":
        return (x > 0).to(x.dtype)
    if name == "softplus":
        return torch.sigmoid(x)
    if name == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    return torch.ones_like(x)                                              # identity


PHI = ACTIVATIONS                 # the table cells take activations from


def phi_op(ops, name: str | None):
    """φ(a, out) in the loop's backend, or None for no transform."""
    if name is None or name == "identity":
        return None
    return getattr(ops, name)


def previous_states(z0: Tensor, Z: Tensor, t0: int = 0, t1: int | None = None) -> Tensor:
    """States before steps ``t0 .. t1-1``: ``z_{t0-1} .. z_{t1-2}`` (t1 - t0, B, H)."""
    t1 = Z.shape[0] if t1 is None else t1
    if t0 > 0:
        return Z[t0 - 1:t1 - 1]
    return torch.cat([z0.unsqueeze(0), Z[:t1 - 1]])


def weight_grad(DU: Tensor, z0: Tensor, Z: Tensor, transform=None) -> Tensor:
    """``Σ_t du_t^T r_t`` with ``r_t = transform(z_{t-1})``: one GEMM over all steps, (G, T·B) @ (T·B, H),
    plus the first step's term (no copy of the state history)."""
    r0, rest = (z0, Z[:-1]) if transform is None else (transform(z0), transform(Z[:-1]))
    G = DU.shape[-1]
    return gemm_tn(DU[1:].reshape(-1, G), rest.reshape(-1, rest.shape[-1])) + DU[0].t() @ r0


def step_chunks(T: int, per_step: int) -> list:
    """``(t0, t1)`` step ranges, last first, of about ``SETTINGS.chunk_elements / per_step`` steps (the
    backward's coefficients are computed a chunk at a time, sized to stay in cache)."""
    size = max(1, min(T, SETTINGS.chunk_elements // per_step))
    return [(max(0, t1 - size), t1) for t1 in range(T, 0, -size)]


def layer_norm_scales(X: Tensor, S: Tensor):
    """For the backward loop, from the centred inputs ``X`` (n, B, m) and scales ``S`` (n, B, 1) of
    the forward loop: ``(X, rstd, rstd² / m)``; the normalized vectors are ``X · rstd``."""
    m = X.shape[-1]
    rstd = S * m ** 0.5
    return X, rstd, rstd * rstd / m


def norm_weight_grad(D: Tensor, X: Tensor, S: Tensor) -> Tensor:
    """The gradient of a layer norm's weight, ``Σ_(t,b) D ⊙ X · S · √m`` for the adjoints ``D`` of its
    outputs, centred inputs ``X`` (T, B, m) and scales ``S`` (T, B, 1) (the normalized vectors are
    ``X · S · √m``). On CPU in cache-sized blocks of rows: no (T, B, m) temporaries."""
    m = X.shape[-1]
    if not numpy_backed(D):
        return (D * (X * (S * m ** 0.5))).sum((0, 1))
    D_, X_, S_ = (a.detach().numpy().reshape(-1, a.shape[-1]) for a in (D.contiguous(), X, S))
    rows = max(1, SETTINGS.chunk_elements // m)
    scratch = np.empty((min(rows, D_.shape[0]), m), dtype=D_.dtype)
    total = np.zeros(m, dtype=np.float64)
    for r0 in range(0, D_.shape[0], rows):
        r1 = min(r0 + rows, D_.shape[0])
        part = np.multiply(D_[r0:r1], X_[r0:r1], out=scratch[:r1 - r0])
        np.multiply(part, S_[r0:r1], out=part)
        total += part.sum(0)
    return torch.from_numpy((total * m ** 0.5).astype(D_.dtype))


def centred_rows(W: Tensor) -> Tensor:
    """``W`` minus its mean row: ``W_c h`` then has zero mean over its outputs for every ``h``, so a
    layer norm of it skips the mean (forward and backward); autograd maps gradients back to ``W``."""
    return W - W.mean(0, keepdim=True)


def sigmoid_scale(ops, like: Tensor, sigmoid_columns: int):
    """(G,) factors for a backend that takes sigmoid pre-activations halved (``ops.prescale``):
    1/2 on the first ``sigmoid_columns`` gate columns, 1 on the rest; None for the others."""
    if not ops.prescale:
        return None
    scale = torch.ones(like.shape[-1], dtype=like.dtype, device=like.device)
    scale[:sigmoid_columns] = 0.5
    return scale


def bias_sum(*biases):
    """The sum of the biases that are not None (None if all are)."""
    present = [b for b in biases if b is not None]
    return None if not present else present[0] if len(present) == 1 else sum(present[1:], present[0])


@dataclass(frozen=True, eq=False)
class Run:
    """Per-run data autograd does not track: the masks, and the options a kernel's ``prepare`` gives."""
    keep: tuple                       # per state tensor: None or (T, B|1, H|1) with 1 = keep the old value
    mask: Tensor | None               # (B, H) hidden-dropout mask on the recurrent input, or None
    binary: bool                      # every keep mask is 0 or 1 (training zoneout, sequence ends)
    act: str | None = None            # the leaky family's f (None: the identity) ...
    phi: str | None = None            # ... and ψ, applied to the state before W (None: the identity)
    alpha_value: float | None = None  # a leak that is one number (the rate cell's dt/τ); a tensor is an extra
    eps: float = 0.0                  # the layer norms' epsilon

    def encode(self) -> str:
        """The fields that are not tensors, and which masks are present, as text for torch.compile's operator
        (:mod:`.ops`): plain string work that dynamo traces (json's C encoder it cannot); numbers as
        ``repr``, which :meth:`decode` reads back exactly."""
        alpha = "" if self.alpha_value is None else repr(float(self.alpha_value))
        return ";".join((f"binary={int(bool(self.binary))}", f"act={self.act or ''}", f"phi={self.phi or ''}",
                         f"alpha_value={alpha}", f"eps={float(self.eps)!r}",
                         "keep=" + "".join("0" if k is None else "1" for k in self.keep),
                         f"mask={int(self.mask is not None)}"))

    @classmethod
    def decode(cls, text: str, keep, mask) -> "Run":
        """The run :meth:`encode` wrote, with its tensors ``keep`` and ``mask`` (absent ones as placeholders)."""
        fields = dict(item.split("=", 1) for item in text.split(";"))
        return cls(keep=tuple(k if flag == "1" else None for k, flag in zip(keep, fields["keep"])),
                   mask=mask if fields["mask"] == "1" else None, binary=fields["binary"] == "1",
                   act=fields["act"] or None, phi=fields["phi"] or None,
                   alpha_value=float(fields["alpha_value"]) if fields["alpha_value"] else None,
                   eps=float(fields["eps"]))


def adjoint_single(ops, coefficients, W: Tensor, dZ: Tensor, ln_weight=None):
    """The adjoint recursion of a one-tensor state (module docstring), backwards in time:

        du_t = R_t ⊙ dz_t,   dz_{t-1} = dZ_{t-1} + E_t ⊙ dz_t + (dv_t W) ⊙ ρ_t

    ``coefficients(t0, t1)`` gives, for steps ``t0 .. t1-1``, ``R`` (n, B, H) or (n, B, blocks, H),
    ``E`` (n, B, H) or None, ``ρ`` (n, B, H), (B, H) or None, and for a layer-normalized recurrent
    part computed by a centred GEMM ``(X, rstd, rstd²/G)`` (see :func:`layer_norm_scales`;
    else None): then ``dv_t`` is the layer-norm backward of ``du_t``, else ``du_t`` itself.
    Returns ``DU`` (T, B, G), ``DV`` (T, B, G) (``DU`` itself without layer norm), ``DZ``
    (T, B, H) the adjoints of ``z_t``, and ``dz_{-1}``.
    """
    if hasattr(ops, "adjoint_single"):            # the whole recursion in one call (the Triton kernels)
        return ops.adjoint_single(coefficients, W, dZ, ln_weight)
    T, B, H = dZ.shape
    G = W.shape[0]
    DU, DZ = empty(dZ, T, B, G), empty(dZ, T, B, H)
    DV = DU if ln_weight is None else empty(dZ, T, B, G)
    dz0 = empty(dZ, B, H)
    a = ops.array
    du_, du4, dv_, dz_, dZ_, W_, dz0_ = a(DU), a(DU.view(T, B, -1, H)), a(DV), a(DZ), a(dZ), ops.matrix(W, B), a(dz0)
    ln_weight = None if ln_weight is None else a(ln_weight)
    tmp = a(empty(dZ, B, H))
    dz_[T - 1] = dZ_[T - 1]
    for t0, t1 in step_chunks(T, B * G):
        R, E, rho, ln = coefficients(t0, t1)
        R_, blocks = a(R), R.dim() == 4
        E_ = None if E is None else a(E)
        rho_, rho_steps = (None, False) if rho is None else (a(rho), rho.dim() == 3)
        if ln is not None:
            ln_x, ln_rstd, ln_r2 = (a(v) for v in ln)
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            dz = dz_[t]
            if blocks:
                ops.mul(R_[j], dz[:, None], out=du4[t])
            else:
                ops.mul(R_[j], dz, out=du_[t])
            dv = du_[t]
            if ln is not None:
                dv = ops.layer_norm_backward(dv, ln_weight, ln_x[j], ln_rstd[j], ln_r2[j], out=dv_[t],
                                             centred=False)
            target = dz_[t - 1] if t > 0 else dz0_
            add = dZ_[t - 1] if t > 0 else None
            if rho_ is None:
                ops.gemm(dv, W_, out=target, add=add)
            else:
                ops.gemm(dv, W_, out=target)
                ops.mul(target, rho_[j] if rho_steps else rho_, out=target)
                if add is not None:
                    ops.add(target, add, out=target)
            if E_ is not None:
                ops.mul(dz, E_[j], out=tmp)
                ops.add(target, tmp, out=target)
    return DU, DV, DZ, dz0


def per_step(k: Tensor | None, T: int, B: int, H: int) -> Tensor | None:
    """A keep mask broadcast to (T, B, H) and laid out contiguously, for per-step rows."""
    if k is None:
        return None
    return empty(k, T, B, H).copy_(k.expand(T, B, H))


class Kernel:
    """One cell family: ``prepare`` (autograd side), ``forward`` and ``backward`` (inside the Function).

    ``prepare(parameters, xs) -> (P, W, extras, options)``, from the cell's ``fused_parameters()``
    (a :data:`record`, :mod:`rnnkit.cells.fused`): the input side of every step (autograd tracks it),
    the recurrent matrix, the extra tensors the loops need (their gradients are returned by
    ``backward``) and the fields of the :class:`Run`. ``forward(ops, run, P, W, states,
    extras) -> (histories, saved)``; ``backward(ops, run, saved, W, states, extras, outputs,
    grads, needs) -> (dP, dW, d_states, d_extras)``.
    """
    components = 1                    # state tensors
    blocks = 1                        # gate blocks of P: (T, B, blocks·H)
    record: type = object             # the type of the cell's ``fused_parameters()`` that ``prepare`` reads

    def supports(self, parameters) -> str | None:
        """Why this kernel cannot run a cell whose ``fused_parameters()`` gave ``parameters`` (after the
        cell's name), or None."""
        if not isinstance(parameters, self.record):
            return (f"gives a {type(parameters).__name__} from fused_parameters(), where the kernel reads a "
                    f"{self.record.__name__}")
        return None

    def emitted(self, cell: Cell, Z0: Tensor) -> Tensor:
        """The layer output for the history of the first state tensor, (T, B, O)."""
        return Z0

    def histories(self, outputs: dict) -> tuple:
        """What :meth:`forward` returns (the autograd Function's outputs), from the operator's outputs by
        name (:meth:`operator_outputs`): the first state tensor's history, and here nothing else."""
        return (next(iter(outputs.values())),)

    # the kernel as torch.compile's operator sees it (:mod:`.ops`): what crosses it, and back
    def operator_outputs(self, run: Run, extras, H: int, G: int) -> list:
        """``[(name, width)]`` of the operator's outputs, each (T, B, width): the first state tensor's
        history (named as in ``saved``), then the intermediates of ``saved`` the backward reads."""
        raise NotImplementedError

    def operator_inputs(self, ops, run: Run, extras, saved: dict, grads: dict):
        """From the operator's outputs ``saved`` and their gradients ``grads`` (None where none came;
        both by name): ``(outputs, d_outputs)`` as :meth:`backward` takes them; completes ``saved``
        with what the forward kept besides its outputs."""
        (name, _), *_ = self.operator_outputs(run, extras, 1, 1)
        return (saved[name],), (or_zeros(grads[name], saved[name]),)


def norms_match(layer_norm: bool, parameters) -> str | None:
    """Why a kernel with (``layer_norm``) or without layer norms cannot read ``parameters``, or None."""
    if (parameters.layer_norm is not None) != layer_norm:
        return f"gives fused_parameters() {'without' if layer_norm else 'with'} the layer norms the kernel reads"
    return None


def or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad
