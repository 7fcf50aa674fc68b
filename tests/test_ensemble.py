"""An ensemble of language models: the mean of their probabilities, scored exactly, and
`rnnkit evaluate` with several runs."""
import json
import math
import re

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.models import LanguageModel, LanguageModelConfig, load_language_model
from rnnkit.train import ensemble_nll, token_nll


def _models(count, vocab=11, seed=0):
    torch.manual_seed(seed)
    return [LanguageModel(LanguageModelConfig(vocab_size=vocab, hidden_size=6 + k, embedding_size=5,
                                              num_layers=1 + k % 2, cell="gru" if k == 2 else "lstm"))
            .double().eval() for k in range(count)]


def ensemble_oracle(models, ids) -> float:
    """Each model reads the whole sequence at once; each position's probability is the mean of theirs."""
    x = torch.as_tensor(ids[:-1]).view(1, -1)
    y = torch.as_tensor(ids[1:])
    with torch.no_grad():
        probabilities = [torch.softmax(m.readout.logits(m.features(x)[0][0]), -1) for m in models]
    total = 0.0
    for t in range(len(y)):
        total -= math.log(sum(float(p[t, y[t]]) for p in probabilities) / len(models))
    return total


def test_the_ensemble_is_the_mean_of_probabilities_in_any_chunking():
    models = _models(3)
    ids = torch.randint(11, (80,), generator=torch.Generator().manual_seed(5)).numpy()
    total, members, count = ensemble_nll(models, ids, batch_size=1, truncation=9)   # 9 chunks, states carried
    assert count == 79
    assert total == pytest.approx(ensemble_oracle(models, ids), rel=1e-10)
    for model, member in zip(models, members):
        assert member == pytest.approx(token_nll(model, ids, batch_size=1, truncation=9)[0], rel=1e-12)
    # rows: each row a sequence of its own, as token_nll reads them
    rows, _, _ = ensemble_nll(models[:2], ids, batch_size=3, truncation=7)
    third = 79 // 3
    expected = sum(ensemble_oracle(models[:2], ids[r * third: (r + 1) * third + 1 if r < 2 else None])
                   for r in range(3))
    assert rows == pytest.approx(expected, rel=1e-10)
    # one model is that model; a model twice is that model too; two models beat their mean loss (Jensen)
    alone, _, _ = ensemble_nll(models[:1], ids, batch_size=2, truncation=5)
    assert alone == pytest.approx(token_nll(models[0], ids, batch_size=2, truncation=5)[0], rel=1e-12)
    twice, _, _ = ensemble_nll([models[0], models[0]], ids, batch_size=2, truncation=5)
    assert twice == pytest.approx(alone, rel=1e-12)
    pair, (a, b), _ = ensemble_nll(models[:2], ids, batch_size=2, truncation=5)
    assert pair <= (a + b) / 2
    # a model left in training mode is scored without its dropout, and left in training mode
    torch.manual_seed(3)
    noisy = LanguageModel(LanguageModelConfig(vocab_size=11, hidden_size=6, embedding_size=5, dropout=0.5)).double()
    scored, _, _ = ensemble_nll([noisy, models[0]], ids, batch_size=1, truncation=9)
    assert noisy.training
    assert scored == pytest.approx(ensemble_oracle([noisy.eval(), models[0]], ids), rel=1e-10)
    with pytest.raises(ValueError, match=r"^ensemble_nll: give at least one model$"):
        ensemble_nll([], ids)


TEXT = "".join(f" the {w} said the market fell \n" for w in ("price", "stock", "bond", "fund") * 40)
TINY = ["--level", "word", "--hidden-size", "16", "--batch-size", "4", "--truncation", "8", "--max-steps", "20",
        "--no-neural-cache", "--quiet"]


def test_evaluate_with_several_runs_prints_the_ensemble_and_each_run(tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    runs = [tmp_path / f"seed{seed}" for seed in (0, 1)]
    for seed, run in zip((0, 1), runs):
        assert main(["train", "--data", str(path), "--out", str(run), "--seed", str(seed), *TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate", *map(str, runs), "--data", str(path), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("1,120 word tokens (words + <eos>), 4 rows, an ensemble of 2 "
                                                   "runs (the mean of their probabilities): loss ")
    models = [load_language_model(run)[0] for run in runs]
    from rnnkit.data.tokens import prepare
    text = prepare(path, level="word", split=(("text", 1.0),), vocab=load_language_model(runs[0])[1],
                   progress=False).parts["text"]
    total, members, count = ensemble_nll(models, text, batch_size=4, truncation=256)
    assert count == 1120
    assert float(re.search(r"loss ([\d.]+)", lines[0]).group(1)) == pytest.approx(total / count, abs=1e-4)
    for run, line, member in zip(runs, lines[1:], members):
        assert line.startswith(f"  {run}  alone: loss ")
        assert float(re.search(r"loss ([\d.]+)", line).group(1)) == pytest.approx(member / count, abs=1e-4)
        assert main(["evaluate", str(run), "--data", str(path), "--quiet"]) == 0     # the run's own figure
        assert re.search(r"loss ([\d.]+)", capsys.readouterr().out).group(1) == \
            re.search(r"loss ([\d.]+)", line).group(1)
    assert np.isfinite(total)
    (runs[1] / "cache.json").write_text(json.dumps({"window": 50, "theta": 1.0, "lam": 0.1, "validation_loss": 1.0,
                                                     "test_loss": 1.0, "tokens": 10}))
    assert main(["evaluate", *map(str, runs), "--data", str(path), "--quiet"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[:3] == lines and said[3:] == [f"(not used here: the neural cache of {runs[1]}, chosen for that run "
                                              f"alone)"]


def test_evaluate_refuses_an_ensemble_of_other_vocabularies_or_a_repeated_run(tmp_path, capsys):
    first, other = tmp_path / "first.txt", tmp_path / "other.txt"
    first.write_text(TEXT)
    other.write_text(TEXT.replace("market", "crowd"))
    assert main(["train", "--data", str(first), "--out", str(tmp_path / "a"), *TINY]) == 0
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "b"), *TINY]) == 0
    capsys.readouterr()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["evaluate", a, b, "--data", str(first), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"rnnkit evaluate: error: '{b}' has another vocabulary than '{a}'; the runs "
                                       f"of an ensemble must be trained on the same text with the same token "
                                       f"options\n")
    assert main(["evaluate", a, a, "--data", str(first), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"rnnkit evaluate: error: '{a}' is given more than once; an ensemble takes "
                                       f"each run once\n")
