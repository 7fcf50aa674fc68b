r"""Compiled (numba) pointwise steps of the fused LSTM kernel on the CPU.

A step of the layer-norm LSTM in NumPy is about sixty calls: at batch 1 their call overhead is the
cost, at batch 32 their passes over memory are. Here the pointwise part of a step — every row of it —
is one compiled loop (numba, an optional dependency: the ``fast`` extra):

* ``step_forward`` / ``step_backward`` / ``step_backward_tail``: one step, for a caller that runs the
  step's GEMM itself (oneDNN or BLAS, at large batches);
* ``forward`` / ``backward``: the whole sequence in one call, GEMMs included as compiled loops
  (small steps, where a BLAS call would cost more than its arithmetic).

They compute what the NumPy loop of ``lstm.LSTMKernel`` computes: the same equations, the same
saved histories and layer-norm scales. That NumPy loop is their slow twin; tests/test_fused.py
checks both against each other and against the ``loop`` engine, in float64.

In float32 ``tanh`` is a rational approximation that the compiler vectorizes (``_tanh``: within
4e-7 of the true value, NaN kept); in float64 it is the C library's. Conventions are the NumPy
loop's: gates ``[o, i, f, g]``; ``P`` the input side with every bias folded in; ``Wt = W^T`` (H, G),
with a layer norm ``W`` centred (``W h`` has zero mean); ``ln_h = γ_h √G``, ``ln_c = γ_c √H`` in the
forward, the raw ``γ`` in the backward; keep masks (T, B, H), 1 = keep the old value; ``binary``
masks select instead of interpolating. Absent arrays are passed as empty ones.
"""
from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import types
    from numba.extending import overload
except ImportError:                                                   # pragma: no cover - optional
    numba = None

__all__ = ["AVAILABLE", "forward", "backward", "step_forward", "step_backward", "step_backward_tail"]

AVAILABLE = numba is not None

# tanh(x) ≈ x P(x²) / Q(x²) on |x| ≤ 9 (and ±1 beyond): fitted here to the relative error of
# tanh(x)/x by iteratively reweighted least squares; 2e-8 in exact arithmetic, 4e-7 in float32
_P = (9.99999980e-01, 1.33811912e-01, 3.49577988e-03, 2.06120415e-05, 1.33583950e-08)
_Q = (1.0, 4.67145070e-01, 2.58777244e-02, 3.28593992e-04, 7.77816381e-07)


def _tanh(x):
    """tanh as the compiled loops compute it (float32: the rational approximation)."""
    return np.tanh(x)


def tanh32(x: np.ndarray) -> np.ndarray:
    """The float32 approximation on an array, in NumPy (for tests and for the docs' figures)."""
    x = np.asarray(x, np.float32)
    xc = np.where(x > 9, np.float32(9), np.where(x < -9, np.float32(-9), x))
    y = xc * xc
    p = np.float32(_P[4])
    for c in _P[3::-1]:
        p = p * y + np.float32(c)
    q = np.float32(_Q[4])
    for c in _Q[3::-1]:
        q = q * y + np.float32(c)
    r = xc * p / q
    return np.where(r > 1, np.float32(1), np.where(r < -1, np.float32(-1), r)).astype(np.float32)


if AVAILABLE:
    p0, p1, p2, p3, p4 = (np.float32(c) for c in _P)
    q1, q2, q3, q4 = (np.float32(c) for c in _Q[1:])
    _nine, _one = np.float32(9.0), np.float32(1.0)

    @overload(_tanh)
    def _tanh_impl(x):
        if x == types.float32:
            def tanh32_impl(x):
                xc = _nine if x > _nine else x                         # selects: a NaN stays NaN
                xc = -_nine if xc < -_nine else xc
                y = xc * xc
                r = xc * ((((p4 * y + p3) * y + p2) * y + p1) * y + p0) / ((((q4 * y + q3) * y + q2) * y + q1) * y
                                                                            + _one)
                r = _one if r > _one else r
                return -_one if r < -_one else r
            return tanh32_impl
        return lambda x: np.tanh(x)

    # error_model="numpy": a division does not test for a zero divisor (which stops vectorization)
    _jit = numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True, error_model="numpy")
else:                                                                 # pragma: no cover
    def _jit(fn):
        return fn


