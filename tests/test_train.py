"""Trainer: truncated BPTT carry, exact resume after a kill, checkpoints, data parallelism."""
import json
import re
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rnnkit.data import ContiguousBatches
from rnnkit.models import LanguageModel, LanguageModelConfig, load_language_model
from rnnkit.train import TrainConfig, Trainer, TrainingDiverged, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 8


def tiny_model(vocab_size=20, cell="lstm", dropout=0.0, num_layers=1):
    return LanguageModel(LanguageModelConfig(vocab_size=vocab_size, cell=cell, hidden_size=16,
                                             embedding_size=8, dropout=dropout, num_layers=num_layers))


def ids(n=3000, vocab_size=20, seed=0):
    return torch.randint(vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def run_python(code: str, *args, env=None, check=True):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("cell", ["lstm", "gru", "gated"])
def test_chunked_sequence_with_carried_state_gives_the_unchunked_loss(cell):
    torch.set_default_dtype(torch.float64)
    try:
        model = tiny_model(cell=cell, num_layers=2).eval()
        tokens = ids(301).unsqueeze(0)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        whole, _ = model.loss(inputs, targets)
        total, state = 0.0, None
        for start in range(0, 300, 64):
            loss, state = model.loss(inputs[:, start:start + 64], targets[:, start:start + 64], state)
            total += loss.item() * inputs[:, start:start + 64].numel()
        assert abs(total / 300 - whole.item()) < 1e-12
        # and the batcher's chunks are exactly those slices of each stream
        batches = ContiguousBatches(tokens[0], batch_size=1, truncation=64)
        chunks = list(batches)
        assert torch.equal(torch.cat([x for x, _ in chunks], 1), inputs)
        assert torch.equal(torch.cat([y for _, y in chunks], 1), targets)
    finally:
        torch.set_default_dtype(torch.float32)


def test_training_lowers_the_loss_below_a_bound(tmp_path):
    # a deterministic cyclic sequence: a model that learns it reaches a loss near 0
    data = torch.arange(4000) % 7
    model = tiny_model(vocab_size=7)
    config = TrainConfig(batch_size=8, truncation=16, lr=1e-2, max_steps=150, eval_every=50, max_minutes=None)
    summary = Trainer(model, config, tmp_path, progress=False).fit(data[:3600], data[3600:])
    assert summary["validation_loss"] < 0.05          # chance is ln 7 = 1.95
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "validation", "summary"}
    assert records[-1]["steps"] == 150


TRAIN_SCRIPT = """
    import os, signal, sys, torch
    from rnnkit.models import LanguageModel, LanguageModelConfig
    from rnnkit.train import TrainConfig, Trainer
    run_dir, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=20, hidden_size=16, embedding_size=8,
                                              num_layers=2, dropout=0.2))
    data = torch.randint(20, (3000,), generator=torch.Generator().manual_seed(1))
    def hook(trainer):
        if trainer.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)          # no clean-up, no flush: a real crash
    config = TrainConfig(batch_size=4, truncation=16, max_steps=40, eval_every=10, max_minutes=None,
                         eval_tokens=200)
    Trainer(model, config, run_dir, progress=False, on_step=hook).fit(data[:2700], data[2700:], resume=resume)
    torch.save(model.state_dict(), os.path.join(run_dir, "final.pt"))
"""


