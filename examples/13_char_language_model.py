"""Lesson 13: a character language model, bits per character on held-out text fall as it trains, then it writes.

A character model predicts each next character from the state an LSTM has built from all the ones
before it; its loss in bits per character (bpc) is the number of bits an ideal coder would need per
character of text it has never seen. The lesson trains rnnkit.models.LanguageModel with truncated
backpropagation through time on rnnkit's built-in corpus (Python standard-library source), measures
the held-out bpc as training goes, compares it with a model that knows only character frequencies,
and samples with rnnkit.generate at two temperatures.
Run: python examples/13_char_language_model.py [--quick]
"""
import math
import re

import matplotlib.pyplot as plt
import torch

from _common import lesson, report, save

from rnnkit.data import ContiguousBatches, Vocabulary, default_corpus, split_train_validation
from rnnkit.generate import filter_logits, generate
from rnnkit.models import LanguageModel, LanguageModelConfig, bits_per_token
from rnnkit.train import detach_state
from rnnkit.train.evaluation import token_nll

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)            # small matrices: one thread is faster than two on a shared machine
STEPS, EVAL_EVERY, HELD_OUT, SAMPLE = (15, 5, 2000, 100) if args.quick else (1000, 100, 20000, 2000)
HIDDEN = 128 if args.quick else 256
TEMPERATURES = (0.5, 1.0)

# ----- the text: Python's own source, characters to ids, the last 10% held out --------------------
text = default_corpus()
vocab = Vocabulary.build(text, level="char")
ids = torch.tensor(vocab.encode(text))
train, validation = split_train_validation(ids, validation_fraction=0.1)
held_out = validation[:HELD_OUT]                     # a fixed stretch, scored after every EVAL_EVERY steps
report("vocabulary size (characters and 3 specials)", len(vocab))
report("training characters", len(train))
report("uniform guess", math.log2(len(vocab)), "bits/char")
# a model with no memory at all: every character drawn from the training text's frequencies
frequencies = torch.bincount(train, minlength=len(vocab)).double() + 1       # +1: no zero probabilities
unigram = -(frequencies / frequencies.sum()).log2()[held_out[1:]].mean().item()
report("character frequencies only (unigram)", unigram, "bits/char")

# ----- the model: embedding -> LSTM -> softmax over the characters ------------------------------
config = LanguageModelConfig(vocab_size=len(vocab), cell="lstm", hidden_size=HIDDEN, embedding_size=32)
model = LanguageModel(config)
optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
batches = ContiguousBatches(train, batch_size=32, truncation=64)     # 32 parallel streams, 64 steps a chunk


def held_out_bpc() -> float:
    model.eval()
    total, count = token_nll(model, held_out, batch_size=16, truncation=256)    # summed nats, characters
    model.train()
    return bits_per_token(total / count)


curve, train_curve, running = [(0, held_out_bpc())], [], []
state, step = None, 0
while step < STEPS:
    for inputs, targets in batches:
        loss, state = model.loss(inputs, targets, state)
        state = detach_state(state)      # carry the state to the next chunk, but cut the gradient there
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        step += 1
        running.append(bits_per_token(loss.item()))
        if step % EVAL_EVERY == 0:
            curve.append((step, held_out_bpc()))
            train_curve.append((step, sum(running) / len(running)))
            running = []
        if step == STEPS:
            break
report("held-out before training", curve[0][1], "bits/char")
for at, bpc in curve[1:]:
    report(f"held-out after {at} steps", bpc, "bits/char")
report("characters read in training", STEPS * 32 * 64)

# ----- sampling: the same model, two temperatures -------------------------------------------------
known = set(re.findall(r"[A-Za-z_]\w+", text[:len(train)]))           # every name the training text has
samples = {}
for temperature in TEMPERATURES:
    samples[temperature] = generate(model, vocab, "def ", length=SAMPLE, temperature=temperature, seed=args.seed)
    words = re.findall(r"[A-Za-z_]\w+", samples[temperature])
    found = sum(word in known for word in words) / max(len(words), 1)
    report(f"temperature {temperature}, names in the sample that occur in the training text",
           f"{found:.2f} of {len(words)}")
    longest = max(len(run.group()) for run in re.finditer(r"(.)\1*", samples[temperature], re.S))
    report(f"temperature {temperature}, longest run of one repeated character", longest)
for temperature, sample in samples.items():
    print(f"--- the first 400 characters sampled at temperature {temperature} ---\n{sample[:400]}\n---")

# ----- what temperature does to one next-character distribution ----------------------------------
prompt = "\n    def "
with torch.no_grad():
    model.eval()
    logits, _ = model(torch.tensor([vocab.encode(prompt)]))
    last = logits[0, -1]
shown = [0.5, 1.0, 2.0]
distributions = {t: torch.softmax(filter_logits(last, temperature=t), -1) for t in shown}
for t, p in distributions.items():
    entropy = -(p * p.clamp_min(1e-30).log2()).sum().item()
    report(f"next character after a line start and 4 spaces and def, entropy at temperature {t}", entropy, "bits")
# why a cold sample can get stuck: deep inside a run of spaces, another space is the favourite
with torch.no_grad():
    logits, _ = model(torch.tensor([vocab.encode("\n" + " " * 40)]))
space = vocab.token_to_id(" ")
for t in TEMPERATURES:
    report(f"p(another space after 40 spaces) at temperature {t}",
           torch.softmax(filter_logits(logits[0, -1], temperature=t), -1)[space].item())

# ----- the figure ----------------------------------------------------------------------------
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.3, 1]})
left.plot(*zip(*curve), marker="o", color="tab:blue", label="held-out text")
if train_curve:
    left.plot(*zip(*train_curve), color="tab:orange", alpha=0.8, label="training chunks (mean since last check)")
left.axhline(unigram, color="grey", linestyle="--", label=f"character frequencies only ({unigram:.2f})")
left.axhline(math.log2(len(vocab)), color="grey", linestyle=":", label=f"uniform guess ({math.log2(len(vocab)):.2f})")
left.set_xlabel("training step (32 x 64 characters each)")
left.set_ylabel("bits per character")
left.set_title("Held-out bits per character fall as the LSTM learns")
left.legend(loc="center right", fontsize=8)

top = distributions[1.0].topk(8).indices
labels = [repr(vocab.decode([int(i)]))[1:-1] or "?" for i in top]
width = 0.27
for k, t in enumerate(shown):
    right.bar([i + (k - 1) * width for i in range(len(top))], distributions[t][top].numpy(), width,
              label=f"temperature {t}")
right.set_xticks(range(len(top)), labels)
right.set_xlabel("next character after '    def ' at the start of a line (the 8 most likely at temperature 1)")
right.set_ylabel("probability")
right.set_title("Temperature sharpens (< 1) or flattens (> 1) the softmax")
right.legend(fontsize=8)
fig.suptitle(f"A character LSTM ({config.hidden_size} units) on Python source: {len(vocab)} symbols")
fig.tight_layout()
save(fig, args, "13_char_language_model")