@_jit
def _step_forward(t, U, P, hp, cp, mask, kh, kc, binary, ln_h, ln_c, ln_cb, k, A, Hs, C, TC, S, Cc, Sc, R):
    """Step ``t`` from the recurrent GEMM output ``U`` (B, G; with a layer norm, the history ``V[t]``
    itself) and the previous state ``hp``, ``cp``; writes the step's histories and ``R = h_t ⊙ mask``,
    the next GEMM's input. ``k``: constants ``[1/2, 1, 0, G·eps, H·eps, 1/H]`` in the loop's dtype."""
    B, G = U.shape
    H = G // 4
    half, one, zero, g_eps, h_eps, inv_h = k[0], k[1], k[2], k[3], k[4], k[5]
    layer_norm, has_mask, has_kh, has_kc, has_cb = (ln_h.shape[0] > 0, mask.shape[0] > 0, kh.shape[0] > 0,
                                                    kc.shape[0] > 0, ln_cb.shape[0] > 0)
    for b in range(B):
        a, u, tc = A[t, b], U[b], TC[t, b]
        if layer_norm:                                                # W centred: u has zero mean
            ss = zero
            for g in range(G):
                ss += u[g] * u[g]
            s = one / np.sqrt(ss + g_eps)
            S[t, b, 0] = s
            for g in range(G):
                a[g] = u[g] * s * ln_h[g] + P[t, b, g]
        else:
            for g in range(G):
                a[g] = u[g] + P[t, b, g]
        for g in range(3 * H):
            a[g] = half * _tanh(half * a[g]) + half
        for g in range(3 * H, G):
            a[g] = _tanh(a[g])
        ct = C[t, b]
        for j in range(H):                                            # c~ = f c + i g
            ct[j] = a[2 * H + j] * cp[b, j] + a[H + j] * a[3 * H + j]
        if layer_norm:
            mean = zero
            for j in range(H):
                mean += ct[j]
            mean *= inv_h
            ss = zero
            for j in range(H):
                d = ct[j] - mean
                Cc[t, b, j] = d
                ss += d * d
            sc = one / np.sqrt(ss + h_eps)
            Sc[t, b, 0] = sc
            for j in range(H):
                z = Cc[t, b, j] * sc * ln_c[j]
                if has_cb:
                    z += ln_cb[j]
                tc[j] = _tanh(z)
        else:
            for j in range(H):
                tc[j] = _tanh(ct[j])
        for j in range(H):
            hn = a[j] * tc[j]
            cn = ct[j]
            if has_kc:
                if binary:
                    cn = cp[b, j] if kc[t, b, j] > half else cn
                else:
                    cn = cn + kc[t, b, j] * (cp[b, j] - cn)
            if has_kh:
                if binary:
                    hn = hp[b, j] if kh[t, b, j] > half else hn
                else:
                    hn = hn + kh[t, b, j] * (hp[b, j] - hn)
            ct[j] = cn
            Hs[t, b, j] = hn
            R[b, j] = hn * mask[b, j] if has_mask else hn


@_jit
def _step_backward(t, dh, dc, cp, kh, kc, A, TC, V, S, Cc, Sc, ln_h, ln_c, k, DU, DV, DLNC):
    """Step ``t`` backwards from the adjoints ``dh``, ``dc`` of ``h_t``, ``c_t``: writes ``DU[t]``,
    ``DV[t]`` (the GEMM's input ``dv``; ``DV`` is ``DU`` without a layer norm), ``DLNC[t]``, and
    ``dc`` becomes the adjoint of ``c_{t-1}``. ``k``: ``[1, 0, √G, √H, 1/G, 1/H]``."""
    B, G = dh.shape[0], A.shape[2]
    H = G // 4
    one, zero, root_g, root_h, inv_g, inv_h = k[0], k[1], k[2], k[3], k[4], k[5]
    layer_norm, has_kh, has_kc = ln_h.shape[0] > 0, kh.shape[0] > 0, kc.shape[0] > 0
    for b in range(B):
        a, tc, du, dv = A[t, b], TC[t, b], DU[t, b], DV[t, b]
        dct = DLNC[t, b] if layer_norm else DU[t, b, 3 * H:]          # scratch: overwritten below
        for j in range(H):
            omk = one - kh[t, b, j] if has_kh else one
            dct[j] = dh[b, j] * a[j] * (one - tc[j] * tc[j]) * omk      # dh -> d(c~, or LN(c~))
        if layer_norm:                                                # LN backward, DLNC keeps its input
            rc = Sc[t, b, 0] * root_h
            q = zero
            mean = zero
            for j in range(H):
                d = dct[j] * ln_c[j]
                q += d * Cc[t, b, j]
                mean += d
            q *= rc * rc * inv_h
            mean *= inv_h
            for j in range(H):
                du[3 * H + j] = rc * (dct[j] * ln_c[j] - Cc[t, b, j] * q - mean)
            dct = du[3 * H:]
        for j in range(H):
            o, i, f, g = a[j], a[H + j], a[2 * H + j], a[3 * H + j]
            omkh = one - kh[t, b, j] if has_kh else one
            d = dct[j] + (dc[b, j] * (one - kc[t, b, j]) if has_kc else dc[b, j])
            du[j] = dh[b, j] * tc[j] * o * (one - o) * omkh
            du[H + j] = g * i * (one - i) * d
            du[2 * H + j] = cp[b, j] * f * (one - f) * d
            dc[b, j] = d * f + (dc[b, j] * kc[t, b, j] if has_kc else zero)
            du[3 * H + j] = i * (one - g * g) * d
        if layer_norm:
            rh = S[t, b, 0] * root_g
            q = zero
            for g in range(G):
                q += du[g] * ln_h[g] * V[t, b, g]
            q *= rh * rh * inv_g
            for g in range(G):
                dv[g] = rh * (du[g] * ln_h[g] - V[t, b, g] * q)


