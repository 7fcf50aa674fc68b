"""Lesson 3: truncated backpropagation through time, and clipping the gradient's norm.

A long stream of random bits is cut into chunks of k steps; the network must output, at every step,
the bit it read d steps earlier. The state is carried from chunk to chunk and detached there
(rnnkit.train.detach_state), so the forward pass sees the whole stream but a gradient never crosses a
chunk boundary. Part 1 sweeps k for a GRU: it learns the echo only when k > d. Part 2 trains an
Elman network with plain SGD, with and without clipping the gradient's norm at 1, and records where
the gradient explodes and what that does to the loss.
Run: python examples/03_truncated_bptt_and_clipping.py [--quick]
"""
import math

import matplotlib.pyplot as plt
import torch
from torch.nn import functional as F

from _common import lesson, report, save

import rnnkit
from rnnkit.init import init_recurrent_
from rnnkit.train import detach_state

torch.set_num_threads(1)         # tiny models: one thread is fastest and fair to a shared machine


def echo_stream(batch, length, delay, seed):
    """Inputs ±1 bits (batch, length, 1); target at step t is the input bit of step t - delay."""
    bits = torch.randint(0, 2, (batch, length + delay), generator=torch.Generator().manual_seed(seed))
    return (2.0 * bits[:, delay:] - 1).unsqueeze(-1), bits[:, :-delay]


class Echo(torch.nn.Module):
    """An rnnkit recurrent layer and a two-way softmax readout at every step."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = rnnkit.Recurrent(cell)
        self.readout = torch.nn.Linear(cell.hidden_size, 2)

    def forward(self, x, state=None):
        out, state = self.rnn(x, state)
        return self.readout(out), state


def train_truncated(model, optimizer, x, y, chunk, clip=None):
    """One pass over the stream, one update per chunk of `chunk` steps; returns losses and gradient norms."""
    state, losses, norms = None, [], []
    for start in range(0, x.shape[1], chunk):
        logits, state = model(x[:, start:start + chunk], state)
        loss = F.cross_entropy(logits.flatten(0, 1), y[:, start:start + chunk].flatten())
        optimizer.zero_grad()
        loss.backward()
        # the norm before clipping is returned either way; max_norm=inf measures without clipping
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip or math.inf)))
        optimizer.step()
        state = detach_state(state)          # keep the value, cut the graph: truncated BPTT
        losses.append(loss.item())
    return losses, norms


@torch.no_grad()
def echo_accuracy(model, delay):
    x, y = echo_stream(256, 400, delay, seed=12345)          # fresh bits, one unbroken run
    logits, _ = model(x)
    return float((logits.argmax(-1) == y)[:, 50:].float().mean())


def truncation_sweep(lengths, delay, stream, seed):
    """Same data, same number of tokens for every k: only the truncation length changes."""
    x, y = echo_stream(32, stream, delay, seed)
    results = {}
    for k in lengths:
        torch.manual_seed(seed)
        model = Echo(rnnkit.cells.GRUCell(1, 32))
        losses, _ = train_truncated(model, torch.optim.Adam(model.parameters(), lr=1e-2), x, y, k)
        results[k] = (losses, echo_accuracy(model, delay))
    return results


def clipping_runs(seeds, delay, stream, chunk=64):
    """Elman tanh cells, orthogonal recurrent weights, SGD at lr 1: with and without clipping at norm 1."""
    runs = {}
    for seed in seeds:
        x, y = echo_stream(32, stream, delay, seed)
        for clip in (None, 1.0):
            torch.manual_seed(seed)
            model = Echo(rnnkit.cells.ElmanCell(1, 32))
            init_recurrent_(model, "orthogonal", gain=1.0)
            losses, norms = train_truncated(model, torch.optim.SGD(model.parameters(), lr=1.0), x, y, chunk, clip)
            runs[seed, clip] = (losses, norms, echo_accuracy(model, delay))
    return runs


def main():
    args = lesson(__doc__.splitlines()[0])
    delay = 8
    lengths = (4, 16) if args.quick else (4, 8, 9, 12, 16, 32)
    sweep = truncation_sweep(lengths, delay, stream=800 if args.quick else 10000, seed=args.seed)
    for k, (losses, acc) in sweep.items():
        report(f"truncation k={k:2d} (delay {delay}): final loss", sum(losses[-20:]) / len(losses[-20:]))
        report(f"truncation k={k:2d} (delay {delay}): test accuracy", acc)

    clip_delay, seeds = 15, [args.seed] if args.quick else [args.seed + i for i in range(3)]
    runs = clipping_runs(seeds, clip_delay, stream=3200 if args.quick else 19200)
    for (seed, clip), (losses, norms, acc) in runs.items():
        name = f"seed {seed}, {'clip at 1' if clip else 'no clipping'}"
        wrong = next((i for i, loss in enumerate(losses) if loss > 1.5), "never")
        report(f"{name}: largest gradient norm", max(norms))
        report(f"{name}: share of updates with norm > 1", sum(n > 1 for n in norms) / len(norms))
        report(f"{name}: first update with loss > 1.5 (worse than guessing)", wrong)
        report(f"{name}: mean loss, last 20 updates", sum(losses[-20:]) / 20)
        report(f"{name}: test accuracy", acc)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    ks = list(sweep)
    ax.plot(ks, [sweep[k][1] for k in ks], "o-")
    ax.axvline(delay + 0.5, color="tab:red", ls="--", label=f"between k = d = {delay} and k = d + 1")
    ax.axhline(0.5, color="grey", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("truncation length k (steps per chunk)")
    ax.set_ylabel("test accuracy of the echo")
    ax.set_title(f"GRU, echo of the bit {delay} steps back")
    ax.legend(fontsize=8)

    seed = seeds[0]
    for clip, color in ((None, "tab:red"), (1.0, "tab:blue")):
        losses, norms, _ = runs[seed, clip]
        label = "clip norm at 1" if clip else "no clipping"
        axes[1].plot(losses, color=color, lw=1, label=label)
        axes[2].plot(norms, color=color, lw=1, label=label)
    axes[1].axhline(math.log(2), color="grey", ls=":", label="ln 2 (guessing)")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("SGD update (chunks of 64 steps)")
    axes[1].set_ylabel("training cross-entropy (nats)")
    axes[1].set_title(f"Elman, SGD lr 1, echo {clip_delay} steps back (seed {seed})")
    axes[1].legend(fontsize=8)
    axes[2].axhline(1.0, color="grey", ls=":", label="clipping threshold")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("SGD update")
    axes[2].set_ylabel("gradient norm before clipping")
    axes[2].set_title("The gradient's norm")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, args, "03_truncated_bptt_and_clipping")


if __name__ == "__main__":
    main()
