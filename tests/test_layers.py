"""Layers: torch.nn parity, variable lengths, depth, direction."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells import ElmanCell, GatedCell, GRUCell, LeakyCell, LSTMCell

from conftest import F64, assert_close

TWINS = [(rnnkit.LSTM, nn.LSTM, {}), (rnnkit.GRU, nn.GRU, {}), (rnnkit.ElmanRNN, nn.RNN, {}),
         (rnnkit.ElmanRNN, nn.RNN, {"nonlinearity": "relu"})]


def _forward_backward(module, x, state, lengths=None, packed=False):
    """Outputs, final state and every gradient, for a random linear functional of both."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    hx = state if len(state) > 1 else state[0]
    if packed:
        out, final = module(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hx)
        out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    elif lengths is None:
        out, final = module(x, hx)
    else:
        out, final = module(x, hx, lengths)
    final = final if isinstance(final, tuple) else (final,)
    g = torch.Generator().manual_seed(3)
    loss = (out * torch.randn(out.shape, generator=g, dtype=F64)).sum()
    loss = loss + sum((f * torch.randn(f.shape, generator=g, dtype=F64)).sum() for f in final)
    module.zero_grad()
    loss.backward()
    grads = {"x": x.grad, **{f"state{i}": s.grad for i, s in enumerate(state)}}
    grads.update({p.data_ptr(): p.grad for p in module.parameters()})
    return out.detach(), tuple(f.detach() for f in final), grads




@pytest.mark.parametrize("ours_cls, torch_cls, extra", TWINS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("engine", ["auto", "loop"])
def test_loaded_from_torch_state_dict_matches_torch(ours_cls, torch_cls, extra, num_layers,
                                                    bidirectional, engine):
    theirs = torch_cls(5, 7, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                       dtype=F64, **extra)
    ours = ours_cls(5, 7, num_layers=num_layers, bidirectional=bidirectional, engine=engine,
                    dtype=F64, batch_first=True, **extra)
    ours.load_state_dict(theirs.state_dict())
    batch, directions = 3, 2 if bidirectional else 1
    x = torch.randn(batch, 6, 5, dtype=F64)
    state = tuple(torch.randn(num_layers * directions, batch, 7, dtype=F64)
                  for _ in range(2 if torch_cls is nn.LSTM else 1))
    out_t, final_t, grads_t = _forward_backward(theirs, x, state)
    out_o, final_o, grads_o = _forward_backward(ours, x, state)
    assert_close(out_o, out_t, what="outputs")
    assert_close(final_o, final_t, what="final state")
    assert_close(grads_o["x"], grads_t["x"], what="input grad")
    for i in range(len(state)):
        assert_close(grads_o[f"state{i}"], grads_t[f"state{i}"], what="initial-state grad")
    # parameter gradients, matched by name through the torch -> rnnkit key mapping
    remapped = dict(ours.state_dict())
    torch_named = dict(theirs.named_parameters())
    ours_by_value = {k: p for k, p in ours.named_parameters()}
    for name, p in torch_named.items():
        twin = [k for k in ours_by_value if torch.equal(remapped[k], p.detach())]
        assert len(twin) == 1, name
        assert_close(ours_by_value[twin[0]].grad, p.grad, what=f"grad {name}")


@pytest.mark.parametrize("ours_cls, torch_cls, extra", TWINS)
def test_lengths_match_torch_packed_sequences(ours_cls, torch_cls, extra):
    theirs = torch_cls(4, 6, num_layers=2, bidirectional=True, batch_first=True, dtype=F64, **extra)
    ours = ours_cls.from_torch(theirs)
    lengths = torch.tensor([5, 2, 7, 1])
    x = torch.randn(4, 7, 4, dtype=F64)
    state = tuple(torch.randn(4, 4, 6, dtype=F64) for _ in range(2 if torch_cls is nn.LSTM else 1))
    expected = _forward_backward(theirs, x, state, lengths, packed=True)
    out, final, grads = _forward_backward(ours, x, state, lengths)
    assert_close(out, expected[0], what="outputs")
    assert_close(final, expected[1], what="final state")
    assert_close(grads["x"], expected[2]["x"], what="input grad")


def _layers():
    return {
        "lstm-native": lambda: rnnkit.Recurrent(LSTMCell(3, 4, dtype=F64)),
        "gru-loop": lambda: rnnkit.Recurrent(GRUCell(3, 4, dtype=F64), engine="loop"),
        "elman-reverse": lambda: rnnkit.Recurrent(ElmanCell(3, 4, dtype=F64), reverse=True),
        "gated-reverse": lambda: rnnkit.Recurrent(GatedCell(3, 4, dtype=F64), reverse=True),
        "bi-leaky": lambda: rnnkit.Bidirectional(rnnkit.Recurrent(LeakyCell(3, 4, dtype=F64)),
                                                 rnnkit.Recurrent(LeakyCell(3, 4, dtype=F64), reverse=True)),
        "deep-bi-lstm": lambda: rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=F64, batch_first=True),
        "deep-residual-gru": lambda: rnnkit.Stack(
            [rnnkit.Recurrent(GRUCell(3, 4, dtype=F64)), rnnkit.Recurrent(GRUCell(4, 4, dtype=F64)),
             rnnkit.Recurrent(GRUCell(4, 4, dtype=F64), reverse=True)], residual=True),
    }


