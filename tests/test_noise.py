"""Rare-word noise (``--unk-noise``): which tokens become <unk>, how often, and that every
batching, rank and resume sees the same noised corpus."""
import json

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data import ContiguousBatches
from rnnkit.data.noise import UnknownNoise, token_counts, unknown_noise
from rnnkit.train import TrainConfig, Trainer

from conftest import PTB_LINES, whole_and_resumed


def corpus(seed=0, n=20_000, vocab=400):
    """A Zipf-like stream: ids 3.. with a long tail of rare ones (0-2 are the specials)."""
    rng = np.random.default_rng(seed)
    return (3 + np.minimum(rng.zipf(1.3, n) - 1, vocab - 4)).astype(np.uint16)


def test_probabilities_are_alpha_over_alpha_plus_count():
    ids = np.array([0, 0, 5, 5, 5, 7, 4, 4, 9])
    counts = token_counts(ids)
    assert counts.tolist() == [2, 0, 0, 0, 2, 3, 0, 1, 0, 1]
    noise = UnknownNoise(counts, alpha=0.5)
    expected = [0.0, 0, 0, 0, 0.5 / 2.5, 0.5 / 3.5, 0, 0.5 / 1.5, 0, 0.5 / 1.5]   # <unk> and unseen ids: never
    np.testing.assert_allclose(noise.probability, expected, rtol=0, atol=1e-15)


def test_counts_are_taken_in_blocks_like_one_bincount(monkeypatch):
    import rnnkit.data.noise as module
    ids = corpus()
    monkeypatch.setattr(module, "_BLOCK", 777)
    assert np.array_equal(token_counts(ids), np.bincount(ids.astype(np.int64)))
    assert np.array_equal(token_counts(torch.from_numpy(ids.astype(np.int64))), np.bincount(ids.astype(np.int64)))


def test_each_token_is_replaced_at_its_rate():
    ids = corpus(n=200_000, vocab=50_000)
    noise = UnknownNoise(token_counts(ids), alpha=0.25)
    noised = noise(ids, np.arange(len(ids)), epoch=0)
    assert noised.dtype == ids.dtype and set(np.unique(noised[noised != ids])) == {0}
    p = noise.probability[ids]
    expected, spread = p.sum(), np.sqrt((p * (1 - p)).sum())
    assert abs(int((noised != ids).sum()) - expected) < 4 * spread
    for token in (3, 4, 10):                                     # frequent to rare: each at its own rate
        at = ids == token
        n, q = int(at.sum()), noise.probability[token]
        assert abs(int((noised[at] == 0).sum()) - n * q) < 4 * np.sqrt(n * q * (1 - q)) + 1, token
    singles = np.isin(ids, np.flatnonzero(token_counts(ids) == 1))
    assert singles.sum() > 100 and abs((noised[singles] == 0).mean() - 0.2) < 0.1


def test_the_seed_and_the_epoch_choose_the_replacements_the_position_fixes_them():
    ids = corpus()
    positions = np.arange(len(ids))
    noise = UnknownNoise(token_counts(ids), alpha=1.0, seed=3)
    first = noise(ids, positions, epoch=0)
    assert np.array_equal(first, UnknownNoise(token_counts(ids), alpha=1.0, seed=3)(ids, positions, epoch=0))
    assert not np.array_equal(first, noise(ids, positions, epoch=1))
    assert not np.array_equal(first, UnknownNoise(token_counts(ids), alpha=1.0, seed=4)(ids, positions, epoch=0))
    assert np.array_equal(first[5000:9000], noise(ids[5000:9000], positions[5000:9000], epoch=0))


@pytest.mark.parametrize("batch_size, truncation, world_size", [(1, 7, 1), (4, 3, 1), (5, 16, 2), (3, 35, 3)])
def test_every_batching_and_rank_reads_the_same_noised_corpus(batch_size, truncation, world_size):
    ids = corpus()
    noise = unknown_noise(ids, 0.5, seed=1)
    for epoch in (0, 1):
        reference = noise(ids, np.arange(len(ids)), epoch)
        for rank in range(world_size):
            batches = ContiguousBatches(torch.from_numpy(ids.astype(np.int64)) if rank % 2 else ids, batch_size,
                                        truncation, rank=rank, world_size=world_size, noise=noise)
            batches.load_state_dict({"epoch": epoch, "chunk": 0})
            start, length = batches.shard[0], batches.stream_length
            rows = start + np.arange(batch_size)[:, None] * length
            for index, (inputs, targets) in enumerate(batches):
                assert inputs.dtype == targets.dtype == torch.int64
                at = rows + index * truncation + np.arange(inputs.shape[1])[None, :]
                assert np.array_equal(inputs.numpy(), reference[at])
                assert np.array_equal(targets.numpy(), reference[at + 1])
            assert batches.epoch == epoch + 1


