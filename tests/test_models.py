"""Sequence classifier, tagger and forecaster: shapes, masking, training through the shared trainer."""
import math

import pytest
import torch

from rnnkit.data import SequenceBatches
from rnnkit.models import Forecaster, SequenceClassifier, SequenceTagger
from rnnkit.train import TrainConfig, Trainer

F64 = torch.float64


def _fit(model, inputs, targets, lengths=None, steps=150, lr=1e-2, batch_size=32, tmp_path=None):
    n = len(inputs)
    cut = int(0.8 * n)
    lengths_train = None if lengths is None else lengths[:cut]
    lengths_val = None if lengths is None else lengths[cut:]
    train = SequenceBatches(inputs[:cut], targets[:cut], lengths_train, batch_size=batch_size, seed=0)
    val = SequenceBatches(inputs[cut:], targets[cut:], lengths_val, batch_size=256, shuffle=False)
    config = TrainConfig(lr=lr, max_steps=steps, eval_every=10_000, max_minutes=None, schedule="constant")
    return Trainer(model, config, tmp_path, progress=False).fit(train, val)


@pytest.mark.parametrize("summary", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_ignores_padding(summary, bidirectional):
    model = SequenceClassifier(3, 4, 8, summary=summary, bidirectional=bidirectional).double().eval()
    x = torch.randn(3, 7, 3, dtype=F64)
    lengths = torch.tensor([7, 4, 2])
    padded = x.clone()
    padded[1, 4:] = 1e3
    padded[2, 2:] = -1e3
    batch = model((padded, lengths))
    for b, n in enumerate(lengths.tolist()):
        alone = model(x[b:b + 1, :n])
        torch.testing.assert_close(batch[b:b + 1], alone, rtol=1e-10, atol=1e-12)


def test_classifier_learns_the_sign_of_a_sum_through_the_trainer(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 12, 1, generator=g)
    lengths = torch.randint(3, 13, (1200,), generator=g)
    mask = (torch.arange(12) < lengths.unsqueeze(1)).unsqueeze(-1)
    y = ((x * mask).sum((1, 2)) > 0).long()
    model = SequenceClassifier(1, 2, 16)
    summary = _fit(model, x, y, lengths, steps=250, tmp_path=tmp_path)
    assert summary["validation_loss"] < 0.25                       # chance: ln 2 = 0.69
    accuracy = (model.predict((x[960:], lengths[960:])) == y[960:]).float().mean().item()
    assert accuracy > 0.9


def test_tagger_masks_padding_and_learns_a_one_step_delay(tmp_path):
    g = torch.Generator().manual_seed(1)
    symbols = torch.randint(4, (800, 10), generator=g)
    x = torch.nn.functional.one_hot(symbols, 4).float()
    y = torch.cat([torch.zeros(800, 1, dtype=torch.long), symbols[:, :-1]], 1)    # tag = previous symbol
    lengths = torch.randint(2, 11, (800,), generator=g)
    model = SequenceTagger(4, 4, 16)
    loss_before = model.loss((x, lengths), y)[0].item()
    garbage = y.clone()
    garbage[torch.arange(10) >= lengths.unsqueeze(1)] = 3
    assert model.loss((x, lengths), garbage)[0].item() == loss_before    # padded targets never count
    summary = _fit(model, x, y, lengths, steps=200, tmp_path=tmp_path)
    assert summary["validation_loss"] < 0.1


def test_forecaster_beats_persistence_closed_loop_on_a_noisy_sine(tmp_path):
    torch.manual_seed(0)
    t = torch.arange(0, 2000, dtype=torch.float32)
    series = (torch.sin(2 * math.pi * t / 25) + 0.05 * torch.randn_like(t)).view(1, -1, 1)
    windows = series[0, :1900].unfold(0, 61, 20).permute(0, 2, 1)             # (N, 61, 1)
    model = Forecaster(1, 32)
    _fit(model, windows[:, :-1], windows[:, 1:], steps=300, batch_size=16, tmp_path=tmp_path)
    history, future = series[:, 1800:1950], series[:, 1950:2000]
    paths = model.forecast(history, steps=50, num_samples=50, seed=0)
    median = Forecaster.quantiles(paths, (0.5,))[0]
    rmse = (median - future).pow(2).mean().sqrt().item()
    persistence = (history[:, -1:] - future).pow(2).mean().sqrt().item()
    assert rmse * 2 < persistence, (rmse, persistence)
    again = model.forecast(history, steps=50, num_samples=50, seed=0)
    assert torch.equal(paths, again)                                          # seeded: deterministic
    low, high = Forecaster.quantiles(paths, (0.05, 0.95))
    assert (low <= high).all()


def test_poisson_forecaster_samples_counts():
    model = Forecaster(2, 8, family="poisson")
    paths = model.forecast(torch.poisson(torch.full((3, 10, 2), 4.0)), steps=4, num_samples=6, seed=1)
    assert paths.shape == (6, 3, 4, 2) and (paths >= 0).all() and torch.equal(paths, paths.round())


def test_model_errors():
    with pytest.raises(ValueError, match=r"^SequenceClassifier: summary must be one of \['last', 'mean', "
                                         r"'max'\], got 'first'$"):
        SequenceClassifier(3, 2, summary="first")
    with pytest.raises(ValueError, match=r"^Forecaster: family must be one of \['gaussian', 'poisson'\], "
                                         r"got 'gamma'$"):
        Forecaster(family="gamma")
    with pytest.raises(ValueError, match=r"^Forecaster: steps must be a positive integer, got 0$"):
        Forecaster().forecast(torch.randn(1, 5, 1), steps=0)
    with pytest.raises(ValueError, match=r"^Forecaster: expected history of shape \(batch, time, 1\), "
                                         r"got \(5, 1\)$"):
        Forecaster().forecast(torch.randn(5, 1), steps=3)
    with pytest.raises(ValueError, match=r"^SequenceBatches: inputs, targets and lengths must have the same "
                                         r"first dimension, got 4, 3$"):
        SequenceBatches(torch.randn(4, 2), torch.zeros(3), batch_size=2)
    with pytest.raises(ValueError, match=r"^SequenceClassifier: every length must be at least 1, got a "
                                         r"length of 0$"):
        SequenceClassifier(3, 2)((torch.randn(2, 4, 3), torch.tensor([4, 0])))


def test_sequence_batches_resume_mid_epoch_gives_the_same_batches():
    data = SequenceBatches(torch.arange(20).view(20, 1), torch.arange(20), batch_size=3, seed=5)
    first = [y.tolist() for _, y in data]
    second = [y.tolist() for _, y in data]
    assert sorted(sum(first, [])) == list(range(20)) and first != second   # reshuffled per epoch
    resumed = SequenceBatches(torch.arange(20).view(20, 1), torch.arange(20), batch_size=3, seed=5)
    resumed.load_state_dict({"epoch": 1, "chunk": 4})
    assert [y.tolist() for _, y in resumed] == second[4:]


def test_regressor_learns_a_mean_through_the_trainer(tmp_path):
    from rnnkit.models import SequenceRegressor

    g = torch.Generator().manual_seed(2)
    x = torch.rand(1000, 8, 1, generator=g)
    y = x.mean(1)                                                          # (N, 1)
    model = SequenceRegressor(1, 1, 16)
    summary = _fit(model, x, y, steps=200, tmp_path=tmp_path)
    assert summary["validation_loss"] < 0.1 * y.var().item()
    with pytest.raises(ValueError, match=r"^SequenceRegressor: expected targets of shape \(2, 1\), got \(2,\)$"):
        model.loss(x[:2], y[:2, 0])


def test_validation_loss_is_the_exact_mean_over_valid_targets_across_unevenly_padded_batches(tmp_path):
    from rnnkit.readouts import sequence_nll

    torch.manual_seed(3)
    x = torch.randn(6, 9, 4)
    y = torch.randint(3, (6, 9))
    lengths = torch.tensor([9, 9, 9, 1, 1, 2])          # first batch nearly full, second nearly all padding
    model = SequenceTagger(4, 3, 8).eval()
    data = SequenceBatches(x, y, lengths, batch_size=3, shuffle=False)
    config = TrainConfig(max_steps=1, max_minutes=None)
    measured = Trainer(model, config, tmp_path, progress=False).evaluate(data)
    with torch.no_grad():
        out, _ = model.encoder((x, lengths))
        exact = sequence_nll(model.readout, y, out, lengths, reduction="sum").item() / lengths.sum().item()
    assert measured == pytest.approx(exact, rel=1e-6)
