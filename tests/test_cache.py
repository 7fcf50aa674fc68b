"""The neural cache at evaluation (Grave et al. 2017): its formula written out, in float64."""
import math

import numpy as np
import pytest
import torch

from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train.cache import CacheSettings, cache_nll, choose_cache
from rnnkit.train.evaluation import token_nll


@torch.no_grad()
def cache_oracle(model, ids, settings):
    """One stream, position by position, in float64: the cache's formula written out."""
    x, y = torch.as_tensor(ids[:-1])[None], torch.as_tensor(ids[1:])
    h, _ = model.features(x)
    h, p = h[0].double(), torch.softmax(model(x)[0][0].double(), -1)
    total = 0.0
    for t in range(len(y)):
        past = list(range(max(0, t - settings.window), t))
        if not past:
            total -= math.log(p[t, y[t]])
            continue
        weights = torch.softmax(settings.theta * h[past] @ h[t], 0)
        cached = sum(float(w) for w, j in zip(weights, past) if y[j] == y[t])
        total -= math.log((1 - settings.lam) * float(p[t, y[t]]) + settings.lam * cached)
    return total


def test_the_neural_cache_equals_its_formula_written_out():
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=12, hidden_size=8, embedding_size=8,
                                              num_layers=2)).double().eval()
    ids = torch.randint(12, (90,)).numpy()
    grid = [CacheSettings(5, 1.0, 0.2), CacheSettings(30, 3.0, 0.5), CacheSettings(200, 0.5, 0.1)]
    totals, count = cache_nll(model, ids, grid, batch_size=1, truncation=7)       # 13 chunks: the cache spans them
    assert count == 89
    for total, settings in zip(totals, grid):
        assert total == pytest.approx(cache_oracle(model, ids, settings), rel=1e-9, abs=1e-9)
    static, _ = cache_nll(model, ids, CacheSettings(5, 1.0, 0.0), batch_size=1)
    assert static == pytest.approx(token_nll(model, ids, batch_size=1)[0], rel=1e-12)
    rows, _ = cache_nll(model, ids, grid[1], batch_size=3, truncation=10)      # three rows, three caches
    third = 89 // 3
    expected = sum(cache_oracle(model, ids[r * third: (r + 1) * third + 1 if r < 2 else None], grid[1])
                   for r in range(3))
    assert rows == pytest.approx(expected, rel=1e-9)
    best, loss = choose_cache(model, ids, windows=(5, 30), thetas=(1.0, 3.0), lambdas=(0.2, 0.5), batch_size=1)
    candidates = {(w, t, lam): cache_oracle(model, ids, CacheSettings(w, t, lam))
                  for w in (5, 30) for t in (1.0, 3.0) for lam in (0.0, 0.2, 0.5)}     # lam 0: the model alone
    assert loss * count == pytest.approx(min(candidates.values()), rel=1e-9)
    assert candidates[best.window, best.theta, best.lam] == pytest.approx(loss * count, rel=1e-9)
    with pytest.raises(ValueError, match=r"^CacheSettings: lam must be in \[0, 1\), got 1.5$"):
        CacheSettings(10, 1.0, 1.5)


def test_a_repeating_text_is_predicted_better_with_the_cache():
    torch.manual_seed(1)
    model = LanguageModel(LanguageModelConfig(vocab_size=50, hidden_size=16, embedding_size=16)).eval()
    phrase = torch.randint(3, 50, (25,))
    ids = phrase.repeat(8).numpy()                      # the same 25 words eight times
    static, count = token_nll(model, ids, batch_size=1)
    cached, _ = cache_nll(model, ids, CacheSettings(100, 8.0, 0.5), batch_size=1)
    assert math.exp(cached / count) < 0.5 * math.exp(static / count)


def test_a_word_level_run_reports_its_cache_and_evaluate_reuses_it(tmp_path, capsys):
    import json
    import re

    from rnnkit.cli import main
    rng = np.random.default_rng(0)               # stories of 10 lines, each about two of 300 people:
    names = [f"name{i}" for i in range(300)]     # a cache remembers who, the model cannot know
    lines = []
    for _ in range(60):
        a, b = rng.choice(names, 2, replace=False)
        lines += [f" mr. {rng.choice([a, b])} said the market fell " for _ in range(10)]
    path = tmp_path / "a.txt"
    path.write_text("\n".join(lines) + "\n")
    tiny = ["--hidden-size", "16", "--batch-size", "4", "--truncation", "8", "--max-steps", "40", "--quiet"]
    assert main(["train", "--data", str(path), "--level", "word", "--out", str(tmp_path / "word"), *tiny]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "word" / "cache.json").read_text())
    assert set(saved) == {"window", "theta", "lam", "validation_loss", "test_loss", "tokens"}
    test = re.search(r"\ntest: +loss ([\d.]+) nats/word", printed)
    assert test and saved["validation_loss"] > 0
    assert saved["lam"] > 0 and saved["test_loss"] < float(test.group(1))     # a text that repeats itself
    assert re.search(r"\ntest\+cache: loss [\d.]+ nats/word, perplexity [\d.]+ per word, .* -- the model and a "
                     r"neural cache of the last \d+ tokens, theta [\d.]+, lambda [\d.]+ \(Grave et al. 2017\), "
                     r"chosen on validation", printed), printed
    assert main(["evaluate", str(tmp_path / "word"), "--data", str(path), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"with a neural cache of the last {saved['window']} tokens")
    static = float(re.search(r"loss ([\d.]+)", lines[0]).group(1))
    assert float(re.search(r"loss ([\d.]+)", lines[1]).group(1)) < static
    assert main(["train", "--data", str(path), "--level", "word", "--no-neural-cache", "--out",
                 str(tmp_path / "off"), *tiny]) == 0
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "char"), *tiny]) == 0
    printed = capsys.readouterr().out
    assert "test+cache" not in printed and printed.count("\ntest: ") == 2
    assert not (tmp_path / "off" / "cache.json").exists() and not (tmp_path / "char" / "cache.json").exists()


def test_a_damaged_cache_file_is_one_line(tmp_path):
    from rnnkit.train.lm_run import saved_cache
    (tmp_path / "cache.json").write_text('{"window": 0, "theta": 1, "lam": 0.1}')
    with pytest.raises(ValueError, match=r"^'.*cache.json' is damaged \(CacheSettings: window must be an int >= 1, "
                                         r"got 0\); delete it to evaluate without the cache$"):
        saved_cache(tmp_path)
    assert saved_cache(tmp_path / "elsewhere") is None