@_jit
def _step_backward_tail(t, dW, dh, mask, kh, dH):
    """After step ``t``'s GEMM ``dW = dv W``: ``dh`` becomes the adjoint of ``h_{t-1}``."""
    B, H = dh.shape
    has_mask, has_kh = mask.shape[0] > 0, kh.shape[0] > 0
    for b in range(B):
        for j in range(H):
            x = dW[b, j] * mask[b, j] if has_mask else dW[b, j]
            if has_kh:
                x += kh[t, b, j] * dh[b, j]
            if t > 0:
                x += dH[t - 1, b, j]
            dh[b, j] = x


@_jit
def _forward(P, Wt, h0, c0, mask, kh, kc, binary, ln_h, ln_c, ln_cb, k, A, Hs, C, TC, V, S, Cc, Sc):
    T, B, G = P.shape
    H = G // 4
    Ub = np.empty((B, G), P.dtype)
    R = np.empty((B, H), P.dtype)
    for b in range(B):
        for j in range(H):
            R[b, j] = h0[b, j] * mask[b, j] if mask.shape[0] > 0 else h0[b, j]
    for t in range(T):
        U = V[t] if ln_h.shape[0] > 0 else Ub
        for b in range(B):                                            # U = R W^T
            u = U[b]
            for g in range(G):
                u[g] = k[2]
            for j in range(H):
                r = R[b, j]
                for g in range(G):
                    u[g] += r * Wt[j, g]
        hp = h0 if t == 0 else Hs[t - 1]
        cp = c0 if t == 0 else C[t - 1]
        _step_forward(t, U, P, hp, cp, mask, kh, kc, binary, ln_h, ln_c, ln_cb, k, A, Hs, C, TC, S, Cc, Sc, R)


@_jit
def _backward(dH, dc, Wt2, c0, C, mask, kh, kc, A, TC, V, S, Cc, Sc, ln_h, ln_c, k, DU, DV, DLNC, dh):
    T, B, H = dH.shape
    G = 4 * H
    dW = np.empty((B, H), dH.dtype)
    for b in range(B):
        for j in range(H):
            dh[b, j] = dH[T - 1, b, j]
    for t in range(T - 1, -1, -1):
        cp = c0 if t == 0 else C[t - 1]
        _step_backward(t, dh, dc, cp, kh, kc, A, TC, V, S, Cc, Sc, ln_h, ln_c, k, DU, DV, DLNC)
        for b in range(B):                                            # dW = dv W
            dv = DV[t, b]
            for j in range(H):
                s = k[1]
                for g in range(G):
                    s += Wt2[j, g] * dv[g]
                dW[b, j] = s
        _step_backward_tail(t, dW, dh, mask, kh, dH)


@_jit
def _norm_rows_forward(n, out, rstd, gamma, beta, k):
    """Layer norm of every row of ``n`` (N, G), in place to the normalized rows; ``out = n γ (+ β)``,
    ``rstd`` (N, 1) = (var + eps)^(-1/2). The input side of the layer-norm cells (``projection``)."""
    N, G = n.shape
    has_beta = beta.shape[0] > 0
    inv_g, eps = k[0], k[1]
    for r in range(N):
        row, o = n[r], out[r]
        mean = row[0] * 0
        for g in range(G):
            mean += row[g]
        mean *= inv_g
        var = mean * 0
        for g in range(G):
            d = row[g] - mean
            row[g] = d
            var += d * d
        s = 1 / np.sqrt(var * inv_g + eps)
        rstd[r, 0] = s
        for g in range(G):
            x = row[g] * s
            row[g] = x
            o[g] = x * gamma[g] + beta[g] if has_beta else x * gamma[g]


