"""torch.func's transforms over rnnkit layers: vmap equals a loop over the mapped dimension and
jacrev/grad equal autograd, on every CPU default engine (the fused engine hands over to the step
loop inside a transform, since no transform can see through its NumPy kernels)."""
import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

import rnnkit
from rnnkit.cells import GatedCell

from conftest import F64


@pytest.mark.parametrize("make", [lambda: rnnkit.GRU(3, 4, batch_first=True, dtype=F64),          # fused
                                  lambda: rnnkit.LSTM(3, 4, batch_first=True, dtype=F64),         # native
                                  lambda: rnnkit.ElmanRNN(3, 4, num_layers=2, batch_first=True, dtype=F64),
                                  lambda: rnnkit.Recurrent(GatedCell(3, 4, dtype=F64))],
                         ids=["gru", "lstm", "elman-2", "gated"])
def test_vmap_and_jacrev_equal_a_loop_and_autograd(make):
    model = make()
    xs = torch.randn(5, 2, 6, 3, dtype=F64)
    mapped = vmap(lambda x: model(x)[0])(xs)
    torch.testing.assert_close(mapped, torch.stack([model(x)[0] for x in xs]), rtol=1e-12, atol=1e-12)

    params = {name: p.detach() for name, p in model.named_parameters()}
    weights = torch.randn(2, 6, model(xs[0])[0].shape[-1], dtype=F64)

    def loss(p, x):
        return (functional_call(model, p, (x,))[0] * weights).sum()
    by_grad = grad(loss)(params, xs[0])
    model.zero_grad()
    (model(xs[0])[0] * weights).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(by_grad[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
    jacobian = jacrev(lambda x: model(x)[0][:, -1].sum(0))(xs[0])                      # (H, B, T, X)
    rows = []
    for k in range(jacobian.shape[0]):
        x = xs[0].clone().requires_grad_()
        model(x)[0][:, -1, k].sum().backward()
        rows.append(x.grad)
    torch.testing.assert_close(jacobian, torch.stack(rows), rtol=1e-10, atol=1e-12)
