"""Lesson 5: the gates of an LSTM and a GRU at work on a task that needs memory.

In the adding problem (rnnkit.data.tasks.adding_problem) a new random value arrives at every step,
two of them are marked, and after T steps the network must output the sum of the marked two; so
it must write a value into memory at a marker and keep every other value out. Small LSTM and GRU
regressors (rnnkit.models.SequenceRegressor) learn it; then their gates are recomputed from the
recorded states (rnnkit.analysis.hidden_states, with forget_gate_product as a check) and compared
between marker steps and the others: the LSTM's input gate opens at the markers only, its forget
gate holds what was written, and the GRU's update gate switches from "keep" to "write" at a marker.
Run: python examples/05_lstm_gru_gates.py [--quick]
"""
import matplotlib.pyplot as plt
import torch
from torch.nn import functional as F

from _common import lesson, report, save

from rnnkit.analysis import forget_gate_product, hidden_states
from rnnkit.cells import GRUCell, LSTMCell
from rnnkit.data.tasks import adding_problem
from rnnkit.models import SequenceRegressor

torch.set_num_threads(1)         # tiny models: one thread is fastest and fair to a shared machine
HIDDEN = 16


def train(cell, length, steps, seed, batch=64):
    torch.manual_seed(seed)
    model = SequenceRegressor(input_size=2, output_size=1, hidden_size=HIDDEN, cell=cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = adding_problem(batch * steps, length, seed=seed + 1)
    for i in range(steps):
        rows = slice(batch * i, batch * (i + 1))
        loss, _ = model.loss(data.inputs[rows], data.targets[rows])   # mean squared error
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()


def gates(model, x):
    """Every gate at every step, recomputed from the states the layer went through; (B, T, H) each."""
    cell = next(m for m in model.modules() if isinstance(m, (LSTMCell, GRUCell)))
    states = hidden_states(model, x).states                         # s_1 .. s_T ([h; c] for the LSTM)
    h_prev = F.pad(states[:, :-1, :HIDDEN], (0, 0, 1, 0))             # h_0 = 0 (the default start) .. h_{T-1}
    with torch.no_grad():
        pre = cell.project_inputs(x) + F.linear(h_prev, cell.weight_hh, cell.bias_hh)
    if isinstance(cell, LSTMCell):                                    # torch's row order: i, f, g, o
        i, f, _, o = pre.sigmoid().chunk(4, -1)
        return {"input gate i": i, "forget gate f": f, "output gate o": o, "cell c": states[..., HIDDEN:]}
    r, z, _ = pre.chunk(3, -1)                                        # rows r, z, n; h = (1 - z) n + z h
    return {"reset gate r": r.sigmoid(), "update gate z (keep)": z.sigmoid(), "state h": states}


def contrast(gate, marked):
    """Per unit: mean gate value at marker steps minus mean elsewhere."""
    return gate[marked].mean(0) - gate[~marked].mean(0)


def main():
    args = lesson(__doc__.splitlines()[0])
    length, steps = (20, 50) if args.quick else (40, 1200)
    test = adding_problem(500, length, seed=999)
    marked = test.inputs[..., 1] == 1                                 # (B, T): the two marker steps
    report("sequence length T", length)
    report("memoryless baseline MSE", test.baseline)
    models, found = {}, {}
    for cell in ("lstm", "gru"):
        models[cell] = train(cell, length, steps, args.seed)
        with torch.no_grad():
            report(f"{cell}: test MSE after {steps} Adam steps", float(models[cell].loss(test.inputs, test.targets)[0]))
        found[cell] = gates(models[cell], test.inputs)

    lstm = found["lstm"]
    writer = int(contrast(lstm["input gate i"], marked).argmax())     # the unit that opens most at markers
    report("lstm: unit whose input gate opens most at markers", writer)
    for name in ("input gate i", "forget gate f"):
        report(f"lstm unit {writer}: {name} at markers", float(lstm[name][..., writer][marked].mean()))
        report(f"lstm unit {writer}: {name} elsewhere", float(lstm[name][..., writer][~marked].mean()))
    report("lstm, all units: mean input gate at markers", float(lstm["input gate i"][marked].mean()))
    report("lstm, all units: mean input gate elsewhere", float(lstm["input gate i"][~marked].mean()))
    check = forget_gate_product(models["lstm"], test.inputs)
    report("lstm: max |f recomputed - forget_gate_product|", float((check.gates - lstm["forget gate f"]).abs().max()))
    first = test.inputs[..., 1].argmax(1)                             # step of the first marker
    kept = check.retention[torch.arange(len(first)), first + 1, writer]   # prod of f after it, to the end
    report(f"lstm unit {writer}: share of the first marked value kept until step T (median)", float(kept.median()))
    keep = found["gru"]["update gate z (keep)"]
    report("gru, all units: update gate z (keep) at markers", float(keep[marked].mean()))
    report("gru, all units: update gate z (keep) elsewhere", float(keep[~marked].mean()))

    seq = 0
    steps_axis = range(length)
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True, layout="constrained")
    ax = axes[0]
    ax.bar(steps_axis, test.inputs[seq, :, 0], color="lightgrey", label="value v_t (channel 0)")
    for n, t in enumerate(marked[seq].nonzero().flatten().tolist()):
        ax.bar(t, test.inputs[seq, t, 0], color="tab:red", label=None if n else "marked value")
    with torch.no_grad():
        preds = {cell: float(models[cell](test.inputs[seq:seq + 1])) for cell in models}
    ax.set_title(f"Adding problem, test sequence {seq}: target {float(test.targets[seq]):.3f}, "
                 f"LSTM {preds['lstm']:.3f}, GRU {preds['gru']:.3f}")
    ax.set_ylabel("input")
    ax.legend(fontsize=8, loc="upper right")

    ax = axes[1]
    for name, color in (("input gate i", "tab:green"), ("forget gate f", "tab:purple"), ("cell c", "black")):
        ax.plot(steps_axis, lstm[name][seq, :, writer], color=color, marker=".", label=name)
    ax.set_title(f"LSTM unit {writer}, the unit whose input gate opens most at the markers")
    ax.legend(fontsize=8, loc="center right")
    for ax, (cell, name) in zip(axes[2:], (("lstm", "input gate i"), ("gru", "update gate z (keep)"))):
        image = ax.imshow(found[cell][name][seq].T, aspect="auto", cmap="magma", vmin=0, vmax=1,
                          interpolation="nearest")
        ax.set_yticks(range(0, HIDDEN, 3))
        ax.set_ylabel("unit")
        ax.set_title(f"{cell.upper()}: {name}, every unit")
    for ax in axes[1:]:
        for t in marked[seq].nonzero().flatten().tolist():
            ax.axvline(t, color="tab:red", lw=0.8, ls=":")
    fig.colorbar(image, ax=axes[2:], label="gate value", pad=0.01)
    axes[-1].set_xlabel("step t (dotted: marker steps)")
    save(fig, args, "05_lstm_gru_gates")


if __name__ == "__main__":
    main()
