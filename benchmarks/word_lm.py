"""Word-level language models on Penn Treebank: rnnkit against a plain PyTorch script.

    python benchmarks/word_lm.py                   # 8-minute budget per run (~45 minutes)
    python benchmarks/word_lm.py --minutes 3       # quicker

Penn Treebank as Zaremba et al. distribute it; only the validation and test texts are
here, so every model trains on ``ptb.valid.txt`` (its first 90%; the last 10% validates)
and is tested on ``ptb.test.txt`` (82,430 words + <eos>). All runs read the same token
ids: rnnkit's token files of those texts (words + <eos> per line, vocabulary from the
training part, unseen test words as <unk>).

Runs, each for the same wall-clock budget on this machine:

- ``plain``: a plain PyTorch word LM with the defaults of the PyTorch word-language-model
  example — 2-layer ``nn.LSTM`` of 200, embedding 200, dropout 0.2, U(-0.1, 0.1) init,
  SGD at lr 20 divided by 4 whenever an epoch's validation does not improve, gradient
  norm clipped at 0.25, BPTT 35, batch 20 (evaluation batch 10), the best epoch's model
  tested — written here from that description;
- ``rnnkit default``: ``rnnkit train --level word`` with no other option (a snapshot ensemble
  of two: one model through two cycles of its schedule, each cycle's end kept), each snapshot's
  own figure beside it, and the ensemble with the neural cache its summary reports (chosen on
  validation);
- ``rnnkit one model``: the same with ``--snapshots 1``, one model through one cosine cycle;
- ``rnnkit zaremba-small``: the preset (it ends at its 13 epochs or the budget);
- ``rnnkit --members 2`` (with ``--members-row``): two models trained side by side in one run
  (``rnnkit train --members 2``), each member's own figure beside it;
- ``rnnkit default x2``: the default run with seeds 0 and 1, side by side on one core each
  for the same budget, scored as an ensemble (``rnnkit evaluate RUN RUN``: the mean of their
  probabilities) -- shown beside the bound, not counted in it.

The plain model is also scored with the same kind of cache, chosen the same way, to show what
the cache gives each. Bounds: rnnkit default's test perplexity <= 0.75 x plain's, the models
alone (the cache helps both about equally, so it is no part of the bound), and its training tokens/s
(validation included, as for plain) >= plain's. Then the step speed at a 10k-33k
vocabulary (tinyshakespeare's words, ~24k): one training step of the plain script's
model against rnnkit's with the same sizes, interleaved: with the adaptive softmax it
must be faster; with the full softmax, the same computation, equal within 3%.
Writes results/word_lm.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.cli import main as rnnkit_main  # noqa: E402
from rnnkit.data.tokens import TokenFile  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig, load_language_model  # noqa: E402
from rnnkit.train.cache import cache_nll, choose_cache  # noqa: E402
from rnnkit.train.evaluation import ensemble_nll  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BOUND_PERPLEXITY, BOUND_SPEED = 0.75, 1.0


# -- the plain PyTorch script ---------------------------------------------------------------

class PlainModel(nn.Module):
    def __init__(self, vocab, size=200, layers=2, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers, dropout=dropout)
        self.decoder = nn.Linear(size, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, hidden):                               # x (T, B)
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(out)), hidden


def columns(ids: np.ndarray, batch: int) -> torch.Tensor:
    """The stream cut into ``batch`` columns, (T, batch), as the example batches it."""
    length = len(ids) // batch
    return torch.from_numpy(np.asarray(ids[:length * batch]).astype(np.int64)).view(batch, length).t().contiguous()


def plain_loss(model, data, bptt=35):
    model.eval()
    total, count, hidden = 0.0, 0, None
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            x, y = data[i:i + bptt], data[i + 1:i + 1 + bptt]
            x = x[:len(y)]
            logits, hidden = model(x, hidden)
            total += nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1),
                                                 reduction="sum").item()
            count += y.numel()
    return total / count


class PlainFeatures(nn.Module):
    """The plain model as the neural cache reads a model: batch-first features and their readout."""

    def __init__(self, plain):
        super().__init__()
        self.plain = plain

    def features(self, tokens, state=None):                      # tokens (B, T)
        out, state = self.plain.rnn(self.plain.drop(self.plain.encoder(tokens.t())), state)
        return self.plain.drop(out).transpose(0, 1), state

    def readout_nll(self, h, targets):
        logits = self.plain.decoder(h)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                           reduction="none").view(targets.shape)


def plain_with_cache(model, splits, rows=20) -> dict:
    """The neural cache rnnkit's summary adds, chosen the same way (on validation), on the plain model."""
    features = PlainFeatures(model)
    settings, _ = choose_cache(features, splits["validation"], batch_size=rows, truncation=256)
    total, count = cache_nll(features, splits["test"], settings, batch_size=rows, truncation=256)
    return {"test_loss": total / count, "test_perplexity": math.exp(total / count), **settings.to_dict()}


