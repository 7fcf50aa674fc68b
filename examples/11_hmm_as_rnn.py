"""Lesson 11: the HMM as an RNN whose forward filter is a cell, fitted by EM or by gradient ascent.

An HMM's normalised forward filter is a state machine: its state is the predictive distribution over
hidden states plus the running log-likelihood, and every symbol updates it. rnnkit writes that filter
as a cell (HMMFilterCell), so a CategoricalHMM's log-likelihood is an ordinary RNN run and autograd can
climb it. This lesson samples sequences from a known 3-state HMM, fits copies of one random start by
Baum-Welch (fit_em) and by Adam and plain SGD through the RNN form (fit_gradient), and compares their
log-likelihood per iteration; then it checks numerically that backpropagation through the filter
returns the forward-backward pass's expected counts minus what the softmax subtracts.
Run: python examples/11_hmm_as_rnn.py [--quick]
"""
import copy
import time

import matplotlib.pyplot as plt
import torch
from torch.nn import functional as F

from _common import lesson, report, save

import rnnkit
from rnnkit.models.hmm import CategoricalHMM

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)            # tiny matrices: one thread is faster than two on a shared machine
D = torch.float64
SEQUENCES, LENGTH = (8, 60) if args.quick else (40, 200)
EM_ITERATIONS, GRADIENT_EPOCHS = (15, 20) if args.quick else (120, 200)

# ----- a known HMM and data drawn from it --------------------------------------------------------
truth = CategoricalHMM.from_probabilities(
    initial=[0.6, 0.2, 0.2],
    transition=[[0.90, 0.05, 0.05], [0.05, 0.90, 0.05], [0.10, 0.10, 0.80]],
    emission=[[0.70, 0.20, 0.05, 0.05], [0.05, 0.15, 0.70, 0.10], [0.10, 0.10, 0.10, 0.70]])
K, V = truth.num_states, truth.num_symbols
generator = torch.Generator().manual_seed(args.seed)
train = truth.sample(SEQUENCES, LENGTH, generator=generator).symbols            # (B, T) symbol ids
held_out = truth.sample(SEQUENCES, LENGTH, generator=generator).symbols
per_symbol = 1.0 / train.numel()                                                # report nats per symbol

# ----- the filter is a cell: run it through rnnkit.Recurrent like any RNN -----------------------
# state = (predictive distribution over the K states, running log-likelihood); input = one-hot symbol
predictions, (alpha, loglik) = rnnkit.Recurrent(truth.cell)(F.one_hot(train, V).to(D))
report("filter cell vs fast recursion, abs difference of the total log-likelihood",
       abs(loglik.sum().item() - truth.score(train)))
report("next-symbol distributions emitted by the cell, max abs(sum - 1)",
       (predictions.sum(-1) - 1).abs().max().item())

# ----- the gradient identity, at a random starting point -----------------------------------------
torch.manual_seed(args.seed + 3)
start = CategoricalHMM(K, V, dtype=D)                 # N(0, 1) log-weights: far from the truth
model = copy.deepcopy(start)
model.zero_grad()
model.log_likelihood(train).sum().backward()          # backpropagation through time, through the filter
with torch.no_grad():
    smoothed = model.smoother(train)                  # forward-backward: γ_t(k) and ξ_t(i, j)
    gamma, xi = smoothed.posterior, smoothed.pairwise
    counts = {"log_initial": gamma[:, 0].sum(0),                                    # E[# z_1 = k]
              "log_transition": xi.sum((0, 1)),                                     # E[# i -> j]
              "log_emission": torch.einsum("btk,btv->kv", gamma, F.one_hot(train, V).to(D))}  # E[# k emits v]
    probabilities = {"log_initial": model.cell.initial(), "log_transition": model.cell.transition(),
                     "log_emission": model.cell.emission()}
gradients, predicted = {}, {}
for name, parameter in zip(counts, model.log_params()):
    # d log p / d logits = expected counts - (row total of the counts) * softmax(logits)
    predicted[name] = counts[name] - counts[name].sum(-1, keepdim=True) * probabilities[name]
    gradients[name] = parameter.grad
difference = max((gradients[n] - predicted[n]).abs().max().item() for n in counts)
largest = max(gradients[n].abs().max().item() for n in counts)
report("gradient identity, largest gradient entry (abs)", largest)
report("gradient identity, max abs(autograd - (expected counts - softmax term))", difference)

# ----- EM against gradient ascent, from the same start ------------------------------------------
histories, seconds = {}, {}
fits = {"EM (Baum-Welch)": lambda m: m.fit_em(train, iterations=EM_ITERATIONS),
        "gradient, Adam lr 0.05": lambda m: m.fit_gradient(train, epochs=GRADIENT_EPOCHS, lr=0.05),
        "gradient, SGD lr 1": lambda m: m.fit_gradient(train, epochs=GRADIENT_EPOCHS, lr=1.0, optimizer="sgd")}
fitted = {}
for name, fit in fits.items():
    fitted[name] = copy.deepcopy(start)
    began = time.perf_counter()
    histories[name] = [value * per_symbol for value in fit(fitted[name])]
    seconds[name] = (time.perf_counter() - began) / (len(histories[name]) - 1)

true_train = truth.score(train) * per_symbol
best = histories["EM (Baum-Welch)"][-1]
report("true parameters, train log-likelihood", f"{true_train:.4f}", "nats/symbol")
for name, history in histories.items():
    close = next((i for i, value in enumerate(history) if value > best - 1e-3), None)
    report(f"{name}, train log-likelihood after {len(history) - 1} iterations", f"{history[-1]:.4f}",
           "nats/symbol")
    report(f"{name}, iterations to come within 0.001 of the final EM value",
           close if close is not None else f"not within {len(history) - 1}")
    report(f"{name}, seconds per iteration", seconds[name])
    report(f"{name}, held-out log-likelihood", f"{fitted[name].score(held_out) / held_out.numel():.4f}",
           "nats/symbol")
report("true parameters, held-out log-likelihood", f"{truth.score(held_out) / held_out.numel():.4f}", "nats/symbol")

# ----- the figure ----------------------------------------------------------------------------
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
for (name, history), color in zip(histories.items(), ("black", "tab:blue", "tab:orange")):
    left.plot(range(len(history)), history, color=color, label=name)
left.axhline(true_train, color="grey", linestyle="--", label="true parameters")
left.set_xlabel("iteration (one full pass over the data each)")
left.set_ylabel("train log-likelihood (nats per symbol)")
left.set_title("From one random start: EM reaches the optimum first")
left.legend(loc="lower right", fontsize=8)
span = min(histories["EM (Baum-Welch)"][0], true_train) - 0.02
left.set_ylim(span, best + 0.02)

for (name, g), marker in zip(gradients.items(), ("o", "s", "^")):
    right.scatter(predicted[name].flatten().numpy(), g.flatten().numpy(), marker=marker, s=30,
                  label=f"{name} ({g.numel()} entries)")
right.plot([-largest, largest], [-largest, largest], color="grey", linewidth=1, linestyle="--")
right.set_xlabel("expected counts - softmax term (forward-backward)")
right.set_ylabel("gradient of log p(x) by autograd through the filter cell")
right.set_title(f"The gradient is the E-step: max |difference| = {difference:.1e}")
right.legend(loc="upper left", fontsize=8)
fig.suptitle(f"A 3-state HMM as an RNN ({SEQUENCES} sequences of {LENGTH} symbols)")
fig.tight_layout()
save(fig, args, "11_hmm_as_rnn")
