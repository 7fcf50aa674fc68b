r"""Reference LSTM with hand-derived backpropagation through time (NumPy, float64).

Model, in the layout of ``torch.nn.LSTM`` (one layer): ``weight_ih`` (4H, X),
``weight_hh`` (4H, H), ``bias_ih`` (4H,), ``bias_hh`` (4H,), gate chunks in the order
i, f, g, o. For steps ``t = 1..T``::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          (B, 4H) = [a_i, a_f, a_g, a_o]
    i_t = sigmoid(a_i)   f_t = sigmoid(a_f)   g_t = tanh(a_g)   o_t = sigmoid(a_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

Backward through one step, given the gradients ``dh_t`` and ``dc_t`` that reach the
state from the loss (``*`` is elementwise)::

    do    = dh_t * tanh(c_t)
    dc    = dc_t + dh_t * o_t * (1 - tanh(c_t)^2)         total gradient on c_t
    di    = dc * g_t      df = dc * c_{t-1}      dg = dc * i_t
    da    = [di * i(1-i), df * f(1-f), dg * (1-g^2), do * o(1-o)]
    dc_{t-1} = dc * f_t   dh_{t-1} = da W_hh      dx_t = da W_ih
    dW_ih += da^T x_t     dW_hh += da^T h_{t-1}   db_ih += sum_b da    db_hh += sum_b da

Arrays are time-major: ``xs`` (T, B, X), states (B, H).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._common import _as_array, _bptt_driver, _check_truncation, _check_xs, _sigmoid

__all__ = ["LSTMCache", "lstm_forward", "lstm_backward"]

_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class LSTMCache:
    """What :func:`lstm_forward` keeps for the backward pass.

    Attributes:
        xs: inputs, (T, B, X).
        hs: hidden states ``h_0 .. h_T``, (T+1, B, H); the outputs are ``hs[1:]``.
        cs: cell states ``c_0 .. c_T``, (T+1, B, H).
        i, f, g, o: gate activations of steps ``1..T``, each (T, B, H).
        tanh_c: ``tanh(c_t)`` for steps ``1..T``, (T, B, H).
    """
    xs: np.ndarray
    hs: np.ndarray
    cs: np.ndarray
    i: np.ndarray
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    tanh_c: np.ndarray

    @property
    def outputs(self) -> np.ndarray:
        """``h_1 .. h_T``, (T, B, H), as ``torch.nn.LSTM`` returns them."""
        return self.hs[1:]


def _lstm_params(owner: str, params: Mapping[str, np.ndarray], X: int) -> dict:
    missing = [k for k in _KEYS if k not in params]
    if missing:
        raise ValueError(f"{owner}: params is missing {missing}; expected keys {list(_KEYS)}")
    W_hh = _as_array(owner, "weight_hh", params["weight_hh"], (None, None))
    H = W_hh.shape[1]
    if W_hh.shape[0] != 4 * H:
        raise ValueError(f"{owner}: expected weight_hh of shape (4H, H), got {W_hh.shape}")
    return {"weight_ih": _as_array(owner, "weight_ih", params["weight_ih"], (4 * H, X)),
            "weight_hh": W_hh,
            "bias_ih": _as_array(owner, "bias_ih", params["bias_ih"], (4 * H,)),
            "bias_hh": _as_array(owner, "bias_hh", params["bias_hh"], (4 * H,))}


def lstm_forward(params: Mapping[str, np.ndarray], xs: np.ndarray, h0: np.ndarray | None,
                 c0: np.ndarray | None) -> LSTMCache:
    """Run the LSTM forward.

    Args:
        params: ``weight_ih`` (4H, X), ``weight_hh`` (4H, H), ``bias_ih`` (4H,),
            ``bias_hh`` (4H,), gate order i, f, g, o (as ``torch.nn.LSTM``).
        xs: inputs, (T, B, X), T >= 1.
        h0, c0: initial hidden and cell state, (B, H) each; ``None`` means zeros.

    Returns:
        :class:`LSTMCache`; ``cache.hs[1:]`` are the outputs, ``cache.hs[-1]`` and
        ``cache.cs[-1]`` the final state. Computed in float64.
    """
    owner = "lstm_forward"
    xs = _check_xs(owner, xs)
    T, B, X = xs.shape
    p = _lstm_params(owner, params, X)
    H = p["weight_hh"].shape[1]
    h0 = np.zeros((B, H)) if h0 is None else _as_array(owner, "h0", h0, (B, H))
    c0 = np.zeros((B, H)) if c0 is None else _as_array(owner, "c0", c0, (B, H))

    hs, cs = np.empty((T + 1, B, H)), np.empty((T + 1, B, H))
    hs[0], cs[0] = h0, c0
    i, f, g, o, tanh_c = (np.empty((T, B, H)) for _ in range(5))
    a_x = xs @ p["weight_ih"].T + p["bias_ih"] + p["bias_hh"]      # (T, B, 4H)
    for t in range(T):
        a = a_x[t] + hs[t] @ p["weight_hh"].T
        i[t] = _sigmoid(a[:, :H])
        f[t] = _sigmoid(a[:, H:2 * H])
        g[t] = np.tanh(a[:, 2 * H:3 * H])
        o[t] = _sigmoid(a[:, 3 * H:])
        cs[t + 1] = f[t] * cs[t] + i[t] * g[t]
        tanh_c[t] = np.tanh(cs[t + 1])
        hs[t + 1] = o[t] * tanh_c[t]
    return LSTMCache(xs=xs, hs=hs, cs=cs, i=i, f=f, g=g, o=o, tanh_c=tanh_c)


def lstm_backward(params: Mapping[str, np.ndarray], cache: LSTMCache,
                  d_outputs: np.ndarray | None, d_hT: np.ndarray | None = None,
                  d_cT: np.ndarray | None = None, *, truncation: int | None = None) -> dict:
    """Backpropagation through time for the LSTM (equations in the module docstring).

    The loss is whatever produced the upstream gradients: ``d_outputs[t-1] = dL/dh_t`` for
    every output ``h_t`` and ``d_hT``, ``d_cT`` on the final state ``(h_T, c_T)``.

    Truncated BPTT (``truncation=k``): the upstream gradient of step ``t`` (``d_outputs``
    of step ``t``; ``d_hT`` and ``d_cT`` count as step ``T``) flows back through at most
    ``k`` transitions, steps ``t .. t-k+1``, treating ``(h_{t-k}, c_{t-k})`` as constants;
    when ``t - k <= 0`` it reaches ``(h_0, c_0)`` normally. ``k >= T`` is full BPTT.
    Cost O(T k).

    Args:
        params: the parameters given to :func:`lstm_forward`.
        cache: the :class:`LSTMCache` it returned.
        d_outputs: (T, B, H), or ``None`` for zeros.
        d_hT, d_cT: (B, H) each, or ``None`` for zeros.
        truncation: ``None`` (full BPTT) or a positive int.

    Returns:
        dict with ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``xs`` (T, B, X),
        ``h0`` and ``c0`` (B, H), float64.
    """
    owner = "lstm_backward"
    k = _check_truncation(truncation)
    xs, hs, cs = cache.xs, cache.hs, cache.cs
    T, B, X = xs.shape
    p = _lstm_params(owner, params, X)
    H = p["weight_hh"].shape[1]
    zeros = lambda: np.zeros((B, H))               # noqa: E731
    d_out = np.zeros((T, B, H)) if d_outputs is None else \
        _as_array(owner, "d_outputs", d_outputs, (T, B, H))
    d_hT = zeros() if d_hT is None else _as_array(owner, "d_hT", d_hT, (B, H))
    d_cT = zeros() if d_cT is None else _as_array(owner, "d_cT", d_cT, (B, H))

    i, f, g, o, tanh_c = cache.i, cache.f, cache.g, cache.o, cache.tanh_c
    dW_ih, dW_hh, db = np.zeros_like(p["weight_ih"]), np.zeros_like(p["weight_hh"]), np.zeros(4 * H)
    dxs = np.zeros_like(xs)

    def inject(j: int) -> list:
        if j == T - 1:
            return [d_out[j] + d_hT, d_cT]
        return [d_out[j], zeros()]

    def step_backward(j: int, d: list) -> list:
        nonlocal dW_ih, dW_hh, db
        dh, dc = d
        d_o = dh * tanh_c[j]
        dc = dc + dh * o[j] * (1.0 - tanh_c[j] ** 2)
        da = np.concatenate([dc * g[j] * i[j] * (1.0 - i[j]),
                             dc * cs[j] * f[j] * (1.0 - f[j]),
                             dc * i[j] * (1.0 - g[j] ** 2),
                             d_o * o[j] * (1.0 - o[j])], axis=1)     # dL/da_t, (B, 4H)
        dW_ih += da.T @ xs[j]
        dW_hh += da.T @ hs[j]
        db += da.sum(axis=0)
        dxs[j] += da @ p["weight_ih"]
        return [da @ p["weight_hh"], dc * f[j]]

    dh0, dc0 = _bptt_driver(T, inject, step_backward, lambda: [zeros(), zeros()], k)
    return {"weight_ih": dW_ih, "weight_hh": dW_hh, "bias_ih": db, "bias_hh": db.copy(),
            "xs": dxs, "h0": dh0, "c0": dc0}
