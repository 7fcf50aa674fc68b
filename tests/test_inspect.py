"""`rnnkit inspect RUN_DIR`: the pictures of a trained language model, written where it lives."""
import json
import re

import pytest
import torch

from rnnkit.analysis.gradients import gradient_decay_rate, gradient_flow
from rnnkit.analysis.hidden import hidden_pca, hidden_states
from rnnkit.analysis.jacobians import jacobian_spectrum, step_jacobians
from rnnkit.cli import main
from rnnkit.data import split_train_validation
from rnnkit.models import load_language_model

TEXT = ("def speak(name):\n    print('hear me', name)  # (aside)\n    return [name, \"all\"]\n\n") * 40
TINY = ["--hidden-size", "12", "--embedding-size", "6", "--batch-size", "4", "--truncation", "16",
        "--eval-every", "100", "--quiet"]
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ["gradient flow", "spectrum", "jacobian products", "forget gates", "PCA trajectory", "unit responses"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny character LSTM trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("inspect")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    out = root / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "8", "--out", str(out), *TINY]) == 0
    return out, corpus


def test_inspect_writes_every_plot_into_the_run_directory_and_prints_where(run, capsys):
    out, _ = run
    capsys.readouterr()
    assert main(["inspect", str(out), "--length", "50", "--warmup", "20", "--jacobian-steps", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for label in PLOTS:
        match = re.search(rf"^  {label}:\s+(\S+)$", printed, flags=re.M)
        assert match, (label, printed)
        path = out / "inspect" / match.group(1).rsplit("/", 1)[-1]
        assert match.group(1) == str(path)
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, label
    assert re.search(r"^inspected .+ \(lstm layer 0, hidden 12\) on 50 tokens of the run's validation text, "
                     r"after 20 tokens of warm-up$", printed, flags=re.M), printed

    # the numbers printed and saved are those of the analysis functions on the same tokens
    summary = json.loads((out / "inspect" / "summary.json").read_text())
    model, vocab, _ = load_language_model(out)
    model.double()
    _, ids = split_train_validation(vocab.encode(TEXT), 0.1)
    _, state = model(torch.tensor(ids[:20]).unsqueeze(0))                  # the warm-up
    state = tuple(s.detach() for s in state)
    ids = torch.tensor(ids[20:71]).unsqueeze(0)
    flow = gradient_flow(model, ids[:, :-1], targets=ids[:, 1:], state=state)
    assert summary["gradient_norm_first"] == pytest.approx(flow.norms[0, 0].item(), rel=1e-12)
    assert summary["gradient_norm_last"] == pytest.approx(flow.norms[0, -1].item(), rel=1e-12)
    assert summary["last_step_decay_rate"] == pytest.approx(gradient_decay_rate(flow), rel=1e-12)
    spectrum = jacobian_spectrum(step_jacobians(model, ids[:, :20], state=state))
    assert summary["median_spectral_radius"] == pytest.approx(spectrum.spectral_radius.median().item(), rel=1e-9)
    pca = hidden_pca(hidden_states(model, ids[:, :-1], state=state), num_components=3, standardize=True)
    assert summary["explained_variance_ratio"] == pytest.approx(pca.explained_variance_ratio.tolist(), rel=1e-9)
    assert f"gradient flow: |dL/ds_t| is {flow.norms[0, 0].item():.3g} at t = 0" in printed
    assert any(line.startswith("inside string: ") for line in summary["units"])


def test_inspect_on_other_text_into_another_directory(run, tmp_path, capsys):
    out, _ = run
    text = tmp_path / "other.txt"
    text.write_text("print('a', [1, 2])\n" * 3)
    target = tmp_path / "pictures"
    assert main(["inspect", str(out), "--data", str(text), "--out", str(target), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"on 56 tokens of '{text}'\n" in printed                    # all of it (no warm-up), less the last target
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["forget-gates.png", "gradient-flow.png", "jacobian-products.png", "pca.png", "spectrum.png",
         "summary.json", "units.png"])


def test_inspect_errors_are_clear(run, tmp_path, capsys):
    out, _ = run
    assert main(["inspect", str(tmp_path)]) == 2
    assert (f"'{tmp_path}' holds no rnnkit checkpoint (no 'best' file); pass the --out directory of an "
            f"`rnnkit train` run, or train one first") in capsys.readouterr().err
    assert main(["inspect", str(out), "--layer", "1"]) == 2
    assert ("rnnkit inspect: error: --layer must be an integer in [0, 0], got 1; this is a 1-layer model"
            in capsys.readouterr().err)
    assert main(["inspect", str(out), "--jacobian-steps", "0"]) == 2
    assert "rnnkit inspect: error: --jacobian-steps must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["inspect", str(out), "--warmup", "-1"]) == 2
    assert "rnnkit inspect: error: --warmup must be a non-negative integer, got -1" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("ab")
    assert main(["inspect", str(out), "--data", str(short)]) == 2
    assert f"rnnkit inspect: error: '{short}' holds 2 token(s); inspect needs at least 3" in capsys.readouterr().err