def test_resume_after_a_kill_mid_epoch_continues_to_the_uninterrupted_result(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_python(TRAIN_SCRIPT, straight, -1, "fresh")
    crash = run_python(TRAIN_SCRIPT, killed, 25, "fresh", check=False)
    assert crash.returncode == -signal.SIGKILL
    _, config, saved = read_checkpoint(killed, "latest", with_trainer_state=True)
    assert config["step"] == 20 and saved["batches"]["chunk"] > 0      # mid-epoch
    run_python(TRAIN_SCRIPT, killed, -1, "resume")
    a = torch.load(straight / "final.pt")
    b = torch.load(killed / "final.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_checkpoint_alone_rebuilds_the_model_in_another_process(tmp_path):
    from rnnkit.data import Vocabulary

    vocab = Vocabulary.build(TEXT)
    model = tiny_model(vocab_size=len(vocab))
    data = torch.tensor(vocab.encode(TEXT))
    config = TrainConfig(batch_size=4, truncation=16, max_steps=10, eval_every=5, max_minutes=None)
    Trainer(model, config, tmp_path, progress=False,
            checkpoint_config={"model": model.config.to_dict(), "vocabulary": vocab.to_dict()}
            ).fit(data[:500], data[500:])
    probe = data[:50].unsqueeze(0)
    rebuilt, rebuilt_vocab, _ = load_language_model(tmp_path)
    expected = rebuilt(probe)[0]
    result = run_python("""
        import sys, torch
        from rnnkit.models import load_language_model
        model, vocab, _ = load_language_model(sys.argv[1])
        tokens = torch.tensor(vocab.encode(sys.argv[2])).unsqueeze(0)
        print(repr(model(tokens)[0].sum().item()), len(vocab))
    """, tmp_path, TEXT[:50])
    total, size = result.stdout.split()
    assert float(total) == pytest.approx(expected.sum().item(), rel=1e-6) and int(size) == len(vocab)
    assert rebuilt_vocab.decode(rebuilt_vocab.encode(TEXT)) == TEXT


DDP_SCRIPT = """
    import os, sys, torch
    torch.set_default_dtype(torch.float64)
    from rnnkit.models import LanguageModelConfig, build_language_model
    from rnnkit.train import TrainConfig, Trainer
    run_dir, batch_size, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ensemble = {"one-model": {}, "ensemble": {"members": 2}, "snapshots": {"snapshots": 2}}[kind]
    torch.manual_seed(0)
    model = build_language_model(LanguageModelConfig(vocab_size=20, hidden_size=16, embedding_size=8, **ensemble))
    data = torch.randint(20, (4000,), generator=torch.Generator().manual_seed(3))
    config = TrainConfig(batch_size=batch_size, truncation=16, max_steps=12, eval_every=100,
                         max_minutes=None, eval_tokens=100, cycles=2 if "snapshots" in ensemble else 1)
    Trainer(model, config, run_dir, progress=False).fit(data[:3600], data[3600:])
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(model.state_dict(), os.path.join(run_dir, "final.pt"))
"""


@pytest.mark.parametrize("kind", ["one-model", "ensemble", "snapshots"])
def test_two_process_gloo_run_equals_one_process_on_the_same_global_batch(tmp_path, kind):
    one, two = tmp_path / "one", tmp_path / "two"
    run_python(DDP_SCRIPT, one, 8, kind)
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", str(script), str(two), "4", kind],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = torch.load(one / "final.pt"), torch.load(two / "final.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-12, msg=key)


class _Exploding(torch.nn.Module):
    """A model whose loss turns NaN at a chosen step."""

    def __init__(self, nan_at):
        super().__init__()
        self.inner, self.nan_at, self.calls = tiny_model(), nan_at, 0

    def loss(self, inputs, targets, state=None):
        loss, state = self.inner.loss(inputs, targets, state)
        if self.training:
            self.calls += 1
            if self.calls >= self.nan_at:
                loss = loss * float("nan")
        return loss, state


def test_nan_loss_stops_training_says_where_and_keeps_the_last_good_checkpoint(tmp_path):
    model = _Exploding(nan_at=13)
    config = TrainConfig(batch_size=4, truncation=16, max_steps=40, eval_every=5, max_minutes=None)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 13; training stopped and the last "
                                               r"good checkpoint \(step 10\) is in .*Lower --lr"):
        Trainer(model, config, tmp_path, progress=False).fit(ids(), ids(500))
    weights, config_saved, _ = read_checkpoint(tmp_path, "latest")
    assert config_saved["step"] == 10
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"^TrainConfig: truncation must be a positive integer, got 0$"):
        TrainConfig(truncation=0)
    with pytest.raises(ValueError, match=r"^TrainConfig: set at least one limit"):
        TrainConfig(max_minutes=None)
    for name in ("max_minutes", "max_epochs", "clip_norm", "lr"):           # NaN trained 0 steps, silently
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=rf"^TrainConfig: {name} must be a positive number, got {bad}$"):
                TrainConfig(**{name: bad})
    for bad in (float("nan"), float("inf"), -1.0, 1.0):                   # found by tests/test_cli_fuzz.py
        with pytest.raises(ValueError, match=rf"^TrainConfig: momentum must be in \[0, 1\), got {bad}$"):
            TrainConfig(momentum=bad)
    with pytest.raises(ValueError, match=r"^TrainConfig: weight_decay must be in \[0, inf\), got nan$"):
        TrainConfig(weight_decay=float("nan"))
    with pytest.raises(ValueError, match=r"^LanguageModel: unknown cell 'transformer'; choose one of"):
        LanguageModelConfig(vocab_size=5, cell="transformer")
    with pytest.raises(ValueError, match=r"^LanguageModelConfig: unknown keys \['colour'\]"):
        LanguageModelConfig.from_dict({"vocab_size": 5, "colour": "red"})
    with pytest.raises(ValueError, match=r"^LanguageModel: token ids must lie in \[0, 20\), got values from "
                                         r"-1 to 25$"):
        tiny_model()(torch.tensor([[3, 25, -1]]))


