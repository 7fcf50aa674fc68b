"""A fuzzing pass over the layers' inputs: every outcome is a right answer (the loop engine's, in
float64) or a one-line TypeError/ValueError that names the layer — never another exception, never
a silently different number. Shapes, dtypes, batch and time sizes (empty ones too), lengths in and
out of range, NaN in the padding."""
import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cells import ElmanCell, GatedCell, GRUCell, LSTMCell, MinGRUCell

CELLS = {"lstm": (LSTMCell, ("native", "fused", "loop")), "gru": (GRUCell, ("native", "fused", "loop")),
         "elman": (ElmanCell, ("native", "fused", "loop")), "gated": (GatedCell, ("fused", "loop")),
         "mingru": (MinGRUCell, ("scan", "loop"))}
SEEN = set()


@st.composite
def cases(draw):
    name = draw(st.sampled_from(sorted(CELLS)))
    engine = draw(st.sampled_from(CELLS[name][1]))
    batch, steps = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    features = draw(st.sampled_from([3, 3, 3, 2]))                       # mostly right, sometimes wrong
    rank = draw(st.sampled_from([3, 3, 3, 2, 1, 4]))
    dtype = draw(st.sampled_from([torch.float64, torch.float64, torch.float32, torch.int64]))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(-1, 5), min_size=batch, max_size=batch),
                             st.lists(st.integers(0, 5), min_size=0, max_size=4)))
    nan_padding = draw(st.booleans())
    return name, engine, batch, steps, features, rank, dtype, lengths, nan_padding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_every_input_gets_the_right_answer_or_a_one_line_error(case):
    name, engine, batch, steps, features, rank, dtype, lengths, nan_padding = case
    torch.manual_seed(0)
    cell = CELLS[name][0](3, 4, dtype=torch.float64)
    layer = rnnkit.Recurrent(cell, engine=engine)
    reference = rnnkit.Recurrent(copy.deepcopy(cell), engine="loop")
    shape = {3: (batch, steps, features), 2: (steps, features), 1: (features,), 4: (1, batch, steps, features)}[rank]
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype)
    if nan_padding and lengths is not None and rank == 3 and dtype.is_floating_point and len(lengths) == batch:
        for b, n in enumerate(lengths):
            if 0 <= n < steps:
                x[b, n:] = float("nan")
    given_lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.long)
    try:
        out, final = layer(x, lengths=given_lengths)
    except (TypeError, ValueError) as error:
        message = str(error)
        assert "\n" not in message and message.startswith(f"Recurrent({type(cell).__name__})"), message
        SEEN.add(message.split(":")[1].split(",")[0].strip()[:40])
        with pytest.raises(type(error)):                               # the reference refuses it too
            reference(x, lengths=given_lengths)
        return
    expected, expected_final = reference(x, lengths=given_lengths)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6, equal_nan=False)
    finals = final if isinstance(final, tuple) else (final,)
    expected_finals = expected_final if isinstance(expected_final, tuple) else (expected_final,)
    for a, b in zip(finals, expected_finals):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_fuzzing_pass_met_its_errors():
    # run after the pass in this module: it refused inputs in several distinct ways, each one line
    if not SEEN:
        pytest.skip("the fuzzing pass did not run before this test")
    print(f"{len(SEEN)} distinct refusals: {sorted(SEEN)}")
    assert len(SEEN) >= 4, SEEN