@_jit
def _norm_rows_backward(dP, n, rstd, gamma, d_gamma, d_beta, da, want_gamma, want_beta, want_a, k):
    """The backward of ``_norm_rows_forward``: ``d_gamma``, ``d_beta`` (G,) accumulated, ``da`` (N, G)."""
    N, G = dP.shape
    inv_g = k[0]
    for r in range(N):
        d, x = dP[r], n[r]
        if want_gamma:
            for g in range(G):
                d_gamma[g] += d[g] * x[g]
        if want_beta:
            for g in range(G):
                d_beta[g] += d[g]
        if want_a:
            mean = d[0] * 0
            q = d[0] * 0
            for g in range(G):
                dn = d[g] * gamma[g]
                mean += dn
                q += dn * x[g]
            mean *= inv_g
            q *= inv_g
            s, out = rstd[r, 0], da[r]
            for g in range(G):
                out[g] = s * (d[g] * gamma[g] - mean - x[g] * q)


def norm_rows_forward(n, out, rstd, gamma, beta, eps: float):
    _norm_rows_forward(n, out, rstd, gamma, or_empty(beta, n.dtype, 1), np.array([1 / n.shape[1], eps], n.dtype))


def norm_rows_backward(dP, n, rstd, gamma, d_gamma, d_beta, da, want_gamma, want_beta):
    """``da`` None: no input gradient wanted."""
    _norm_rows_backward(dP, n, rstd, gamma, d_gamma, d_beta, or_empty(da, n.dtype, 2), bool(want_gamma),
                        bool(want_beta), da is not None, np.array([1 / n.shape[1]], n.dtype))


def or_empty(v, dtype, dims: int):
    """``v``, or for an absent array (None) an empty one of ``dims`` dimensions, as the loops take it."""
    return np.zeros((0,) * dims, dtype) if v is None else v


def forward_constants(dtype, G: int, H: int, eps: float):
    return np.array([0.5, 1.0, 0.0, G * eps, H * eps, 1.0 / H], dtype)


def backward_constants(dtype, G: int, H: int):
    return np.array([1.0, 0.0, G ** 0.5, H ** 0.5, 1.0 / G, 1.0 / H], dtype)


def forward_args(dt, mask, kh, kc, ln_h, ln_c, ln_cb, V, S, Cc, Sc):
    """The optional arrays of a forward, absent ones empty."""
    return ((or_empty(mask, dt, 2), or_empty(kh, dt, 3), or_empty(kc, dt, 3)),
            tuple(or_empty(v, dt, 1) for v in (ln_h, ln_c, ln_cb)),
            tuple(or_empty(v, dt, 3) for v in (V, S, Cc, Sc)))


def forward(P, Wt, h0, c0, mask, kh, kc, binary, ln_h, ln_c, ln_cb, eps, A, Hs, C, TC, V, S, Cc, Sc):
    """The whole forward in one call; ``None`` for an absent mask, norm weight or history."""
    G = P.shape[2]
    (mask, kh, kc), ln, hist = forward_args(P.dtype, mask, kh, kc, ln_h, ln_c, ln_cb, V, S, Cc, Sc)
    _forward(P, Wt, h0, c0, mask, kh, kc, bool(binary), *ln, forward_constants(P.dtype, G, G // 4, eps),
             A, Hs, C, TC, *hist)


def backward(dH, dcT, Wt2, c0, C, mask, kh, kc, A, TC, V, S, Cc, Sc, ln_h, ln_c, DU, DV, DLNC, dh0, dc0):
    """The whole backward in one call: ``dh0``, ``dc0`` receive the adjoints of the initial state."""
    dt, H = A.dtype, dH.shape[2]
    dc0[...] = dcT
    _backward(dH, dc0, Wt2, c0, C, or_empty(mask, dt, 2), or_empty(kh, dt, 3), or_empty(kc, dt, 3), A, TC,
              *(or_empty(v, dt, 3) for v in (V, S, Cc, Sc)), or_empty(ln_h, dt, 1), or_empty(ln_c, dt, 1),
              backward_constants(dt, 4 * H, H), DU, DV, or_empty(DLNC, dt, 3), dh0)


step_forward, step_backward, step_backward_tail = _step_forward, _step_backward, _step_backward_tail