def test_a_crash_while_writing_a_checkpoint_leaves_the_last_good_one(tmp_path, monkeypatch):
    import rnnkit.train.checkpoint as checkpoint

    real_save, calls = checkpoint.torch.save, []

    def power_cut(obj, path):
        calls.append(path)
        if len(calls) == 2:          # second checkpoint: weights and config written, trainer state not
            raise KeyboardInterrupt("power cut")
        return real_save(obj, path)

    monkeypatch.setattr(checkpoint.torch, "save", power_cut)
    config = TrainConfig(batch_size=4, truncation=16, max_steps=10, eval_every=5, max_minutes=None)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), config, tmp_path, progress=False).fit(ids(), ids(300))
    monkeypatch.undo()
    _, saved, trainer_state = read_checkpoint(tmp_path, "latest", with_trainer_state=True)
    assert saved["step"] == 5 and trainer_state["step"] == 5
    summary = Trainer(tiny_model(), config, tmp_path, progress=False).fit(ids(), ids(300), resume=True)
    assert summary["steps"] == 10
    assert not list((tmp_path / "checkpoints").glob(".step-*")), "the half-written folder is cleaned up"


class _FlatValidation(torch.nn.Module):
    """Trains on w², but its validation loss never moves: every validation after the first is 'bad'."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((3,), 5.0))

    def loss(self, inputs, targets, state=None):
        return ((self.w ** 2).sum() if self.training else self.w.sum() * 0 + 1.0), state


def test_plateau_schedule_halves_the_rate_and_early_stopping_stops(tmp_path):
    config = TrainConfig(batch_size=2, truncation=4, schedule="plateau", plateau_factor=0.5,
                         plateau_patience=1, early_stopping=3, eval_every=5, max_steps=1000, max_minutes=None)
    summary = Trainer(_FlatValidation(), config, tmp_path, progress=False).fit(ids(400), ids(100))
    assert summary["stopped_by"] == "early stopping" and summary["steps"] == 20
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
           if r["kind"] == "train"}
    assert lrs[10] == config.lr and lrs[20] == config.lr * 0.5 ** 2   # two bad validations by step 20


@pytest.mark.parametrize("clip", [{"clip_value": 1e-3, "clip_norm": None}, {"clip_norm": 1e-2}])
def test_gradient_clipping_bounds_the_step(tmp_path, clip):
    seen = []

    def inspect(trainer):
        grads = torch.cat([p.grad.reshape(-1) for p in trainer.model.parameters() if p.grad is not None])
        seen.append((grads.abs().max().item(), grads.norm().item()))

    config = TrainConfig(batch_size=4, truncation=16, max_steps=5, eval_every=100, max_minutes=None, **clip)
    Trainer(tiny_model(), config, tmp_path, progress=False, on_step=inspect).fit(ids(), ids(300))
    if "clip_value" in clip:
        assert max(m for m, _ in seen) == pytest.approx(1e-3)
    else:
        assert max(n for _, n in seen) == pytest.approx(1e-2, rel=1e-4)


def test_progress_fraction_takes_whichever_limit_comes_first():
    trainer = Trainer(tiny_model(), TrainConfig(max_steps=100, max_minutes=10.0, max_epochs=2.0), "unused",
                      progress=False)
    trainer.step, trainer.elapsed, trainer.tokens = 10, 300.0, 500
    assert trainer.progress_fraction(tokens_per_epoch=1000) == 0.5              # the clock: 5 of 10 min
    trainer.step = 80
    assert trainer.progress_fraction(tokens_per_epoch=1000) == 0.8
    assert trainer.learning_rate(0.0) == pytest.approx(trainer.config.lr * 1e-3)   # warm-up starts low
    assert trainer.learning_rate(1.0) == pytest.approx(0.0)                        # cosine ends at zero


def test_a_checkpoint_with_tied_weights_opens_with_plain_safetensors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_model

    config = LanguageModelConfig(vocab_size=20, hidden_size=8, embedding_size=8, tie_weights=True)
    model = LanguageModel(config)
    train_config = TrainConfig(batch_size=4, truncation=8, max_steps=3, eval_every=3, max_minutes=None)
    Trainer(model, train_config, tmp_path, progress=False,
            checkpoint_config={"model": config.to_dict()}).fit(ids(400), ids(100, seed=1))
    weights = next((tmp_path / "checkpoints").iterdir()) / "model.safetensors"
    fresh = LanguageModel(config)
    assert load_model(fresh, weights) == (set(), [])             # strict: every key, the tied one restored
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    with safe_open(weights, "pt") as handle:
        saved = json.loads(handle.metadata()["rnnkit_config"])
    assert saved["model"] == config.to_dict() and saved["step"] == 3
    # the trainer state loads with torch.load's safe default
    _, _, trainer_state = read_checkpoint(tmp_path, "latest", with_trainer_state=True)
    assert trainer_state["step"] == 3 and "optimizer" in trainer_state


def test_loggers_get_every_record_and_tensorboard_gets_the_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnkit.train import TensorBoardLogger

    received = []
    board = TensorBoardLogger(tmp_path / "tb")
    config = TrainConfig(batch_size=4, truncation=8, max_steps=20, eval_every=10, max_minutes=None)
    Trainer(tiny_model(), config, tmp_path / "run", progress=False, loggers=[received.append, board]).fit(
        ids(800), ids(200, seed=1))
    board.close()
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert received == written and [r["kind"] for r in received].count("validation") == 2
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    for kind in ("train", "validation"):
        expected = [(r["step"], r["loss"]) for r in written if r["kind"] == kind]
        logged = [(e.step, e.value) for e in events.Scalars(f"{kind}/loss")]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)   # float32 in the file


def test_a_second_trainer_on_a_run_directory_in_use_is_refused(tmp_path):
    from rnnkit.train.guards import RunLock

    config = TrainConfig(batch_size=4, truncation=8, max_steps=2, eval_every=2, max_minutes=None)
    with RunLock(tmp_path):                                   # as another process's trainer holds it
        with pytest.raises(ValueError, match=rf"^'{tmp_path}' is in use by another training run \(pid "
                                             rf"{os.getpid()}\); wait for it to finish, or train into "
                                             rf"another --out directory$"):
            Trainer(tiny_model(), config, tmp_path, progress=False).fit(ids(400), ids(100, seed=1))
        assert not (tmp_path / "metrics.jsonl").exists()
    summary = Trainer(tiny_model(), config, tmp_path, progress=False).fit(ids(400), ids(100, seed=1))
    assert summary["steps"] == 2                               # free again once the holder is done


def test_checkpoints_follow_the_umask_and_report_damage_instead_of_loading_it(tmp_path):
    old = os.umask(0o022)
    try:
        config = TrainConfig(batch_size=4, truncation=8, max_steps=2, eval_every=2, max_minutes=None)
        Trainer(tiny_model(), config, tmp_path, progress=False).fit(ids(400), ids(100, seed=1))
    finally:
        os.umask(old)
    folder = tmp_path / (tmp_path / "latest").read_text().strip()
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    for name in ("model.safetensors", "config.json", "trainer.pt"):
        assert oct((folder / name).stat().st_mode & 0o777) == oct(0o644), name
    assert oct((tmp_path / "latest").stat().st_mode & 0o777) == oct(0o644)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-20:] = bytes(b ^ 0xFF for b in data[-20:])               # flip bits inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(weights))} is damaged \(its checksum differs from "
                                         rf"the one saved with it\); use the run's other checkpoint "
                                         rf"\(--checkpoint best\), or train again$"):
        read_checkpoint(tmp_path, "latest")
    weights.write_bytes(bytes(data[:100]))                              # truncated
    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["checksums"]                                              # as a checkpoint from before them
    config_path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(weights))} cannot be read \("):
        read_checkpoint(tmp_path, "latest")


def test_a_loss_beyond_floats_range_reports_an_infinite_perplexity_not_an_overflow():
    import math

    from rnnkit.models import perplexity
    assert perplexity(1.0) == math.e and perplexity(1e30) == math.inf and perplexity(709.5) == math.inf
