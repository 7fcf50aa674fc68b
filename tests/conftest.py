import os
import subprocess
import sys
import zlib

import pytest
import torch

# Triton decides at its first import whether its kernels run compiled or under its interpreter; torch
# imports it early (torch._dynamo does), so the choice is made here, before anything imports rnnkit:
# without a GPU, tests/test_triton.py runs the fused engine's Triton kernels on the CPU
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

F64 = torch.float64


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory):
    """Token files prepared by the tests go to a folder of their own, never the user's cache."""
    import os

    saved = os.environ.get("RNNKIT_CACHE_DIR")
    os.environ["RNNKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("rnnkit-cache"))
    yield
    if saved is None:
        os.environ.pop("RNNKIT_CACHE_DIR", None)
    else:
        os.environ["RNNKIT_CACHE_DIR"] = saved


@pytest.fixture(autouse=True)
def _seeded(request):
    """Each test gets its own seed (from its name): reproducible, yet different per test."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


def grads_of(module, *tensors):
    """Gradients of every parameter (by name) and of the given leaf tensors."""
    named = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    for i, t in enumerate(tensors):
        named[f"input{i}"] = t.grad.clone()
    return named


def assert_close(a, b, rtol=1e-6, atol=1e-10, what=""):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) or isinstance(b, (tuple, list)), what
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rtol, atol, f"{what}[{i}]")
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{what}: {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], rtol, atol, f"{what}.{k}")
        return
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def cell_engine_cases():
    """(cell class, engine) for the common cells on every engine that runs them: the matrix the
    toolchain tests (compile, autocast) walk."""
    from rnnkit.cells import ElmanCell, GatedCell, GRUCell, LeakyCell, LSTMCell
    from rnnkit.engines.select import ENGINES

    return [(cell, engine) for cell in (LSTMCell, GRUCell, ElmanCell, GatedCell, LeakyCell)
            for engine in ("loop", "native", "fused", "scan") if ENGINES[engine].supports(cell(2, 2)) is None]


# Penn Treebank-style lines: words, a literal <unk>, N for numbers, one sentence a line
PTB_LINES = "\n".join([" the <unk> company said N shares rose ", " a cat sat on the mat ",
                       " the dog said it was N years old ", " mr. smith sat ", " the market fell "] * 40) + "\n"


def whole_and_resumed(tmp_path, options: list, stop: int, total: int):
    """``rnnkit train OPTIONS`` for ``total`` steps in one go ('whole') and in two ('parts': ``stop``
    steps, then ``--resume``); returns each run's latest model, vocabulary and config."""
    from rnnkit.cli import main
    from rnnkit.models import load_language_model

    assert main(["train", *options, "--max-steps", str(total), "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *options, "--max-steps", str(stop), "--out", str(tmp_path / "parts")]) == 0
    assert main(["train", "--resume", "--max-steps", str(total), "--out", str(tmp_path / "parts"), "--quiet"]) == 0
    return (load_language_model(tmp_path / "whole", "latest"), load_language_model(tmp_path / "parts", "latest"))


def run_without(module: str, code: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python in which any import of ``module`` fails, as where it is not installed;
    the run must end well (its output is returned)."""
    result = subprocess.run([sys.executable, "-c", f"import sys\nsys.modules[{module!r}] = None\n{code}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result
