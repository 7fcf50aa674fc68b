"""The word-level recipes: adaptive softmax, AR/TAR, weight drop, projection, init scale,
NT-ASGD and the step schedule."""
import math

import pytest
import torch

from rnnkit.data import ContiguousBatches
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.language_model import AdaptiveReadout, default_cutoffs
from rnnkit.regularizers import WeightDrop
from rnnkit.train import TrainConfig, Trainer, read_checkpoint

F64 = torch.float64


def model64(**options):
    config = dict(vocab_size=50, hidden_size=12, embedding_size=12, num_layers=2)
    config.update(options)
    return LanguageModel(LanguageModelConfig(**config)).to(F64)


def test_adaptive_softmax_is_a_distribution_and_its_loss_matches_it():
    model = model64(softmax="adaptive", cutoffs=[10, 30], hidden_size=32, embedding_size=8).eval()
    tokens = torch.randint(50, (3, 9))
    log_probs, _ = model(tokens)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(3, 9, dtype=F64), atol=1e-12, rtol=0)
    nll, _ = model.token_nll(tokens[:, :-1], tokens[:, 1:])
    expected = -log_probs[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(nll, expected, atol=1e-12, rtol=0)
    loss, _ = model.loss(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    assert all(p.grad is not None for p in model.readout.parameters())
    assert isinstance(model.readout, AdaptiveReadout)
    assert default_cutoffs(10_000) == [2000] and default_cutoffs(33_000) == [2000, 10000]
    assert default_cutoffs(100) == [25]


def test_model_option_errors():
    with pytest.raises(ValueError, match="an adaptive softmax has no single output matrix to tie"):
        LanguageModelConfig(vocab_size=50, hidden_size=8, embedding_size=8, tie_weights=True, softmax="adaptive")
    with pytest.raises(ValueError, match=r"cutoffs must increase strictly between 1 and vocab_size - 2 = 48, "
                                         r"got \[30, 10\]"):
        LanguageModelConfig(vocab_size=50, softmax="adaptive", cutoffs=[30, 10])
    with pytest.raises(ValueError, match=r"tie_weights needs the embedding size \(8\) to equal the size the "
                                         r"readout reads \(6: the hidden size, or projection_size when set\)"):
        LanguageModelConfig(vocab_size=50, hidden_size=12, embedding_size=8, projection_size=6, tie_weights=True)


def test_projection_ties_a_narrow_embedding_to_a_wide_layer():
    model = model64(hidden_size=16, embedding_size=6, projection_size=6, tie_weights=True)
    assert model.readout.weight is model.embedding.weight and model.projection.weight.shape == (6, 16)
    logits, state = model(torch.randint(50, (2, 5)))
    assert logits.shape == (2, 5, 50) and state[0].shape == (2, 2, 16)


def test_init_scale_and_weight_drop():
    model = model64(init_scale=0.05)
    assert max(p.abs().max().item() for p in model.parameters()) <= 0.05
    dropped = model64(weight_drop=0.5)
    cells = [m for m in dropped.modules() if isinstance(m, WeightDrop)]
    assert len(cells) == 2
    tokens = torch.randint(50, (2, 7))
    dropped.train()
    a, b = dropped(tokens)[0], dropped(tokens)[0]
    assert not torch.equal(a, b)                                   # a new mask per call
    dropped.eval()
    assert torch.equal(dropped(tokens)[0], dropped(tokens)[0])


def test_ar_tar_penalty_is_what_the_papers_define_and_the_trainer_minimises_it(tmp_path):
    torch.manual_seed(0)
    model = model64(activation_penalty=2.0, temporal_penalty=1.0)
    tokens = torch.randint(50, (3, 8))
    model.train()
    h, _ = model.features(tokens)                                 # no dropout: h is the raw output
    raw = h.detach()
    expected = 2.0 * raw.pow(2).mean() + 1.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    torch.testing.assert_close(model.penalty().detach(), expected, atol=1e-12, rtol=0)
    model.eval()
    model.features(tokens)
    assert model.penalty() is None
    # one SGD step of the trainer moves the weights by -lr * grad(nll + penalty)
    model.train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    stream = tokens.reshape(-1)
    inputs, targets = next(iter(ContiguousBatches(stream, batch_size=3, truncation=7)))
    loss, _ = model.loss(inputs, targets)
    (loss + model.penalty()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.load_state_dict(start)
    model.zero_grad()
    config = TrainConfig(batch_size=3, truncation=7, optimizer="sgd", momentum=0.0, lr=0.1, clip_norm=None,
                         schedule="constant", max_steps=1, max_minutes=None, eval_every=100)
    Trainer(model, config, tmp_path, progress=False).fit(stream, stream)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), start[name] - 0.1 * grads[name], atol=1e-12, rtol=0, msg=name)


def test_step_schedule_is_zarembas():
    config = TrainConfig(optimizer="sgd", lr=1.0, schedule="step", decay_start=4, decay_factor=0.5, max_steps=1)
    trainer = Trainer(model64(), config, "unused", progress=False)
    assert [trainer.learning_rate(0.0, epoch) for epoch in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_ntasgd_triggers_on_a_non_monotone_validation_and_averages_from_there(tmp_path):
    config = TrainConfig(optimizer="ntasgd", nonmono=2, max_steps=1, max_minutes=None)
    trainer = Trainer(model64(), config, tmp_path, progress=False)
    averaging = trainer.averaging
    for loss in (5.0, 4.0, 3.0, 3.5):                     # worse than 3.0, but 3.0 is within the last 2
        assert not averaging.observe(loss)
    assert averaging.observe(4.5)                         # worse than min(5, 4, 3) = 3 from > 2 checks back
    assert averaging.average is not None and averaging.steps == 1
    params = averaging.parameters()
    iterates = [[p.detach().clone() for p in params]]
    for _ in range(3):                                    # any moves: the average is their plain mean
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        iterates.append([p.detach().clone() for p in params])
        averaging.update()
    for i, a in enumerate(averaging.average):
        torch.testing.assert_close(a, torch.stack([it[i] for it in iterates]).mean(0), atol=1e-12, rtol=0)
    with trainer.averaged():                              # evaluation sees the average ...
        assert all(torch.equal(p, a) for p, a in zip(params, averaging.average))
    assert all(torch.equal(p, x) for p, x in zip(params, iterates[-1]))      # ... then the iterate again


def ntasgd_run(folder, steps, resume=False):
    torch.manual_seed(0)
    model = model64(dropout=0.3)
    data = torch.randint(50, (4000,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(batch_size=4, truncation=10, optimizer="ntasgd", lr=8.0, nonmono=1, eval_every=3,
                         schedule="constant", max_steps=steps, max_minutes=None, eval_tokens=300)
    return Trainer(model, config, folder, progress=False).fit(data[:3000], data[3000:], test=data[3000:],
                                                             resume=resume), model


def test_ntasgd_checkpoints_hold_the_average_and_resume_exactly(tmp_path):
    whole, model = ntasgd_run(tmp_path / "whole", 30)
    assert whole["averaging_from"] is not None and whole["averaging_from"] < 20
    half, _ = ntasgd_run(tmp_path / "parts", 20)
    resumed, resumed_model = ntasgd_run(tmp_path / "parts", 30, resume=True)
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name                                     # the iterate
    assert resumed["test_loss"] == whole["test_loss"]
    weights, _, saved = read_checkpoint(tmp_path / "whole", "latest", with_trainer_state=True)
    assert "iterate" in saved and saved["averaged_steps"] == 30 - whole["averaging_from"] + 1
    for (name, p), x in zip(model.named_parameters(), saved["iterate"]):
        assert torch.equal(p.detach(), x), name
    assert not all(torch.equal(weights[n], p) for n, p in model.state_dict().items())   # the file: the average
    assert math.isfinite(whole["test_loss"])


def test_locked_dropout_keeps_one_mask_per_sequence():
    from rnnkit.regularizers import locked_dropout
    from rnnkit.layers import Recurrent, Stack
    from rnnkit.cells import ElmanCell

    x = torch.ones(3, 7, 5)
    y = locked_dropout(x, 0.4)
    assert torch.equal(y, y[:, :1].expand_as(y)) and set(y.unique().tolist()) <= {0.0, torch.tensor(1 / 0.6).item()}
    time_major = locked_dropout(torch.ones(7, 3, 5), 0.4, batch_first=False)
    assert torch.equal(time_major, time_major[:1].expand_as(time_major))
    assert torch.equal(locked_dropout(x, 0.4, training=False), x)
    # between layers: the second layer's input is the first's output times one mask per sequence
    seen = []
    second = Recurrent(ElmanCell(4, 4))
    second.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    stack = Stack([Recurrent(ElmanCell(5, 4)), second], dropout=0.5, locked=True)
    stack(torch.randn(3, 7, 5))
    zeros = seen[0] == 0                                          # dropped units: whole rows of time
    assert torch.equal(zeros, zeros[:, :1].expand_as(zeros)) and zeros.any() and not zeros.all()
    model = model64(dropout=0.3, locked_dropout=True).train()
    model(torch.randint(50, (2, 6)))
    model.eval()
    tokens = torch.randint(50, (2, 6))
    assert torch.equal(model(tokens)[0], model(tokens)[0])
