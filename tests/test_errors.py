"""Bad input gets a message that names the class, what was expected and what came."""
import re

import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell, GatedCell, GRUCell, JordanCell, LeakyCell, LSTMCell


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def test_wrong_input_size():
    with raises(ValueError, "LSTM: expected input of size 87 in the last dimension, got 91"):
        rnnkit.LSTM(87, 16, batch_first=True)(torch.randn(2, 3, 91))
    with raises(ValueError, "Recurrent(GRUCell): expected input of size 4 in the last dimension, got 5"):
        rnnkit.Recurrent(GRUCell(4, 8))(torch.randn(2, 3, 5))


def test_wrong_rank():
    with raises(ValueError, "GRU: expected input of rank 3 (batch, time, features), or rank 2 "
                            "(time, features) for one unbatched sequence, got rank 4 with shape (2, 3, 4, 4)"):
        rnnkit.GRU(4, 8, batch_first=True)(torch.randn(2, 3, 4, 4))
    with raises(ValueError, "ElmanRNN: expected input of rank 3 (time, batch, features), or rank 2 "
                            "(time, features) for one unbatched sequence, got rank 1 with shape (4,)"):
        rnnkit.ElmanRNN(4, 8, batch_first=False)(torch.randn(4))


def test_not_a_tensor_and_integer_input():
    with raises(TypeError, "LSTM: expected the input to be a torch.Tensor, got list"):
        rnnkit.LSTM(2, 3, batch_first=True)([[1.0, 2.0]])
    with raises(TypeError, "LSTM: expected a floating-point input, got torch.int64; convert it with "
                           "x.float() (token ids go through an embedding first)"):
        rnnkit.LSTM(2, 3, batch_first=True)(torch.ones(1, 4, 2, dtype=torch.int64))


def test_empty_sequence():
    with raises(ValueError, "LSTM: expected at least one time step, got an input of shape (2, 0, 3)"):
        rnnkit.LSTM(3, 4, batch_first=True)(torch.randn(2, 0, 3))


@pytest.mark.parametrize("lengths, message", [
    ([3, 9], "LSTM: lengths cannot exceed the 5 time steps of the input, got a length of 9"),
    ([3, 0], "LSTM: every length must be at least 1, got a length of 0"),
    ([3], "LSTM: expected lengths of shape (2,), one per sequence, got (1,)"),
])
def test_bad_lengths(lengths, message):
    with raises(ValueError, message):
        rnnkit.LSTM(3, 4, batch_first=True)(torch.randn(2, 5, 3), lengths=lengths)


def test_lengths_of_the_wrong_type():
    with raises(TypeError, "GRU: lengths must hold integers, got dtype torch.float32"):
        rnnkit.GRU(3, 4, batch_first=True)(torch.randn(2, 5, 3), lengths=torch.tensor([2.0, 3.0]))
    with raises(TypeError, "GRU: lengths must be a 1-D tensor or a list of ints, got str"):
        rnnkit.GRU(3, 4, batch_first=True)(torch.randn(2, 5, 3), lengths="5")
    with raises(ValueError, "Recurrent(GRUCell): lengths apply to a batch; an unbatched (time, features) "
                            "input is one sequence of its full length"):
        rnnkit.Recurrent(GRUCell(3, 4))(torch.randn(5, 3), lengths=[5])


def test_state_of_the_wrong_shape():
    with raises(ValueError, "LSTM: expected hidden state c_0 of shape (4, 2, 8), got (4, 2, 9)"):
        rnnkit.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=True)(
            torch.randn(2, 5, 3), (torch.zeros(4, 2, 8), torch.zeros(4, 2, 9)))
    with raises(TypeError, "LSTM: expected the initial state to be a tuple (h_0, c_0)"):
        rnnkit.LSTM(3, 8, batch_first=True)(torch.randn(2, 5, 3), torch.zeros(1, 2, 8))
    with raises(ValueError, "Recurrent(ElmanCell): expected state of shape (2, 8), got (3, 8)"):
        rnnkit.Recurrent(ElmanCell(3, 8))(torch.randn(2, 5, 3), torch.zeros(3, 8))
    with raises(TypeError, "Recurrent(LSTMCell): expected the state to be a tuple of 2 tensors, got a "
                           "tensor of shape (2, 8)"):
        rnnkit.Recurrent(LSTMCell(3, 8))(torch.randn(2, 5, 3), torch.zeros(2, 8))


