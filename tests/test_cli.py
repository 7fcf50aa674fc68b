"""The command line, end to end in seconds."""
import re
import subprocess
import sys

import pytest

from rnnkit.cli import main


def test_demo_runs_and_reports_each_cell(capsys):
    assert main(["demo", "--delay", "2", "--steps", "150", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("elman", "gated", "gru", "lstm"):
        match = re.search(rf"{name}\s+engine=\w+\s+test accuracy\s+(\d+\.\d)%", out)
        assert match and float(match.group(1)) >= 95.0, out          # a short delay: every cell learns it
    assert "solved (>= 95%): elman, gated, gru, lstm; not solved: none" in out


def test_bad_option_value_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps must be at least 1, got 0" in capsys.readouterr().err


def test_console_script_help_and_version():
    result = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
    result = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == "rnnkit 0.1.0"


# ----- the main job: train, sample, evaluate ---------------------------------------------------

SPEECH = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30
TINY = ["--hidden-size", "32", "--embedding-size", "16", "--batch-size", "4", "--truncation", "16",
        "--eval-every", "10", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "speech.txt"
    path.write_text(SPEECH)
    return path


def test_train_sample_evaluate_end_to_end(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "30", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"after 30 steps, [\d,]+ tokens, .*; best checkpoint: step 30\n"
                     r"validation: loss \d\.\d{4} nats/char, perplexity [\d.]+, [\d.]+ bits/char \(447 tokens\) "
                     r"-- chose the checkpoint\n"
                     r"test:       loss \d\.\d{4} nats/char, perplexity [\d.]+, [\d.]+ bits/char \(447 tokens\)\n",
                     printed), printed
    assert f"sample from it: rnnkit sample {out} --length 500" in printed
    for name in ("latest", "best", "metrics.jsonl", "loss.png"):
        assert (out / name).exists(), name
    assert main(["sample", str(out), "--prime", "First", "--length", "40", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("First") and len(first) == len("First") + 40 + 1
    assert main(["sample", str(out), "--prime", "First", "--length", "40", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first                            # seeded: reproducible
    assert main(["evaluate", str(out), "--data", str(corpus)]) == 0
    assert re.match(r"4,469 char tokens, 4 rows: loss \d\.\d{4} nats/char, perplexity [\d.]+, [\d.]+ bits/char "
                    r"\(4,469 tokens\)\n", capsys.readouterr().out)


def test_resume_continues_a_run_and_refuses_to_overwrite_one(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "20", "--out", str(out), *TINY]) == 0
    assert main(["train", "--data", str(corpus), "--max-steps", "20", "--out", str(out), *TINY]) == 2
    assert (f"'{out}' already holds files; pass --resume to continue that run, or --out NEW_DIRECTORY "
            f"to start another") in capsys.readouterr().err
    assert main(["train", "--resume", "--max-steps", "30", "--out", str(out), "--quiet"]) == 0
    assert "after 30 steps" in capsys.readouterr().out


def test_resume_keeps_the_runs_own_validation_split(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--validation-fraction", "0.3", "--max-steps", "10",
                 "--out", str(out), *TINY]) == 0
    first = capsys.readouterr().out
    assert main(["train", "--resume", "--max-steps", "20", "--out", str(out), "--quiet"]) == 0
    again = capsys.readouterr().out
    held_out = re.search(r"([\d,]+) for validation", first).group(1)
    assert f"{held_out} for validation" in again


@pytest.mark.parametrize("content, message", [
    (None, "no such file or directory: '{path}'; pass --data a UTF-8 text file, a directory of them, "
           "or - for standard input"),
    (b"", "{path} is empty: there is no text to train on"),
    (b"abc\x00\x01\x02", "{path} looks like a binary file (it contains NUL bytes); rnnkit trains on UTF-8 text"),
    ("caf\u00e9 na\u00efve".encode("latin-1"), "{path} is not valid UTF-8 (first bad byte at offset 3)"),
    (b"tiny", "the validation part of '{path}' is empty: 4 bytes cut at [3, 3] leave it no character; use "
              "more text or a larger fraction for it"),
])
def test_bad_data_files_fail_clearly_and_write_nothing(tmp_path, capsys, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "run"
    code = main(["train", "--data", str(path), "--max-steps", "5", "--out", str(out), *TINY])
    assert code == 2
    assert message.format(path=path) in capsys.readouterr().err
    assert not (out / "latest").exists()


def test_unknown_cell_and_unknown_option_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--cell", "transformer"])
    assert exit_info.value.code == 2
    assert "argument --cell: invalid choice: 'transformer'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--hiddn-size", "8"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --hiddn-size" in capsys.readouterr().err


def test_sampling_a_directory_without_a_checkpoint(tmp_path, capsys):
    assert main(["sample", str(tmp_path)]) == 2
    assert (f"'{tmp_path}' holds no rnnkit checkpoint (no 'best' file); pass the --out directory of an "
            f"`rnnkit train` run, or train one first") in capsys.readouterr().err


def test_prime_outside_the_vocabulary(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "5", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", str(out), "--prime", "Zebra\u00e9"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                                          # nothing printed before the check
    assert ("prime contains characters not in the vocabulary: 'Z', 'b', '\u00e9'; the model knows "
            "33 characters") in captured.err


def test_word_level_model_maps_unknown_prime_words_to_unk(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--level", "word", "--max-steps", "10", "--out", str(out),
                 *TINY]) == 0
    assert "nats/word" in capsys.readouterr().out
    assert main(["sample", str(out), "--prime", "Zebras speak", "--length", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("Zebras speak")


def test_bench_tasks_prints_the_table(capsys):
    assert main(["bench", "tasks", "--task", "delayed_recall", "--sizes", "3", "--cells", "elman,lstm",
                 "--seconds", "1.5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"delayed_recall\s+3\s+accuracy\s+1\.3863\s+\d\.\d{4}[* ]\s+\d\.\d{4}", out), out
    assert main(["bench", "tasks", "--cells", "transformer"]) == 2
    assert "unknown cell(s) ['transformer']" in capsys.readouterr().err


def test_train_remedy_options_reach_the_trainer(tmp_path, corpus, capsys):
    """--recurrent-init and --information-flow go into the saved training config, and identity
    initialisation leaves every recurrent gate block of an untrained step at exactly I."""
    import json

    import torch

    from rnnkit.models import load_language_model

    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "2", "--out", str(out), "--lr", "1e-9",
                 "--recurrent-init", "identity", "--recurrent-gain", "0.5", "--information-flow", "0.1",
                 "--cell", "gru", *TINY]) == 0
    step_dir = out / (out / "latest").read_text().strip()
    saved = json.loads((step_dir / "config.json").read_text())["training"]
    assert (saved["recurrent_init"], saved["recurrent_gain"], saved["information_flow"]) == ("identity", 0.5, 0.1)
    model, _, _ = load_language_model(out)
    w = next(p for n, p in model.named_parameters() if n.endswith("weight_hh"))
    for block in w.detach().chunk(3, 0):
        torch.testing.assert_close(block, 0.5 * torch.eye(32), atol=1e-6, rtol=0)


def test_runs_saved_before_token_files_still_resume(tmp_path, corpus, capsys):
    """Early checkpoints stored "data" as the bare path, later ones as {path, validation_fraction};
    resume reads both, splitting the text as they did, with the run's own vocabulary."""
    import json

    from rnnkit.train.lm_run import saved_data_record as _saved_data

    assert _saved_data({"data": "a.txt"})["path"] == "a.txt"
    assert _saved_data({"data": "a.txt"})["validation_fraction"] == 0.1
    record = _saved_data({"data": {"path": "b.txt", "validation_fraction": 0.3}, "vocabulary": {"level": "word"}})
    assert (record["path"], record["validation_fraction"], record["level"], record["test_fraction"]) == \
        ("b.txt", 0.3, "word", 0.0)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "4", "--out", str(out), *TINY]) == 0
    config_path = out / (out / "latest").read_text().strip() / "config.json"
    config = json.loads(config_path.read_text())
    config["data"] = config["data"]["path"]                             # the oldest layout
    config_path.write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", "--resume", "--max-steps", "6", "--out", str(out), "--quiet"]) == 0
    assert "4,023 for train, 447 for validation (no test split)" in capsys.readouterr().out


def test_export_writes_an_onnx_program_that_onnxruntime_runs_like_the_model(tmp_path, corpus, capsys):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    from rnnkit.models import load_language_model

    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "10", "--out", str(out), "--cell", "gru",
                 "--num-layers", "2", "--tensorboard", *TINY]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    capsys.readouterr()
    assert main(["export", str(out)]) == 0
    assert re.match(rf"wrote {re.escape(str(out / 'model.onnx'))}: input token ids \(batch, time\) int64 from a "
                    rf"\d+-token char vocabulary; outputs logits \(batch, time, \d+\) and the final state \(h, "
                    rf"\(layers, batch, hidden\) each\), starting from zeros\n", capsys.readouterr().out)
    model, vocab, _ = load_language_model(out)
    tokens = torch.randint(len(vocab), (3, 21))
    session = ort.InferenceSession(str(out / "model.onnx"))
    logits, state = session.run(None, {session.get_inputs()[0].name: tokens.numpy()})
    with torch.no_grad():
        expected, expected_state = model.eval()(tokens)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state, expected_state.numpy(), rtol=1e-4, atol=1e-5)
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_at_the_current_step_and_resume_continues(tmp_path, corpus):
    import json
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "rnnkit.cli", "train", "--data", str(corpus), "--max-steps",
                                "100000", "--out", str(out), *TINY, "--eval-every", "100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:                       # wait until it is training, then interrupt
        metrics = out / "metrics.jsonl"
        if metrics.exists() and any(json.loads(line).get("step", 0) >= 20
                                    for line in metrics.read_text().splitlines() if line.strip()):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "rnnkit: SIGINT received: stopping after this step and saving a checkpoint" in stderr
    assert "Traceback" not in stderr
    steps = int(re.search(r"interrupted \(SIGINT\) at step ([\d,]+); the checkpoint is saved", stdout)
                .group(1).replace(",", ""))
    assert steps >= 20 and (out / "latest").read_text().strip() == f"checkpoints/step-{steps:08d}"
    assert main(["train", "--resume", "--out", str(out), "--max-steps", str(steps + 10), "--quiet"]) == 0
    assert (out / "latest").read_text().strip() == f"checkpoints/step-{steps + 10:08d}"


@pytest.mark.parametrize("options, message", [
    (["--temperature", "-1"], "--temperature must be a positive finite number, got -1.0; use --greedy for the most "
                              "likely token at every step"),
    (["--temperature", "nan"], "--temperature must be a positive finite number, got nan"),
    (["--top-k", "0"], "--top-k must be a positive integer, got 0; leave it out to sample among every token"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5; leave it out to sample among every token"),
    (["--greedy", "--top-p", "0.9"], "--greedy takes the most likely token, so --top-k and --top-p would do "
                                     "nothing; drop one or the other"),
])
def test_sample_options_are_refused_in_the_command_lines_words(tmp_path, options, message, capsys):
    assert main(["sample", str(tmp_path), *options]) == 2
    assert capsys.readouterr().err.startswith(f"rnnkit sample: error: {message}")


@pytest.mark.parametrize("options, message", [
    (["--out", "{file}"], "--out '{file}' is a file; --out names the run's directory"),
    (["--seed", str(2 ** 70)], f"--seed must be an integer in [0, {2 ** 63 - 1}], got {2 ** 70}"),
    (["--hidden-size", "1000000"], "the model does not fit in memory (4,000,"),
])
def test_train_refuses_impossible_runs_in_one_line(tmp_path, corpus, capsys, options, message):
    file = tmp_path / "a-file"
    file.write_text("")
    options = [o.format(file=file) for o in options]
    if "--out" not in options:
        options += ["--out", str(tmp_path / "run")]
    assert main(["train", "--data", str(corpus), "--max-steps", "2", "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnkit train: error: {message.format(file=file)}") and err.count("\n") == 1


def test_a_full_disk_is_one_line_naming_the_file_and_the_fix(monkeypatch, capsys):
    import errno

    import rnnkit.commands.train

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/lm/checkpoints/.step-00000500.x")
    monkeypatch.setattr(rnnkit.commands.train, "run", full)
    assert main(["train", "--quiet"]) == 2
    assert capsys.readouterr().err == ("rnnkit train: error: [Errno 28] No space left on device: "
                                       "'/runs/lm/checkpoints/.step-00000500.x'; free some space, or write to "
                                       "another disk (--out, --cache-dir)\n")


def test_an_edited_or_incomplete_checkpoint_config_is_one_line(tmp_path, corpus, capsys):
    import json

    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "10", "--out", str(out), *TINY]) == 0
    config_path = out / (out / "best").read_text().strip() / "config.json"
    config = json.loads(config_path.read_text())
    capsys.readouterr()
    del config["model"]["hidden_size"]                   # a default of 256 would build another model
    config_path.write_text(json.dumps(config))
    assert main(["sample", str(out), "--length", "5"]) == 2
    assert capsys.readouterr().err == (f"rnnkit sample: error: {out}'s best checkpoint lacks model.hidden_size in "
                                       f"its config.json; it is incomplete or was edited. Use the run's other "
                                       f"checkpoint, or train again\n")
    config["model"]["hidden_size"] = 48
    config_path.write_text(json.dumps(config))
    assert main(["sample", str(out), "--length", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnkit sample: error: {out}'s best checkpoint: its weights do not fit the model its "
                          f"config describes (size mismatch for") and err.count("\n") == 1


def test_evaluate_counts_unknown_tokens_among_those_it_predicts(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "5", "--out", str(out), *TINY]) == 0
    strange = tmp_path / "strange.txt"
    strange.write_text("~~~~")                     # characters the vocabulary never saw: all <unk>
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(strange)]) == 0
    assert re.match(r"3 char tokens, 4 rows: .*; 3 unknown tokens counted as <unk>\n$", capsys.readouterr().out)