def train_plain(splits, vocab_size, seconds, seed=1111, lr=20.0, clip=0.25, bptt=35, batch=20, cache=True):
    torch.manual_seed(seed)
    train, valid, test = columns(splits["train"], batch), columns(splits["validation"], 10), \
        columns(splits["test"], 10)
    model = PlainModel(vocab_size)
    best, best_state, tokens, epochs = math.inf, None, 0, 0
    start = time.perf_counter()
    out_of_time = False
    while not out_of_time:
        model.train()
        hidden = None
        for i in range(0, train.size(0) - 1, bptt):
            x, y = train[i:i + bptt], train[i + 1:i + 1 + bptt]
            x = x[:len(y)]
            hidden = None if hidden is None else tuple(h.detach() for h in hidden)
            model.zero_grad()
            logits, hidden = model(x, hidden)
            loss = nn.functional.cross_entropy(logits.view(-1, vocab_size), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            tokens += y.numel()
            if time.perf_counter() - start > seconds:
                out_of_time = True
                break
        epochs += 1
        val = plain_loss(model, valid)
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            lr /= 4.0
    elapsed = time.perf_counter() - start
    model.load_state_dict(best_state)
    test_loss = plain_loss(model, test)
    return {"validation_loss": best, "test_loss": test_loss, "test_perplexity": math.exp(test_loss),
            "with cache": plain_with_cache(model, splits) if cache else None,
            "tokens": tokens, "seconds": elapsed, "tokens_per_second": tokens / elapsed, "epochs": epochs,
            "parameters": sum(p.numel() for p in model.parameters())}


# -- rnnkit through its command line --------------------------------------------------------

def train_rnnkit(out: Path, minutes: float, extra: list, *, data=DATA / "ptb.valid.txt",
                 test=DATA / "ptb.test.txt") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = ["train", "--data", str(data), "--test-data", str(test),
               "--level", "word", "--max-minutes", f"{minutes:.4f}", "--out", str(out), "--quiet", *extra]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = rnnkit_main(command)
    if code != 0:
        raise SystemExit(f"rnnkit {' '.join(command)} failed with exit code {code}")
    summary = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    config = json.loads((out / (out / "best").read_text().strip() / "config.json").read_text())
    files = config["data"]["files"]
    cache = json.loads((out / "cache.json").read_text()) if (out / "cache.json").exists() else None
    if cache is not None:
        cache["test_perplexity"] = math.exp(cache["test_loss"])
    return {"command": "rnnkit " + " ".join(c if not c.startswith(str(DATA)) else "../shared/data/" + Path(c).name
                                            for c in command),
            "validation_loss": summary["best_validation_loss"], "test_loss": summary["test_loss"],
            "test_perplexity": math.exp(summary["test_loss"]), "tokens": summary["tokens"],
            "seconds": summary["seconds"], "tokens_per_second": summary["tokens_per_second"],
            "test_tokens": summary["evaluated_tokens"]["test"], "files": files, "with cache": cache,
            "printed": printed.getvalue()}


def rnnkit_on_one_core(out: str, minutes: float, extra: list, **texts) -> dict:
    """:func:`train_rnnkit` on one core (in a process of its own)."""
    torch.set_num_threads(1)
    return train_rnnkit(Path(out), minutes, extra, **texts)


def train_ensemble(out: Path, minutes: float, seeds=(0, 1)) -> dict:
    """rnnkit's default run once per seed, side by side on one core each for the same budget, then
    scored on the test text as an ensemble (``rnnkit evaluate RUN RUN``: the mean of their probabilities)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(len(seeds)) as pool:
        jobs = [pool.apply_async(rnnkit_on_one_core, (str(out / f"seed{seed}"), minutes,
                                                 ["--seed", str(seed), "--no-neural-cache"]))
                for seed in seeds]
        members = [job.get() for job in jobs]
    folder, part, _ = members[0]["files"]["test"]
    models = [load_language_model(out / f"seed{seed}")[0] for seed in seeds]
    total, alone, count = ensemble_nll(models, TokenFile(folder).parts[part], batch_size=20, truncation=256)
    return {"seeds": list(seeds), "test_loss": total / count, "test_perplexity": math.exp(total / count),
            "members": [{"test_perplexity": math.exp(a / count), "validation_loss": m["validation_loss"],
                         "tokens": m["tokens"], "tokens_per_second": m["tokens_per_second"]}
                        for a, m in zip(alone, members)],
            "parameters": sum(p.numel() for m in models for p in m.parameters())}


def train_with_members(out: Path, minutes: float, extra: list) -> dict:
    """:func:`train_rnnkit`, and when the run is an ensemble (members side by side, or snapshots) each
    of its members' own test perplexity (scored apart by :func:`ensemble_nll`)."""
    result = train_rnnkit(out, minutes, extra)
    folder, part, _ = result["files"]["test"]
    model = load_language_model(out)[0]
    result["parameters"] = sum(p.numel() for p in model.parameters())
    if hasattr(model, "live"):
        total, alone, count = ensemble_nll(model.live(), TokenFile(folder).parts[part], batch_size=20,
                                           truncation=256)
        assert math.isclose(total / count, result["test_loss"], rel_tol=1e-5), (total / count, result["test_loss"])
        result["members"] = [math.exp(a / count) for a in alone]
    return result


# -- one training step at a large vocabulary ---------------------------------------------------

def step_speed(repeats: int) -> dict:
    tokens = TokenFile(_shakespeare_words())
    train = tokens.parts["train"].tokens
    vocab = len(tokens.vocab)
    batch, bptt = 20, 35
    data = columns(train, batch)[:bptt + 1]
    x, y = data[:-1], data[1:]
    plain = PlainModel(vocab)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)

    def plain_step():
        plain_opt.zero_grad()
        logits, _ = plain(x, None)
        nn.functional.cross_entropy(logits.view(-1, vocab), y.reshape(-1)).backward()
        nn.utils.clip_grad_norm_(plain.parameters(), 0.25)
        plain_opt.step()

    jobs = {"plain": plain_step}
    xb, yb = x.t().contiguous(), y.t().contiguous()
    for softmax in ("full", "adaptive"):
        model = LanguageModel(LanguageModelConfig(vocab_size=vocab, hidden_size=200, embedding_size=200,
                                                  num_layers=2, dropout=0.2, softmax=softmax))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(model=model, opt=opt):
            opt.zero_grad()
            loss, _ = model.loss(xb, yb)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
        jobs[f"rnnkit {softmax}"] = step
    times = interleaved_medians(jobs, repeats)
    return {"vocabulary": vocab, "batch": batch, "bptt": bptt, "seconds": times,
            "ratio_to_plain": {k: times["plain"] / v for k, v in times.items() if k != "plain"}}


