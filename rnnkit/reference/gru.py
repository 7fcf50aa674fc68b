r"""Reference GRU with hand-derived backpropagation through time (NumPy, float64).

Model, in the layout of ``torch.nn.GRU`` (one layer): ``weight_ih`` (3H, X),
``weight_hh`` (3H, H), ``bias_ih`` (3H,), ``bias_hh`` (3H,), gate chunks in the order
r, z, n. For steps ``t = 1..T``::

    r_t  = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t  = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    hn_t = W_hn h_{t-1} + b_hn                                      recurrent part of n
    n_t  = tanh(W_in x_t + b_in + r_t * hn_t)                       candidate
    h_t  = (1 - z_t) * n_t + z_t * h_{t-1}

Backward through one step, given the gradient ``dh_t`` on ``h_t``::

    dn   = dh_t * (1 - z_t)          dz = dh_t * (h_{t-1} - n_t)
    da_n = dn * (1 - n_t^2)          (gradient on the pre-activation of n)
    da_r = da_n * hn_t * r(1-r)      da_z = dz * z(1-z)      dhn = da_n * r_t
    gi   = [da_r, da_z, da_n]        (input side,  (B, 3H))
    gh   = [da_r, da_z, dhn]         (hidden side, (B, 3H))
    dW_ih += gi^T x_t    db_ih += sum_b gi    dx_t = gi W_ih
    dW_hh += gh^T h_{t-1}  db_hh += sum_b gh
    dh_{t-1} = dh_t * z_t + gh W_hh

Arrays are time-major: ``xs`` (T, B, X), states (B, H).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._common import _as_array, _bptt_driver, _check_truncation, _check_xs, _sigmoid

__all__ = ["GRUCache", "gru_forward", "gru_backward"]

_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class GRUCache:
    """What :func:`gru_forward` keeps for the backward pass.

    Attributes:
        xs: inputs, (T, B, X).
        hs: hidden states ``h_0 .. h_T``, (T+1, B, H); the outputs are ``hs[1:]``.
        r, z, n: reset gate, update gate and candidate of steps ``1..T``, each (T, B, H).
        hn: ``W_hn h_{t-1} + b_hn`` of steps ``1..T``, (T, B, H).
    """
    xs: np.ndarray
    hs: np.ndarray
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    hn: np.ndarray

    @property
    def outputs(self) -> np.ndarray:
        """``h_1 .. h_T``, (T, B, H), as ``torch.nn.GRU`` returns them."""
        return self.hs[1:]


def _gru_params(owner: str, params: Mapping[str, np.ndarray], X: int) -> dict:
    missing = [k for k in _KEYS if k not in params]
    if missing:
        raise ValueError(f"{owner}: params is missing {missing}; expected keys {list(_KEYS)}")
    W_hh = _as_array(owner, "weight_hh", params["weight_hh"], (None, None))
    H = W_hh.shape[1]
    if W_hh.shape[0] != 3 * H:
        raise ValueError(f"{owner}: expected weight_hh of shape (3H, H), got {W_hh.shape}")
    return {"weight_ih": _as_array(owner, "weight_ih", params["weight_ih"], (3 * H, X)),
            "weight_hh": W_hh,
            "bias_ih": _as_array(owner, "bias_ih", params["bias_ih"], (3 * H,)),
            "bias_hh": _as_array(owner, "bias_hh", params["bias_hh"], (3 * H,))}


def gru_forward(params: Mapping[str, np.ndarray], xs: np.ndarray,
                h0: np.ndarray | None) -> GRUCache:
    """Run the GRU forward.

    Args:
        params: ``weight_ih`` (3H, X), ``weight_hh`` (3H, H), ``bias_ih`` (3H,),
            ``bias_hh`` (3H,), gate order r, z, n (as ``torch.nn.GRU``).
        xs: inputs, (T, B, X), T >= 1.
        h0: initial state, (B, H); ``None`` means zeros.

    Returns:
        :class:`GRUCache`; ``cache.hs[1:]`` are the outputs, ``cache.hs[-1]`` the final
        state. Computed in float64.
    """
    owner = "gru_forward"
    xs = _check_xs(owner, xs)
    T, B, X = xs.shape
    p = _gru_params(owner, params, X)
    H = p["weight_hh"].shape[1]
    h0 = np.zeros((B, H)) if h0 is None else _as_array(owner, "h0", h0, (B, H))

    hs = np.empty((T + 1, B, H))
    hs[0] = h0
    r, z, n, hn = (np.empty((T, B, H)) for _ in range(4))
    a_x = xs @ p["weight_ih"].T + p["bias_ih"]                      # (T, B, 3H)
    for t in range(T):
        a_h = hs[t] @ p["weight_hh"].T + p["bias_hh"]               # (B, 3H)
        r[t] = _sigmoid(a_x[t, :, :H] + a_h[:, :H])
        z[t] = _sigmoid(a_x[t, :, H:2 * H] + a_h[:, H:2 * H])
        hn[t] = a_h[:, 2 * H:]
        n[t] = np.tanh(a_x[t, :, 2 * H:] + r[t] * hn[t])
        hs[t + 1] = (1.0 - z[t]) * n[t] + z[t] * hs[t]
    return GRUCache(xs=xs, hs=hs, r=r, z=z, n=n, hn=hn)


def gru_backward(params: Mapping[str, np.ndarray], cache: GRUCache,
                 d_outputs: np.ndarray | None, d_hT: np.ndarray | None = None, *,
                 truncation: int | None = None) -> dict:
    """Backpropagation through time for the GRU (equations in the module docstring).

    The loss is whatever produced the upstream gradients: ``d_outputs[t-1] = dL/dh_t`` for
    every output ``h_t`` and ``d_hT`` on the final state ``h_T``.

    Truncated BPTT (``truncation=k``): the upstream gradient of step ``t`` (``d_hT`` counts
    as step ``T``) flows back through at most ``k`` transitions, steps ``t .. t-k+1``,
    treating ``h_{t-k}`` as a constant; when ``t - k <= 0`` it reaches ``h_0`` normally.
    ``k >= T`` is full BPTT. Cost O(T k).

    Args:
        params: the parameters given to :func:`gru_forward`.
        cache: the :class:`GRUCache` it returned.
        d_outputs: (T, B, H), or ``None`` for zeros.
        d_hT: (B, H), or ``None`` for zeros.
        truncation: ``None`` (full BPTT) or a positive int.

    Returns:
        dict with ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``xs`` (T, B, X)
        and ``h0`` (B, H), float64.
    """
    owner = "gru_backward"
    k = _check_truncation(truncation)
    xs, hs = cache.xs, cache.hs
    T, B, X = xs.shape
    p = _gru_params(owner, params, X)
    H = p["weight_hh"].shape[1]
    d_out = np.zeros((T, B, H)) if d_outputs is None else \
        _as_array(owner, "d_outputs", d_outputs, (T, B, H))
    d_hT = np.zeros((B, H)) if d_hT is None else _as_array(owner, "d_hT", d_hT, (B, H))

    r, z, n, hn = cache.r, cache.z, cache.n, cache.hn
    grads = {"weight_ih": np.zeros_like(p["weight_ih"]), "weight_hh": np.zeros_like(p["weight_hh"]),
             "bias_ih": np.zeros(3 * H), "bias_hh": np.zeros(3 * H), "xs": np.zeros_like(xs)}

    def inject(j: int) -> list:
        return [d_out[j] + d_hT] if j == T - 1 else [d_out[j]]

    def step_backward(j: int, d: list) -> list:
        (dh,) = d
        da_n = dh * (1.0 - z[j]) * (1.0 - n[j] ** 2)
        da_r = da_n * hn[j] * r[j] * (1.0 - r[j])
        da_z = dh * (hs[j] - n[j]) * z[j] * (1.0 - z[j])
        gi = np.concatenate([da_r, da_z, da_n], axis=1)             # dL/d(W_ih x + b_ih)
        gh = np.concatenate([da_r, da_z, da_n * r[j]], axis=1)      # dL/d(W_hh h + b_hh)
        grads["weight_ih"] += gi.T @ xs[j]
        grads["bias_ih"] += gi.sum(axis=0)
        grads["weight_hh"] += gh.T @ hs[j]
        grads["bias_hh"] += gh.sum(axis=0)
        grads["xs"][j] += gi @ p["weight_ih"]
        return [dh * z[j] + gh @ p["weight_hh"]]

    (grads["h0"],) = _bptt_driver(T, inject, step_backward, lambda: [np.zeros((B, H))], k)
    return grads
