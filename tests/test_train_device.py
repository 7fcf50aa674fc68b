"""Where and in what precision the trainer computes: ``Trainer(device=...)``, ``TrainConfig.precision``,
``rnnkit train --device/--precision``, and the cuDNN weight layout of the native engine, a no-op on
the CPU. The CUDA side (fp16 with a GradScaler, cuDNN's flattened weights) needs a GPU: these tests
check what the CPU can, and each refusal word for word."""
import json
import re
import warnings
from contextlib import nullcontext

import pytest
import torch

import rnnkit
from rnnkit._torch_private import flatten_for_cudnn
from rnnkit.cells import GRUCell, LSTMCell, ProjectedLSTMCell
from rnnkit.cli import main
from rnnkit.engines.native import flatten_cell
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig, Trainer, distributed, read_checkpoint

FP16_ON_CPU = "precision 'fp16' needs a CUDA device; use 'bf16' on the CPU"


def tiny_model(num_layers=1):
    torch.manual_seed(0)
    return LanguageModel(LanguageModelConfig(vocab_size=14, hidden_size=16, embedding_size=8,
                                             num_layers=num_layers))


def data(n=2400):
    """A learnable stream: a cycle of 13 with a coin flip added."""
    return torch.arange(n) * 7 % 13 + torch.randint(2, (n,), generator=torch.Generator().manual_seed(1))


def fit(tmp_path, precision="fp32", *, steps=60, resume=False, name=None, **options):
    config = TrainConfig(batch_size=8, truncation=16, max_steps=steps, eval_every=20, max_minutes=None,
                         eval_tokens=300, precision=precision)
    trainer = Trainer(tiny_model(num_layers=2), config, tmp_path / (name or precision), progress=False,
                      **options)
    stream = data()
    return trainer, trainer.fit(stream[:2100], stream[2100:], resume=resume)


# ----- precision ----------------------------------------------------------------------------------

def test_bf16_training_on_the_cpu_follows_fp32_within_a_percent(tmp_path):
    # two LSTM layers on torch's kernel: under autocast the carried state comes back in bfloat16
    _, full = fit(tmp_path, "fp32")
    trainer, mixed = fit(tmp_path, "bf16")
    assert trainer.device == torch.device("cpu") and not trainer.scaler.is_enabled()
    assert full["validation_loss"] < 1.9 and mixed["validation_loss"] < 1.9       # chance: ln 14 = 2.64
    difference = abs(mixed["validation_loss"] - full["validation_loss"]) / full["validation_loss"]
    assert 0 < difference < 0.01                    # really another precision, and close to fp32
    weights = trainer.model.state_dict()
    assert all(w.dtype == torch.float32 for w in weights.values())      # autocast keeps float32 weights


def test_train_config_checks_the_precision_and_old_configs_get_fp32():
    with pytest.raises(ValueError, match=r"^TrainConfig: precision must be 'fp32', 'bf16' or 'fp16', "
                                         r"got 'fp64'$"):
        TrainConfig(precision="fp64")
    saved = TrainConfig(precision="bf16").to_dict()
    assert saved["precision"] == "bf16" and TrainConfig.from_dict(saved).precision == "bf16"
    del saved["precision"]                                   # a checkpoint written before the option
    assert TrainConfig.from_dict(saved).precision == "fp32"


def test_fp16_on_the_cpu_is_refused_in_one_line(tmp_path, monkeypatch):
    # measured with torch 2.13: CPU float16 autocast breaks oneDNN's LSTM kernel, the default cell's
    config = TrainConfig(max_steps=2, precision="fp16")
    with pytest.raises(ValueError, match=rf"^{re.escape(FP16_ON_CPU)}$"):
        Trainer(tiny_model(), config, tmp_path, progress=False, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"^{re.escape(FP16_ON_CPU)}$"):
        Trainer(tiny_model(), config, tmp_path, progress=False)                 # auto: the CPU here


def test_resume_keeps_the_precision(tmp_path):
    fit(tmp_path, "bf16", steps=20)
    _, config, _ = read_checkpoint(tmp_path / "bf16", "latest")
    assert config["training"]["precision"] == "bf16" and "device" not in config["training"]
    resumed = TrainConfig.from_dict({**config["training"], "max_steps": 30})
    trainer = Trainer(tiny_model(num_layers=2), resumed, tmp_path / "bf16", progress=False)
    summary = trainer.fit(data()[:2100], data()[2100:], resume=True)
    assert summary["steps"] == 30 and trainer.config.precision == "bf16"


def test_a_gradient_scaler_unscales_before_clipping_and_is_saved_and_restored(tmp_path, monkeypatch):
    """fp16's GradScaler path, run in float32 on the CPU: scaling by 2^16 and back is exact there, so
    the weights must be those of a run without it; the scaler's state travels in trainer.pt."""
    _, plain = fit(tmp_path, "fp32", steps=20, name="plain")
    monkeypatch.setattr(distributed, "mixed_precision",
                        lambda device, precision: (nullcontext, torch.amp.GradScaler("cpu")))
    trainer, scaled = fit(tmp_path, "fp32", steps=20, name="scaled")
    assert scaled["validation_loss"] == plain["validation_loss"]          # clipped after unscaling
    _, _, saved = read_checkpoint(tmp_path / "scaled", "latest", with_trainer_state=True)
    assert saved["scaler"]["scale"] == 65536.0 and saved["scaler"]["_growth_tracker"] == 20
    trainer, _ = fit(tmp_path, "fp32", steps=25, name="scaled", resume=True)
    assert trainer.scaler.state_dict()["_growth_tracker"] == 25           # 20 restored, 5 more steps


# ----- device ----------------------------------------------------------------------------------------

