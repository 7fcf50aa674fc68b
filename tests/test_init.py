"""Orthogonal and identity recurrent initialisation, block by block."""
import re

import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell, GatedCell, GRUCell, LSTMCell
from rnnkit.init import init_recurrent_, random_orthogonal, recurrent_blocks

F64 = torch.float64
CELLS = [(ElmanCell, 1, [""]), (GatedCell, 2, ["gate", "candidate"]), (GRUCell, 3, list("rzn")),
         (LSTMCell, 4, list("ifgo"))]


@pytest.mark.parametrize("cell_class, chunks, gates", CELLS)
@pytest.mark.parametrize("gain", [1.0, 0.7])
def test_orthogonal_blocks_have_every_singular_value_equal_to_the_gain(cell_class, chunks, gates, gain):
    cell = cell_class(3, 12)                                           # float32, as people use it
    assert init_recurrent_(cell, "orthogonal", gain=gain) == ["weight_hh"]
    blocks = recurrent_blocks(cell)
    assert list(blocks) == [f"weight_hh[{g}]" if g else "weight_hh" for g in gates]
    eye = torch.eye(12, dtype=F64)
    for block in blocks.values():
        q = block.to(F64) / gain
        assert (q.T @ q - eye).abs().max() < 1e-6
        assert (q @ q.T - eye).abs().max() < 1e-6
        torch.testing.assert_close(torch.linalg.svdvals(block.to(F64)), torch.full((12,), gain, dtype=F64),
                                   rtol=1e-6, atol=0)
    firsts = torch.stack([b.flatten() for b in blocks.values()])
    if chunks > 1:                                                     # a fresh Q for every gate
        assert torch.cdist(firsts, firsts).fill_diagonal_(1.0).min() > 0.1


@pytest.mark.parametrize("cell_class, chunks, gates", CELLS)
def test_identity_blocks_are_exact_and_nothing_else_changes(cell_class, chunks, gates):
    cell = cell_class(3, 5)
    before = {k: v.clone() for k, v in cell.state_dict().items() if k != "weight_hh"}
    init_recurrent_(cell, "identity", gain=0.5)
    assert cell.weight_hh.shape == (chunks * 5, 5)
    assert torch.equal(cell.weight_hh, 0.5 * torch.eye(5).repeat(chunks, 1))
    for key, value in before.items():
        assert torch.equal(cell.state_dict()[key], value), key


def test_torch_modules_and_rnnkit_stacks_are_found_by_name():
    net = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    names = init_recurrent_(net, "identity")
    assert names == ["weight_hh_l0", "weight_hh_l0_reverse", "weight_hh_l1", "weight_hh_l1_reverse"]
    for name in names:
        assert torch.equal(getattr(net, name), torch.eye(4).repeat(4, 1))
    assert list(recurrent_blocks(net))[:4] == [f"weight_hh_l0[{g}]" for g in "ifgo"]
    gru = rnnkit.GRU(2, 3, num_layers=2, batch_first=True)
    assert init_recurrent_(gru) == ["stack.layers.0.cell.weight_hh", "stack.layers.1.cell.weight_hh"]
    assert "stack.layers.1.cell.weight_hh[z]" in recurrent_blocks(gru)


def test_a_generator_makes_the_blocks_reproducible():
    a, b = ElmanCell(2, 6), ElmanCell(2, 6)
    init_recurrent_(a, generator=torch.Generator().manual_seed(3))
    init_recurrent_(b, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight_hh, b.weight_hh)


def test_random_orthogonal_is_uniform_not_biased_by_the_qr_signs():
    """Without folding the signs of R's diagonal into Q, Q[0, 0] has one sign (LAPACK makes
    R[0, 0] negative); the Haar distribution has E Q00 = 0 and E Q00^2 = 1/n."""
    generator = torch.Generator().manual_seed(0)
    corner = torch.stack([random_orthogonal(4, generator=generator)[0, 0] for _ in range(2000)])
    assert abs(corner.mean().item()) < 0.045                    # 4 standard errors of sqrt(1/4 / 2000)
    assert corner.pow(2).mean().item() == pytest.approx(0.25, abs=0.03)


def test_bad_input_is_refused_clearly():
    cell = ElmanCell(2, 3)
    with pytest.raises(ValueError, match=re.escape(
            "init_recurrent_: unknown scheme 'unitary'; choose one of ['orthogonal', 'identity']")):
        init_recurrent_(cell, "unitary")
    with pytest.raises(ValueError, match=re.escape("init_recurrent_: gain must be a positive finite number, got -1")):
        init_recurrent_(cell, gain=-1)
    with pytest.raises(ValueError, match=re.escape(
            "init_recurrent_: found no recurrent weight (a parameter named weight_hh or weight_hh_l<k>) in Linear")):
        init_recurrent_(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=re.escape(
            "init_recurrent_: expected a torch.nn.Module (a cell, layer or model), got Tensor")):
        init_recurrent_(torch.zeros(3, 3))

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight_hh = torch.nn.Parameter(torch.zeros(5, 3))

    with pytest.raises(ValueError, match=re.escape(
            "init_recurrent_: weight_hh has shape (5, 3), not (k·H, H) with H × H gate blocks; initialise it by hand")):
        init_recurrent_(Odd())


@pytest.mark.parametrize("scheme", ["identity", "orthogonal"])
def test_trainer_option_initialises_the_model_it_is_given(tmp_path, scheme):
    from rnnkit.models import LanguageModel, LanguageModelConfig
    from rnnkit.train import TrainConfig, Trainer

    model = LanguageModel(LanguageModelConfig(vocab_size=5, cell="gru", hidden_size=6, embedding_size=3))
    Trainer(model, TrainConfig(recurrent_init=scheme, recurrent_gain=0.8, max_steps=1), tmp_path, progress=False)
    for block in recurrent_blocks(model).values():
        if scheme == "identity":
            assert torch.equal(block, 0.8 * torch.eye(6))
        else:
            torch.testing.assert_close(torch.linalg.svdvals(block.double()), torch.full((6,), 0.8, dtype=F64),
                                       rtol=1e-6, atol=0)
