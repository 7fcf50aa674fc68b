r"""Jacobian spectra along a trajectory: what one step, and many steps, do to a perturbation.

The one-step state Jacobian :math:`J_t = \partial s_t/\partial s_{t-1}` is the linear map
the backward pass applies at step ``t``: gradients shrink along the directions where its
singular values are below 1 and grow where they are above. For an Elman cell
:math:`s_t = \tanh(W_{ih} x_t + W_{hh} s_{t-1} + b)` it is
:math:`J_t = \mathrm{diag}(1 - s_t^2)\, W_{hh}`; for an LSTM (state ``[h; c]``) its
:math:`c \to c` block is :math:`\mathrm{diag}(f_t)`, the forget gate — the memory path
whose product :math:`\prod_t f_t` is the LSTM's answer to vanishing gradients.

:func:`step_jacobians` computes every :math:`J_t` of any cell from the cell contract
alone: the trajectory is recorded once, then all steps are recomputed in one batched
cell call and differentiated row by row (``S`` vector-Jacobian products, vectorised).

>>> import torch, rnnkit
>>> cell = rnnkit.cells.ElmanCell(2, 4)
>>> jac = step_jacobians(cell, torch.randn(1, 6, 2))
>>> tuple(jac.jacobians.shape)                  # (B, T, S, S)
(1, 6, 4, 4)
>>> spectrum = jacobian_spectrum(jac)
>>> bool((spectrum.spectral_radius <= spectrum.largest_singular_value + 1e-6).all())
True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ..cells.lstm import LSTMCell
from ..init import recurrent_blocks
from .gradients import step_concatenated, trajectory

__all__ = ["StepJacobians", "step_jacobians", "JacobianProducts", "jacobian_products",
           "JacobianSpectrum", "jacobian_spectrum", "ForgetGates", "forget_gate_product",
           "recurrent_eigenvalues"]


@dataclass(frozen=True)
class StepJacobians:
    r"""The one-step Jacobians of a layer along a trajectory.

    Attributes:
        jacobians: (B, T, S, S); ``jacobians[:, t - 1]`` is :math:`\partial s_t/\partial s_{t-1}`
            (rows: the new state, columns: the old one), ``t = 1..T``.
        states: :math:`s_0 .. s_T`, (B, T + 1, S); tuple states concatenated (LSTM: ``[h; c]``).
        state_sizes: sizes of the concatenated state tensors.
    """
    jacobians: Tensor
    states: Tensor
    state_sizes: tuple


def _batched_jacobian(cell, x: Tensor, s: Tensor) -> Tensor:
    """Jacobians of one step for N independent rows: x (N, X), s (N, S) -> (N, S, S)."""
    s = s.detach().requires_grad_(True)
    size = s.shape[-1]
    with torch.enable_grad():
        new = step_concatenated(cell, x.detach(), s)
        basis = torch.eye(size, dtype=s.dtype, device=s.device).unsqueeze(1).expand(size, *new.shape)
        try:
            (rows,) = torch.autograd.grad(new, s, grad_outputs=basis, is_grads_batched=True, allow_unused=True)
        except RuntimeError:        # an operation without a batching rule: one row at a time
            rows = [torch.autograd.grad(new, s, grad_outputs=basis[i], retain_graph=True, allow_unused=True)[0]
                    for i in range(size)]
            rows = None if rows[0] is None else torch.stack(rows)
    if rows is None:                # the new state does not depend on the old one at all
        return s.new_zeros(s.shape[0], size, size)
    return rows.permute(1, 0, 2).detach()                            # (N, S_new, S_old)


def step_jacobians(model, inputs, *, state=None, layer=0) -> StepJacobians:
    r""":math:`\partial s_t/\partial s_{t-1}` for every step ``t`` of one recurrent layer.

    ``model``, ``inputs``, ``state`` and ``layer`` as in
    :func:`rnnkit.analysis.gradients.gradient_flow`. Memory grows as B·T·S², so keep the
    trajectory short for wide layers (e.g. T ≤ 100 for S = 512).
    """
    run = trajectory("step_jacobians", model, inputs, state, layer)
    states = run.stacked_states()                                     # (B, T + 1, S)
    batch, steps, size = states.shape[0], run.steps, states.shape[-1]
    jac = _batched_jacobian(run.cell, run.inputs.reshape(batch * steps, -1),
                            states[:, :-1].reshape(batch * steps, size))
    return StepJacobians(jac.reshape(batch, steps, size, size), states, run.state_sizes)


def _as_jacobians(owner: str, jacobians) -> Tensor:
    jac = jacobians.jacobians if isinstance(jacobians, StepJacobians) else jacobians
    if not isinstance(jac, Tensor) or jac.dim() != 4 or jac.shape[-1] != jac.shape[-2]:
        got = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
        raise ValueError(f"{owner}: expected StepJacobians or a tensor of Jacobians (B, T, S, S), got {got}")
    return jac


@dataclass(frozen=True)
class JacobianProducts:
    r"""Products of step Jacobians, indexed by the lag :math:`n = t - k`.

    Attributes:
        lags: ``0 .. T``.
        products: (B, T + 1, S, S). With ``anchor="end"``: :math:`\partial s_T/\partial s_{T-n}`
            (how the last state depends on earlier ones — the path of the last-step loss's
            gradient); with ``anchor="start"``: :math:`\partial s_n/\partial s_0` (how a
            perturbation of the initial state travels forward). Lag 0 is the identity.
        singular_values: of each product, descending, (B, T + 1, S).
        anchor: ``"end"`` or ``"start"``.
    """
    lags: Tensor
    products: Tensor
    singular_values: Tensor
    anchor: str


def jacobian_products(jacobians, *, anchor: str = "end") -> JacobianProducts:
    r"""The products :math:`\partial s_t/\partial s_k = J_t J_{t-1} \cdots J_{k+1}` and their singular values.

    Their singular values against :math:`t - k` show how fast the memory of step ``k``
    fades (all below 1 and falling: vanishing gradients) or blows up (above 1 and rising).
    Use float64 for long spans: the smallest singular values underflow float32 quickly.

    >>> import torch
    >>> J = 0.5 * torch.eye(3).expand(1, 4, 3, 3)           # four steps that halve the state
    >>> jacobian_products(J).singular_values[0, :, 0]
    tensor([1.0000, 0.5000, 0.2500, 0.1250, 0.0625])
    """
    owner = "jacobian_products"
    jac = _as_jacobians(owner, jacobians)
    if anchor not in ("end", "start"):
        raise ValueError(f"{owner}: anchor must be 'end' (d s_T / d s_k) or 'start' (d s_t / d s_0), "
                         f"got {anchor!r}")
    batch, steps, size, _ = jac.shape
    product = torch.eye(size, dtype=jac.dtype, device=jac.device).expand(batch, size, size)
    products = [product]
    for n in range(1, steps + 1):
        # end: d s_T/d s_{T-n} = (d s_T/d s_{T-n+1}) J_{T-n+1};  start: d s_n/d s_0 = J_n (d s_{n-1}/d s_0)
        product = product @ jac[:, steps - n] if anchor == "end" else jac[:, n - 1] @ product
        products.append(product)
    products = torch.stack(products, dim=1)
    return JacobianProducts(torch.arange(steps + 1), products, torch.linalg.svdvals(products), anchor)


@dataclass(frozen=True)
class JacobianSpectrum:
    """Eigenvalues and singular values of each one-step Jacobian.

    Attributes:
        eigenvalues: complex, (B, T, S).
        singular_values: descending, (B, T, S).
    """
    eigenvalues: Tensor
    singular_values: Tensor

    @property
    def spectral_radius(self) -> Tensor:
        """Largest ``|eigenvalue|`` per step, (B, T)."""
        return self.eigenvalues.abs().amax(-1)

    @property
    def largest_singular_value(self) -> Tensor:
        """The spectral norm per step, (B, T): the most one step can amplify a gradient."""
        return self.singular_values[..., 0]


def jacobian_spectrum(jacobians) -> JacobianSpectrum:
    """Eigenvalues and singular values of every one-step Jacobian (a :class:`StepJacobians`
    or a tensor (B, T, S, S))."""
    jac = _as_jacobians("jacobian_spectrum", jacobians)
    return JacobianSpectrum(torch.linalg.eigvals(jac), torch.linalg.svdvals(jac))


@dataclass(frozen=True)
class ForgetGates:
    r"""The LSTM's forget gates along a trajectory.

    Attributes:
        gates: :math:`f_t`, (B, T, H), ``t = 1..T``.
        retention: :math:`\prod_{\tau=k+1}^{T} f_\tau` for ``k = 0..T``, (B, T + 1, H): the
            diagonal of :math:`\partial c_T/\partial c_k` along the memory path, i.e. the
            share of unit ``i``'s cell content at step ``k`` still there at the end
            (1 at ``k = T``).
    """
    gates: Tensor
    retention: Tensor


def forget_gate_product(model, inputs, *, state=None, layer=0) -> ForgetGates:
    r"""Forget gates :math:`f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf})` and their products.

    ``layer`` must run an :class:`rnnkit.cells.LSTMCell`; other arguments as in
    :func:`rnnkit.analysis.gradients.gradient_flow`.
    """
    owner = "forget_gate_product"
    run = trajectory(owner, model, inputs, state, layer)
    cell = run.cell
    if not isinstance(cell, LSTMCell):
        raise TypeError(f"{owner}: the layer runs a {type(cell).__name__}; forget gates belong to the LSTMCell "
                        f"(for other cells look at step_jacobians)")
    hidden = cell.hidden_size
    with torch.no_grad():
        h_prev = run.stacked_states()[:, :-1, :hidden]                   # h_0 .. h_{T-1}, (B, T, H)
        pre = cell.project_inputs(run.inputs) + F.linear(h_prev, cell.weight_hh, cell.bias_hh)
        gates = torch.sigmoid(pre[..., hidden:2 * hidden])               # gate order i, f, g, o
        tail = torch.cumprod(gates.flip(1), dim=1).flip(1)               # prod_{tau >= k+1} f_tau
        retention = torch.cat([tail, torch.ones_like(gates[:, :1])], dim=1)
    return ForgetGates(gates, retention)


def recurrent_eigenvalues(module) -> dict:
    """Eigenvalues (complex) of every ``H × H`` gate block of every recurrent weight, by name
    (see :func:`rnnkit.init.recurrent_blocks`). Their largest ``|λ|`` is the spectral radius.

    >>> import rnnkit
    >>> from rnnkit.init import init_recurrent_
    >>> cell = rnnkit.cells.ElmanCell(2, 5)
    >>> _ = init_recurrent_(cell, "orthogonal", gain=0.9)
    >>> round(recurrent_eigenvalues(cell)["weight_hh"].abs().max().item(), 6)
    0.9
    """
    return {name: torch.linalg.eigvals(block.to(torch.float64)) for name, block in recurrent_blocks(module).items()}
