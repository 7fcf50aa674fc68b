"""Sequence to sequence: reversing digit strings, with and without attention, greedy and beam decoding.

An encoder reads a string of digits and a decoder writes it back reversed, one digit at
a time (rnnkit.models.Seq2Seq, LSTM cells, trained with teacher forcing). Without
attention the decoder sees the source only through the encoder's final state; with
additive attention it looks back at every encoder state at every step. We measure
exact-match accuracy on held-out strings for both models, decoded greedily and by beam
search, and draw where the attention looks.
Run: python examples/07_seq2seq_attention_beam.py [--quick]
"""
import torch

from _common import lesson, report, save
from rnnkit.models import Seq2Seq

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)           # small networks: one thread is the fastest, and steady on a shared machine
PAD, START, END, FIRST_DIGIT = 0, 1, 2, 3        # token ids; digit d is FIRST_DIGIT + d
VOCAB = FIRST_DIGIT + 10
SHORTEST, LONGEST, STEPS, BATCH, TEST = (3, 6, 40, 32, 200) if args.quick else (3, 12, 1000, 64, 1000)
BEAM = 5


def reversal_pairs(num, generator):
    """Sources (num, LONGEST) of SHORTEST..LONGEST digits, their lengths, and targets: reversed, then <end>."""
    lengths = torch.randint(SHORTEST, LONGEST + 1, (num,), generator=generator)
    source = torch.randint(FIRST_DIGIT, VOCAB, (num, LONGEST), generator=generator)
    source[torch.arange(LONGEST) >= lengths[:, None]] = PAD
    targets = torch.full((num, LONGEST + 1), PAD)
    for row, n in enumerate(lengths.tolist()):
        targets[row, :n] = source[row, :n].flip(0)
        targets[row, n] = END
    return source, lengths, targets


def exact_matches(decoded, source, lengths):
    """Per string: is the decoded output exactly the reversed source? (bool tensor)"""
    return torch.tensor([out == source[row, :n].flip(0).tolist()
                         for row, (out, n) in enumerate(zip(decoded.tokens, lengths.tolist()))])


test_source, test_lengths, _ = reversal_pairs(TEST, torch.Generator().manual_seed(10_000 + args.seed))
models, losses, right = {}, {}, {}
for attention in (None, "additive"):
    name = "attention" if attention else "no attention"
    torch.manual_seed(args.seed)
    model = Seq2Seq(VOCAB, VOCAB, hidden_size=64, embedding_size=32, attention=attention,
                    start_id=START, end_id=END, pad_id=PAD)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(args.seed)      # both models see the same training strings
    losses[name] = []
    for step in range(STEPS):
        source, lengths, targets = reversal_pairs(BATCH, data)
        loss, _ = model.loss((source, lengths), targets)  # the decoder's inputs: targets shifted behind <start>
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses[name].append(loss.item())
    model.eval()
    models[name] = model
    for decoder in ("greedy", "beam"):
        if decoder == "greedy":
            decoded = model.greedy(test_source, test_lengths, max_length=LONGEST + 2)
        else:
            decoded = model.beam_search(test_source, test_lengths, beam_width=BEAM, max_length=LONGEST + 2)
        right[name, decoder] = exact_matches(decoded, test_source, test_lengths)
        report(f"exact-match accuracy, {name}, {decoder}", right[name, decoder].float().mean().item())
        report(f"exact-match accuracy on {LONGEST}-digit strings, {name}, {decoder}",
               right[name, decoder][test_lengths == LONGEST].float().mean().item())
        report(f"mean log-probability of the output, {name}, {decoder}", decoded.log_probs.mean().item())
    report(f"final training loss, {name}", sum(losses[name][-20:]) / 20, "nats/token")
    changed = (right[name, "beam"] != right[name, "greedy"])
    report(f"strings beam search fixed, {name}", int((right[name, "beam"] & changed).sum()))
    report(f"strings beam search broke, {name}", int((right[name, "greedy"] & changed).sum()))

# where does the attention model look? output step t of a string of n digits should read source digit n-1-t
attentive = models["attention"]
attentive.greedy(test_source, test_lengths, max_length=LONGEST + 2)
alpha = attentive.attention_weights                                           # (strings, output steps, source)
t = torch.arange(alpha.shape[1])
mirror = (test_lengths[:, None] - 1 - t).clamp(min=0)                         # (strings, output steps)
on_mirror = alpha.gather(2, mirror.unsqueeze(-1)).squeeze(-1)[t < test_lengths[:, None]]
report("attention weight on the mirrored source digit (mean over held-out outputs)", on_mirror.mean().item())
example = int(torch.argmax(test_lengths))                                     # one long string, to draw
decoded = attentive.greedy(test_source[example:example + 1], test_lengths[example:example + 1],
                           max_length=LONGEST + 2)
weights = attentive.attention_weights[0, :, : int(test_lengths[example])]     # (output steps, source steps)

import matplotlib.pyplot as plt  # noqa: E402  (_common has chosen the backend)

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
window = 20
for name, curve in losses.items():
    smooth = torch.tensor(curve).unfold(0, window, 1).mean(1) if len(curve) > window else torch.tensor(curve)
    axes[0].plot(smooth, label=name)
axes[0].set(yscale="log", xlabel="training step", ylabel="cross-entropy (nats/token)",
            title=f"Training loss ({window}-step mean)")
axes[0].legend()

lengths = range(SHORTEST, LONGEST + 1)
for (name, decoder), hits in right.items():
    by_length = [hits[test_lengths == n].float().mean().item() for n in lengths]
    axes[1].plot(lengths, by_length, color="tab:blue" if name == "no attention" else "tab:orange",
                 marker="o" if decoder == "greedy" else "x", ls="-" if decoder == "greedy" else "--",
                 label=f"{name}, {decoder}")
axes[1].set(xlabel="source length", ylabel="exact-match accuracy", ylim=(-0.02, 1.02),
            title=f"Held-out strings (beam width {BEAM})")
axes[1].legend(fontsize=8)

digits = lambda ids: [str(int(i) - FIRST_DIGIT) for i in ids]
shown = weights[: len(decoded.tokens[0])]
axes[2].imshow(shown, cmap="Greys", vmin=0, vmax=1, aspect="auto")
axes[2].set_xticks(range(shown.shape[1]), digits(test_source[example, : shown.shape[1]]))
axes[2].set_yticks(range(shown.shape[0]), digits(decoded.tokens[0]))
axes[2].set(xlabel="source digit", ylabel="output digit", title="Attention weights (greedy decoding)")
fig.suptitle("Reversing digit strings with an encoder-decoder")
fig.tight_layout()
save(fig, args, "07_seq2seq_attention_beam")
