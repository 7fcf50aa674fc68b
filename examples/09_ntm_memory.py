"""The neural Turing machine's memory on the copy task: it learns to write a list down and read it back.

An LSTM controller with one write head and one read head on a 16-row memory
(rnnkit.models.NeuralTuringMachine, whose step is rnnkit.cells.NTMCell) sees up to six
random bit vectors, a delimiter, and must then reproduce them
(rnnkit.models.copy_task). We record the loss, measure the bit error rate on held-out
episodes of the trained lengths and of longer ones, and read off the head weightings:
where in memory each input was written, and where each answer was read from.
Run: python examples/09_ntm_memory.py [--quick]
"""
import math

import torch

from _common import lesson, report, save
from rnnkit.models import NeuralTuringMachine, copy_task

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)           # small networks: one thread is the fastest, and steady on a shared machine
WIDTH, SLOTS = 6, 16
LONGEST, STEPS, CONTROLLER = (4, 60, 32) if args.quick else (6, 900, 64)
LONG_TEST = (LONGEST + 1, 2 * LONGEST)       # lengths never seen in training


def bit_error_rate(model, task):
    """Wrong answer bits over all answer bits."""
    return model.bit_errors(task.inputs, task.targets).sum().item() / (WIDTH * task.mask.sum().item())


def focus(weightings, steps):
    """Mean peak of a head's weighting over the chosen (B, T) steps, and the fraction of moves between
    consecutive chosen steps that advance its focus (argmax row) by exactly one row."""
    peak = weightings[steps].max(-1).values.mean().item()
    row = weightings.argmax(-1)                                               # (B, T)
    moved = (row[:, 1:] - row[:, :-1]) % SLOTS == 1
    pairs = steps[:, 1:] & steps[:, :-1]
    return peak, moved[pairs].float().mean().item()


torch.manual_seed(args.seed)
model = NeuralTuringMachine(WIDTH + 2, WIDTH, controller_size=CONTROLLER, memory_slots=SLOTS, memory_width=8)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * STEPS)], 0.1)   # calm the last fifth
losses = []
for step in range(STEPS):
    episodes = copy_task(32, 1, LONGEST, width=WIDTH, seed=args.seed * 100_000 + step)   # fresh every step
    loss, _ = model.loss(episodes.inputs, episodes.targets)   # BCE over the answer steps, nats per bit
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    schedule.step()
    losses.append(loss.item())

report("chance loss (ln 2)", math.log(2), "nats/bit")
report("training loss, first 20 steps", sum(losses[:20]) / 20, "nats/bit")
report("training loss, last 20 steps", sum(losses[-20:]) / 20, "nats/bit")
held_out = copy_task(300, 1, LONGEST, width=WIDTH, seed=999_999)
longer = copy_task(300, *LONG_TEST, width=WIDTH, seed=999_998)
with torch.no_grad():
    report(f"held-out loss, lengths 1-{LONGEST}", model.loss(held_out.inputs, held_out.targets)[0].item(),
           "nats/bit")
    report(f"bit error rate, lengths 1-{LONGEST}", bit_error_rate(model, held_out))
    report(f"bit error rate, lengths {LONG_TEST[0]}-{LONG_TEST[1]} (never trained on)",
           bit_error_rate(model, longer))
    _, weightings = model(held_out.inputs, return_weightings=True)
    t, lengths = torch.arange(held_out.inputs.shape[1]), held_out.mask.sum(1, keepdim=True)
    storing = (t >= 1) & (t <= lengths)                                       # (B, T) steps 1 .. L
    for head, steps, phase in (("write", storing, "storing"), ("read", held_out.mask, "recalling")):
        peak, advance = focus(getattr(weightings, head)[:, :, 0], steps)
        report(f"mean peak weight of the {head} head while {phase}", peak)
        report(f"share of {head} head moves that advance one row while {phase}", advance)
    # one episode to draw, of the longest length trained on
    episode = copy_task(1, LONGEST, LONGEST, width=WIDTH, seed=123)
    logits, drawn = model(episode.inputs, return_weightings=True)

import matplotlib.pyplot as plt  # noqa: E402  (_common has chosen the backend)

fig = plt.figure(figsize=(14, 6.5))
grid = fig.add_gridspec(2, 3)
ax = fig.add_subplot(grid[:, 0])
window = 20
smooth = torch.tensor(losses).unfold(0, window, 1).mean(1) if len(losses) > window else torch.tensor(losses)
ax.plot(losses, color="tab:blue", alpha=0.3, lw=0.8, label="each step")
ax.plot(range(len(losses) - len(smooth), len(losses)), smooth, color="tab:blue", label=f"{window}-step mean")
ax.axhline(math.log(2), color="black", ls=":", lw=0.8, label="chance, ln 2")
ax.set(yscale="log", xlabel="training step", ylabel="BCE on the answer bits (nats/bit)",
       title=f"Copy task, lengths 1-{LONGEST}")
ax.legend()

steps = episode.inputs.shape[1]
panels = [(episode.inputs[0, :, :WIDTH + 2].T, "input (bits, start, delimiter)", "channel"),
          (torch.sigmoid(logits[0]).T * episode.mask[0], "output p(bit = 1) on the answer steps", "bit"),
          (drawn.write[0, :, 0].T, "write weighting", "memory row"),
          (drawn.read[0, :, 0].T, "read weighting", "memory row")]
for k, (image, title, ylabel) in enumerate(panels):
    ax = fig.add_subplot(grid[k // 2, 1 + k % 2])
    ax.imshow(image, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set(title=title, xlabel="time step", ylabel=ylabel)
    ax.set_xticks(range(0, steps, 2))
    ax.set_yticks(range(0, image.shape[0], 1 if image.shape[0] <= WIDTH + 2 else 3))
fig.suptitle("Neural Turing machine: loss, and the heads' weightings over one episode")
fig.tight_layout()
save(fig, args, "09_ntm_memory")