def test_unknown_noise_refuses_a_bad_strength_and_a_batch_source():
    with pytest.raises(ValueError, match=r"^UnknownNoise: alpha must be a number > 0, got -1"):
        UnknownNoise([1, 2], alpha=-1)
    assert unknown_noise(corpus(), 0.0) is None
    with pytest.raises(ValueError, match=r"^TrainConfig: unk_noise must be in \[0, inf\), got -0.5$"):
        TrainConfig(unk_noise=-0.5)

    class Items:
        contiguous = False
    with pytest.raises(ValueError, match=r"^TrainConfig: unk_noise applies to a token stream, and this run trains "
                                         r"on Items; set unk_noise=0 or pass the tokens as one stream$"):
        Trainer(torch.nn.Linear(1, 1), TrainConfig(unk_noise=0.5, max_steps=1), "/nonexistent-unused",
                progress=False).fit(Items(), None)


def test_the_trainer_feeds_the_model_noised_chunks(tmp_path):
    ids = corpus(n=4_000)
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def loss(self, inputs, targets, state):
            seen.append((inputs.clone(), targets.clone()))
            return self.w * 0 + 1.0, None
    config = TrainConfig(unk_noise=0.5, batch_size=4, truncation=10, max_steps=60, eval_every=10**6, seed=2,
                         optimizer="sgd")
    Trainer(Spy(), config, tmp_path / "run", progress=False).fit(torch.from_numpy(ids.astype(np.int64)),
                                                                 torch.from_numpy(ids[:50].astype(np.int64)))
    noise = unknown_noise(ids, 0.5, seed=2)
    expected = noise(ids, np.arange(len(ids)), epoch=0)
    length = (len(ids) - 1) // 4
    for index, (inputs, targets) in enumerate(seen[:60]):
        at = np.arange(4)[:, None] * length + index * 10 + np.arange(10)[None, :]
        assert np.array_equal(inputs.numpy(), expected[at]) and np.array_equal(targets.numpy(), expected[at + 1])
    replaced = sum(int((i == 0).sum()) for i, _ in seen[:60])
    assert replaced > 0


# -- the command line ------------------------------------------------------------------------------------

PTB = PTB_LINES
TINY = ["--hidden-size", "16", "--batch-size", "4", "--truncation", "8", "--eval-every", "5", "--quiet"]


def test_word_level_trains_with_unk_noise_by_default_and_presets_without(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text(PTB)
    assert main(["train", "--data", str(path), "--level", "word", "--max-steps", "2", "--out",
                 str(tmp_path / "word"), *TINY]) == 0
    assert main(["train", "--data", str(path), "--max-steps", "2", "--out", str(tmp_path / "char"), *TINY]) == 0
    assert main(["train", "--data", str(path), "--preset", "zaremba-small", "--hidden-size", "16",
                 "--embedding-size", "16", "--max-steps", "2", "--out", str(tmp_path / "preset"), *TINY]) == 0
    assert "--unk-noise 0 " in capsys.readouterr().out
    noise = {}
    for name in ("word", "char", "preset"):
        out = tmp_path / name
        config = json.loads((out / (out / "latest").read_text().strip() / "config.json").read_text())
        noise[name] = config["training"]["unk_noise"]
    assert noise == {"word": 0.5, "char": 0.0, "preset": 0.0}


def test_resume_with_unk_noise_equals_an_uninterrupted_run_and_keeps_its_strength(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text(PTB * 2)
    common = ["--data", str(path), "--level", "word", "--unk-noise", "1", "--schedule", "constant", *TINY]
    (whole, _, _), (parts, _, _) = whole_and_resumed(tmp_path, common, stop=17, total=40)
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name
    capsys.readouterr()
    assert main(["train", "--resume", "--unk-noise", "0.5", "--max-steps", "50", "--out", str(tmp_path / "parts"),
                 "--quiet"]) == 2
    assert "--unk-noise 0.5 differs from this run's 1.0: a resumed run keeps" in capsys.readouterr().err

