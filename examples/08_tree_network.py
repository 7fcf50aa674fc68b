"""A recursive (tree) network evaluates arithmetic expressions; a sequential LSTM reads the same text.

Random expressions such as (+ 3 (* 2 4)), up to three operators deep, are to be
evaluated modulo 10 (rnnkit.models.arithmetic_expressions). A Child-Sum Tree-LSTM
(rnnkit.models.TreeRNN) composes each node's state from its children's, so its depth is
the tree's height; a sequential LSTM (rnnkit.models.SequenceClassifier) reads the
expression's text one character at a time. Both have 64 units and get the same training
steps; we measure their accuracy on held-out expressions never seen in training.
Run: python examples/08_tree_network.py [--quick]
"""
import torch

from _common import lesson, report, save
from rnnkit.data.trees import format_expression
from rnnkit.models import SequenceClassifier, TreeRNN, arithmetic_expressions

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)           # small networks: one thread is the fastest, and steady on a shared machine
OPERATORS, MODULUS, DEPTH = "+*", 10, 3
NUM_TRAIN, STEPS, BATCH, EVAL_EVERY = (1000, 50, 64, 25) if args.quick else (4000, 1500, 128, 100)
CHARACTERS = "0123456789+*()"      # the text's alphabet; id 0 is padding


def as_text(trees):
    """Each expression as character ids without spaces, padded with 0, and the lengths."""
    texts = [format_expression(tree, OPERATORS).replace(" ", "") for tree in trees]
    lengths = torch.tensor([len(text) for text in texts])
    ids = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for row, text in enumerate(texts):
        ids[row, : len(text)] = torch.tensor([CHARACTERS.index(c) + 1 for c in text])
    return ids, lengths


train, train_values = arithmetic_expressions(NUM_TRAIN, max_depth=DEPTH, operators=OPERATORS,
                                             modulus=MODULUS, seed=args.seed + 1)
test, test_values = arithmetic_expressions(1000, max_depth=DEPTH, operators=OPERATORS,
                                           modulus=MODULUS, seed=args.seed + 2)
seen = {format_expression(tree, OPERATORS) for tree in train}
unseen = [i for i, tree in enumerate(test) if format_expression(tree, OPERATORS) not in seen]
test, test_values = [test[i] for i in unseen], test_values[unseen]
train_text, test_text = as_text(train), as_text(test)
operators = torch.tensor([(tree.num_nodes - 1) // 2 for tree in test])          # binary: n = 2·ops + 1
report("held-out expressions never seen in training", len(test))
majority = torch.bincount(test_values).max().item() / len(test)
report("share of the most common value among them", majority)
report("mean tree height, the depth of the tree network", sum(t.height for t in test) / len(test))
report("mean text length, the depth of the sequential network", test_text[1].float().mean().item(), "characters")

torch.manual_seed(args.seed)
networks = {
    "Tree-LSTM": TreeRNN(num_leaf_tokens=10, num_node_labels=len(OPERATORS), hidden_size=64,
                         composition="child-sum-lstm", num_classes=MODULUS),
    "sequential LSTM": SequenceClassifier(input_size=32, num_classes=MODULUS, hidden_size=64,
                                          vocab_size=len(CHARACTERS) + 1),
}
inputs = {"Tree-LSTM": (lambda rows: [train[i] for i in rows.tolist()], test),
          "sequential LSTM": (lambda rows: (train_text[0][rows], train_text[1][rows]), test_text)}
curves, hits = {}, {}
for name, model in networks.items():
    batch_of, held_out = inputs[name]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(args.seed)     # both networks see the same batches
    curves[name] = []
    for step in range(1, STEPS + 1):
        rows = torch.randint(0, len(train), (BATCH,), generator=data)
        loss, _ = model.loss(batch_of(rows), train_values[rows])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % EVAL_EVERY == 0:
            hits[name] = model.predict(held_out) == test_values
            curves[name].append((step, hits[name].float().mean().item()))
    report(f"held-out accuracy, {name}", curves[name][-1][1])
    report(f"parameters, {name}", sum(p.numel() for p in model.parameters()))

counts = [c for c in sorted(set(operators.tolist())) if (operators == c).sum() >= 10]   # skip tiny groups
for name, right_answers in hits.items():
    for c in (counts[0], counts[-1]):
        share = right_answers[operators == c].float().mean().item()
        report(f"held-out accuracy with {c} operators, {name}", share)

import matplotlib.pyplot as plt  # noqa: E402  (_common has chosen the backend)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for name, curve in curves.items():
    left.plot(*zip(*curve), marker=".", label=name)
left.axhline(majority, color="black", lw=0.6, ls=":", label="always the most common value")
left.set(xlabel="training step", ylabel="accuracy on unseen expressions", ylim=(0, 1.02),
         title="Learning to evaluate (+ *) mod 10")
left.legend()
width = 0.4
for shift, (name, right_answers) in zip((-width / 2, width / 2), hits.items()):
    right.bar([c + shift for c in counts], [right_answers[operators == c].float().mean().item() for c in counts],
              width=width, label=name)
right.set_xticks(counts, [f"{c}\n({int((operators == c).sum())})" for c in counts])
right.set(xlabel="operators in the expression (number of test expressions)", ylabel="accuracy",
          ylim=(0, 1.15), title="Accuracy by expression size")
right.legend(loc="upper center", ncol=2)
fig.suptitle("Recursive versus sequential reading of the same expressions")
fig.tight_layout()
save(fig, args, "08_tree_network")
