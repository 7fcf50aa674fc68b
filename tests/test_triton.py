"""The fused engine's Triton kernels (rnnkit/engines/fused/gpu) equal the ``loop`` engine: outputs,
final states and every gradient, for every fused cell under every regularizer, in float64 and
float32. On a machine without a GPU they run under Triton's interpreter (``TRITON_INTERPRET=1``,
set by conftest.py before Triton is first imported), which executes the same kernels with NumPy; on
a GPU machine benchmarks/gpu.py runs the CUDA parity checks."""
import os
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

import rnnkit
from rnnkit.cells import LSTMCell
from rnnkit.engines.fused import configured
from rnnkit.engines.fused.gpu import triton_status, twin, uses_triton
from rnnkit.engines.fused.gpu import twins
from rnnkit.regularizers import Zoneout

from conftest import F64, assert_close
from test_fused import CELLS, WRAPPERS, check_fused_equals_loop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Triton's wheels are for Linux")


@pytest.fixture
def triton_kernels():
    assert triton_status() is None, triton_status()
    with configured(triton="on"):
        yield


@pytest.fixture
def counted(monkeypatch):
    """The kernels launched, by name: proof that a run went through Triton."""
    launched = []
    real = twins._kernels

    class Spy:
        def __getattr__(self, name):
            kernel = getattr(real(), name)

            class Launcher:
                def __getitem__(self, grid):
                    def launch(*args, **kwargs):
                        launched.append(name)
                        return kernel[grid](*args, **kwargs)
                    return launch
            return Launcher()
    monkeypatch.setattr(twins, "_kernels", lambda: Spy())
    return launched


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_triton_kernels_equal_loop(kind, wrapper, triton_kernels):
    check_fused_equals_loop(kind, wrapper, 3, 5, 4, 5, True, False, True, True, seed=3)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_tiled_kernels_equal_loop(kind):
    """More rows than one program holds and hidden/inner widths of several tiles (16 wide here),
    reversed, ragged, with every regularizer: the paths a GPU takes at real sizes."""
    with configured(triton="on", triton_blocks=(16, 16, 16)):
        check_fused_equals_loop(kind, "all", 19, 3, 3, 21, True, True, True, True, seed=4)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), wrapper=st.sampled_from(sorted(WRAPPERS)), batch=st.integers(1, 4),
       steps=st.integers(1, 6), input_size=st.integers(1, 4), hidden_size=st.integers(1, 6), bias=st.booleans(),
       reverse=st.booleans(), ragged=st.booleans(), training=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_triton_kernels_equal_loop_at_random_sizes(kind, wrapper, batch, steps, input_size, hidden_size, bias,
                                                   reverse, ragged, training, seed):
    with configured(triton="on"):
        check_fused_equals_loop(kind, wrapper, batch, steps, input_size, hidden_size, bias, reverse, ragged,
                                training, seed)


@pytest.mark.parametrize("kind", ["lstm", "layernorm-lstm", "gru", "layernorm-gru", "gated", "rate-softplus-dale"])
def test_float32_kernels_match_float64_loop(kind):
    """float32 arithmetic (the GPU's) against the float64 reference: outputs and gradients close."""
    torch.manual_seed(0)
    cell = Zoneout(CELLS[kind](4, 6, True), 0.2 if kind.endswith(("gru", "gated", "dale")) else (0.1, 0.2))
    cell.train()
    x = torch.randn(3, 7, 4, dtype=F64, requires_grad=True)
    torch.manual_seed(1)
    want, _ = rnnkit.Recurrent(cell, engine="loop")(x)
    (gx,) = torch.autograd.grad(want.square().sum(), x)
    x32 = x.detach().float().requires_grad_()
    torch.manual_seed(1)
    with configured(triton="on"):
        got, _ = rnnkit.Recurrent(cell.float(), engine="fused")(x32)
    (gx32,) = torch.autograd.grad(got.square().sum(), x32)
    assert got.dtype == torch.float32
    assert_close((got.double(), gx32.double()), (want, gx), rtol=1e-4, atol=1e-5, what=kind)


