r"""The fused engine's recurrences as Triton kernels: one launch runs a whole sequence.

Each program owns ``BB`` rows of the batch and every hidden unit of them, and walks the sequence
itself: rows never need each other, so no program waits for another, and a step's layer norms
(whole rows) need no second launch. A step reads the previous state back from the history it
wrote (``Z[t]``, with ``Z[0]`` the initial state) in tiles of ``BK`` columns, multiplies them by
tiles of the recurrent matrix (``tl.dot``, ``BK × BH``; the matrix is read through the GPU's L2
cache, where it stays between steps), finishes ``BH`` hidden units at a time, and ends at a
barrier so that the next step reads complete rows. A layer norm adds a pass over the row (its
statistics), the LSTM's cell norm two. Parallelism is over blocks of rows only: splitting the
hidden units of a step between programs would need a barrier across programs, which Triton's
interpreter (running programs one after another) cannot execute, so the CPU tests could not
check it.

The equations are the CPU kernels' (:mod:`..leaky`, :mod:`..gru`, :mod:`..lstm`, :mod:`..adjoint`),
written once more in Triton: the forward passes, the single-state adjoint recursion every
non-LSTM kernel runs backwards, and the LSTM's two-state one. Everything around the recursions
(backward coefficients, weight gradients) stays in torch operations. tests/test_triton.py runs
every kernel under Triton's interpreter (``TRITON_INTERPRET=1``) against the ``loop`` engine.

Tensors the kernels index directly are contiguous: (T, B, ·) histories, (B, ·) states. Masks and
per-step factors that are often broadcast (β, keep masks, the hidden-dropout mask, ρ, E) come as
(T, B, H) views with strides, zero where broadcast. Arithmetic is float32 (float64 for float64
tensors); tensors of other dtypes are read and written in their own.
"""
from __future__ import annotations

import triton
import triton.language as tl

# activation codes (constexpr): the same names as rnnkit.cells.base.ACTIVATIONS
CODES = {None: 0, "identity": 0, "tanh": 1, "relu": 2, "softplus": 3, "sigmoid": 4}


@triton.jit
def _ld(ptrs, mask, IS64: tl.constexpr):
    x = tl.load(ptrs, mask=mask, other=0.0)
    return x.to(tl.float64 if IS64 else tl.float32)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _act(x, CODE: tl.constexpr):
    y = x
    if CODE == 1:
        y = _tanh(x)
    elif CODE == 2:
        y = tl.maximum(x, 0.0)
    elif CODE == 3:                                  # torch's softplus: x itself above 20
        y = tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))
    elif CODE == 4:
        y = _sigmoid(x)
    return y


@triton.jit
def _lerp(a, b, w):
    """torch.lerp's formula: exact at w = 0 and w = 1."""
    return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))


@triton.jit
def _columns(j0, rows, rm, H, BH: tl.constexpr):
    """Hidden units ``j0 .. j0 + BH`` of rows ``rows``: their indices, which exist, the (rows, units)
    mask and the offsets of the tile in a (B, H) block."""
    cols = j0 + tl.arange(0, BH)
    cm = cols < H
    return cols, cm, rm[:, None] & cm[None, :], rows[:, None] * H + cols[None, :]