def test_device_choices_and_the_errors_for_a_missing_gpu(tmp_path, monkeypatch):
    assert distributed.choose_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device must be 'auto', 'cpu' or 'cuda' \(or 'cuda:N'\), got 'tpu'$"):
        distributed.choose_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.choose_device(None) == distributed.choose_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device cuda: torch finds no CUDA device on this machine; "
                                         r"use device='cpu'$"):
        Trainer(tiny_model(), TrainConfig(max_steps=2), tmp_path, progress=False, device="cuda")
    with pytest.raises(ValueError, match=r"^--device cuda:1: torch finds no CUDA device on this machine; "
                                         r"use --device cpu$"):
        distributed.choose_device("cuda:1", option="--device")


SPEECH = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30
TINY = ["--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--truncation", "16",
        "--eval-every", "5", "--eval-tokens", "200", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "speech.txt"
    path.write_text(SPEECH)
    return path


def test_cli_device_cuda_without_a_gpu_is_one_line(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--device", "cuda", "--max-steps", "2", "--out", str(out),
                 *TINY]) == 2
    assert capsys.readouterr().err == ("rnnkit train: error: --device cuda: torch finds no CUDA device on this "
                                       "machine; use --device cpu\n")
    assert not out.exists()
    assert main(["train", "--data", str(corpus), "--precision", "fp16", "--max-steps", "2", "--out", str(out),
                 *TINY]) == 2
    assert capsys.readouterr().err == f"rnnkit train: error: {FP16_ON_CPU}\n"
    assert not out.exists()
    assert main(["sample", str(out), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("rnnkit sample: error: --device cuda: torch finds no CUDA device on this "
                                       "machine; use --device cpu\n")


def test_cli_bf16_on_the_cpu_end_to_end_and_resume_keeps_it(tmp_path, corpus, capsys):
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["train", "--data", str(corpus), "--device", "cpu", "--precision", precision,
                     "--max-steps", "20", "--out", str(out), *TINY]) == 0
        printed = capsys.readouterr().out
        shown = "" if precision == "fp32" else " in bf16"
        assert re.search(rf"engine \w+, on cpu{shown}\n", printed), printed
        losses[precision] = float(re.search(r"validation: loss (\d\.\d{4}) nats/char", printed).group(1))
    assert "36 char tokens in the vocabulary" in printed and losses["fp32"] < 3.45    # chance: ln 36 = 3.58
    assert 0 < abs(losses["bf16"] - losses["fp32"]) < 0.01 * losses["fp32"]
    _, config, _ = read_checkpoint(out, "latest")
    assert config["training"]["precision"] == "bf16"
    # a resumed run keeps it, without being told; another precision is refused
    assert main(["train", "--resume", "--max-steps", "25", "--out", str(out), "--quiet"]) == 0
    resumed = capsys.readouterr().out
    assert "on cpu in bf16" in resumed and "after 25 steps" in resumed
    assert main(["train", "--resume", "--precision", "fp32", "--max-steps", "30", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        "rnnkit train: error: --precision fp32 differs from this run's bf16: a resumed run keeps its data, model "
        "and optimizer; drop --precision (only --max-minutes, --max-epochs, --max-steps and --lr may change), "
        "or start a new run with --out NEW_DIRECTORY\n")
    assert main(["evaluate", str(out), "--data", str(corpus), "--device", "cpu"]) == 0
    assert re.match(r"4,469 char tokens, 4 rows: loss \d\.\d{4} nats/char", capsys.readouterr().out)


def test_cli_resume_of_a_run_saved_before_the_precision_option(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "5", "--out", str(out), *TINY]) == 0
    config_path = out / (out / "latest").read_text().strip() / "config.json"
    config = json.loads(config_path.read_text())
    del config["training"]["precision"]
    config_path.write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", "--resume", "--precision", "fp32", "--max-steps", "8", "--out", str(out), "--quiet"]) == 0
    assert "after 8 steps" in capsys.readouterr().out
    _, config, _ = read_checkpoint(out, "latest")
    assert config["training"]["precision"] == "fp32"


# ----- cuDNN's weight layout: nothing to do on the CPU -----------------------------------------------

@pytest.mark.parametrize("make", [lambda: LSTMCell(3, 5), lambda: GRUCell(3, 5, bias=False),
                                  lambda: ProjectedLSTMCell(3, 5, proj_size=2)])
def test_flattening_for_cudnn_is_a_no_op_on_the_cpu(make, monkeypatch):
    cell = make()
    weights = cell.flat_weights()
    before = [(w.data_ptr(), w.clone()) for w in weights]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert flatten_for_cudnn(weights, cell.native_mode(), 3, 5, getattr(cell, "proj_size", 0)) is False
        assert flatten_cell(cell) is False
        monkeypatch.setenv("RNNKIT_TORCH_PRIVATE", "0")
        assert flatten_for_cudnn(weights, cell.native_mode(), 3, 5) is False
    assert flatten_for_cudnn([], "LSTM", 3, 5) is False
    for w, (address, value) in zip(cell.flat_weights(), before):
        assert w.data_ptr() == address and torch.equal(w, value)


def test_flatten_parameters_and_to_leave_a_cpu_network_as_it_was():
    lstm = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(6, 2, 3)
    expected, _ = lstm(x)
    addresses = [p.data_ptr() for p in lstm.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstm.flatten_parameters() is None
        assert lstm.to("cpu") is lstm                    # _apply flattens again: nothing to do here
        assert torch.equal(lstm(x)[0], expected)
    assert [p.data_ptr() for p in lstm.parameters()] == addresses
    double = rnnkit.LSTM(3, 4).double()                   # a conversion still converts
    assert all(p.dtype == torch.float64 for p in double.parameters())
