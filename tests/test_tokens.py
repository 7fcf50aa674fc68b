"""Token files: prepared once in blocks, read in place, the splits, the cache, and every bad input."""
import io
import json
import math
import re
import sys

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.train import read_checkpoint
from rnnkit.data import ContiguousBatches, Vocabulary
from rnnkit.data import tokens as token_files
from rnnkit.data import vocab as vocab_module
from rnnkit.data.tokens import TokenFile, TokenFileError, prepare
from rnnkit.models import LanguageModel, LanguageModelConfig, load_language_model
from rnnkit.train.evaluation import token_nll

# Penn Treebank's look: lower case, N for numbers, a literal <unk>, one sentence a line
PTB_LINES = [" the <unk> company said N shares rose ", " a cat sat on the mat ",
             " the cat said it was N years old ", "", " mr. <unk> sat "]
PTB = "\n".join(PTB_LINES * 40) + "\n"
MIXED = ("Très bien, dit-il.\n  Ça va? — oui…\n\tdef f(x):\n\t\treturn x  # done\n\n" * 30)
SPLIT3 = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
TINY = ["--hidden-size", "16", "--embedding-size", "16", "--batch-size", "4", "--truncation", "8",
        "--eval-every", "5", "--quiet"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 61 bytes and BPE pieces of 50 characters: every cut lands mid-line, mid-word, mid-character."""
    monkeypatch.setattr(token_files, "BLOCK", 61)
    monkeypatch.setattr(vocab_module, "_BPE_PIECE", 50)


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# -- round trips and the block-wise encoder -----------------------------------------------

@pytest.mark.parametrize("level", ["char", "bpe"])
def test_lossless_levels_round_trip_through_a_token_file(tmp_path, small_blocks, level):
    """decode(tokens) is the text, byte for byte, across block cuts and multi-byte characters;
    a byte-order mark is dropped."""
    path = write(tmp_path, "mixed.txt", "\ufeff" + MIXED)
    tokens = prepare(path, level=level, split=(("train", 1.0),), max_vocab=300 if level == "bpe" else None,
                     out=tmp_path / "t", progress=False)
    assert tokens.vocab.decode(np.asarray(tokens.tokens)) == MIXED
    assert tokens.parts["train"].characters == len(MIXED)


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
def test_block_wise_ids_equal_the_whole_texts_ids(tmp_path, monkeypatch, level):
    """The token file of each part, written block by block, holds encode(part text) exactly,
    and the vocabulary is the one built from the training part alone."""
    text = PTB + MIXED
    path = write(tmp_path, "a.txt", text)
    whole = prepare(path, level=level, split=SPLIT3, max_vocab=400 if level == "bpe" else None,
                    out=tmp_path / "whole", progress=False)
    monkeypatch.setattr(token_files, "BLOCK", 61)
    monkeypatch.setattr(vocab_module, "_BPE_PIECE", 50)
    blocked = prepare(path, level=level, split=SPLIT3, max_vocab=400 if level == "bpe" else None,
                      out=tmp_path / "blocked", progress=False)
    assert blocked.vocab == whole.vocab and np.array_equal(blocked.tokens, whole.tokens)
    texts, start = {}, 0
    for name, part in whole.meta["parts"].items():
        raw = text.encode()[start:start + part["bytes"]].decode()
        texts[name] = raw
        start += part["bytes"]
        if level != "char":
            assert start == len(text.encode()) or text.encode()[start - 1:start] == b"\n"   # cut at line starts
    assert "".join(texts.values()) == text
    train_vocab = Vocabulary.build(texts["train"], level=level, max_size=400 if level == "bpe" else None)
    if level != "bpe":                  # (BPE's merges tie-break by order of first sight, equal in kind)
        assert whole.vocab == train_vocab
    for name, split in whole.parts.items():
        expected = whole.vocab.encode_array(texts[name], close_line=True).tolist()
        assert split.tokens.tolist() == expected, name
        assert split.characters == len(texts[name])


def test_word_files_count_words_and_line_ends(tmp_path):
    """<eos> closes every line, the last one too when the file lacks a final line break;
    a literal <unk> is the unknown token and never a vocabulary entry."""
    path = write(tmp_path, "ptb.txt", "a b\n<unk> c\n\nd")
    tokens = prepare(path, level="word", split=(("train", 1.0),), out=tmp_path / "t", progress=False)
    vocab = tokens.vocab
    assert [vocab.id_to_token(i) for i in tokens.tokens] == ["a", "b", "<eos>", "<unk>", "c", "<eos>", "<eos>",
                                                            "d", "<eos>"]
    assert vocab.tokens == ("<unk>", "<start>", "<end>", "<eos>", "a", "b", "c", "d")
    assert tokens.parts["train"].context == vocab.token_to_id("<eos>")


def test_directory_and_stdin_sources(tmp_path, monkeypatch):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write(folder, "b.txt", "second\n")
    write(folder / "sub", "a.txt", "third")
    write(folder, "a.txt", "first")
    write(folder, ".hidden", "never")
    write(folder, "bin.dat", b"\x00\x01binary")
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 files that are not UTF-8 text: bin.dat \(binary\)"):
        tokens = prepare(folder, split=(("train", 1.0),), out=tmp_path / "t", progress=False)
    assert tokens.vocab.decode(np.asarray(tokens.tokens)) == "first\nsecond\n\nthird"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("from a pipe\n".encode()), encoding="utf-8"))
    piped = prepare("-", split=(("train", 1.0),), progress=False)
    assert piped.vocab.decode(np.asarray(piped.tokens)) == "from a pipe\n"
    assert piped.source["kind"] == "stdin" and not list(piped.path.parent.glob(".stdin-*"))


def test_the_default_corpus_becomes_a_token_file_of_exactly_its_text(tmp_path):
    from rnnkit.data import default_corpus

    tokens = prepare(None, split=(("train", 1.0),), out=tmp_path / "default", progress=False)
    assert tokens.vocab.decode(np.asarray(tokens.tokens)) == default_corpus()
    assert tokens.source["kind"] == "default"


# -- the cache -------------------------------------------------------------------------------------

def test_cache_reuses_an_unchanged_source_without_reading_it(tmp_path, monkeypatch):
    path = write(tmp_path, "a.txt", PTB)
    first = prepare(path, level="word", progress=False)
    assert first.path.parent == token_files.cache_dir() / "tokens"

    def must_not_read(*args, **kwargs):
        raise AssertionError("an unchanged source was read again")
    with monkeypatch.context() as patch:
        patch.setattr(token_files.Source, "check", must_not_read)
        again = prepare(path, level="word", progress=False)
    assert again.path == first.path and again.id == first.id
    other = prepare(path, level="char", progress=False)                 # other options: another file
    assert other.path != first.path
    path.write_text(PTB.replace("cat", "dog"))                           # changed: prepared again
    changed = prepare(path, level="word", progress=False)
    assert changed.id != first.id and "dog" in changed.vocab.tokens
    assert TokenFile(first.path).id == first.id                          # the old one is left for its runs


# -- reading in place ----------------------------------------------------------------------------

class Watched(np.ndarray):
    """An array that logs every index taken of it (but not of the arrays it hands out)."""

    log: list = []

    def __getitem__(self, key):
        Watched.log.append(key)
        return np.asarray(super().__getitem__(key))


def test_a_rank_reads_only_its_shard(tmp_path):
    path = write(tmp_path, "a.txt", "abcdefghij" * 100)
    tokens = prepare(path, split=(("train", 1.0),), out=tmp_path / "t", progress=False).tokens
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint8
    for rank in range(3):
        Watched.log = []
        batches = ContiguousBatches(tokens.view(Watched), batch_size=4, truncation=7, rank=rank, world_size=3)
        chunks = list(batches)
        assert Watched.log == [slice(rank * 4 * 83, (rank + 1) * 4 * 83 + 1)]      # one slice: its own streams
        assert batches.shard == (rank * 332, (rank + 1) * 332 + 1)
        assert chunks[0][0].dtype == torch.int64
        reference = ContiguousBatches(torch.from_numpy(np.asarray(tokens).astype(np.int64)), batch_size=4,
                                      truncation=7, rank=rank, world_size=3)
        for (x, y), (rx, ry) in zip(chunks, reference):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_exact_evaluation_scores_every_token_once():
    """token_nll in rows, with the remainder in the last row, equals the sequential sum of
    per-token losses, and the count is every token after the context."""
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=11, hidden_size=8, embedding_size=4)).double().eval()
    tokens = np.random.default_rng(0).integers(0, 11, size=203).astype(np.uint8)
    split = token_files.TokenSplit("test", tokens, context=3, characters=203)
    sequence = torch.tensor([3] + tokens.tolist()).unsqueeze(0)
    with torch.no_grad():
        reference = model.token_nll(sequence[:, :-1], sequence[:, 1:])[0].sum().item()
    total, count = token_nll(model, split, batch_size=1, truncation=16)
    assert count == 203 and abs(total - reference) < 1e-9
    for rows in (2, 7, 32):
        total, count = token_nll(model, split, batch_size=rows, truncation=16)
        assert count == 203
        expected = 0.0
        length = 203 // rows
        with torch.no_grad():
            for row in range(rows):
                stop = (row + 1) * length if row < rows - 1 else 203
                piece = sequence[:, row * length: stop + 1]
                expected += model.token_nll(piece[:, :-1], piece[:, 1:])[0].sum().item()
        assert abs(total - expected) < 1e-9, rows
    total, count = token_nll(model, token_files.TokenSplit("x", tokens, None, 203), batch_size=4, max_tokens=50)
    assert count == 50


def test_per_word_perplexity_counts_words_and_lines(tmp_path, capsys):
    """`rnnkit evaluate` at word level scores words + <eos> per line, the first word from <eos>:
    its perplexity is exp(total NLL / (words + lines))."""
    train = write(tmp_path, "train.txt", PTB)
    test_text = " the cat rose \n a <unk> said N \n mr. dog sat on it \n"
    test = write(tmp_path, "test.txt", test_text)
    out = tmp_path / "run"
    assert main(["train", "--data", str(train), "--level", "word", "--max-steps", "10", "--out", str(out),
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(test), "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    words, lines = len(test_text.split()), test_text.count("\n")
    model, vocab, _ = load_language_model(out)
    ids = [vocab.token_to_id("<eos>")] + vocab.encode(test_text)
    assert len(ids) == words + lines + 1
    sequence = torch.tensor(ids).unsqueeze(0)
    with torch.no_grad():
        total = model.token_nll(sequence[:, :-1], sequence[:, 1:])[0].double().sum().item()
    perplexity = math.exp(total / (words + lines))
    match = re.match(r"(\d+) word tokens \(words \+ <eos>\), 1 rows: loss ([\d.]+) nats/word, perplexity "
                     r"([\d.]+) per word, ([\d.]+) bits/char", printed)
    assert match, printed
    assert int(match.group(1)) == words + lines
    assert float(match.group(3)) == pytest.approx(perplexity, abs=0.006)
    bits = total / math.log(2) / len(test_text)
    assert float(match.group(4)) == pytest.approx(bits, abs=6e-4)
    assert "2 unknown tokens counted as <unk>" in printed                  # <unk> itself, and "dog"


# -- runs on token files -----------------------------------------------------------------------------

def test_resume_from_a_token_file_equals_an_uninterrupted_run(tmp_path, capsys):
    path = write(tmp_path, "a.txt", PTB * 3)
    common = ["--data", str(path), "--schedule", "constant", "--dropout", "0.2", "--num-layers", "2", *TINY]
    assert main(["train", *common, "--max-steps", "16", "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *common, "--max-steps", "8", "--out", str(tmp_path / "parts")]) == 0
    assert main(["train", "--resume", "--max-steps", "16", "--out", str(tmp_path / "parts"), "--quiet"]) == 0
    printed = capsys.readouterr().out.split("\n\n")
    whole, _, _ = load_language_model(tmp_path / "whole", "latest")
    parts, _, _ = load_language_model(tmp_path / "parts", "latest")
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name
    assert printed[1].splitlines()[1:3] == printed[-1].splitlines()[1:3]      # the same figures


def test_separate_test_and_validation_texts(tmp_path, capsys):
    train = write(tmp_path, "train.txt", PTB)
    valid = write(tmp_path, "valid.txt", " the cat sat \n")
    test = write(tmp_path, "test.txt", " a <unk> rose \n mr. cat \n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(train), "--level", "word", "--validation-data", str(valid),
                 "--test-data", str(test), "--max-steps", "5", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"{len(PTB.split()) + PTB.count(chr(10)):,} for train, 4 for validation, 7 for test" in printed
    assert re.search(r"test: +loss [\d.]+ nats/word, perplexity [\d.]+ per word, [\d.]+ bits/char \(7 tokens\)",
                     printed)


def test_presets_print_what_they_set_and_yield_to_given_options(tmp_path, capsys):
    path = write(tmp_path, "a.txt", PTB)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--preset", "zaremba-small", "--hidden-size", "16",
                 "--embedding-size", "16", "--max-steps", "3", "--batch-size", "4", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("preset zaremba-small (Zaremba et al. 2014, small: 2 x 200 LSTM, no dropout "
                              "(PTB test 114.5)) sets: --level word --cell lstm --num-layers 2 --optimizer sgd "
                              "--momentum 0 --lr 1 --schedule step --batch-size 20 [overridden]")
    assert "--hidden-size 200 [overridden]" in printed and "--init-scale 0.1 " in printed
    config = json.loads((out / (out / "latest").read_text().strip() / "config.json").read_text())
    assert config["preset"] == "zaremba-small"
    assert (config["model"]["hidden_size"], config["model"]["num_layers"], config["model"]["init_scale"]) == (16, 2, 0.1)
    training = config["training"]
    assert (training["optimizer"], training["momentum"], training["lr"], training["clip_norm"], training["truncation"],
            training["schedule"], training["decay_start"], training["decay_factor"], training["batch_size"]) == \
        ("sgd", 0.0, 1.0, 5.0, 20, "step", 4, 0.5, 4)
    assert (training["max_epochs"], training["max_steps"]) == (13, 3)          # its length, and the one given
    assert main(["train", "--data", str(path), "--preset", "awd-lstm", "--hidden-size", "16", "--embedding-size",
                 "8", "--projection-size", "8", "--max-steps", "2", "--batch-size", "2", "--truncation", "6",
                 "--out", str(tmp_path / "awd"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "differs from the paper: the third layer is 1150 wide and projected to 400" in printed


# -- bad input: one clear line, nothing lost ---------------------------------------------------------

def run_error(capsys, *argv):
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


def test_bad_token_files_are_named_and_explained(tmp_path, capsys):
    path = write(tmp_path, "a.txt", PTB)
    good = prepare(path, level="word", out=tmp_path / "good", progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"format": "npy"}))
    assert run_error(capsys, "train", "--data", str(foreign), "--out", str(tmp_path / "r1")) == (
        f"rnnkit train: error: '{foreign}' is not an rnnkit token file (its meta.json has no format "
        f"'rnnkit-tokens'); make one with: rnnkit prepare --data TEXT")
    with open(good.path / "tokens.bin", "r+b") as handle:              # truncated by a full disk, say
        handle.truncate(10)
    expected_bytes = good.meta["count"] * 2 if good.dtype == np.uint16 else good.meta["count"]
    assert run_error(capsys, "train", "--data", str(good.path), "--out", str(tmp_path / "r2")) == (
        f"rnnkit train: error: '{good.path / 'tokens.bin'}' holds 10 bytes where {expected_bytes:,} were "
        f"written: it is truncated or altered; delete '{good.path}' and prepare it again")
    other = prepare(path, level="char", out=tmp_path / "char", progress=False)
    meta = json.loads((other.path / "meta.json").read_text())
    big = Vocabulary([chr(c) for c in range(0x100, 0x100 + 300)])
    big.save(other.path / "vocab.json")
    meta["vocabulary"] = big.fingerprint()
    (other.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TokenFileError, match=r"its vocabulary of 303 tokens does not fit its uint8 ids"):
        TokenFile(other.path)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2" / "latest").exists()


def test_bad_data_options_fail_before_anything_is_written(tmp_path, capsys):
    path = write(tmp_path, "a.txt", PTB)
    assert run_error(capsys, "train", "--data", str(path), "--level", "bpe", "--max-vocab", "100",
                     "--out", str(tmp_path / "r")) == (
        "rnnkit train: error: a byte-level BPE vocabulary holds the 256 bytes and the 3 specials, so its size "
        "must be at least 259, got 100; pass --max-vocab 259 or more (8192 is a common choice)")
    message = run_error(capsys, "train", "--data", str(path), "--test-fraction", "0.001", "--level", "word",
                        "--out", str(tmp_path / "r"))
    assert message.startswith(f"rnnkit train: error: the test part of '{path}' is empty: {len(PTB.encode()):,} "
                              f"bytes cut at [")
    assert message.endswith("] leave it no line; use more text or a larger fraction for it")
    assert run_error(capsys, "train", "--data", str(path), "--validation-fraction", "0.6", "--test-fraction", "0.5",
                     "--out", str(tmp_path / "r")).endswith(
        "--validation-fraction 0.6 and --test-fraction 0.5 leave nothing to train on; their sum must be below 1")
    assert not (tmp_path / "r").exists()


def test_resume_refuses_changed_options_and_a_changed_source(tmp_path, capsys):
    path = write(tmp_path, "a.txt", PTB * 2)
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--cache-dir", str(cache), "--max-steps", "5", "--out", str(out),
                 *TINY]) == 0
    assert run_error(capsys, "train", "--resume", "--level", "word", "--out", str(out)) == (
        "rnnkit train: error: --level word differs from this run's char: a resumed run keeps its data, model "
        "and optimizer; drop --level (only --max-minutes, --max-epochs, --max-steps and --lr may change), or "
        "start a new run with --out NEW_DIRECTORY")
    assert run_error(capsys, "train", "--resume", "--momentum", "0.5", "--out", str(out)).startswith(
        "rnnkit train: error: --momentum 0.5 differs from this run's 0.9")
    # the learning rate is applied and recorded (the schedule reads it at every step)
    assert main(["train", "--resume", "--lr", "0.002", "--max-steps", "6", "--out", str(out), "--cache-dir",
                 str(cache), "--quiet"]) == 0
    assert "resuming with --lr 0.002 (the run had 0.01)" in capsys.readouterr().out
    assert read_checkpoint(out, "latest")[1]["training"]["lr"] == 0.002
    assert main(["train", "--resume", "--data", str(path), "--max-steps", "7", "--out", str(out),
                 "--cache-dir", str(cache), "--quiet"]) == 0                  # the same data may be named
    assert read_checkpoint(out, "latest")[1]["training"]["lr"] == 0.002      # kept by a later resume
    import shutil
    shutil.rmtree(cache)                                          # the cache cleared: made again
    assert main(["train", "--resume", "--max-steps", "8", "--out", str(out), "--quiet"]) == 0
    path.write_text(PTB.replace("cat", "dog") * 2)                # and now the text changed too
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    for folder in (token_files.cache_dir() / "tokens").glob("a.txt-*"):
        shutil.rmtree(folder)
    message = run_error(capsys, "train", "--resume", "--max-steps", "9", "--out", str(out))
    assert message.startswith("rnnkit train: error: cannot resume: the run's train tokens are gone (")
    assert message.endswith(f"'{path}' has changed since the run started, so they cannot be made again; "
                            f"start a new run (--out NEW_DIRECTORY)")
    assert (out / "latest").read_text().strip().endswith("step-00000008")        # nothing lost


def test_old_word_vocabularies_are_refused_clearly():
    with pytest.raises(ValueError, match=r"this word vocabulary has whitespace tokens: it was built by rnnkit "
                                         r"0\.1, whose word level counted spaces"):
        Vocabulary.from_dict({"level": "word", "tokens": ["<unk>", "<start>", "<end>", " ", "\n", "cat"]})


def test_bpe_samples_print_whole_characters(tmp_path, capsys):
    """A byte-level token may end inside a character; the sampler holds it until the character
    is whole, so the stream never prints a replacement character for text the model wrote."""
    from rnnkit.generate import stream

    text = "café crème brûlée, naïve façade; à bientôt — 東京 ✓\n" * 30
    vocab = Vocabulary.build(text, level="bpe", max_size=259)              # bytes alone: é is 2 tokens
    ids = vocab.encode("é")
    assert len(ids) == 2 and vocab.decode(ids[:1]) == "\ufffd"

    class Replay(torch.nn.Module):
        """Always predicts the next id of a fixed script."""

        def __init__(self, script):
            super().__init__()
            self.script, self.position = script, 0
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def initial_state(self, batch_size):
            return torch.zeros(batch_size, 1)

        def forward(self, tokens, state):
            logits = torch.full((1, tokens.shape[1], len(vocab)), -1e9)
            logits[0, -1, self.script[self.position % len(self.script)]] = 0.0
            self.position += 1
            return logits, state

    script = vocab.encode("brûlée 東京")
    pieces = list(stream(Replay(script), vocab, "", length=len(script), greedy=True))
    assert "".join(pieces) == "brûlée 東京" and not any("\ufffd" in p for p in pieces)
