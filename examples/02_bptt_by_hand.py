"""Lesson 2: backpropagation through time, derived by hand for an Elman network and checked three ways.

The forward pass and the backward recursion delta_{t-1} = W_ss^T (f'(z_t) * (W_o^T g_t + delta_t))
are written out below in NumPy. Their gradients are compared with rnnkit's NumPy oracle
(rnnkit.reference.elman_bptt), with torch autograd through an rnnkit ElmanCell on the step-by-step
loop engine, and with rnnkit's fused engine (its own hand-derived backward), all in float64. Then
the hand gradients alone train the network (Adam, written out too) to output, after every symbol,
whether a binary string has read an even number of zeros so far: lesson 1's parity automaton.
Run: python examples/02_bptt_by_hand.py [--quick]
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import lesson, report, save

import rnnkit
from rnnkit.machine import FiniteStateMachine
from rnnkit.reference import elman_bptt

PARITY = FiniteStateMachine.parity_of_zeros()


# ----- the model and its gradient, by hand ----------------------------------------------------
def forward(p, xs, h0):
    """z_t = W_sx x_t + W_ss s_{t-1} + b_s,  s_t = tanh(z_t),  logits_t = W_o s_t + b_o.  xs: (T, B, X)."""
    states = [h0]
    for x in xs:
        states.append(np.tanh(x @ p["W_sx"].T + states[-1] @ p["W_ss"].T + p["b_s"]))
    s = np.stack(states)                                       # s_0 .. s_T, (T+1, B, H)
    logits = s[1:] @ p["W_o"].T + p["b_o"]                     # (T, B, V)
    logits -= logits.max(-1, keepdims=True)                    # softmax is shift-invariant: avoid overflow
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return s, probs


def bptt(p, xs, targets, h0):
    """Summed cross-entropy L = -sum_{t,b} log p_t[y_t] and dL/d(every parameter), by hand."""
    s, probs = forward(p, xs, h0)
    T, B = targets.shape
    picked = probs[np.arange(T)[:, None], np.arange(B), targets]
    loss = -np.log(picked).sum()
    g = probs.copy()                                           # dL_t/dlogits_t = p_t - onehot(y_t)
    g[np.arange(T)[:, None], np.arange(B), targets] -= 1.0
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    grads["W_o"] = np.einsum("tbv,tbh->vh", g, s[1:])          # the readout sees no future: a plain sum
    grads["b_o"] = g.sum((0, 1))
    delta = np.zeros_like(h0)                                  # dL_{>t}/ds_t: the future's share, 0 at t = T
    for t in range(T, 0, -1):
        total = g[t - 1] @ p["W_o"] + delta                    # everything s_t influences: L_t and the future
        gamma = (1.0 - s[t] ** 2) * total                      # through tanh: dL/dz_t
        grads["W_ss"] += gamma.T @ s[t - 1]                    # the same W_ss is used at every step: sum
        grads["W_sx"] += gamma.T @ xs[t - 1]
        grads["b_s"] += gamma.sum(0)
        delta = gamma @ p["W_ss"]                              # delta_{t-1} = W_ss^T gamma_t
    grads["h0"] = delta
    return loss, grads


# ----- data: the parity automaton labels every prefix -----------------------------------------
def parity_batch(rng, batch, length):
    bits = rng.integers(0, 2, size=(batch, length))
    flags = np.array([PARITY.transduce("".join(map(str, row))) for row in bits], dtype=np.int64)
    xs = np.eye(2)[bits].transpose(1, 0, 2)                    # one-hot, time-major (T, B, 2)
    return xs, flags.T                                         # targets (T, B): 1 = even number of zeros


def init_params(rng, hidden):
    scale = 1 / np.sqrt(hidden)
    shapes = {"W_sx": (hidden, 2), "W_ss": (hidden, hidden), "b_s": (hidden,), "W_o": (2, hidden), "b_o": (2,)}
    return {k: rng.uniform(-scale, scale, size=shape) for k, shape in shapes.items()}


# ----- the three checks -----------------------------------------------------------------------
def autograd_grads(p, xs, targets, h0, engine):
    """The same network as an rnnkit ElmanCell + torch Linear readout, differentiated by torch."""
    hidden = p["W_ss"].shape[0]
    cell = rnnkit.cells.ElmanCell(2, hidden, dtype=torch.float64)
    readout = torch.nn.Linear(hidden, 2, dtype=torch.float64)
    with torch.no_grad():
        for param, value in ((cell.weight_ih, p["W_sx"]), (cell.weight_hh, p["W_ss"]), (cell.bias_ih, p["b_s"]),
                             (readout.weight, p["W_o"]), (readout.bias, p["b_o"])):
            param.copy_(torch.from_numpy(value))
        cell.bias_hh.zero_()                                   # torch splits b_s in two; both get dL/db_s
    layer = rnnkit.Recurrent(cell, engine=engine, batch_first=False)
    state = torch.from_numpy(h0).requires_grad_()
    out, _ = layer(torch.from_numpy(xs), state)
    loss = torch.nn.functional.cross_entropy(readout(out).flatten(0, 1), torch.from_numpy(targets).flatten(),
                                             reduction="sum")
    loss.backward()
    pairs = {"W_sx": cell.weight_ih, "W_ss": cell.weight_hh, "b_s": cell.bias_hh, "W_o": readout.weight,
             "b_o": readout.bias, "h0": state}
    return layer.engine, {k: v.grad.numpy() for k, v in pairs.items()}


def max_difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def adam(params, grads, memory, lr, step, betas=(0.9, 0.999), eps=1e-8):
    for k in params:
        m, v = memory.setdefault(k, (np.zeros_like(params[k]), np.zeros_like(params[k])))
        m = betas[0] * m + (1 - betas[0]) * grads[k]
        v = betas[1] * v + (1 - betas[1]) * grads[k] ** 2
        memory[k] = (m, v)
        params[k] -= lr * (m / (1 - betas[0] ** step)) / (np.sqrt(v / (1 - betas[1] ** step)) + eps)


def accuracy(p, xs, targets):
    _, probs = forward(p, xs, np.zeros((xs.shape[1], p["W_ss"].shape[0])))
    return float((probs.argmax(-1) == targets).mean())


def main():
    args = lesson(__doc__.splitlines()[0])
    rng = np.random.default_rng(args.seed)
    hidden, length, batch = 16, 12, 32
    steps = 400 if args.quick else 2000

    # 1. the hand gradient against three independent computations, at a random point
    p = init_params(rng, hidden)
    xs, targets = parity_batch(rng, 8, length)
    h0 = rng.normal(size=(8, hidden)) * 0.5
    loss, mine = bptt(p, xs, targets, h0)
    oracle_loss, oracle = elman_bptt(p, xs, targets, h0)
    report("loss: hand minus rnnkit.reference", abs(loss - oracle_loss))
    report("max |hand grad - rnnkit.reference.elman_bptt|", max_difference(mine, {k: oracle[k] for k in mine}))
    for engine in ("loop", "fused"):
        used, theirs = autograd_grads(p, xs, targets, h0, engine)
        report(f"max |hand grad - torch backward, {used} engine|", max_difference(mine, theirs))
    report("largest gradient entry (for scale)", max(float(np.abs(v).max()) for v in mine.values()))

    # 2. training with nothing but the hand gradient
    p, memory, history = init_params(rng, hidden), {}, []
    for step in range(1, steps + 1):
        xs, targets = parity_batch(rng, batch, length)
        loss, grads = bptt(p, xs, targets, np.zeros((batch, hidden)))
        grads.pop("h0")
        adam(p, grads, memory, lr=0.01, step=step)
        history.append(loss / targets.size)                    # mean cross-entropy per prediction (nats)
    report("training: first loss per prediction (nats)", history[0])
    report("training: ln 2, a coin flip's loss", float(np.log(2)))
    report("training: mean loss over the last 50 steps", float(np.mean(history[-50:])))
    test = {n: parity_batch(np.random.default_rng(1000 + n), 500, n) for n in (length, 4 * length)}
    for n, (xs, targets) in test.items():
        report(f"test accuracy per prefix, length {n}", accuracy(p, xs, targets))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(history, lw=0.6, alpha=0.5, label="per batch")
    window = max(1, steps // 30)
    left.plot(np.arange(window - 1, steps), np.convolve(history, np.ones(window) / window, "valid"), lw=2,
              label=f"moving mean of {window}")
    left.axhline(np.log(2), color="grey", ls="--", label="ln 2 (guessing)")
    left.set_yscale("log")
    left.set_xlabel("Adam step (hand-derived BPTT gradients)")
    left.set_ylabel("cross-entropy per prediction (nats)")
    left.set_title(f"Elman RNN, H = {hidden}, learning running parity (T = {length})")
    left.legend(fontsize=8)
    xs, targets = parity_batch(np.random.default_rng(7), 1, 24)
    _, probs = forward(p, xs, np.zeros((1, hidden)))
    right.step(range(24), targets[:, 0], where="mid", color="grey", lw=3, alpha=0.5, label="automaton: even?")
    right.plot(range(24), probs[:, 0, 1], "o-", label="network: p(even)")
    right.set_xticks(range(24), [str(int(b)) for b in xs[:, 0, 1]])
    right.set_xlabel("input bit")
    right.set_title("After training: one unseen string of 24 bits")
    right.legend(fontsize=8)
    fig.tight_layout()
    save(fig, args, "02_bptt_by_hand")


if __name__ == "__main__":
    main()
