"""An ensemble trained in one run (``--members K``): each member trains exactly as it would alone,
and the ensemble predicts with the mean of the members' probabilities, on every path (forward,
token losses, the stream, the neural cache, the command line, resume, export)."""
import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.generate import _one_token_step
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble, build_language_model
from rnnkit.train import ensemble_nll, token_nll
from rnnkit.train.cache import CacheSettings, cache_nll

from conftest import PTB_LINES, whole_and_resumed
from test_cache import cache_oracle


def _ensemble(members=2, seed=0, **options):
    torch.manual_seed(seed)
    config = LanguageModelConfig(vocab_size=13, hidden_size=7, embedding_size=5, num_layers=2, members=members,
                                 **options)
    return build_language_model(config).double()


def _tokens(shape, seed):
    return torch.randint(13, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_the_ensemble_predicts_the_mean_of_its_members_probabilities(softmax):
    model = _ensemble(3, softmax=softmax).eval()
    assert isinstance(model, LanguageModelEnsemble) and len(model.members) == 3
    tokens = _tokens((4, 9), 1)
    log_p, state = model(tokens)
    with torch.no_grad():
        mean = sum(member(tokens)[0].softmax(-1) for member in model.members) / 3     # each member alone
    torch.testing.assert_close(log_p.exp(), mean, rtol=1e-12, atol=1e-14)
    # the token losses are the same mixture, and the state carries: two halves equal one whole
    nll, _ = model.token_nll(tokens[:, :-1], tokens[:, 1:])
    expected = -mean[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1).log()
    torch.testing.assert_close(nll, expected, rtol=1e-12, atol=1e-12)
    first, carried = model.token_nll(tokens[:, :4], tokens[:, 1:5])
    second, _ = model.token_nll(tokens[:, 4:-1], tokens[:, 5:], carried)
    torch.testing.assert_close(torch.cat([first, second], 1), nll, rtol=1e-12, atol=1e-12)
    # the members differ (each drew its own weights), so the mixture is strictly better than their mean loss
    alone = torch.stack([member.token_nll(tokens[:, :-1], tokens[:, 1:])[0] for member in model.members])
    assert not torch.allclose(alone[0], alone[1])
    assert nll.sum() < alone.mean(0).sum()


def test_in_training_each_member_gets_exactly_its_own_gradient():
    model = _ensemble(2, activation_penalty=2.0, temporal_penalty=1.0).train()
    solo = [_ensemble(1, seed=9, activation_penalty=2.0, temporal_penalty=1.0).train() for _ in range(2)]
    for alone, member in zip(solo, model.members):
        alone.load_state_dict(member.state_dict())
    inputs, targets = _tokens((3, 8), 2), _tokens((3, 8), 3)
    loss, _ = model.loss(inputs, targets)
    objective = loss + model.penalty()
    objective.backward()
    values = []
    for alone in solo:                                       # dropout is 0: the same computation, alone
        own, _ = alone.loss(inputs, targets)
        (own + alone.penalty()).backward()
        values.append((own.item(), alone.penalty().item()))
    assert loss.item() == pytest.approx(np.mean([v[0] for v in values]), rel=1e-12)
    assert model.penalty().item() == pytest.approx(np.mean([v[1] for v in values]), rel=1e-12)
    for alone, member in zip(solo, model.members):
        for (name, a), b in zip(alone.named_parameters(), member.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-15, msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_evaluation_stream_and_cache_agree_with_the_members_scored_apart(cell):
    model = _ensemble(2, cell=cell).eval()
    ids = _tokens((120,), 4).numpy()
    total, count = token_nll(model, ids, batch_size=3, truncation=7)
    apart, members, same = ensemble_nll(list(model.members), ids, batch_size=3, truncation=7)   # its slow twin
    assert (count, same) == (119, 119)
    assert total == pytest.approx(apart, rel=1e-12)
    # a cache with lambda 0 is the model alone; with a cache, the formula written out over the members
    # computed one by one (keys: their features side by side; the model: the mean of their probabilities)
    assert cache_nll(model, ids, CacheSettings(50, 0.3, 0.0), batch_size=3)[0] == pytest.approx(total, rel=1e-12)
    settings = CacheSettings(40, 0.7, 0.3)
    cached, _ = cache_nll(model, ids, settings, batch_size=1, truncation=9)
    assert cached == pytest.approx(cache_oracle(_MembersApart(model), ids, settings), rel=1e-10)
    # one token at a time through the stream equals reading the whole sequence
    tokens = torch.as_tensor(ids[:12]).view(1, -1)
    log_p, state = model(tokens)
    stream = model.stream()
    steps = torch.stack([stream(tokens[0, t]) for t in range(12)])
    torch.testing.assert_close(steps, log_p[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.utils._pytree.tree_leaves(stream.state), torch.utils._pytree.tree_leaves(state)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    # sampling's one-token step goes through the stream
    step = _one_token_step(model, None)
    torch.testing.assert_close(step(tokens[:, :1]).view(-1), log_p[0, 0], rtol=1e-12, atol=1e-12)


class _MembersApart:
    """An ensemble computed from its members one by one, as the cache's oracle reads a model."""

    def __init__(self, ensemble):
        self.members = list(ensemble.members)

    def features(self, x):
        return torch.cat([member.features(x)[0] for member in self.members], -1), None

    def __call__(self, x):
        mean = torch.stack([member(x)[0].softmax(-1) for member in self.members]).mean(0)
        return mean.log(), None


def test_members_is_checked_and_a_plain_model_refuses_an_ensembles_config():
    with pytest.raises(ValueError, match=r"^LanguageModel: members must be a positive integer, got 0; 1 is one "
                                         r"model; 2 or more an ensemble$"):
        LanguageModelConfig(vocab_size=5, members=0)
    config = LanguageModelConfig(vocab_size=5, members=2)
    with pytest.raises(ValueError, match=r"^LanguageModel: the config asks for an ensemble of 2; build it with "
                                         r"build_language_model\(config\)$"):
        LanguageModel(config)
    with pytest.raises(TypeError, match=r"^LanguageModelEnsemble: expected the state as a tuple of 2 members' "
                                        r"states \(what the ensemble returns\), got tuple of 3$"):
        build_language_model(config)(torch.zeros(1, 2, dtype=torch.long), (None, None, None))
    assert type(build_language_model(LanguageModelConfig(vocab_size=5))) is LanguageModel
    # the ids are checked once for all the members, on every path
    ensemble = build_language_model(config)
    with pytest.raises(ValueError, match=r"^LanguageModel: token ids must lie in \[0, 5\), got values from 0 to 9$"):
        ensemble(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match=r"^LanguageModelStream: token ids must lie in \[0, 5\), got values from "
                                         r"7 to 7$"):
        ensemble.stream()(torch.tensor(7))


TINY = ["--hidden-size", "12", "--batch-size", "4", "--truncation", "8", "--eval-every", "5", "--quiet",
        "--no-neural-cache"]


def test_a_run_with_members_trains_resumes_exactly_and_evaluates_as_its_members(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES * 2)
    common = ["--data", str(path), "--level", "word", "--members", "2", "--schedule", "constant", *TINY]
    (whole, vocab, config), (parts, _, _) = whole_and_resumed(tmp_path, common, stop=13, total=30)
    assert isinstance(whole, LanguageModelEnsemble) and config["model"]["members"] == 2
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(whole.members[0].embedding.weight, whole.members[1].embedding.weight)
    capsys.readouterr()
    assert main(["train", "--resume", "--members", "3", "--max-steps", "40", "--out", str(tmp_path / "parts"),
                 "--quiet"]) == 2
    assert "--members 3 differs from this run's 2: a resumed run keeps" in capsys.readouterr().err
    # rnnkit evaluate prints the ensemble's figure: that of its members scored apart as an ensemble
    assert main(["evaluate", str(tmp_path / "whole"), "--checkpoint", "latest", "--data", str(path)]) == 0
    printed = capsys.readouterr().out
    from rnnkit.data.tokens import prepare
    text = prepare(str(path), level="word", split=(("text", 1.0),), vocab=vocab, progress=False).parts["text"]
    rows = int(printed.split(" rows:")[0].split()[-1])                  # the run's batch size
    total, _, count = ensemble_nll(list(whole.members), text, batch_size=rows, truncation=256)
    assert rows == 4
    assert f"loss {total / count:.4f} nats/word" in printed
    assert main(["sample", str(tmp_path / "whole"), "--length", "5", "--seed", "3"]) == 0
    assert len(capsys.readouterr().out.split()) >= 5
    # inspect looks at the first member, and says so
    assert main(["inspect", str(tmp_path / "whole"), "--length", "12", "--warmup", "4", "--jacobian-steps", "5",
                 "--out", str(tmp_path / "inspect"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"inspected {tmp_path / 'whole'} (member 1 of 2, lstm layer 0, hidden 12)")


def test_export_of_a_run_with_members_says_what_it_outputs(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES)
    assert main(["train", "--data", str(path), "--level", "word", "--members", "2", "--max-steps", "2",
                 "--out", str(tmp_path / "r"), *TINY]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "outputs log-probabilities (batch, time, " in printed
    assert ") of the mean of its 2 members and each member's final state (h and c, (layers, batch, hidden) each)" \
        in printed
    assert (tmp_path / "r" / "model.onnx").stat().st_size > 0


def test_members_from_the_command_line_are_checked(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES)
    assert main(["train", "--data", str(path), "--level", "word", "--members", "0", "--max-steps", "1",
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("members must be a positive integer, got 0; 1 is one model; 2 or more an ensemble")
    assert len(err) == 1



def test_a_trained_ensemble_equals_its_members_trained_alone_clipping_included(tmp_path):
    """Adam, a clip that bites at every step, AR/TAR: each member's weights after training in the
    ensemble are those it reaches trained alone on the same batches."""
    from rnnkit.train import TrainConfig, Trainer

    options = dict(activation_penalty=1.0, temporal_penalty=0.5)
    ensemble = _ensemble(2, **options)
    solo = [_ensemble(1, seed=7, **options) for _ in range(2)]
    for alone, member in zip(solo, ensemble.members):
        alone.load_state_dict(member.state_dict())
    stream = torch.as_tensor(_tokens((600,), 8).numpy())
    config = TrainConfig(batch_size=3, truncation=6, max_steps=6, clip_norm=0.05, lr=1e-2, schedule="constant",
                         eval_every=1000, seed=1)
    summaries = [Trainer(model, config, tmp_path / name, progress=False).fit(stream, stream[:50])
                 for model, name in ((ensemble, "ensemble"), (solo[0], "a"), (solo[1], "b"))]
    assert [s["steps"] for s in summaries] == [6, 6, 6]
    for alone, member in zip(solo, ensemble.members):
        for (name, a), b in zip(alone.state_dict().items(), member.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=name)
    # the clip was in force: an unclipped ensemble ends elsewhere
    loose = _ensemble(2, **options)
    Trainer(loose, TrainConfig(**{**config.to_dict(), "clip_norm": None}), tmp_path / "loose",
            progress=False).fit(stream, stream[:50])
    assert not torch.allclose(loose.members[0].embedding.weight, ensemble.members[0].embedding.weight, atol=1e-6)
