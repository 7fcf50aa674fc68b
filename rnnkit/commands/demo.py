"""``rnnkit demo``: why gated cells exist, shown in seconds."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from .. import shortcuts
from ..readouts import CategoricalReadout

HELP = "train Elman, gated, GRU and LSTM cells on delayed recall (~20 s)"
DESCRIPTION = ("Why gated cells exist, in seconds: each cell is trained to recall a symbol seen --delay steps "
               "earlier, through noise, and the accuracies say which cells carried the error signal back that far.")
AT_LEAST_ONE = ("delay", "steps", "hidden_size")


def add_arguments(parser) -> None:
    parser.add_argument("--delay", type=int, default=30, help="steps between the symbol and its recall (default 30)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model (default 600)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--hidden-size", type=int, default=32, help="hidden units (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    """Delayed recall: read a symbol, wait ``delay`` steps, say it again.

    The vanishing-gradient story in seconds: to learn the task, the error signal
    must travel back ``delay`` steps; an Elman RNN's gradient shrinks along the way,
    so it stops learning as the delay grows, while gated cells keep a path open.
    The summary line is computed from the measured accuracies.
    """
    torch.manual_seed(args.seed)
    symbols, steps = 4, args.delay + 1

    def batch(size):
        first = torch.randint(symbols, (size,))
        x = torch.zeros(size, steps, symbols + 1)
        x[:, 0, :symbols] = torch.nn.functional.one_hot(first, symbols).float()
        x[:, 1:, symbols] = torch.randn(size, steps - 1)            # distracting noise
        return x, first

    print(f"delayed recall of 1 of {symbols} symbols after {args.delay} noisy steps "
          f"(chance accuracy {1 / symbols:.0%}); {args.steps} Adam steps per model")
    results = {}
    for name, cls in [("elman", shortcuts.ElmanRNN), ("gated", shortcuts.GatedRNN),
                      ("gru", shortcuts.GRU), ("lstm", shortcuts.LSTM)]:
        rnn = cls(symbols + 1, args.hidden_size, batch_first=True)
        readout = CategoricalReadout(args.hidden_size, symbols)
        params = list(rnn.parameters()) + list(readout.parameters())
        opt = torch.optim.Adam(params, lr=args.lr)
        start = time.perf_counter()
        bar = tqdm(range(args.steps), desc=f"{name:5} ({rnn.engine})", leave=False, disable=True if args.quiet else None)
        for _ in bar:
            x, first = batch(64)
            out, _ = rnn(x)
            loss = -readout.log_prob(first, out[:, -1]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        with torch.no_grad():
            x, first = batch(1000)
            out, _ = rnn(x)
            accuracy = (readout.logits(out[:, -1]).argmax(-1) == first).float().mean().item()
        results[name] = accuracy
        print(f"  {name:6} engine={rnn.engine:6} test accuracy {accuracy:6.1%}  "
              f"({time.perf_counter() - start:4.1f} s)")
    solved = [n for n, a in results.items() if a >= 0.95]
    unsolved = [n for n, a in results.items() if a < 0.95]
    print(f"solved (>= 95%): {', '.join(solved) or 'none'}; not solved: {', '.join(unsolved) or 'none'}"
          f" -- try --delay 10 and --delay 60 to see where each cell gives up")
    return 0