@pytest.mark.parametrize("name", sorted(_layers()))
def test_each_sequence_in_a_padded_batch_gives_what_it_gives_alone(name):
    layer = _layers()[name]()
    lengths = [6, 1, 4, 3]
    x = torch.randn(4, 6, 3, dtype=F64)
    for b, n in enumerate(lengths):
        x[b, n:] = 1e3 * torch.randn(6 - n, 3, dtype=F64)             # garbage in the padding
    out, final = layer(x, lengths=lengths)
    for b, n in enumerate(lengths):
        alone_out, alone_final = layer(x[b:b + 1, :n])
        assert_close(out[b:b + 1, :n], alone_out, what=f"{name} outputs of sequence {b}")
        assert torch.all(out[b, n:] == 0), "outputs past a sequence's end must be zero"
        pick = lambda s: s[:, b:b + 1] if isinstance(layer, rnnkit.LSTM) else s[b:b + 1]
        assert_close(_map(pick, final), alone_final, what=f"{name} final state of sequence {b}")


def _map(fn, state):
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(_map(fn, s) for s in state) if isinstance(state, tuple) else [_map(fn, s) for s in state]


def test_reverse_layer_reads_each_sequence_from_its_own_end():
    cell = ElmanCell(2, 3, dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    out, final = rnnkit.Recurrent(cell, reverse=True)(x, lengths=[5, 3])
    fwd_out, fwd_final = rnnkit.Recurrent(cell)(x[1:, :3].flip(1))
    assert_close(out[1, :3], fwd_out[0].flip(0))
    assert_close(final[1], fwd_final[0])


def test_batch_first_false_and_unbatched_inputs_agree_with_batch_first():
    cell = LSTMCell(3, 4, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    out, (h, c) = rnnkit.Recurrent(cell)(x)
    out_tf, (h_tf, c_tf) = rnnkit.Recurrent(cell, batch_first=False)(x.transpose(0, 1))
    assert_close(out_tf.transpose(0, 1), out)
    assert_close((h_tf, c_tf), (h, c))
    out_one, (h_one, _) = rnnkit.Recurrent(cell)(x[0])
    assert_close(out_one, out[0])
    assert_close(h_one, h[0])


def test_stack_composes_layers_with_residual_connections_and_dropout_between():
    first, second = rnnkit.Recurrent(GRUCell(3, 4, dtype=F64)), rnnkit.Recurrent(GatedCell(4, 4, dtype=F64))
    deep = rnnkit.Stack([first, second], dropout=0.5, residual=True).eval()
    x = torch.randn(2, 5, 3, dtype=F64)
    h1, s1 = first(x)
    h2, s2 = second(h1)
    out, states = deep(x)
    assert_close(out, h2 + h1)
    assert_close(states, [s1, s2])
    deep.train()
    torch.manual_seed(0)
    out_train, _ = deep(x)
    torch.manual_seed(0)
    mask = torch.nn.functional.dropout(torch.ones_like(h1), 0.5, True)
    assert_close(out_train, second(h1 * mask)[0] + h1)


def test_shortcut_dropout_is_applied_between_layers_only_in_training():
    lstm = rnnkit.LSTM(3, 4, num_layers=2, dropout=0.9, dtype=F64, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=F64)
    lstm.eval()
    assert_close(lstm(x)[0], lstm(x)[0])
    lstm.train()
    assert not torch.allclose(lstm(x)[0], lstm(x)[0])


def test_bidirectional_merges_by_concat_or_sum():
    fwd, bwd = rnnkit.Recurrent(GRUCell(3, 4, dtype=F64)), rnnkit.Recurrent(GRUCell(3, 4, dtype=F64), reverse=True)
    x = torch.randn(2, 5, 3, dtype=F64)
    of, sf = fwd(x)
    ob, sb = bwd(x)
    out, (state_f, state_b) = rnnkit.Bidirectional(fwd, bwd)(x)
    assert_close(out, torch.cat([of, ob], -1))
    assert_close((state_f, state_b), (sf, sb))
    out_sum, _ = rnnkit.Bidirectional(fwd, bwd, merge="sum")(x)
    assert_close(out_sum, of + ob)


def test_state_dict_round_trip_and_torch_names_both_load():
    a = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    b = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 3)
    assert_close(a(x), b(x))
    theirs = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: v for k, v in zip(dict(theirs.state_dict()), _torch_ordered(a))})
    c = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    c.load_state_dict(theirs.state_dict())
    assert_close(c(x), theirs(x), atol=1e-6)            # float32; on the CPU auto runs the GRU on fused
    for layer in c._runners():                          # torch's own kernel: the same numbers exactly
        layer.set_engine("native")
    assert_close(c(x), theirs(x))