def test_runs_go_through_the_kernels(counted):
    """The fused engine launches one forward kernel per layer and one backward kernel, no loop."""
    layer = rnnkit.Recurrent(LSTMCell(3, 4, dtype=F64), engine="fused")
    x = torch.randn(2, 5, 3, dtype=F64, requires_grad=True)
    with configured(triton="on"):
        out, _ = layer(x)
        out.sum().backward()
    assert counted == ["lstm_forward", "lstm_backward"]
    counted.clear()
    gru = rnnkit.Recurrent(rnnkit.cells.GRUCell(3, 4, dtype=F64), engine="fused")
    with configured(triton="on"):
        gru(x)[0].sum().backward()
    assert counted == ["gru_forward", "single_backward"]


def test_a_run_too_large_for_32_bit_offsets_takes_the_torch_loops():
    from rnnkit.engines.fused import gpu
    fits, too_large = torch.empty(()).expand(1000, 512, 4096), torch.empty(()).expand(1024, 512, 4096)
    with configured(triton="on"):
        assert (fits.shape[0] + 1) * 512 * 4096 <= gpu.MAX_ELEMENTS < (too_large.shape[0] + 1) * 512 * 4096
        assert uses_triton(fits.device, fits.shape) and not uses_triton(too_large.device, too_large.shape)


def test_dispatch_takes_triton_on_cuda_only_unless_asked():
    cpu = torch.device("cpu")
    assert not uses_triton(cpu, (1, 1, 1))               # auto: CUDA only
    with configured(triton="on"):
        assert uses_triton(cpu, (1, 1, 1))
    with configured(triton="off"):
        assert triton_status() == "the Triton kernels are turned off (configured(triton='off'))"
    assert type(twin("lstm")).__name__ == "TritonLSTM"


def test_a_wrong_triton_setting_is_refused():
    with pytest.raises(ValueError, match=r"^configured: triton must be one of \('auto', 'off', 'on'\), got 'yes'$"):
        with configured(triton="yes"):
            pass


def test_tile_sizes_follow_the_hidden_width():
    assert twins._blocks(5) == (16, 16, 16)
    assert twins._blocks(40) == (16, 64, 64)
    assert twins._blocks(1000) == (16, 64, 64)


@pytest.mark.parametrize("cell_class", [LSTMCell, rnnkit.cells.GRUCell])
def test_bfloat16_weights_compute_in_float32(cell_class):
    """A model cast to bfloat16: the recursions compute in float32 and store bfloat16; outputs within
    bfloat16's rounding of the float32 loop, weight gradients within 5%."""
    torch.manual_seed(0)
    cell = cell_class(4, 8)
    x = torch.randn(3, 6, 4)
    want, _ = rnnkit.Recurrent(cell, engine="loop")(x)
    (g_want,) = torch.autograd.grad(want.square().sum(), cell.weight_hh)
    half = cell_class(4, 8)
    half.load_state_dict(cell.state_dict())
    half = half.to(torch.bfloat16)
    with configured(triton="on"):
        got, _ = rnnkit.Recurrent(half, engine="fused")(x.bfloat16())
    (g_got,) = torch.autograd.grad(got.float().square().sum(), half.weight_hh)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.02
    assert ((g_got.float() - g_want).abs().max() / g_want.abs().max()) < 0.05


def test_every_kernel_compiles_for_a_hopper_gpu(tmp_path):
    """The interpreter runs the kernels' arithmetic; Triton's compiler (with its own ptxas) checks that
    they build for an H100: the fullest and the barest variant of each kernel, in float32 (all variants
    and dtypes, 384 of them: ``python tests/triton_sm90.py --all``)."""
    import subprocess
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)                  # compiled here, not taken from a cache
    script = Path(__file__).with_name("triton_sm90.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "12 of 12 variants compiled for sm_90"
