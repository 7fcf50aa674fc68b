"""A snapshot ensemble (``--snapshots K``): one model trained through K cycles of a cosine schedule
with restarts, the model each cycle ends with kept as a member. Only the newest member trains;
each snapshot equals the model that one run with the same schedule reaches at its cycle's end."""
import math

import pytest
import torch

from rnnkit.cli import main
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble, build_language_model
from rnnkit.train import TrainConfig, Trainer, ensemble_nll
from rnnkit.train.schedule import learning_rate

from conftest import PTB_LINES

TINY = ["--hidden-size", "12", "--embedding-size", "12", "--batch-size", "4", "--truncation", "6", "--quiet",
        "--eval-every", "1000", "--no-neural-cache"]
OPTIONS = dict(num_layers=2, dropout=0.3, weight_drop=0.2, embedding_dropout=0.1, activation_penalty=1.0,
               temporal_penalty=0.5)


def _model(snapshots=1, seed=0, **options):
    torch.manual_seed(seed)
    config = LanguageModelConfig(vocab_size=13, hidden_size=7, embedding_size=5, snapshots=snapshots,
                                 **{**OPTIONS, **options})
    return build_language_model(config).double()


def _tokens(shape, seed):
    return torch.randint(13, shape, generator=torch.Generator().manual_seed(seed))


def test_cycles_restart_the_cosine_schedule_and_one_cycle_is_the_plain_cosine():
    def cosine(progress, warmup, lr=0.5):          # the schedule of one cycle, written out
        if progress < warmup:
            return lr * max(progress / warmup, 1e-3)
        return lr * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))

    one = TrainConfig(lr=0.5, warmup=0.1, max_steps=10)
    for progress in (0.0, 0.05, 0.1, 0.3, 0.77, 1.0):
        assert learning_rate(one, progress) == pytest.approx(cosine(progress, 0.1), abs=1e-15)
    three = TrainConfig(lr=0.5, warmup=0.1, cycles=3, max_steps=10)
    # the first cycle is the warm-up and a cosine over the rest of its third; each later one a whole cosine
    for progress in (0.0, 0.05, 0.1, 0.2, 0.33):
        assert learning_rate(three, progress) == pytest.approx(0.5 * cosine(progress * 3, 0.3, 1.0), abs=1e-15)
    for cycle in (1, 2):
        for local in (0.0, 0.25, 0.5, 0.9):
            progress = (cycle + local) / 3
            assert learning_rate(three, progress) == pytest.approx(0.25 * (1 + math.cos(math.pi * local)),
                                                                   abs=1e-12)
    assert learning_rate(three, 1.0) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("options, message", [
    (dict(cycles=2, schedule="step"), "TrainConfig: cycles restart the cosine schedule; schedule 'step' has none "
                                      "(set schedule='cosine' or cycles=1)"),
    (dict(cycles=4, warmup=0.25), "TrainConfig: the warm-up (0.25 of the run) must end within the first of 4 "
                                  "cycles; lower warmup below 0.25"),
    (dict(cycles=2, optimizer="ntasgd"), "TrainConfig: ntasgd averages the iterates from its trigger on, across "
                                         "any restart of the schedule; use cycles=1 with it, or optimizer 'adam' "
                                         "or 'sgd'"),
    (dict(cycles=0), "TrainConfig: cycles must be a positive integer, got 0"),
], ids=["schedule", "warmup", "ntasgd", "zero"])
def test_cycles_are_checked(options, message):
    with pytest.raises(ValueError) as error:
        TrainConfig(max_steps=5, **options)
    assert str(error.value) == message


def test_only_the_newest_snapshot_trains_and_the_snapshots_so_far_predict(tmp_path):
    model = _model(3)
    assert isinstance(model, LanguageModelEnsemble) and model.cycles == 3 and int(model.newest) == 0
    tokens = _tokens((3, 9), 1)
    assert model.start_cycle(0) == []
    model.train()
    loss, state = model.loss(tokens[:, :-1], tokens[:, 1:])
    (loss + model.penalty()).backward()
    assert len(state) == 1                                      # the newest member's state alone
    assert all(p.grad is not None for p in model.members[0].parameters())
    assert all(p.grad is None and not p.requires_grad for m in model.members[1:] for p in m.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[0], model.members[0](tokens)[0].log_softmax(-1), rtol=1e-12,
                                   atol=1e-12)
    # cycle 2 begins with cycle 1 skipped (a cycle shorter than a step): both copy the newest member
    before = {k: v.clone() for k, v in model.members[0].state_dict().items()}
    pairs = model.start_cycle(2)
    assert int(model.newest) == 2
    assert [(id(a), id(b)) for a, b in pairs] == [(id(a), id(b)) for a, b in zip(model.members[0].parameters(),
                                                                                   model.members[2].parameters())]
    for member in model.members:
        for (name, a), b in zip(before.items(), member.state_dict().values()):
            assert torch.equal(a, b), name
    assert [all(p.requires_grad for p in m.parameters()) for m in model.members] == [False, False, True]
    with torch.no_grad():                                       # set the snapshots apart, then predict
        for k, member in enumerate(model.members):
            member.embedding.weight.mul_(1 + k)
        mean = sum(member(tokens)[0].softmax(-1) for member in model.members) / 3
        torch.testing.assert_close(model(tokens)[0].exp(), mean, rtol=1e-12, atol=1e-14)
    assert model.start_cycle(2) == []                           # the cycle has begun: nothing moves
    with pytest.raises(TypeError, match="start_cycle is for snapshots; these members train side by side"):
        build_language_model(LanguageModelConfig(vocab_size=5, hidden_size=4, members=2)).start_cycle(1)