def _torch_ordered(model):
    values = []
    for layer in model.stack.layers:
        for side in (layer.forward_layer, layer.backward_layer):
            values += [p.detach().clone() for p in side.cell.flat_weights()]
    return values


def test_shortcuts_take_cell_options():
    leaky = rnnkit.LeakyRNN(3, 4, alpha=0.25, batch_first=True)
    assert torch.all(leaky.stack.layers[0].cell.alpha == 0.25)
    relu = rnnkit.ElmanRNN(3, 4, nonlinearity="relu", batch_first=True)
    out, _ = relu(torch.randn(2, 5, 3))
    assert (out >= 0).all()
    gated = rnnkit.GatedRNN(3, 4, num_layers=2, batch_first=True)
    assert gated.engine == "fused" and gated(torch.randn(2, 5, 3))[1].shape == (2, 2, 4)


@pytest.mark.parametrize("ours_cls, torch_cls, extra", TWINS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_to_torch_builds_the_torch_module_that_computes_the_same(ours_cls, torch_cls, extra, num_layers,
                                                                 bidirectional):
    ours = ours_cls(5, 7, num_layers=num_layers, bidirectional=bidirectional, dtype=F64, batch_first=True,
                    **extra)
    theirs = ours.to_torch()
    assert type(theirs) is torch_cls and theirs.batch_first == ours.batch_first and theirs.training
    assert all(p.dtype == F64 for p in theirs.parameters())
    strict = torch_cls(5, 7, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dtype=F64,
                       **extra)
    assert not strict.load_state_dict(ours.torch_state_dict()).missing_keys    # strict loading succeeds
    directions = 2 if bidirectional else 1
    x = torch.randn(3, 6, 5, dtype=F64)
    state = tuple(torch.randn(num_layers * directions, 3, 7, dtype=F64)
                  for _ in range(2 if torch_cls is nn.LSTM else 1))
    out_t, final_t, grads_t = _forward_backward(theirs, x, state)
    out_o, final_o, grads_o = _forward_backward(ours, x, state)
    assert_close(out_t, out_o, what="outputs")
    assert_close(final_t, final_o, what="final state")
    for key in ("x", *(f"state{i}" for i in range(len(state)))):
        assert_close(grads_t[key], grads_o[key], what=key)
    torch_grads = {name: p.grad for name, p in theirs.named_parameters()}
    ours.zero_grad(), theirs.zero_grad()
    _forward_backward(ours, x, state)
    _forward_backward(theirs, x, state)
    ours_as_torch = {}
    for layer in range(num_layers):
        item = ours.stack.layers[layer]
        pairs = [(item.forward_layer, ""), (item.backward_layer, "_reverse")] if bidirectional else [(item, "")]
        for runner, suffix in pairs:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours_as_torch[f"{name}_l{layer}{suffix}"] = getattr(runner.cell, name).grad
    for name, grad in torch_grads.items():
        assert_close(ours_as_torch[name], grad, what=f"grad {name}")


def test_to_torch_refuses_what_torch_cannot_compute():
    with pytest.raises(TypeError, match=r"^GatedRNN.to_torch: torch.nn has no GatedRNN; LSTM, GRU and ElmanRNN "
                                        r"have torch.nn twins$"):
        rnnkit.GatedRNN(3, 4, batch_first=True).to_torch()
    with pytest.raises(ValueError, match=r"^LSTM.to_torch: torch.nn.LSTM has no residual connections; build "
                                         r"this network without it$"):
        rnnkit.LSTM(3, 3, num_layers=2, residual=True, batch_first=True).to_torch()
    with pytest.raises(ValueError, match=r"^GRU.torch_state_dict: its cells \(Zoneout\) compute something "
                                         r"torch.nn.GRU does not"):
        rnnkit.GRU(3, 4, cell_wrapper=lambda cell: rnnkit.regularizers.Zoneout(cell, 0.1), batch_first=True).torch_state_dict()


@pytest.mark.parametrize("ours_cls, torch_cls, extra", TWINS[:2])
@pytest.mark.parametrize("batch_first, enforce_sorted", [(True, False), (False, False), (False, True)])
def test_a_packed_sequence_in_gives_torchs_packed_sequence_out(ours_cls, torch_cls, extra, batch_first,
                                                               enforce_sorted):
    theirs = torch_cls(4, 6, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=F64, **extra)
    ours = ours_cls.from_torch(theirs)
    lengths = torch.tensor([7, 5, 2, 2, 1]) if enforce_sorted else torch.tensor([5, 2, 7, 1, 2])
    padded = torch.randn(5, 7, 4, dtype=F64) if batch_first else torch.randn(7, 5, 4, dtype=F64)
    state = tuple(torch.randn(4, 5, 6, dtype=F64) for _ in range(2 if torch_cls is nn.LSTM else 1))
    results = []
    for module in (theirs, ours):
        x = padded.clone().requires_grad_()
        hx = tuple(s.clone().requires_grad_() for s in state)
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        out, final = module(packed, hx if len(hx) > 1 else hx[0])
        final = final if isinstance(final, tuple) else (final,)
        g = torch.Generator().manual_seed(5)
        loss = (out.data * torch.randn(out.data.shape, generator=g, dtype=F64)).sum()
        loss = loss + sum((f * torch.randn(f.shape, generator=g, dtype=F64)).sum() for f in final)
        loss.backward()
        results.append((out, final, x.grad, [h.grad for h in hx]))
    (out_t, final_t, dx_t, dh_t), (out_o, final_o, dx_o, dh_o) = results
    assert isinstance(out_o, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out_o.batch_sizes, out_t.batch_sizes)
    for a, b in ((out_o.sorted_indices, out_t.sorted_indices), (out_o.unsorted_indices, out_t.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    assert_close(out_o.data, out_t.data, what="packed outputs")
    assert_close(final_o, final_t, what="final state")
    assert_close(dx_o, dx_t, what="input grad")
    assert_close(dh_o, dh_t, what="state grad")


def test_flatten_parameters_is_accepted_as_torch_code_calls_it():
    lstm = rnnkit.LSTM(3, 4, batch_first=True)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    assert lstm.flatten_parameters() is None
    assert all(torch.equal(before[k], v) for k, v in lstm.state_dict().items())


@pytest.mark.parametrize("num_layers, bidirectional, bias", [(1, False, True), (2, True, True), (2, False, False)])
@pytest.mark.parametrize("engine", ["auto", "loop"])
def test_a_projected_lstm_equals_torchs_both_ways(num_layers, bidirectional, bias, engine):
    theirs = nn.LSTM(5, 7, num_layers=num_layers, bidirectional=bidirectional, bias=bias, proj_size=3,
                     batch_first=True, dtype=F64)
    ours = rnnkit.LSTM.from_torch(theirs, engine=engine)
    assert ours.proj_size == 3 and ours.engine == ("native" if engine == "auto" else "loop")
    directions = 2 if bidirectional else 1
    x = torch.randn(4, 6, 5, dtype=F64)
    state = (torch.randn(num_layers * directions, 4, 3, dtype=F64), torch.randn(num_layers * directions, 4, 7, dtype=F64))
    out_t, final_t, grads_t = _forward_backward(theirs, x, state)
    out_o, final_o, grads_o = _forward_backward(ours, x, state)
    assert out_o.shape == (4, 6, 3 * directions)
    assert_close(out_o, out_t, what="outputs")
    assert_close(final_o, final_t, what="final state")
    for key in ("x", "state0", "state1"):
        assert_close(grads_o[key], grads_t[key], what=key)
    back = ours.to_torch()
    assert back.proj_size == 3
    for name, weight in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[name], weight), name


def test_projected_lstm_streams_and_refuses_bad_sizes():
    from rnnkit.cells import ProjectedLSTMCell

    layer = rnnkit.Recurrent(ProjectedLSTMCell(3, 6, proj_size=2, dtype=F64))
    x = torch.randn(2, 5, 3, dtype=F64)
    whole = layer(x)[0]
    stream = layer.stream(batch_size=2)
    stepped = torch.stack([stream(x[:, t]) for t in range(5)], 1)
    assert_close(stepped, whole, what="streamed outputs")
    with pytest.raises(ValueError, match=r"^ProjectedLSTMCell: proj_size must be smaller than hidden_size \(6\), "
                                         r"got 6$"):
        ProjectedLSTMCell(3, 6, proj_size=6)
    with pytest.raises(ValueError, match=r"^GRU: proj_size is an LSTM option \(torch.nn.LSTM's\); GRU has no "
                                         r"projection$"):
        rnnkit.GRU(3, 4, proj_size=2)


@pytest.mark.parametrize("make", [lambda: rnnkit.GRU(3, 4, batch_first=True, dtype=F64),
                                  lambda: rnnkit.ElmanRNN(3, 4, batch_first=True, dtype=F64),
                                  lambda: rnnkit.LSTM(3, 4, batch_first=True, dtype=F64),
                                  lambda: rnnkit.Recurrent(GatedCell(3, 4, dtype=F64), engine="loop"),
                                  lambda: rnnkit.Recurrent(LSTMCell(3, 4, dtype=F64), engine="fused"),
                                  lambda: rnnkit.Recurrent(rnnkit.cells.MinGRUCell(3, 4, dtype=F64), engine="scan"),
                                  lambda: rnnkit.LSTM(3, 4, batch_first=True, bidirectional=True, dtype=F64)],
                         ids=["gru", "elman", "lstm", "gated-loop", "lstm-fused", "mingru-scan", "bi-lstm"])
def test_nan_in_the_padding_reaches_no_state_output_or_gradient(make):
    model = make()
    lengths = torch.tensor([5, 2, 3])
    clean = torch.randn(3, 5, 3, dtype=F64)
    dirty = clean.clone()
    for b, n in enumerate(lengths.tolist()):
        clean[b, n:], dirty[b, n:] = 0.0, float("nan")
    results = []
    for x in (clean, dirty):
        x = x.clone().requires_grad_()
        model.zero_grad()
        out, final = model(x, lengths=lengths)
        finals = final if isinstance(final, tuple) else (final,)
        (out.sum() + sum(f.sum() for f in finals)).backward()
        results.append((out.detach(), [f.detach() for f in finals], x.grad,
                        [p.grad.clone() for p in model.parameters()]))
    (out_c, fin_c, dx_c, dp_c), (out_d, fin_d, dx_d, dp_d) = results
    assert torch.isfinite(out_d).all() and all(torch.isfinite(f).all() for f in fin_d)
    assert_close(out_d, out_c, what="outputs")
    assert_close(fin_d, fin_c, what="final states")
    assert_close(dx_d, dx_c, what="input gradient")
    assert_close(dp_d, dp_c, what="parameter gradients")
    for b, n in enumerate(lengths.tolist()):                      # each sequence as if alone
        alone = clean[b:b + 1, :n].clone().requires_grad_()
        out, final = model(alone)
        finals = final if isinstance(final, tuple) else (final,)
        (out.sum() + sum(f.sum() for f in finals)).backward()
        assert_close(out_d[b, :n], out.detach()[0], what="outputs alone")
        assert_close(dx_d[b, :n], alone.grad[0], what="input gradient alone")
        assert not dx_d[b, n:].any()


def test_a_bidirectional_state_dict_does_not_load_into_one_direction():
    theirs = nn.LSTM(3, 4, bidirectional=True)
    ours = rnnkit.LSTM(3, 4)
    before = ours.stack.layers[0].cell.weight_ih.detach().clone()
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"weight_ih_l0_reverse\""):
        ours.load_state_dict(theirs.state_dict())
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert sorted(result.unexpected_keys) == ["bias_hh_l0_reverse", "bias_ih_l0_reverse", "weight_hh_l0_reverse",
                                              "weight_ih_l0_reverse"]
    assert torch.equal(ours.stack.layers[0].cell.weight_ih, theirs.weight_ih_l0)       # forward only
    assert not torch.equal(before, theirs.weight_ih_l0)


@pytest.mark.parametrize("cell, engine", [(GRUCell, "fused"), (ElmanCell, "fused"), (LSTMCell, "fused"),
                                          (LSTMCell, "native"), (GatedCell, "loop"),
                                          (rnnkit.cells.MinGRUCell, "scan")])
def test_an_empty_batch_runs_forward_and_backward(cell, engine):
    layer = rnnkit.Recurrent(cell(3, 4, dtype=F64), engine=engine)
    x = torch.randn(0, 5, 3, dtype=F64, requires_grad=True)
    out, final = layer(x)
    out.sum().backward()
    assert out.shape == (0, 5, 4) and x.grad.shape == (0, 5, 3)
    assert all(p.grad is None or not p.grad.any() for p in layer.parameters())


@pytest.mark.parametrize("cell, engine", [(GatedCell, "loop"), (rnnkit.cells.MinGRUCell, "scan"), (GRUCell, "fused"),
                                          (GRUCell, "native")])
def test_an_input_made_under_inference_mode_is_taken_by_every_engine(cell, engine):
    layer = rnnkit.Recurrent(cell(3, 4, dtype=F64), engine=engine)
    with torch.inference_mode():
        frozen = torch.randn(2, 5, 3, dtype=F64)
    out, _ = layer(frozen)
    out.sum().backward()
    assert_close(out.detach(), layer(frozen.clone())[0].detach(), what="outputs")
    assert all(p.grad is not None for p in layer.parameters())