def _shakespeare_words() -> Path:
    from rnnkit.data.tokens import prepare
    return prepare(DATA / "tinyshakespeare.txt", level="word", progress=False).path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall budget of each run (default 8)")
    parser.add_argument("--out", default="runs/word-lm-benchmark", help="run directories go here (replaced)")
    parser.add_argument("--repeats", type=int, default=20, help="repetitions of the step timing")
    parser.add_argument("--members-row", action="store_true", help="also run --members 2 (8 more minutes)")
    args = parser.parse_args(argv)
    for name in ("ptb.valid.txt", "ptb.test.txt", "tinyshakespeare.txt"):
        if not (DATA / name).exists():
            print(f"missing {DATA / name}: this benchmark reads ../shared/data", file=sys.stderr)
            return 2
    out = Path(args.out)
    results = {"minutes": args.minutes}
    results["rnnkit default"] = train_with_members(out / "default", args.minutes, [])
    results["rnnkit one model"] = train_with_members(out / "one-model", args.minutes, ["--snapshots", "1"])
    results["rnnkit zaremba-small"] = train_rnnkit(out / "zaremba-small", args.minutes,
                                                   ["--preset", "zaremba-small"])
    files = results["rnnkit default"]["files"]
    splits = {name: TokenFile(folder).parts[part].tokens for name, (folder, part, _) in files.items()}
    vocab_size = len(TokenFile(files["train"][0]).vocab)
    results["plain"] = train_plain(splits, vocab_size, 60 * args.minutes)
    results["rnnkit ensemble"] = train_ensemble(out / "ensemble", args.minutes)
    if args.members_row:
        results["rnnkit --members 2"] = train_with_members(out / "members2", args.minutes, ["--members", "2"])
    results["step speed"] = step_speed(args.repeats)
    plain, default = results["plain"], results["rnnkit default"]
    ratio = default["test_perplexity"] / plain["test_perplexity"]
    cached = default["with cache"]["test_perplexity"] / plain["test_perplexity"]
    both = default["with cache"]["test_perplexity"] / plain["with cache"]["test_perplexity"]
    speed = default["tokens_per_second"] / plain["tokens_per_second"]
    print(f"\nPenn Treebank, trained on ptb.valid.txt, tested on ptb.test.txt ({default['test_tokens']:,} tokens), "
          f"{args.minutes:g} minutes each")
    print(f"{'run':24} {'test ppl':>9} {'+ cache':>8} {'valid ppl':>10} {'tokens/s':>9} {'tokens':>10}")
    for name in ("plain", "rnnkit default", "rnnkit one model", "rnnkit zaremba-small", "rnnkit --members 2"):
        if name not in results:
            continue
        r = results[name]
        cell = f"{r['with cache']['test_perplexity']:8.1f}" if r.get("with cache") else f"{'-':>8}"
        alone = ("   (alone: " + ", ".join(f"{m:.1f}" for m in r["members"]) + ")") if "members" in r else ""
        print(f"{name:24} {r['test_perplexity']:9.1f} {cell} {math.exp(r['validation_loss']):10.1f} "
              f"{r['tokens_per_second']:9.0f} {r['tokens']:10,}{alone}")
    ensemble = results["rnnkit ensemble"]
    print(f"{'rnnkit default x2':24} {ensemble['test_perplexity']:9.1f} {'-':>8} {'':>10} "
          f"{sum(m['tokens_per_second'] for m in ensemble['members']):9.0f} "
          f"{sum(m['tokens'] for m in ensemble['members']):10,}   (seeds 0 and 1, one core each; alone: "
          + ", ".join(f"{m['test_perplexity']:.1f}" for m in ensemble["members"]) + ")")
    print(f"rnnkit default's test perplexity / plain's: the models alone {ratio:.3f}; both with a neural cache "
          f"{both:.3f}; rnnkit's with its cache against plain's without {cached:.3f} (not a fair comparison: the "
          f"cache helps both)")
    one = results["rnnkit one model"]["test_perplexity"] / plain["test_perplexity"]
    print(f"rnnkit one model (--snapshots 1, {results['rnnkit one model']['parameters']:,} parameters; the default has "
          f"{results['rnnkit default']['parameters']:,} in its snapshots) / plain's: {one:.3f}")
    if "rnnkit --members 2" in results:
        members = results["rnnkit --members 2"]["test_perplexity"] / plain["test_perplexity"]
        print(f"rnnkit --members 2 (one run, {results['rnnkit --members 2']['parameters']:,} parameters) / plain's: "
              f"{members:.3f} (not the bound: not the default)")
    together = ensemble["test_perplexity"] / plain["test_perplexity"]
    print(f"two default runs side by side, one core each, as an ensemble ({ensemble['parameters']:,} parameters "
          f"against plain's {plain['parameters']:,}) / plain's: {together:.3f} (not the bound, which is the "
          f"default run's)")
    step = results["step speed"]
    print(f"\none training step, vocabulary {step['vocabulary']:,}, batch 20 x 35, 2 x 200 LSTM "
          f"(plain / rnnkit; above 1 = rnnkit faster):")
    for name, value in step["ratio_to_plain"].items():
        print(f"  {name:16} {value:5.2f}  ({1e3 * step['seconds'][name]:.1f} ms against "
              f"{1e3 * step['seconds']['plain']:.1f} ms)")
    checks = {f"rnnkit default test perplexity <= {BOUND_PERPLEXITY} x plain's, the models alone ({ratio:.3f})":
              ratio <= BOUND_PERPLEXITY,
              f"rnnkit default tokens/s >= plain's ({speed:.2f}x)": speed >= BOUND_SPEED,
              f"rnnkit adaptive-softmax step faster than plain's ({step['ratio_to_plain']['rnnkit adaptive']:.2f})":
                  step["ratio_to_plain"]["rnnkit adaptive"] > 1.0,
              f"rnnkit full-softmax step as fast as plain's, within 3% ({step['ratio_to_plain']['rnnkit full']:.2f})":
                  step["ratio_to_plain"]["rnnkit full"] >= 0.97}
    for label, met in checks.items():
        print(f"{'met    ' if met else 'NOT met'}  {label}")
    for r in results.values():
        if isinstance(r, dict):
            r.pop("printed", None)
    path = write_results("word_lm", {**results, "checks": checks})
    print(f"results in {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
