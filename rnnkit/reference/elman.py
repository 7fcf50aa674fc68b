r"""Reference Elman network with hand-derived backpropagation through time.

NumPy only, float64 throughout, no automatic differentiation: this module is the
oracle the rest of rnnkit is tested against.

Model (steps :math:`t = 1..T`, initial state :math:`s_0`, integer targets :math:`y_t`)::

    z1_t = W_sx x_t + W_ss s_{t-1} + b_s          pre-activation      (B, H)
    s_t  = f(z1_t)                                hidden state        (B, H)
    z2_t = W_o s_t + b_o                          logits              (B, V)
    p_t  = softmax(z2_t)                          output distribution (B, V)
    L_t  = - sum_b log p_t[b, y_t[b]]             cross-entropy, summed over the batch
    L    = sum_t L_t

with ``f`` either ``tanh`` or ``relu``. Arrays are time-major: ``xs`` is (T, B, X),
``targets`` is (T, B), states are (B, H). The weight layout is that of ``torch.nn.RNN``
(``W_sx`` is ``weight_ih_l0``, ``W_ss`` is ``weight_hh_l0``; torch's two biases add up
to ``b_s``) followed by a ``torch.nn.Linear(H, V)`` readout (``W_o``, ``b_o``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._common import _as_array, _bptt_driver, _check_truncation, _check_xs

__all__ = ["ElmanCache", "elman_forward", "elman_bptt", "elman_jacobians"]

_ELMAN_KEYS = ("W_sx", "W_ss", "b_s", "W_o", "b_o")
_NONLINEARITIES = ("tanh", "relu")


# ----------------------------------------------------------------------------------------
# Elman network
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ElmanCache:
    """What :func:`elman_forward` keeps for the backward pass.

    Attributes:
        xs: inputs, (T, B, X).
        hs: hidden states ``s_0 .. s_T``, (T+1, B, H); ``hs[0]`` is the initial state.
        z1: pre-activations ``z1_1 .. z1_T``, (T, B, H).
        logits: readout ``z2_1 .. z2_T``, (T, B, V).
        probs: ``softmax(z2_t)``, (T, B, V).
        nonlinearity: ``"tanh"`` or ``"relu"``.
    """
    xs: np.ndarray
    hs: np.ndarray
    z1: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    nonlinearity: str


def _check_nonlinearity(owner: str, nonlinearity: str) -> str:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"{owner}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity


def _act(nonlinearity: str, z: np.ndarray) -> np.ndarray:
    return np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0)


def _act_grad_from_output(nonlinearity: str, s: np.ndarray) -> np.ndarray:
    """``f'(z)`` written in terms of ``s = f(z)``: ``1 - s^2`` for tanh, ``[s > 0]`` for relu
    (the derivative at 0 is taken as 0, as torch does)."""
    return 1.0 - s * s if nonlinearity == "tanh" else (s > 0).astype(np.float64)


def _elman_params(owner: str, params: Mapping[str, np.ndarray], X: int | None = None) -> dict:
    missing = [k for k in _ELMAN_KEYS if k not in params]
    if missing:
        raise ValueError(f"{owner}: params is missing {missing}; expected keys {list(_ELMAN_KEYS)}")
    W_ss = _as_array(owner, "W_ss", params["W_ss"], (None, None))
    H = W_ss.shape[0]
    W_o = _as_array(owner, "W_o", params["W_o"], (None, H))
    V = W_o.shape[0]
    return {"W_sx": _as_array(owner, "W_sx", params["W_sx"], (H, X)),
            "W_ss": _as_array(owner, "W_ss", W_ss, (H, H)),
            "b_s": _as_array(owner, "b_s", params["b_s"], (H,)),
            "W_o": W_o,
            "b_o": _as_array(owner, "b_o", params["b_o"], (V,))}


def elman_forward(params: Mapping[str, np.ndarray], xs: np.ndarray, h0: np.ndarray | None,
                  nonlinearity: str = "tanh") -> ElmanCache:
    """Run the Elman network forward and keep everything the backward pass needs.

    Args:
        params: ``W_sx`` (H, X), ``W_ss`` (H, H), ``b_s`` (H,), ``W_o`` (V, H), ``b_o`` (V,).
        xs: inputs, (T, B, X), T >= 1.
        h0: initial state ``s_0``, (B, H); ``None`` means zeros.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        :class:`ElmanCache` with ``hs`` (T+1, B, H), ``z1`` (T, B, H), ``logits`` and
        ``probs`` (T, B, V). Computed in float64.
    """
    owner = "elman_forward"
    _check_nonlinearity(owner, nonlinearity)
    xs = _check_xs(owner, xs)
    T, B, X = xs.shape
    p = _elman_params(owner, params, X)
    H = p["W_ss"].shape[0]
    h0 = np.zeros((B, H)) if h0 is None else _as_array(owner, "h0", h0, (B, H))

    hs = np.empty((T + 1, B, H))
    hs[0] = h0
    z1 = xs @ p["W_sx"].T + p["b_s"]               # input part of every step at once
    for t in range(T):
        z1[t] += hs[t] @ p["W_ss"].T
        hs[t + 1] = _act(nonlinearity, z1[t])
    logits = hs[1:] @ p["W_o"].T + p["b_o"]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    probs = e / e.sum(axis=-1, keepdims=True)
    return ElmanCache(xs=xs, hs=hs, z1=z1, logits=logits, probs=probs, nonlinearity=nonlinearity)


def _cross_entropy_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """``-sum log softmax(logits)[target]`` over time and batch, via a stable log-sum-exp."""
    m = logits.max(axis=-1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((log_z - picked).sum())


def elman_bptt(params: Mapping[str, np.ndarray], xs: np.ndarray, targets: np.ndarray,
               h0: np.ndarray | None, *, truncation: int | None = None,
               nonlinearity: str = "tanh") -> tuple[float, dict]:
    r"""Loss and gradients of the Elman network by backpropagation through time.

    Derivation (one sequence; the batch adds a sum over ``b`` to every weight gradient).
    Let ``g_t = dL_t/dz2_t = p_t - onehot(y_t)`` be the softmax-cross-entropy gradient of
    step ``t``. Define the *future-loss delta*

    .. math::  \delta_t = \frac{\partial}{\partial s_t} \sum_{\tau > t} L_\tau ,
               \qquad \delta_T = 0,

    the gradient of all later losses with respect to ``s_t``. The state ``s_t`` reaches
    ``L_t`` through the readout and the later losses only through ``z1_{t+1}``, so the whole
    gradient on ``s_t`` is ``W_o^T g_t + \delta_t`` and, by the chain rule through
    ``z1_t = W_sx x_t + W_ss s_{t-1} + b_s``,

    .. math::  \delta_{t-1} = W_{ss}^T \,\mathrm{diag}(f'(z1_t))\,(W_o^T g_t + \delta_t).

    With ``\gamma_t = \mathrm{diag}(f'(z1_t)) (W_o^T g_t + \delta_t) = \partial L / \partial z1_t``
    the gradients are accumulated over ``t = 1..T``::

        dL/dW_o  = sum_t g_t s_t^T            dL/db_o = sum_t g_t
        dL/dW_ss = sum_t gamma_t s_{t-1}^T    dL/db_s = sum_t gamma_t
        dL/dW_sx = sum_t gamma_t x_t^T        dL/dx_t = W_sx^T gamma_t
        dL/ds_0  = delta_0

    ``f'(z1_t)`` is ``1 - s_t^2`` for tanh and ``[z1_t > 0]`` for relu.

    Truncated BPTT (``truncation=k``): each ``L_t`` is back-propagated on its own through at
    most ``k`` transitions (steps ``t, t-1, ..., t-k+1``), treating ``s_{t-k}`` as a constant;
    when ``t - k <= 0`` the gradient reaches ``s_0`` as usual. The readout gradients are not
    affected. ``k >= T`` gives full BPTT. Cost O(T k).

    Args:
        params: ``W_sx`` (H, X), ``W_ss`` (H, H), ``b_s`` (H,), ``W_o`` (V, H), ``b_o`` (V,).
        xs: inputs, (T, B, X).
        targets: integer class indices in ``[0, V)``, (T, B).
        h0: initial state, (B, H); ``None`` means zeros.
        truncation: ``None`` (full BPTT) or a positive int ``k``.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        ``(loss, grads)``: the summed cross-entropy ``L`` as a float, and a dict with the
        gradient of ``L`` for every key of ``params`` plus ``"h0"`` (B, H) and ``"xs"``
        (T, B, X), all float64.
    """
    owner = "elman_bptt"
    k = _check_truncation(truncation)
    cache = elman_forward(params, xs, h0, nonlinearity)
    p = _elman_params(owner, params)
    xs, hs = cache.xs, cache.hs
    T, B, X = xs.shape
    V = p["W_o"].shape[0]
    targets = np.asarray(targets)
    if targets.shape != (T, B) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{owner}: expected integer targets of shape {(T, B)}, got "
                         f"{targets.dtype} {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= V):
        raise ValueError(f"{owner}: targets must lie in [0, {V}), got values in "
                         f"[{targets.min()}, {targets.max()}]")
    loss = _cross_entropy_sum(cache.logits, targets)

    g = cache.probs.copy()                          # dL_t/dz2_t = p_t - onehot(y_t), (T, B, V)
    np.put_along_axis(g, targets[..., None], np.take_along_axis(g, targets[..., None], -1) - 1.0, -1)
    fprime = _act_grad_from_output(cache.nonlinearity, hs[1:])     # f'(z1_t), (T, B, H)
    readout_to_state = g @ p["W_o"]                 # W_o^T g_t for every t, (T, B, H)

    grads = {"W_sx": np.zeros_like(p["W_sx"]), "W_ss": np.zeros_like(p["W_ss"]),
             "b_s": np.zeros_like(p["b_s"]),
             "W_o": np.einsum("tbv,tbh->vh", g, hs[1:]), "b_o": g.sum(axis=(0, 1)),
             "xs": np.zeros_like(xs)}

    def step_backward(j: int, d: list) -> list:
        (eps,) = d                                  # W_o^T g_t + delta_t, (B, H)
        gamma = fprime[j] * eps                     # dL/dz1_t
        grads["W_ss"] += gamma.T @ hs[j]
        grads["W_sx"] += gamma.T @ xs[j]
        grads["b_s"] += gamma.sum(axis=0)
        grads["xs"][j] += gamma @ p["W_sx"]
        return [gamma @ p["W_ss"]]                  # delta_{t-1}

    (grads["h0"],) = _bptt_driver(T, lambda j: [readout_to_state[j]], step_backward,
                                  lambda: [np.zeros((B, hs.shape[2]))], k)
    return loss, grads


def elman_jacobians(params: Mapping[str, np.ndarray], hs: np.ndarray,
                    nonlinearity: str = "tanh") -> np.ndarray:
    """Per-step state Jacobians of the Elman network.

    ``J_t = ds_{t+1}/ds_t = diag(f'(z1_{t+1})) W_ss`` for ``t = 0..T-1``; for tanh
    ``f'(z1_{t+1}) = 1 - s_{t+1}^2`` and for relu ``[s_{t+1} > 0]``, so the states alone
    suffice. Products of these matrices govern vanishing and exploding gradients.

    Args:
        params: needs ``W_ss`` (H, H).
        hs: states ``s_0 .. s_T`` as returned in :attr:`ElmanCache.hs`, (T+1, B, H).
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        (T, B, H, H) array; ``J[t, b]`` is the Jacobian of ``s_{t+1}[b]`` with respect to
        ``s_t[b]`` (rows: outputs, columns: inputs).
    """
    owner = "elman_jacobians"
    _check_nonlinearity(owner, nonlinearity)
    if "W_ss" not in params:
        raise ValueError(f"{owner}: params is missing 'W_ss'")
    W_ss = _as_array(owner, "W_ss", params["W_ss"], (None, None))
    H = W_ss.shape[0]
    hs = _as_array(owner, "hs", hs, (None, None, H))
    if hs.shape[0] < 2:
        raise ValueError(f"{owner}: expected hs of shape (T+1, B, H) with T >= 1, got {hs.shape}")
    W_ss = _as_array(owner, "W_ss", W_ss, (H, H))
    fprime = _act_grad_from_output(nonlinearity, hs[1:])            # (T, B, H)
    return fprime[..., :, None] * W_ss