def test_mismatched_dtype():
    with raises(TypeError, "LSTM: input dtype torch.float32 does not match the layer's dtype "
                           "torch.float64; convert the input with .to(torch.float64) or the layer "
                           "with .to(torch.float32)"):
        rnnkit.LSTM(3, 4, dtype=torch.float64, batch_first=True)(torch.randn(2, 5, 3))
    with raises(TypeError, "Recurrent(GRUCell): state has dtype torch.float32 but the input has torch.float64"):
        rnnkit.Recurrent(GRUCell(3, 4, dtype=torch.float64))(torch.randn(2, 5, 3, dtype=torch.float64),
                                                             torch.zeros(2, 4))


def test_mismatched_device():
    # the meta device stands in for a GPU: it is a real, different device on every machine
    layer = rnnkit.GRU(3, 4, device="meta", batch_first=True)
    with raises(ValueError, "GRU: input is on cpu but the layer is on meta; move one of them "
                            "with .to(device)"):
        layer(torch.randn(2, 5, 3))
    with raises(ValueError, "Recurrent(GRUCell): state is on meta but the input is on cpu"):
        rnnkit.Recurrent(GRUCell(3, 4))(torch.randn(2, 5, 3), torch.zeros(2, 4, device="meta"))


def test_bad_construction_arguments():
    with raises(ValueError, "LSTMCell: hidden_size must be a positive integer, got 0"):
        LSTMCell(3, 0)
    with raises(TypeError, "GRU: num_layers must be an int, got float"):
        rnnkit.GRU(3, 4, num_layers=2.0, batch_first=True)
    with raises(ValueError, "ElmanCell: unknown nonlinearity 'sigmoid'; choose one of ['relu', 'tanh']"):
        ElmanCell(3, 4, nonlinearity="sigmoid")
    with raises(ValueError, "Recurrent(GatedCell): unknown engine 'cuda'; choose 'auto' or one of "
                            "['fused', 'loop', 'native', 'scan', 'traced']"):
        rnnkit.Recurrent(GatedCell(3, 4), engine="cuda")
    with raises(ValueError, "Recurrent(GatedCell): engine 'native' cannot run this cell: GatedCell has no "
                            "fused torch kernel (native runs LSTMCell, GRUCell and ElmanCell). Use "
                            "engine='auto' or engine='loop'."):
        rnnkit.Recurrent(GatedCell(3, 4), engine="native")
    with raises(TypeError, "Recurrent: expected an rnnkit.cells.Cell, got Linear"):
        rnnkit.Recurrent(torch.nn.Linear(3, 4))
    with raises(ValueError, "LeakyCell: alpha must lie in (0, 1], got values from 0 to 0.5"):
        LeakyCell(3, 2, alpha=torch.tensor([0.0, 0.5]))
    with raises(ValueError, "LeakyCell: alpha must be a float or have shape (2,), got shape (3,)"):
        LeakyCell(3, 2, alpha=torch.tensor([0.1, 0.5, 0.2]))
    with raises(ValueError, "JordanCell: unknown output_activation 'relu'; choose one of "
                            "['identity', 'sigmoid', 'softmax', 'tanh']"):
        JordanCell(3, 4, 2, output_activation="relu")