def test_each_snapshot_is_the_one_model_at_its_cycles_end(tmp_path):
    """The slow twin: one LanguageModel trained with the same cyclic schedule, its weights copied
    by hand at the end of the first cycle. Adam's moments carry over a restart, a clip bites at
    every step, dropout, weight drop and AR/TAR are on."""
    ensemble = _model(2)
    single = _model(1, seed=5)
    single.load_state_dict(ensemble.members[0].state_dict())
    stream = torch.as_tensor(_tokens((600,), 8).numpy())
    config = TrainConfig(batch_size=3, truncation=6, max_steps=8, cycles=2, clip_norm=0.05, lr=1e-2,
                         warmup=0.1, eval_every=1000, seed=1)
    kept = {}

    def keep(trainer):
        if trainer.step == 4:                                   # the first cycle's last step
            kept.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    summaries = [Trainer(ensemble, config, tmp_path / "ensemble", progress=False).fit(stream, stream[:50]),
                 Trainer(single, config, tmp_path / "single", progress=False, on_step=keep).fit(stream, stream[:50])]
    assert [s["steps"] for s in summaries] == [8, 8] and kept
    for member, expected in zip(ensemble.members, (kept, single.state_dict())):
        for (name, a), b in zip(expected.items(), member.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=name)
    assert not torch.allclose(ensemble.members[0].embedding.weight, ensemble.members[1].embedding.weight)
    # and the ensemble's validation figure is that of its two snapshots together
    total, _, count = ensemble_nll(list(ensemble.members), stream[:50], batch_size=3, truncation=256)
    assert summaries[0]["validation_loss"] == pytest.approx(total / count, rel=1e-10)


@pytest.mark.parametrize("stop", [3, 6])
def test_a_snapshot_run_resumes_exactly_before_and_after_a_restart(tmp_path, stop):
    stream = torch.as_tensor(_tokens((600,), 8).numpy())
    config = TrainConfig(batch_size=3, truncation=6, max_steps=8, cycles=2, lr=1e-2, eval_every=1000, seed=2)

    def interrupt(trainer):
        if trainer.step == stop:
            trainer._interrupts.requested = "SIGTERM"

    whole = _model(2)
    Trainer(whole, config, tmp_path / "whole", progress=False).fit(stream, stream[:50])
    parts = _model(2)
    first = Trainer(parts, config, tmp_path / "parts", progress=False, on_step=interrupt).fit(stream, stream[:50])
    assert first["steps"] == stop and first["stopped_by"].startswith("interrupted")
    parts = _model(2, seed=11)                                  # a fresh process's model: the checkpoint decides
    Trainer(parts, config, tmp_path / "parts", progress=False).fit(stream, stream[:50], resume=True)
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_trainer_refuses_a_schedule_without_a_cycle_per_snapshot(tmp_path):
    with pytest.raises(ValueError) as error:
        Trainer(_model(3), TrainConfig(max_steps=3, cycles=2), tmp_path, progress=False)
    assert str(error.value) == ("Trainer: the model is an ensemble of 3 snapshots, one per cycle of the schedule, "
                                "and TrainConfig has cycles=2; set cycles=3")


