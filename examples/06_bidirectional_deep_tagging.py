"""Bidirectional and deep recurrent taggers on a task whose tags need the future.

Every step t of a random bit string gets a tag made of two answers: the bit two steps
ahead, x[t+2] (it needs the future), and whether the two neighbours differ,
x[t-1] xor x[t+1] (it needs the past and the future together). We train four
rnnkit.models.SequenceTagger networks, one or two layers, one direction or two, and
measure on fresh strings how often each gets each answer right.
Run: python examples/06_bidirectional_deep_tagging.py [--quick]
"""
import torch

from _common import lesson, report, save
from rnnkit.models import SequenceTagger

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)           # small networks: one thread is the fastest, and steady on a shared machine
LENGTH = 20
STEPS, BATCH, HIDDEN, EVAL_EVERY = (60, 32, 24, 20) if args.quick else (500, 64, 32, 10)
ANSWERS = {"ahead": "the bit two steps ahead", "xor": "the xor of the neighbours", "both": "the whole tag"}
VARIANTS = {                       # name: (num_layers, bidirectional)
    "forward, 1 layer": (1, False),
    "forward, 2 layers": (2, False),
    "bidirectional, 1 layer": (1, True),
    "bidirectional, 2 layers": (2, True),
}


def tagged_strings(num, generator):
    """Bit strings (num, LENGTH) and their tags 2·x[t+2] + (x[t-1] xor x[t+1]); bits off the ends read as 0."""
    bits = torch.randint(0, 2, (num, LENGTH), generator=generator)
    padded = torch.nn.functional.pad(bits, (1, 2))          # padded[:, t + 1] is x[t]
    ahead = padded[:, 3:]                                    # x[t+2]
    differ = padded[:, :-3] ^ padded[:, 2:-1]                # x[t-1] xor x[t+1]
    return bits, 2 * ahead + differ


def accuracies(model, bits, tags):
    """Fraction right of each answer, over steps 1 .. T-3 (where both neighbours and x[t+2] exist)."""
    model.eval()
    guess = model.predict(bits)[:, 1:-2]
    model.train()
    tags = tags[:, 1:-2]
    ahead, differ = guess // 2 == tags // 2, guess % 2 == tags % 2
    return {"ahead": ahead.float().mean().item(), "xor": differ.float().mean().item(),
            "both": (ahead & differ).float().mean().item()}


test_bits, test_tags = tagged_strings(2000, torch.Generator().manual_seed(10_000 + args.seed))
curves, final = {}, {}
for name, (layers, bidirectional) in VARIANTS.items():
    torch.manual_seed(args.seed)
    model = SequenceTagger(input_size=8, num_tags=4, hidden_size=HIDDEN, vocab_size=2,
                           num_layers=layers, bidirectional=bidirectional)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(args.seed)          # every variant trains on the same strings
    curves[name] = []
    for step in range(1, STEPS + 1):
        loss, _ = model.loss(*tagged_strings(BATCH, data))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % EVAL_EVERY == 0:
            curves[name].append((step, accuracies(model, test_bits, test_tags)))
    final[name] = curves[name][-1][1]
    for answer, value in final[name].items():
        report(f"accuracy on {ANSWERS[answer]} ({name})", value)

import matplotlib.pyplot as plt  # noqa: E402  (_common has chosen the backend)

colors = dict(zip(VARIANTS, ["tab:gray", "tab:brown", "tab:blue", "tab:green"]))
styles = dict(zip(VARIANTS, [dict(lw=1.5), dict(lw=1.5, ls="--"), dict(lw=1.5, ls="--"), dict(lw=3, alpha=0.6)]))
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, answer in zip(axes[:2], ["ahead", "xor"]):
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [a[answer] for _, a in curve], color=colors[name], label=name,
                **styles[name])
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.set(xlabel="training step", ylabel="accuracy (held-out strings)", ylim=(0.4, 1.02),
           title="x[t+2]: needs the future" if answer == "ahead" else "x[t-1] xor x[t+1]: needs both sides")
axes[0].legend(loc="center right", fontsize=8)
names = list(VARIANTS)
axes[2].bar(range(len(names)), [final[n]["both"] for n in names], color=[colors[n] for n in names])
axes[2].set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=8)
axes[2].axhline(0.25, color="black", lw=0.6, ls=":")
axes[2].set(ylabel="whole tag right", title="Both answers at once (chance 1/4)", ylim=(0, 1.05))
fig.suptitle("Tagging with a lookahead: direction brings the future, depth combines it with the past")
fig.tight_layout()
save(fig, args, "06_bidirectional_deep_tagging")
