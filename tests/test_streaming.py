"""Streams: a sequence fed one step at a time gives what the layer gives for the whole sequence."""
import re

import pytest
import torch
from conftest import F64, assert_close
from torch import _VF

import rnnkit
from rnnkit.cells import (
    ElmanCell,
    GatedCell,
    GRUCell,
    HMMFilterCell,
    JordanCell,
    LeakyCell,
    LSTMCell,
)
from rnnkit.cells.linear import LinearLeakyCell, LTICell, MinGRUCell, MinLSTMCell
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models import LanguageModelStream

CELLS = {
    "lstm": lambda: LSTMCell(3, 5, dtype=F64),
    "lstm-no-bias": lambda: LSTMCell(3, 5, bias=False, dtype=F64),
    "gru": lambda: GRUCell(3, 5, dtype=F64),
    "elman-tanh": lambda: ElmanCell(3, 5, dtype=F64),
    "elman-relu": lambda: ElmanCell(3, 5, nonlinearity="relu", dtype=F64),
    "gated": lambda: GatedCell(3, 5, dtype=F64),
    "leaky": lambda: LeakyCell(3, 5, alpha=0.3, dtype=F64),
    "jordan": lambda: JordanCell(3, 5, output_size=2, dtype=F64),
    "hmm-filter": lambda: HMMFilterCell(5, 3, dtype=F64),
    "linear-leaky": lambda: LinearLeakyCell(3, 5, dtype=F64),
    "mingru": lambda: MinGRUCell(3, 5, dtype=F64),
    "minlstm": lambda: MinLSTMCell(3, 5, dtype=F64),
    "lti": lambda: LTICell(3, 5, dtype=F64),
}
KERNELS = {"lstm": _VF.lstm_cell, "lstm-no-bias": _VF.lstm_cell, "gru": _VF.gru_cell,
           "elman-tanh": _VF.rnn_tanh_cell, "elman-relu": _VF.rnn_relu_cell}


def random_state(cell, batch):
    state = cell.initial_state(batch)
    if isinstance(state, tuple):
        return tuple(torch.rand_like(s) for s in state)
    return torch.rand_like(state).softmax(-1) if isinstance(cell, HMMFilterCell) else torch.randn_like(state)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_stream_equals_the_layer_over_the_whole_sequence(kind):
    cell = CELLS[kind]()
    layer = rnnkit.Recurrent(cell)
    x = torch.randn(2, 9, 3, dtype=F64)
    if kind == "hmm-filter":
        x = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 9)), 3).to(F64)
    state = random_state(cell, 2)
    out, final = layer(x, state)
    stream = layer.stream(batch_size=2, state=state)
    steps = torch.stack([stream(x[:, t]) for t in range(9)], 1)
    assert_close((steps, stream.state), (out, final), rtol=1e-12, atol=1e-12, what=kind)


@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_native_step_kernels_equal_the_cells_forward(kind):
    cell = CELLS[kind]()
    stream = rnnkit.Recurrent(cell).stream(batch_size=3)
    assert stream._kernel is KERNELS[kind]                       # the kernel path, not cell.forward
    x = torch.randn(3, 6, 3, dtype=F64)
    state = cell.initial_state(3)
    for t in range(6):
        y = stream(x[:, t])
        state = cell(x[:, t], state)
        assert_close((y, stream.state), (cell.output(state), state), rtol=1e-12, atol=1e-12, what=f"{kind} t={t}")


def test_unbatched_steps_and_reset():
    layer = rnnkit.Recurrent(GRUCell(3, 4, dtype=F64))
    x = torch.randn(7, 3, dtype=F64)                                # (T, X): one sequence
    out, final = layer(x)
    stream = layer.stream()
    first = torch.stack([stream(x_t) for x_t in x])
    assert first.shape == (7, 4) and stream.state.shape == (1, 4)
    assert_close((first, stream.state[0]), (out, final), rtol=1e-12, atol=1e-12)
    stream.reset()
    assert_close(torch.stack([stream(x_t) for x_t in x]), out, rtol=1e-12, atol=1e-12)


def test_stack_stream_equals_the_stack():
    stack = rnnkit.Stack([rnnkit.Recurrent(LSTMCell(3, 6, dtype=F64)), rnnkit.Recurrent(MinGRUCell(6, 6, dtype=F64)),
                          rnnkit.Recurrent(GRUCell(6, 6, dtype=F64))], dropout=0.3, residual=True).eval()
    x = torch.randn(2, 8, 3, dtype=F64)
    state = [random_state(layer.cell, 2) for layer in stack.layers]
    out, finals = stack(x, state)
    stream = stack.stream(batch_size=2, state=state)
    steps = torch.stack([stream(x[:, t]) for t in range(8)], 1)
    assert_close((steps, stream.state), (out, finals), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "leaky"])
def test_language_model_stream_continues_the_model(cell):
    model = LanguageModel(LanguageModelConfig(vocab_size=11, cell=cell, hidden_size=8, embedding_size=5,
                                              num_layers=2)).double().eval()
    tokens = torch.randint(0, 11, (3, 12))
    logits, final = model(tokens)
    _, prime_state = model(tokens[:, :4])                          # read a prompt in one call...
    stream = LanguageModelStream(model, batch_size=3, state=prime_state)
    steps = torch.stack([stream(tokens[:, t]) for t in range(4, 12)], 1)    # ...then one token per call
    assert_close((steps, stream.state), (logits[:, 4:], final), rtol=1e-12, atol=1e-12)
    one = LanguageModelStream(model)                                # batch of one, 0-d tokens
    assert_close(torch.stack([one(t) for t in tokens[0]]), logits[0], rtol=1e-12, atol=1e-12)