def test_a_snapshot_run_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES * 2)
    run = tmp_path / "r"
    assert main(["train", "--data", str(path), "--level", "word", "--snapshots", "2", "--max-steps", "12",
                 "--out", str(run), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "model: 2 snapshots of lstm x2, hidden 12" in printed
    from rnnkit.models import load_language_model
    model, vocab, config = load_language_model(run, "latest")
    assert config["model"]["snapshots"] == 2 and config["training"]["cycles"] == 2 and int(model.newest) == 1
    assert not torch.equal(model.members[0].embedding.weight, model.members[1].embedding.weight)
    # rnnkit evaluate prints the snapshots' figure together
    assert main(["evaluate", str(run), "--checkpoint", "latest", "--data", str(path)]) == 0
    printed = capsys.readouterr().out
    from rnnkit.data.tokens import prepare
    text = prepare(str(path), level="word", split=(("text", 1.0),), vocab=vocab, progress=False).parts["text"]
    total, _, count = ensemble_nll(list(model.members), text, batch_size=4, truncation=256)
    assert f"loss {total / count:.4f} nats/word" in printed
    assert main(["sample", str(run), "--length", "5", "--seed", "3"]) == 0
    assert len(capsys.readouterr().out.split()) >= 5
    assert main(["inspect", str(run), "--checkpoint", "latest", "--length", "12", "--warmup", "4",
                 "--jacobian-steps", "5", "--out", str(tmp_path / "inspect"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"inspected {run} (snapshot 2 of 2, lstm layer 0, hidden 12)")
    assert main(["train", "--resume", "--snapshots", "3", "--max-steps", "20", "--out", str(run), "--quiet"]) == 2
    assert "--snapshots 3 differs from this run's 2: a resumed run keeps" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--snapshots", "2", "--cycles", "3"], "--snapshots 2 keeps the end of each of 2 cycles of the schedule, and "
                                            "--cycles is 3; drop --cycles"),
    (["--snapshots", "2", "--schedule", "constant"], "--cycles/--snapshots restart the cosine schedule of Adam or "
     "SGD, and this run has --schedule constant; pass --schedule cosine and --optimizer adam or sgd, or drop "
     "--cycles/--snapshots"),
    (["--cycles", "2", "--preset", "zaremba-small"], "--cycles/--snapshots restart the cosine schedule of Adam or "
     "SGD, and this run has --schedule step (preset zaremba-small); pass --schedule cosine and --optimizer adam or "
     "sgd, or drop --cycles/--snapshots"),
    (["--snapshots", "2", "--members", "2"], "LanguageModel: an ensemble is either members trained side by side or "
     "snapshots of one run, got members=2 and snapshots=2; set one of them to 1"),
    (["--snapshots", "0"], "LanguageModel: snapshots must be a positive integer, got 0; 1 is one model; 2 or more "
     "an ensemble"),
], ids=["cycles", "schedule", "preset", "members", "zero"])
def test_snapshots_from_the_command_line_are_checked(tmp_path, capsys, options, message):
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES)
    assert main(["train", "--data", str(path), "--level", "word", *options, "--max-steps", "1",
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rnnkit train: error: {message}"]


def test_a_plain_model_refuses_a_config_of_snapshots():
    with pytest.raises(ValueError, match=r"^LanguageModel: the config asks for an ensemble of 2; build it with "
                                         r"build_language_model\(config\)$"):
        LanguageModel(LanguageModelConfig(vocab_size=5, hidden_size=4, snapshots=2))


@pytest.mark.parametrize("options, expected", [
    (["--level", "word"], (2, 2)),
    (["--level", "char"], (1, 1)),
    (["--level", "word", "--preset", "zaremba-small"], (1, 1)),
    (["--level", "word", "--preset", "awd-lstm"], (1, 1)),
    (["--level", "word", "--schedule", "constant"], (1, 1)),
    (["--level", "word", "--optimizer", "ntasgd"], (1, 1)),
    (["--level", "word", "--members", "2"], (1, 1)),
    (["--level", "word", "--cycles", "3"], (1, 3)),
    (["--level", "word", "--snapshots", "3"], (3, 3)),
    (["--level", "char", "--snapshots", "2", "--cycles", "2"], (2, 2)),
], ids=["word", "char", "zaremba", "awd", "schedule", "ntasgd", "members", "cycles", "three", "char-asked"])
def test_the_word_level_default_is_two_snapshots_unless_the_run_asks_for_another_schedule(options, expected):
    from rnnkit.commands import build_parser
    from rnnkit.commands import train_options
    from rnnkit.train.recipes import preset_values

    args = build_parser().parse_args(["train", *options])
    train_options.resolve(args, preset_values(args.preset) if args.preset else None)
    assert (args.snapshots, args.cycles) == expected


def test_export_of_a_snapshot_run_gives_the_snapshots_mean(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "a.txt"
    path.write_text(PTB_LINES)
    run = tmp_path / "r"
    assert main(["train", "--data", str(path), "--level", "word", "--cell", "gru", "--snapshots", "2",
                 "--max-steps", "4", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--checkpoint", "latest"]) == 0
    assert ("of the mean of its 2 snapshots and each snapshot's final state (h, (layers, batch, hidden) each)"
            in capsys.readouterr().out)
    from rnnkit.models import load_language_model
    model, _, _ = load_language_model(run, "latest")
    session = ort.InferenceSession(str(run / "model.onnx"))
    tokens = _tokens((3, 11), 4)
    got = session.run(None, {session.get_inputs()[0].name: tokens.numpy()})
    with torch.no_grad():
        log_p, state = model(tokens)
    expected = [log_p, *state]
    assert len(got) == len(expected) == 3                     # log-probabilities, then h of each snapshot
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-5)


def test_weights_naming_a_snapshot_the_ensemble_lacks_are_refused():
    model = _model(2)
    weights = model.state_dict()
    weights["newest"] = torch.tensor(2)
    with pytest.raises(ValueError, match=r"^LanguageModelEnsemble: the weights name snapshot 2 as the newest of 2; "
                                         r"they are damaged or belong to another model$"):
        _model(2).load_state_dict(weights)
