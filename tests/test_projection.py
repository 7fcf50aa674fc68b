"""The fused engine's input side equals its slow twins, F.linear and F.layer_norm(F.linear(...)):
outputs and the gradients of every input, in float64 on fresh random shapes, and in float32
where the weight gradient takes oneDNN."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn import functional as F

from rnnkit.engines import fused
from rnnkit.engines.fused import configured
from rnnkit.engines.fused.projection import linear, linear_layer_norm

from conftest import F64, assert_close


@pytest.fixture(params=["compiled", "numpy"], autouse=True)
def pointwise(request):
    """Every test twice: the layer norm's rows on the compiled loops (when numba is installed) and on NumPy."""
    from rnnkit.engines.fused import lstm_compiled
    if request.param == "compiled" and not lstm_compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    with configured(compiled="auto" if request.param == "compiled" else "off"):
        yield request.param


def grads_of(fn, x, weight, *rest, seed=0):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, *rest)]
    out = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
    return out.detach(), [t.grad for t in leaves if t is not None]


def inputs(steps, batch, x_size, g_size, transposed, dtype=F64):
    x = torch.randn(batch, steps, x_size, dtype=dtype)
    x = x.transpose(0, 1) if transposed else x                       # time-major views are strided
    return x, torch.randn(g_size, x_size, dtype=dtype)


# fresh random shapes for both Functions (a layer norm needs at least two features)
SHAPES = dict(steps=st.integers(1, 6), batch=st.integers(1, 4), x_size=st.integers(1, 5), bias=st.booleans(),
              transposed=st.booleans(), seed=st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(g_size=st.integers(1, 9), **SHAPES)
def test_linear_equals_f_linear(steps, batch, x_size, g_size, bias, transposed, seed):
    torch.manual_seed(seed)
    x, w = inputs(steps, batch, x_size, g_size, transposed)
    b = torch.randn(g_size, dtype=F64) if bias else None
    got = grads_of(lambda x, w, *b: linear(x, w, *b), x, w, *([b] if bias else []))
    want = grads_of(lambda x, w, *b: F.linear(x, w, *b), x, w, *([b] if bias else []))
    assert_close(got, want, what="linear")


@settings(max_examples=40, deadline=None)
@given(g_size=st.integers(2, 9), **SHAPES)
def test_linear_layer_norm_equals_f_layer_norm(steps, batch, x_size, g_size, bias, transposed, seed):
    torch.manual_seed(seed)
    x, w = inputs(steps, batch, x_size, g_size, transposed)
    gamma, beta = torch.rand(g_size, dtype=F64) + 0.5, torch.randn(g_size, dtype=F64)

    def twin(x, w, gamma, *beta):
        a = F.linear(x, w)
        return F.layer_norm(a, a.shape[-1:], gamma, beta[0] if beta else None, 1e-5)

    args = (x, w, gamma, *([beta] if bias else []))
    got = grads_of(lambda x, w, gamma, *beta: linear_layer_norm(x, w, gamma, beta[0] if beta else None, 1e-5),
                   *args)
    assert_close(got, grads_of(twin, *args), what="linear_layer_norm")


@pytest.mark.skipif(fused.onednn() is None, reason="this torch build has no oneDNN matmul")
def test_float32_onednn_weight_gradient():
    torch.manual_seed(1)
    x, w = inputs(7, 3, 5, 8, True, torch.float32)
    gamma, beta = torch.rand(8) + 0.5, torch.randn(8)
    with configured(numpy_gemm_max=-1):
        got = grads_of(lambda x, w, g, b: linear_layer_norm(x, w, g, b, 1e-5), x, w, gamma, beta)
        got_linear = grads_of(lambda x, w: linear(x, w), x, w)
    want = grads_of(lambda x, w, g, b: F.layer_norm(F.linear(x, w), (8,), g, b, 1e-5), x, w, gamma, beta)
    assert_close(got, want, rtol=1e-5, atol=1e-5, what="float32 linear_layer_norm")
    got = got_linear
    assert_close(got, grads_of(lambda x, w: F.linear(x, w), x, w), rtol=1e-5, atol=1e-5, what="float32 linear")


def test_double_backward_is_refused():
    x = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    w = torch.randn(5, 4, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(linear(x, w).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        g.sum().backward()


def test_other_devices_and_dtypes_take_the_twins():
    x = torch.randn(2, 3, 4, dtype=torch.float16)
    w = torch.randn(5, 4, dtype=torch.float16)
    assert linear(x, w).grad_fn is None
    x.requires_grad_()
    assert type(linear(x, w).grad_fn) is type(F.linear(x, w).grad_fn)