def test_streams_record_no_graph_unless_asked():
    layer = rnnkit.Recurrent(LSTMCell(3, 4, dtype=F64))
    x = torch.randn(2, 5, 3, dtype=F64)
    quiet = layer.stream(batch_size=2)
    assert torch.is_grad_enabled() and not quiet(x[:, 0]).requires_grad

    state = tuple(torch.randn(2, 4, dtype=F64, requires_grad=True) for _ in range(2))
    learning = layer.stream(batch_size=2, state=state, grad=True)
    ys = torch.stack([learning(x[:, t]) for t in range(5)], 1)
    weights = torch.randn(2, 5, 4, dtype=F64)
    grads = torch.autograd.grad((ys * weights).sum(), [*layer.parameters(), *state])
    out, _ = layer(x, state)
    expected = torch.autograd.grad((out * weights).sum(), [*layer.parameters(), *state])
    assert_close(grads, expected, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert not learning(x[:, 0]).requires_grad                  # grad=True follows the ambient mode


# ----- errors ------------------------------------------------------------------------------------
def test_step_errors_say_what_was_expected():
    layer = rnnkit.Recurrent(LSTMCell(8, 4))
    stream = layer.stream(batch_size=2)
    cases = [
        (torch.zeros(2, 9), ValueError, "Recurrent(LSTMCell).stream: expected x_t of size 8 in the last dimension, "
                                        "got 9"),
        (torch.zeros(3, 8), ValueError, "Recurrent(LSTMCell).stream: expected a batch of 2 (fixed when the stream "
                                        "was made), got 3; make a new stream with stream(batch_size=3)"),
        (torch.zeros(8), ValueError, "Recurrent(LSTMCell).stream: a 1-D x_t (input_size,) is one sequence, but "
                                     "this stream has a batch of 2; pass x_t of shape (2, 8)"),
        (torch.zeros(2, 1, 8), ValueError, "Recurrent(LSTMCell).stream: expected x_t of shape (batch, input_size) "
                                           "= (2, 8), got shape (2, 1, 8)"),
        (torch.zeros(2, 8, dtype=F64), TypeError, "Recurrent(LSTMCell).stream: x_t dtype torch.float64 does not "
                                                  "match the layer's dtype torch.float32; convert it with "
                                                  ".to(torch.float32)"),
        ([0.0] * 8, TypeError, "Recurrent(LSTMCell).stream: expected x_t to be a torch.Tensor, got list"),
    ]
    for x_t, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            stream(x_t)
    assert torch.equal(stream.state[0], torch.zeros(2, 4))          # a rejected step changes nothing


def test_construction_errors():
    cell = GRUCell(3, 4)
    with pytest.raises(ValueError, match=re.escape(
            "Recurrent(GRUCell).stream: the layer runs in reverse (reverse=True), from each sequence's end; "
            "a stream only reads forward, one step at a time")):
        rnnkit.Recurrent(cell, reverse=True).stream()
    with pytest.raises(ValueError, match=re.escape("Recurrent(GRUCell).stream: batch_size must be a positive integer, "
                                                   "got 0")):
        rnnkit.Recurrent(cell).stream(batch_size=0)
    with pytest.raises(ValueError, match=re.escape("Recurrent(GRUCell).stream: expected state of shape (2, 4), "
                                                   "got (3, 4)")):
        rnnkit.Recurrent(cell).stream(batch_size=2, state=torch.zeros(3, 4))
    with pytest.raises(TypeError, match=re.escape("Recurrent(LSTMCell).stream: expected the state to be a tuple "
                                                  "of 2 tensors, got a tensor of shape (1, 4)")):
        rnnkit.Recurrent(LSTMCell(3, 4)).stream(state=torch.zeros(1, 4))
    bidirectional = rnnkit.Stack([rnnkit.Bidirectional(rnnkit.Recurrent(GRUCell(3, 4)),
                                                       rnnkit.Recurrent(GRUCell(3, 4), reverse=True))])
    with pytest.raises(ValueError, match=re.escape(
            "Stack.stream: layer 0 is a Bidirectional; a stream reads one step at a time, so every layer must be "
            "a forward rnnkit.Recurrent")):
        bidirectional.stream()
    stack = rnnkit.Stack([rnnkit.Recurrent(GRUCell(3, 4)), rnnkit.Recurrent(GRUCell(4, 4))])
    with pytest.raises(ValueError, match=re.escape("Stack.stream: expected one state per layer (2), got 1")):
        stack.stream(state=[torch.zeros(1, 4)])


def test_language_model_stream_errors():
    model = LanguageModel(LanguageModelConfig(vocab_size=7, hidden_size=4, embedding_size=3, num_layers=2))
    stream = LanguageModelStream(model, batch_size=2)
    with pytest.raises(ValueError, match=re.escape("LanguageModelStream: token ids must lie in [0, 7), got values "
                                                   "from 1 to 7")):
        stream(torch.tensor([1, 7]))
    with pytest.raises(TypeError, match=re.escape("LanguageModelStream: expected token ids as an integer tensor "
                                                  "(2,), got torch.float32")):
        stream(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=re.escape("LanguageModelStream: expected token ids of shape (2,), one per "
                                                   "sequence, got (2, 1)")):
        stream(torch.tensor([[1], [2]]))
    with pytest.raises(TypeError, match=re.escape("LanguageModelStream: expected the state to be a tuple "
                                                  "(h_0, c_0) of shape (2, 2, 4)")):
        stream.reset(torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=re.escape("LanguageModelStream: expected c_0 of shape (2, 2, 4) and dtype "
                                                   "torch.float32, got ((2, 3, 4), torch.float32)")):
        stream.reset((torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match=re.escape("LanguageModelStream: expected an rnnkit LanguageModel, "
                                                  "got Linear")):
        LanguageModelStream(torch.nn.Linear(2, 2))
