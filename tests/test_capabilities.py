"""Capabilities describe a cell's maths to fast engines; a subclass that rewrites the maths loses
them, so that no engine runs equations it does not know. Wrappers describe their masks to the
fused engine and never write into the cell they wrap."""
import torch

import rnnkit
from rnnkit.cells import GRUCell, LinearLeakyCell, LSTMCell
from rnnkit.cells.base import recurrent_mask
from rnnkit.engines import ENGINES
from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout

from conftest import F64, assert_close


class _Halved:
    """A mixin that rewrites the recurrent input."""

    def _recurrent_input(self, h):
        return 0.5 * h


def test_a_subclass_that_rewrites_step_loses_every_capability():
    class Damped(LSTMCell):
        def step(self, projected_t, state):
            h, c = super().step(projected_t, state)
            return h, 0.9 * c

    cell = Damped(3, 4)
    assert cell.native_mode() is None and cell.fused_kernel() is None
    assert rnnkit.Recurrent(cell).engine == "traced"        # its own step, traced: never the parent's kernel

    class Kept(LSTMCell):                    # no maths of its own: the parent's kernels stay right
        pass

    assert Kept(3, 4).native_mode() == "LSTM" and Kept(3, 4).fused_kernel() == "lstm"


def test_a_mixin_in_front_of_the_cell_also_takes_the_capabilities_away():
    class Mixed(_Halved, GRUCell):
        pass

    cell = Mixed(3, 4, dtype=F64)
    assert cell.native_mode() is None and cell.fused_kernel() is None
    x = torch.randn(2, 5, 3, dtype=F64)
    out, _ = rnnkit.Recurrent(cell)(x)                          # auto: the loop, the mixin's maths
    plain = GRUCell(3, 4, dtype=F64)
    plain.load_state_dict(cell.state_dict())
    assert not torch.allclose(out, rnnkit.Recurrent(plain)(x)[0])


def test_a_linear_cell_that_rewrites_step_loses_the_scan():
    class Squashed(LinearLeakyCell):
        def step(self, drive_t, h):
            return torch.tanh(super().step(drive_t, h))

    cell = Squashed(2, 3, alpha=0.5)
    assert cell.linear_coefficients is None
    assert ENGINES["scan"].supports(cell) is not None
    assert ENGINES["scan"].supports(LinearLeakyCell(2, 3, alpha=0.5)) is None


def test_a_cell_that_names_its_own_kernel_again_keeps_it():
    class Relabelled(GRUCell):
        def step(self, projected_t, h):                      # the same maths, restated
            return super().step(projected_t, h)

        def fused_kernel(self):
            return "gru"

    cell = Relabelled(3, 4)
    assert cell.fused_kernel() == "gru" and cell.native_mode() is None


def test_variational_dropout_leaves_the_wrapped_cell_untouched():
    torch.manual_seed(0)
    base = GRUCell(3, 4, dtype=F64)
    before = dict(vars(base))
    cell = VariationalDropout(base, 0.0, 0.5)
    x = torch.randn(2, 5, 3, dtype=F64)
    loop, _ = rnnkit.Recurrent(cell, engine="loop")(x)
    mask = cell.masks["hidden"]
    assert vars(base).keys() == before.keys()
    # the loop's step saw the mask only through the context, for this cell only
    h = torch.randn(2, 4, dtype=F64)
    with recurrent_mask(base, mask):
        assert_close(base._recurrent_input(h), h * mask)
        assert torch.equal(GRUCell(3, 4, dtype=F64)._recurrent_input(h), h)
    assert torch.equal(base._recurrent_input(h), h)


def test_wrappers_describe_their_masks():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 3)
    for cell in (VariationalDropout(LSTMCell(3, 4), 0.2, 0.3), Zoneout(LSTMCell(3, 4), (0.2, 0.1)),
                 WeightDrop(LSTMCell(3, 4), 0.4)):
        cell.begin_sequence(2, 5)
        masks = cell.run_masks(5, x)
        assert masks is not None
        if isinstance(cell, VariationalDropout):
            assert masks.input.shape == (2, 3) and masks.hidden.shape == (2, 4)
        elif isinstance(cell, Zoneout):
            assert [m.shape for m in masks.keep] == [(5, 2, 4), (5, 2, 4)] and masks.binary
        else:
            assert set(masks.weights) == {"weight_hh"} and masks.weights["weight_hh"].shape == (16, 4)
    evaluation = Zoneout(LSTMCell(3, 4), (0.2, 0.0)).eval().run_masks(5, x)
    assert not evaluation.binary and evaluation.keep[1] is None
    assert torch.equal(evaluation.keep[0], torch.full((5, 1, 1), 0.2))