@triton.jit
def _recurrent(Z, z_off, W, w_row0, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
               HAS_MASK: tl.constexpr, PHI: tl.constexpr, IS64: tl.constexpr, PREC: tl.constexpr,
               BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """``(ψ(z) ⊙ m) @ W[w_row0 + cols, :]^T`` for rows ``rows`` of the state at ``Z + z_off``: (BB, BH)."""
    acc = tl.zeros((BB, BH), dtype=tl.float64 if IS64 else tl.float32)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        km = ks < H
        inside = rm[:, None] & km[None, :]
        r = _ld(Z + z_off + rows[:, None] * H + ks[None, :], inside, IS64)
        if PHI != 0:
            r = tl.where(inside, _act(r, PHI), 0.0)
        if HAS_MASK:
            r = r * _ld(Mask + t * sm_t + rows[:, None] * sm_b + ks[None, :] * sm_h, inside, IS64)
        w = _ld(W + (w_row0 + cols[None, :]) * H + ks[:, None], km[:, None] & cm[None, :], IS64)
        acc = tl.dot(r, w, acc, input_precision=PREC)
    return acc


@triton.jit
def _recurrent_statistics(Z, W, V, S, Eps, Mask, sm_t, sm_b, sm_h, t, rows, rm, B, H, NG: tl.constexpr,
                          HAS_MASK: tl.constexpr, IS64: tl.constexpr, PREC: tl.constexpr,
                          BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """A layer-normalized recurrent part, first pass: ``v = W_c (h ⊙ m)`` for all ``NG`` gate blocks into
    ``V``, and the row scale ``s = (Σv² + G ε)^(-1/2)`` into ``S`` (``W_c`` has zero-mean rows: no mean)."""
    G = NG * H
    ssq = tl.zeros((BB,), dtype=tl.float64 if IS64 else tl.float32)
    for j0 in range(0, H, BH):
        cols, cm, tile, _ = _columns(j0, rows, rm, H, BH)
        gate = t * B * G + rows[:, None] * G + cols[None, :]
        for q in range(NG):
            v = _recurrent(Z, t * B * H, W, q * H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                           HAS_MASK, 0, IS64, PREC, BB, BH, BK)
            tl.store(V + gate + q * H, v, mask=tile)
            ssq += tl.sum(v * v, axis=1)
    s = 1.0 / tl.sqrt(ssq + tl.load(Eps).to(tl.float64 if IS64 else tl.float32))
    tl.store(S + t * B + rows, s, mask=rm)
    return s


@triton.jit
def _normalized(V, gate, q, H, s, LnW, cols, cm, tile, IS64: tl.constexpr):
    """Gate block ``q`` of the normalized recurrent part: ``v s γ`` (γ scaled by √G beforehand)."""
    return _ld(V + gate + q * H, tile, IS64) * s[:, None] * _ld(LnW + q * H + cols, cm, IS64)[None, :]


@triton.jit
def leaky_forward(P, W, Z, Y, Beta, sb_t, sb_b, sb_h, Mask, sm_t, sm_b, sm_h, T, B, H,
                  ACT: tl.constexpr, PHI: tl.constexpr, HAS_BETA: tl.constexpr, HAS_MASK: tl.constexpr,
                  IS64: tl.constexpr, PREC: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """Elman, leaky and rate cells: ``y_t = f(P_t + W (ψ(z_{t-1}) ⊙ m))``, ``z_t = lerp(z_{t-1}, y_t, β_t)``.
    ``Z`` is (T + 1, B, H) with ``Z[0]`` the initial state; ``Y`` (T, B, H) is written when β is given."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    for t in range(T):
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            u = _recurrent(Z, t * B * H, W, 0, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                           HAS_MASK, PHI, IS64, PREC, BB, BH, BK)
            y = _act(_ld(P + t * B * H + here, tile, IS64) + u, ACT)
            z = y
            if HAS_BETA:
                tl.store(Y + t * B * H + here, y, mask=tile)
                beta = _ld(Beta + t * sb_t + rows[:, None] * sb_b + cols[None, :] * sb_h, tile, IS64)
                z = _lerp(_ld(Z + t * B * H + here, tile, IS64), y, beta)
            tl.store(Z + (t + 1) * B * H + here, z, mask=tile)
        tl.debug_barrier()


@triton.jit
def gated_forward(P, W, Z, A, Omk, so_t, so_b, so_h, Mask, sm_t, sm_b, sm_h, T, B, H,
                  HAS_KEEP: tl.constexpr, HAS_MASK: tl.constexpr, IS64: tl.constexpr, PREC: tl.constexpr,
                  BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """The gated cell: ``[g, c] = [σ, tanh](P_t + W (z ⊙ m))``, ``z_t = lerp(z_{t-1}, c, g (1 - k_t))``;
    ``A`` (T, B, 2H) keeps the activated gates."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    G = 2 * H
    for t in range(T):
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            gate = rows[:, None] * G + cols[None, :]
            ug = _recurrent(Z, t * B * H, W, 0, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                            HAS_MASK, 0, IS64, PREC, BB, BH, BK)
            uc = _recurrent(Z, t * B * H, W, H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                            HAS_MASK, 0, IS64, PREC, BB, BH, BK)
            g = _sigmoid(_ld(P + t * B * G + gate, tile, IS64) + ug)
            c = _tanh(_ld(P + t * B * G + H + gate, tile, IS64) + uc)
            tl.store(A + t * B * G + gate, g, mask=tile)
            tl.store(A + t * B * G + H + gate, c, mask=tile)
            beta = g
            if HAS_KEEP:
                beta = g * _ld(Omk + t * so_t + rows[:, None] * so_b + cols[None, :] * so_h, tile, IS64)
            z = _lerp(_ld(Z + t * B * H + here, tile, IS64), c, beta)
            tl.store(Z + (t + 1) * B * H + here, z, mask=tile)
        tl.debug_barrier()


@triton.jit
def gru_forward(P, W, Z, U, RZ, N, V, S, LnW, LnB, Bias, Keep, sk_t, sk_b, sk_h, Mask, sm_t, sm_b, sm_h,
                T, B, H, Eps,
                LN: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_MASK: tl.constexpr,
                IS64: tl.constexpr, PREC: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """The GRU (torch's variant) and, with ``LN``, the layer-norm GRU. ``u = W (h ⊙ m) + b`` (layer norm:
    ``v = W_c (h ⊙ m)`` kept in ``V``, ``u = v s √G γ + b`` with ``s = (Σv² + G ε)^(-1/2)`` kept in ``S``),
    ``r, z = σ(P_rz + u_rz)``, ``n = tanh(P_n + r u_n)``, ``h_t = lerp(n, h_{t-1}, z + k (1 - z))``."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    G = 3 * H
    for t in range(T):
        if LN:                                  # the statistics of the recurrent part first
            s = _recurrent_statistics(Z, W, V, S, Eps, Mask, sm_t, sm_b, sm_h, t, rows, rm, B, H, 3,
                                      HAS_MASK, IS64, PREC, BB, BH, BK)
            tl.debug_barrier()
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            gate = t * B * G + rows[:, None] * G + cols[None, :]
            if LN:
                ur = _normalized(V, gate, 0, H, s, LnW, cols, cm, tile, IS64)
                uz = _normalized(V, gate, 1, H, s, LnW, cols, cm, tile, IS64)
                un = _normalized(V, gate, 2, H, s, LnW, cols, cm, tile, IS64)
                if HAS_BIAS:
                    ur += _ld(LnB + cols, cm, IS64)[None, :]
                    uz += _ld(LnB + H + cols, cm, IS64)[None, :]
                    un += _ld(LnB + 2 * H + cols, cm, IS64)[None, :]
                tl.store(U + gate, ur, mask=tile)
                tl.store(U + gate + H, uz, mask=tile)
            else:
                ur = _recurrent(Z, t * B * H, W, 0, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                uz = _recurrent(Z, t * B * H, W, H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                un = _recurrent(Z, t * B * H, W, 2 * H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                if HAS_BIAS:
                    un += _ld(Bias + cols, cm, IS64)[None, :]
                tl.store(U + gate, ur, mask=tile)
                tl.store(U + gate + H, uz, mask=tile)
            tl.store(U + gate + 2 * H, un, mask=tile)
            r = _sigmoid(_ld(P + gate, tile, IS64) + ur)
            z = _sigmoid(_ld(P + gate + H, tile, IS64) + uz)
            rz = t * B * 2 * H + rows[:, None] * 2 * H + cols[None, :]
            tl.store(RZ + rz, r, mask=tile)
            tl.store(RZ + rz + H, z, mask=tile)
            n = _tanh(_ld(P + gate + 2 * H, tile, IS64) + r * un)
            tl.store(N + t * B * H + here, n, mask=tile)
            zeta = z
            if HAS_KEEP:
                k = _ld(Keep + t * sk_t + rows[:, None] * sk_b + cols[None, :] * sk_h, tile, IS64)
                zeta = z * (1.0 - k) + k
            h = _lerp(n, _ld(Z + t * B * H + here, tile, IS64), zeta)
            tl.store(Z + (t + 1) * B * H + here, h, mask=tile)
        tl.debug_barrier()


@triton.jit
def lstm_forward(P, W, Hs, Cs, A, TC, V, S, Cc, Sc, LnH, LnC, LnCB, Kh, sh_t, sh_b, sh_h, Kc, sc_t, sc_b, sc_h,
                 Mask, sm_t, sm_b, sm_h, T, B, H, Eps,
                 LN: tl.constexpr, HAS_CB: tl.constexpr, HAS_KH: tl.constexpr, HAS_KC: tl.constexpr,
                 HAS_MASK: tl.constexpr, IS64: tl.constexpr, PREC: tl.constexpr,
                 BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """The LSTM, gates ``[o, i, f, g]``, and with ``LN`` the layer-norm LSTM (recurrent part normalized as
    in the GRU, the cell ``c̃`` centred into ``Cc`` with scale ``Sc``). ``c̃ = f c + i g``,
    ``h̃ = o tanh(c̃)`` (``o tanh(LN(c̃))``), ``c_t = lerp(c̃, c_{t-1}, k^c)``, ``h_t = lerp(h̃, h_{t-1}, k^h)``.
    ``Hs`` and ``Cs`` are (T + 1, B, H) with the initial state first."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    G = 4 * H
    for t in range(T):
        zero = tl.zeros((BB,), dtype=tl.float64 if IS64 else tl.float32)
        if LN:                                  # the statistics of the recurrent part first
            s = _recurrent_statistics(Hs, W, V, S, Eps, Mask, sm_t, sm_b, sm_h, t, rows, rm, B, H, 4,
                                      HAS_MASK, IS64, PREC, BB, BH, BK)
            tl.debug_barrier()
        csum = zero
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            gate = t * B * G + rows[:, None] * G + cols[None, :]
            if LN:
                ao = _normalized(V, gate, 0, H, s, LnH, cols, cm, tile, IS64)
                ai = _normalized(V, gate, 1, H, s, LnH, cols, cm, tile, IS64)
                af = _normalized(V, gate, 2, H, s, LnH, cols, cm, tile, IS64)
                ag = _normalized(V, gate, 3, H, s, LnH, cols, cm, tile, IS64)
            else:
                ao = _recurrent(Hs, t * B * H, W, 0, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                ai = _recurrent(Hs, t * B * H, W, H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                af = _recurrent(Hs, t * B * H, W, 2 * H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
                ag = _recurrent(Hs, t * B * H, W, 3 * H, rows, rm, cols, cm, H, Mask, sm_t, sm_b, sm_h, t,
                                HAS_MASK, 0, IS64, PREC, BB, BH, BK)
            o = _sigmoid(_ld(P + gate, tile, IS64) + ao)
            i = _sigmoid(_ld(P + gate + H, tile, IS64) + ai)
            f = _sigmoid(_ld(P + gate + 2 * H, tile, IS64) + af)
            g = _tanh(_ld(P + gate + 3 * H, tile, IS64) + ag)
            tl.store(A + gate, o, mask=tile)
            tl.store(A + gate + H, i, mask=tile)
            tl.store(A + gate + 2 * H, f, mask=tile)
            tl.store(A + gate + 3 * H, g, mask=tile)
            c_prev = _ld(Cs + t * B * H + here, tile, IS64)
            ct = f * c_prev + i * g
            c = ct
            if HAS_KC:
                c = _lerp(ct, c_prev, _ld(Kc + t * sc_t + rows[:, None] * sc_b + cols[None, :] * sc_h, tile, IS64))
            tl.store(Cs + (t + 1) * B * H + here, c, mask=tile)
            if LN:
                tl.store(Cc + t * B * H + here, ct, mask=tile)          # centred below
                csum += tl.sum(tl.where(tile, ct, 0.0), axis=1)
            else:
                tc = _tanh(ct)
                tl.store(TC + t * B * H + here, tc, mask=tile)
                hn = o * tc
                h = hn
                if HAS_KH:
                    kh = _ld(Kh + t * sh_t + rows[:, None] * sh_b + cols[None, :] * sh_h, tile, IS64)
                    h = _lerp(hn, _ld(Hs + t * B * H + here, tile, IS64), kh)
                tl.store(Hs + (t + 1) * B * H + here, h, mask=tile)
        if LN:
            tl.debug_barrier()
            mean = csum / H
            csq = zero
            for j0 in range(0, H, BH):
                _, _, tile, here = _columns(j0, rows, rm, H, BH)
                at = t * B * H + here
                xc = _ld(Cc + at, tile, IS64) - mean[:, None]
                tl.store(Cc + at, xc, mask=tile)
                csq += tl.sum(tl.where(tile, xc * xc, 0.0), axis=1)
            sc = 1.0 / tl.sqrt(csq + tl.load(Eps + 1).to(tl.float64 if IS64 else tl.float32))
            tl.store(Sc + t * B + rows, sc, mask=rm)
            tl.debug_barrier()
            for j0 in range(0, H, BH):
                cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
                gate = t * B * G + rows[:, None] * G + cols[None, :]
                y = _ld(Cc + t * B * H + here, tile, IS64) * sc[:, None] * _ld(LnC + cols, cm, IS64)[None, :]
                if HAS_CB:
                    y += _ld(LnCB + cols, cm, IS64)[None, :]
                tc = _tanh(y)
                tl.store(TC + t * B * H + here, tc, mask=tile)
                hn = _ld(A + gate, tile, IS64) * tc
                h = hn
                if HAS_KH:
                    kh = _ld(Kh + t * sh_t + rows[:, None] * sh_b + cols[None, :] * sh_h, tile, IS64)
                    h = _lerp(hn, _ld(Hs + t * B * H + here, tile, IS64), kh)
                tl.store(Hs + (t + 1) * B * H + here, h, mask=tile)
        tl.debug_barrier()


@triton.jit
def _back_gemm(DV, dv_off, W, rows, rm, cols, cm, G, H, IS64: tl.constexpr, PREC: tl.constexpr,
               BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """``dv @ W[:, cols]`` for the adjoints ``dv`` (B, G) at ``DV + dv_off``: (BB, BH)."""
    acc = tl.zeros((BB, BH), dtype=tl.float64 if IS64 else tl.float32)
    for k0 in range(0, G, BK):
        ks = k0 + tl.arange(0, BK)
        km = ks < G
        d = _ld(DV + dv_off + rows[:, None] * G + ks[None, :], rm[:, None] & km[None, :], IS64)
        w = _ld(W + ks[:, None] * H + cols[None, :], km[:, None] & cm[None, :], IS64)
        acc = tl.dot(d, w, acc, input_precision=PREC)
    return acc


@triton.jit
def _norm_backward_rows(DU, DV, X, LnW, Rstd, R2, s, t, rows, rm, B, G, IS64: tl.constexpr, BK: tl.constexpr):
    """The layer norm's backward over the row, without the mean term (its input was centred):
    ``dv = (du γ - x s r²) r`` for the row sums ``s = Σ du γ x``, scale ``r`` and ``r² / G``."""
    r2 = _ld(R2 + t * B + rows, rm, IS64)
    rstd = _ld(Rstd + t * B + rows, rm, IS64)
    for k0 in range(0, G, BK):
        ks = k0 + tl.arange(0, BK)
        tile = rm[:, None] & (ks < G)[None, :]
        at = t * B * G + rows[:, None] * G + ks[None, :]
        dn = _ld(DU + at, tile, IS64) * _ld(LnW + ks, ks < G, IS64)[None, :]
        dv = (dn - _ld(X + at, tile, IS64) * (s * r2)[:, None]) * rstd[:, None]
        tl.store(DV + at, dv, mask=tile)


@triton.jit
def single_backward(R, E, se_t, se_b, se_h, Rho, sr_t, sr_b, sr_h, X, Rstd, R2, LnW, W, dZ, DU, DV, DZ,
                    T, B, H, G,
                    HAS_E: tl.constexpr, HAS_RHO: tl.constexpr, LN: tl.constexpr,
                    IS64: tl.constexpr, PREC: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """The adjoint recursion of a one-tensor state (:func:`..adjoint.adjoint_single`), backwards in time:
    ``du_t = R_t ⊙ dz_t`` (``R`` (T, B, G), block ``q`` of ``G`` on ``dz``'s column ``g mod H``),
    ``dv_t`` its layer-norm backward (``LN``) or itself, ``dz_{t-1} = dZ_{t-1} + E_t ⊙ dz_t + (dv_t W) ⊙ ρ_t``.
    ``DZ`` is (T + 1, B, H): ``DZ[T]`` holds ``dZ[T-1]`` on entry, ``DZ[0]`` the initial state's adjoint on exit."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    for step in range(T):
        t = T - 1 - step
        srow = tl.zeros((BB,), dtype=tl.float64 if IS64 else tl.float32)
        for k0 in range(0, G, BK):
            ks = k0 + tl.arange(0, BK)
            tile = rm[:, None] & (ks < G)[None, :]
            at = t * B * G + rows[:, None] * G + ks[None, :]
            du = _ld(R + at, tile, IS64) * _ld(DZ + (t + 1) * B * H + rows[:, None] * H + (ks % H)[None, :],
                                               tile, IS64)
            tl.store(DU + at, du, mask=tile)
            if LN:
                dn = du * _ld(LnW + ks, ks < G, IS64)[None, :]
                srow += tl.sum(dn * _ld(X + at, tile, IS64), axis=1)
        if LN:
            tl.debug_barrier()
            _norm_backward_rows(DU, DV, X, LnW, Rstd, R2, srow, t, rows, rm, B, G, IS64, BK)
        tl.debug_barrier()
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            d = _back_gemm(DV, t * B * G, W, rows, rm, cols, cm, G, H, IS64, PREC, BB, BH, BK)
            if HAS_RHO:
                d = d * _ld(Rho + t * sr_t + rows[:, None] * sr_b + cols[None, :] * sr_h, tile, IS64)
            if t > 0:
                d += _ld(dZ + (t - 1) * B * H + here, tile, IS64)
            if HAS_E:
                d += _ld(E + t * se_t + rows[:, None] * se_b + cols[None, :] * se_h, tile, IS64) \
                    * _ld(DZ + (t + 1) * B * H + here, tile, IS64)
            tl.store(DZ + t * B * H + here, d, mask=tile)
        tl.debug_barrier()


@triton.jit
def lstm_backward(Ro, Ac, Rc, F, sf_t, sf_b, sf_h, Kh, sh_t, sh_b, sh_h, Kc, sc_t, sc_b, sc_h,
                  Mask, sm_t, sm_b, sm_h, Xh, RsH, R2H, Xc, RsC, R2C, LnH, LnC, W, dH, DU, DV, DLNC, DH, DC,
                  T, B, H,
                  LN: tl.constexpr, HAS_KH: tl.constexpr, HAS_KC: tl.constexpr, HAS_MASK: tl.constexpr,
                  IS64: tl.constexpr, PREC: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """The LSTM's adjoint recursion (:class:`..lstm.LSTMKernel`) from its coefficients ``Ro``, ``Ac`` (T, B, H),
    ``Rc`` (T, B, 3H), ``f``: ``dc̃ = (1 - k^c) dc + A dh`` (layer norm: its backward of ``A dh``, which is
    kept in ``DLNC``), ``du = [Ro dh, Rc dc̃]``, ``dv`` = ``du`` or its layer-norm backward,
    ``dc_{t-1} = f dc̃ + k^c dc``, ``dh_{t-1} = dH_{t-1} + k^h dh + (dv W) ⊙ m``. ``DH``/``DC`` are (T + 1, B, H)
    with the last step's adjoints at ``T`` on entry and the initial state's at 0 on exit."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    rm = rows < B
    G = 4 * H
    for step in range(T):
        t = T - 1 - step
        zero = tl.zeros((BB,), dtype=tl.float64 if IS64 else tl.float32)
        s_c = zero
        m_c = zero
        if LN:                                  # the cell norm's row sums first
            for j0 in range(0, H, BH):
                cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
                l = _ld(DH + (t + 1) * B * H + here, tile, IS64) * _ld(Ac + t * B * H + here, tile, IS64)
                tl.store(DLNC + t * B * H + here, l, mask=tile)
                dn = l * _ld(LnC + cols, cm, IS64)[None, :]
                s_c += tl.sum(dn * _ld(Xc + t * B * H + here, tile, IS64), axis=1)
                m_c += tl.sum(dn, axis=1)
            tl.debug_barrier()
            m_c = m_c / H
            rs_c = _ld(RsC + t * B + rows, rm, IS64)
            r2_c = _ld(R2C + t * B + rows, rm, IS64)
        s_h = zero
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            dh = _ld(DH + (t + 1) * B * H + here, tile, IS64)
            dc = _ld(DC + (t + 1) * B * H + here, tile, IS64)
            if LN:
                dn = _ld(DLNC + t * B * H + here, tile, IS64) * _ld(LnC + cols, cm, IS64)[None, :]
                dct = (dn - _ld(Xc + t * B * H + here, tile, IS64) * (s_c * r2_c)[:, None] - m_c[:, None]) \
                    * rs_c[:, None]
            else:
                dct = dh * _ld(Ac + t * B * H + here, tile, IS64)
            kc = zero[:, None]
            if HAS_KC:
                kc = _ld(Kc + t * sc_t + rows[:, None] * sc_b + cols[None, :] * sc_h, tile, IS64)
                dct += dc * (1.0 - kc)
            else:
                dct += dc
            gate = t * B * G + rows[:, None] * G + cols[None, :]
            rc = t * B * 3 * H + rows[:, None] * 3 * H + cols[None, :]
            du_o = dh * _ld(Ro + t * B * H + here, tile, IS64)
            du_i = dct * _ld(Rc + rc, tile, IS64)
            du_f = dct * _ld(Rc + rc + H, tile, IS64)
            du_g = dct * _ld(Rc + rc + 2 * H, tile, IS64)
            tl.store(DU + gate, du_o, mask=tile)
            tl.store(DU + gate + H, du_i, mask=tile)
            tl.store(DU + gate + 2 * H, du_f, mask=tile)
            tl.store(DU + gate + 3 * H, du_g, mask=tile)
            dc_new = dct * _ld(F + t * sf_t + rows[:, None] * sf_b + cols[None, :] * sf_h, tile, IS64)
            if HAS_KC:
                dc_new += dc * kc
            tl.store(DC + t * B * H + here, dc_new, mask=tile)
            if LN:
                x = Xh + gate
                s_h += tl.sum(du_o * _ld(LnH + cols, cm, IS64)[None, :] * _ld(x, tile, IS64), axis=1)
                s_h += tl.sum(du_i * _ld(LnH + H + cols, cm, IS64)[None, :] * _ld(x + H, tile, IS64), axis=1)
                s_h += tl.sum(du_f * _ld(LnH + 2 * H + cols, cm, IS64)[None, :] * _ld(x + 2 * H, tile, IS64), axis=1)
                s_h += tl.sum(du_g * _ld(LnH + 3 * H + cols, cm, IS64)[None, :] * _ld(x + 3 * H, tile, IS64), axis=1)
        tl.debug_barrier()
        if LN:
            _norm_backward_rows(DU, DV, Xh, LnH, RsH, R2H, s_h, t, rows, rm, B, G, IS64, BK)
            tl.debug_barrier()
        for j0 in range(0, H, BH):
            cols, cm, tile, here = _columns(j0, rows, rm, H, BH)
            d = _back_gemm(DV, t * B * G, W, rows, rm, cols, cm, G, H, IS64, PREC, BB, BH, BK)
            if HAS_MASK:
                d = d * _ld(Mask + t * sm_t + rows[:, None] * sm_b + cols[None, :] * sm_h, tile, IS64)
            if HAS_KH:
                d += _ld(DH + (t + 1) * B * H + here, tile, IS64) \
                    * _ld(Kh + t * sh_t + rows[:, None] * sh_b + cols[None, :] * sh_h, tile, IS64)
            if t > 0:
                d += _ld(dH + (t - 1) * B * H + here, tile, IS64)
            tl.store(DH + t * B * H + here, d, mask=tile)
        tl.debug_barrier()