def test_bad_composition():
    with raises(ValueError, "Stack: layer 1 expects input size 5 but layer 0 outputs 4"):
        rnnkit.Stack([rnnkit.Recurrent(GRUCell(3, 4)), rnnkit.Recurrent(GRUCell(5, 4))])
    with raises(ValueError, "Stack: residual=True needs layer 1 to keep its size, but it maps 4 to 6"):
        rnnkit.Stack([rnnkit.Recurrent(GRUCell(3, 4)), rnnkit.Recurrent(GRUCell(4, 6))], residual=True)
    with raises(ValueError, "Stack: dropout must be a probability in [0, 1), got 1.5"):
        rnnkit.GRU(3, 4, num_layers=2, dropout=1.5, batch_first=True)
    with raises(ValueError, "Stack: expected one state per layer (2), got 1"):
        rnnkit.Stack([rnnkit.Recurrent(GRUCell(3, 4)), rnnkit.Recurrent(GRUCell(4, 4))])(
            torch.randn(1, 2, 3), [None])
    with raises(ValueError, "Bidirectional: the forward layer needs reverse=False and the backward layer "
                            "reverse=True, got False and False"):
        rnnkit.Bidirectional(rnnkit.Recurrent(GRUCell(3, 4)), rnnkit.Recurrent(GRUCell(3, 4)))
    with pytest.warns(UserWarning, match="Stack: dropout=0.2 has no effect with one layer"):
        rnnkit.GRU(3, 4, dropout=0.2, batch_first=True)


def test_from_torch_checks_the_module_type():
    with raises(TypeError, "LSTM.from_torch: expected a torch.nn.LSTM, got GRU"):
        rnnkit.LSTM.from_torch(torch.nn.GRU(3, 4))
    assert rnnkit.LSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2)).proj_size == 2     # supported now


@pytest.mark.parametrize("check, error, message", [
    (lambda c: c.check_int("Owner", "n", 0), ValueError, "Owner: n must be a positive integer, got 0"),
    (lambda c: c.check_int("Owner", "n", -1, minimum=0), ValueError,
     "Owner: n must be a non-negative integer, got -1"),
    (lambda c: c.check_int("Owner", "n", 2, minimum=3, hint="use three or more"), ValueError,
     "Owner: n must be an integer >= 3, got 2; use three or more"),
    (lambda c: c.check_int("Owner", "n", 4, minimum=0, maximum=3), ValueError,
     "Owner: n must be an integer in [0, 3], got 4"),
    (lambda c: c.check_int("Owner", "n", -1, minimum=0, maximum=3), ValueError,
     "Owner: n must be an integer in [0, 3], got -1"),
    (lambda c: c.check_int("", "--top-k", 0, hint="leave it out"), ValueError,
     "--top-k must be a positive integer, got 0; leave it out"),
    (lambda c: c.check_int("Owner", "n", True), TypeError, "Owner: n must be an int, got bool"),
    (lambda c: c.check_int("Owner", "n", 2.0), TypeError, "Owner: n must be an int, got float"),
    (lambda c: c.check_number("Owner", "x", "1"), TypeError, "Owner: x must be a number, got str"),
    (lambda c: c.check_number("Owner", "x", 2.0, low=0, high=1, low_closed=False), ValueError,
     "Owner: x must be in (0, 1], got 2.0"),
    (lambda c: c.check_probability("Owner", "p", 1.0), ValueError,
     "Owner: p must be a probability in [0, 1), got 1.0"),
    (lambda c: c.check_probability("Owner", "p", float("nan"), one=True), ValueError,
     "Owner: p must be a probability in [0, 1], got nan"),
    (lambda c: c.check_positive("Owner", "tau", float("inf")), ValueError,
     "Owner: tau must be a positive finite number, got inf"),
    (lambda c: c.check_positive("Owner", "tau", 0), ValueError,
     "Owner: tau must be a positive finite number, got 0"),
])
def test_shared_argument_checks_word_each_mistake_one_way(check, error, message):
    from rnnkit import _arguments
    with raises(error, message):
        check(_arguments)


def test_shared_argument_checks_pass_good_values_through():
    from rnnkit import _arguments
    assert _arguments.check_int("O", "n", 3) == 3 and type(_arguments.check_int("O", "n", 3)) is int
    assert _arguments.check_number("O", "x", 1, low=0, high=1) == 1.0
    assert _arguments.check_probability("O", "p", 1.0, one=True) == 1.0
    assert _arguments.check_positive("O", "tau", 1e-9) == 1e-9
    assert _arguments.check_int("O", "n", 3, 0, maximum=3) == 3
