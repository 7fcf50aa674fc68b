import io
import json
import re
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rnnkit.data import (DEFAULT_CORPUS_MODULES, ContiguousBatches, DataNotFoundError, Vocabulary,
                         default_corpus, describe_default_corpus, evaluation_batches, read_text,
                         split_train_validation)

CODE = "def f(x):\n    if x:\n\treturn x  # ok\n\n    return -x\r\n"


# -- Vocabulary ------------------------------------------------------------------------

def test_specials_come_first_then_sorted_tokens():
    vocab = Vocabulary.build("banana\n", level="char")
    assert vocab.tokens == ("<unk>", "<start>", "<end>", "\n", "a", "b", "n")
    assert (vocab.unk_id, vocab.start_id, vocab.end_id) == (0, 1, 2)
    assert [vocab.token_to_id(t) for t in ("<unk>", "<start>", "<end>", "\n", "n")] == [0, 1, 2, 3, 6]
    assert vocab.id_to_token(5) == "b" and len(vocab) == 7 and vocab.level == "char"
    assert "a" in vocab and "z" not in vocab and vocab.token_to_id("z") == 0


PTB = " the cat sat \n the <unk> sat on N mats \n\n a cat \n"


def test_word_level_follows_the_penn_treebank_convention():
    """Words split on whitespace, <eos> for every line break (empty lines too), a literal <unk>
    is the unknown word, and the words are ordered by frequency."""
    vocab = Vocabulary.build(PTB, level="word")
    assert vocab.tokenize(PTB) == ["the", "cat", "sat", "<eos>", "the", "<unk>", "sat", "on", "N", "mats",
                                   "<eos>", "<eos>", "a", "cat", "<eos>"]
    assert vocab.tokens[3:] == ("<eos>", "cat", "sat", "the", "N", "a", "mats", "on")
    ids = vocab.encode(PTB)
    assert ids[5] == vocab.unk_id == 0 and "<unk>" not in vocab.tokens[3:]
    assert len(ids) == 11 + 4                                 # 11 words + 4 lines
    assert vocab.decode(ids) == "the cat sat\nthe <unk> sat on N mats\n\na cat\n"
    assert vocab.encode("the\r\ndog") == [vocab.token_to_id("the"), vocab.token_to_id("<eos>"), 0]
    assert vocab.line_end_id == vocab.token_to_id("<eos>")


@pytest.mark.parametrize("level", ["char", "bpe"])
def test_decode_inverts_encode_on_code(level):
    vocab = Vocabulary.build(CODE * 20, level=level, max_size=300 if level == "bpe" else None)
    ids = vocab.encode(CODE)
    assert vocab.decode(ids) == CODE
    assert vocab.decode(torch.tensor(ids)) == CODE
    assert min(ids) >= 3


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=200), level=st.sampled_from(["char", "word"]))
@example(text=" ", level="word")
@example(text="<unk>\n", level="word")
def test_round_trip_on_random_text(text, level):
    if level == "word" and "\n" not in text and all(w in ("<unk>", "<start>", "<end>") for w in text.split()):
        with pytest.raises(ValueError, match="^Vocabulary.build: the text has no words"):
            Vocabulary.build(text, level=level)
        return
    vocab = Vocabulary.build(text, level=level)
    tokens = vocab.tokenize(text)
    if level == "char":
        assert "".join(tokens) == text
        assert vocab.decode(vocab.encode(text, strict=True)) == text
    else:                       # every word survives (specials as <unk>), spaces collapse to one
        tokens = vocab.tokenize(text)
        known = [t if t in vocab.tokens[3:] else "<unk>" for t in tokens]
        assert [vocab.id_to_token(i) for i in vocab.encode(text)] == known
        assert vocab.decode(vocab.encode(text)).split() == [t for t in known if t != "<eos>"]
    assert vocab.encode_array(text).tolist() == vocab.encode(text)
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab


def test_unknown_tokens_and_specials_decode():
    vocab = Vocabulary.build("abc")
    assert vocab.encode("a?b") == [3, 0, 4]
    assert vocab.decode([1, 3, 0, 4, 2]) == "a<unk>b"
    with pytest.raises(ValueError, match=r"token id 6 is out of range; this vocabulary has ids 0 to 5"):
        vocab.decode([3, 6])
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([-1])
    with pytest.raises(TypeError, match="integer token ids"):
        vocab.decode([1.0])


def test_strict_encode_names_unknown_tokens():
    chars = Vocabulary.build("".join(chr(c) for c in range(32, 97)))
    assert len(chars) == 65 + 3
    message = "prime text contains characters not in the vocabulary: 'é', '€'; the model knows 65 characters"
    with pytest.raises(ValueError, match=re.escape(message)):
        chars.encode("CAFé €é", strict=True)
    words = Vocabulary.build("the cat sat", level="word")
    with pytest.raises(ValueError, match=r"^--prime contains words not in the vocabulary: 'dog'; "
                                         r"the model knows 3 words$"):
        words.encode("the dog sat", strict=True, what="--prime")
    with pytest.raises(ValueError, match=r": 'b', 'c', .* 'j', 'k' and 2 more; the model knows 1 characters"):
        Vocabulary.build("a").encode("bcdefghijklmab", strict=True)


def test_build_options_and_errors():
    assert Vocabulary.build("aaabbc", min_count=2).tokens[3:] == ("a", "b")
    assert Vocabulary.build("aaabbc", max_size=4).tokens[3:] == ("a",)
    assert Vocabulary.build("cbbaaa", max_size=5).tokens[3:] == ("a", "b")
    with pytest.raises(ValueError, match=r"level must be one of 'char', 'word', 'bpe', got 'byte'"):
        Vocabulary.build("abc", level="byte")
    with pytest.raises(ValueError, match=re.escape("Vocabulary.build: max_size must be an integer >= 4, got 3; "
                                                   "max_size counts the 3 specials")):
        Vocabulary.build("abc", max_size=3)
    with pytest.raises(ValueError, match="no token occurs at least min_count=9 times in the 3 tokens"):
        Vocabulary.build("abc", min_count=9)
    with pytest.raises(ValueError, match="the text is empty"):
        Vocabulary.build("")
    with pytest.raises(ValueError, match="must be unique"):
        Vocabulary(["a", "a"])


def test_save_load_and_dict_checks(tmp_path):
    vocab = Vocabulary.build("héllo wörld\n  ok", level="word")
    assert vocab.tokens[3:] == ("<eos>", "héllo", "ok", "wörld")
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"level": "word", "tokens": list(vocab.tokens)}
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.level == "word" and loaded.tokens == vocab.tokens
    with pytest.raises(ValueError, match=r"unknown \['size'\] and missing \[\]"):
        Vocabulary.from_dict({**vocab.to_dict(), "size": 9})
    with pytest.raises(ValueError, match="starting with the specials"):
        Vocabulary.from_dict({"level": "char", "tokens": ["a", "b"]})
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="is not a vocabulary JSON file"):
        Vocabulary.load(path)


# -- read_text ------------------------------------------------------------------------

def test_read_text_file_keeps_text_exactly(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffline one\r\n  two é\n".encode("utf-8"))
    assert read_text(path) == "line one\r\n  two é\n"
    assert read_text(str(path)) == "line one\r\n  two é\n"


def test_read_text_directory_sorted_recursive_skipping(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two")
    (tmp_path / "b" / "1.txt").write_text("one")
    (tmp_path / "a.txt").write_text("zero")
    (tmp_path / "b-c.txt").write_text("three")        # sorts after folder b by path components
    (tmp_path / ".hidden").write_text("no")
    (tmp_path / ".git" / "HEAD").write_text("no")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "image.bin").write_bytes(b"PNG\0\0\x01")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.warns(UserWarning) as caught:
        text = read_text(tmp_path)
    assert text == "zero\none\ntwo\nthree"
    assert len(caught) == 1
    assert str(caught[0].message) == (f"{tmp_path}: skipped 2 of 7 files that are not UTF-8 text: "
                                      f"image.bin (binary), latin.txt (not UTF-8 at byte 3)")


def test_read_text_directory_without_text(tmp_path):
    with pytest.raises(ValueError, match=r"has no text to train on: it has no files"):
        read_text(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="skipped 1 of 1 files"):
        with pytest.raises(ValueError, match=r"none of its 1 files holds UTF-8 text"):
            read_text(tmp_path)


def test_read_text_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("from a pipe\n"))
    assert read_text("-") == "from a pipe\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("bytes é\n".encode())))
    assert read_text("-") == "bytes é\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(ValueError, match="^standard input is empty: there is no text to train on$"):
        read_text("-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ab\xff")))
    with pytest.raises(ValueError, match=r"^standard input is not valid UTF-8 \(first bad byte at offset 2\)"):
        read_text("-")


def test_read_text_error_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = ("no such file or directory: 'x.txt'; pass --data a UTF-8 text file, a directory of them, "
               "or - for standard input")
    with pytest.raises(DataNotFoundError, match=f"^{re.escape(message)}$") as missing:
        read_text("x.txt")
    assert isinstance(missing.value, ValueError) and isinstance(missing.value, FileNotFoundError)

    Path("x.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="^x.txt is empty: there is no text to train on$"):
        read_text("x.txt")

    Path("x.bin").write_bytes(b"text" + b"\0" * 4 + b"more")
    with pytest.raises(ValueError, match=re.escape(
            "x.bin looks like a binary file (it contains NUL bytes); rnnkit trains on UTF-8 text")):
        read_text("x.bin")

    Path("x.txt").write_bytes(b"a" * 1234 + "é".encode("latin-1") + b"tail")
    with pytest.raises(ValueError, match=re.escape(
            "x.txt is not valid UTF-8 (first bad byte at offset 1234); convert it, e.g. iconv -f latin1 -t utf-8")):
        read_text("x.txt")

    with pytest.raises(TypeError, match="expected a path or '-', got int"):
        read_text(3)


# -- default corpus and split ---------------------------------------------------------------

def test_default_corpus_is_every_listed_module_and_deterministic():
    root = Path(sysconfig.get_paths()["stdlib"])
    assert [m for m in DEFAULT_CORPUS_MODULES if not (root / m).is_file()] == []
    assert len(set(DEFAULT_CORPUS_MODULES)) == len(DEFAULT_CORPUS_MODULES)
    text = default_corpus()
    assert 500_000 < len(text.encode("utf-8")) < 3_000_000
    assert text == default_corpus()
    assert text.startswith((root / DEFAULT_CORPUS_MODULES[0]).read_text(encoding="utf-8"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert describe_default_corpus() == (f"default corpus: {len(DEFAULT_CORPUS_MODULES)} Python {version} "
                                         f"standard-library files, {len(text):,} characters, from {root}")


def test_default_corpus_refuses_a_stripped_installation(monkeypatch, tmp_path):
    (tmp_path / "argparse.py").write_text("import sys\n")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    with pytest.raises(ValueError, match=rf"has only 1 of the {len(DEFAULT_CORPUS_MODULES)} listed "
                                         rf"\(11 characters, fewer than 500,000\).*pass --data"):
        default_corpus()
    assert "1 Python" in describe_default_corpus()
    assert f"({len(DEFAULT_CORPUS_MODULES) - 1} listed files missing)" in describe_default_corpus()


def test_split_sizes():
    train, validation = split_train_validation(torch.arange(1000))
    assert (len(train), len(validation)) == (900, 100)
    assert torch.equal(torch.cat([train, validation]), torch.arange(1000))
    assert split_train_validation("abcdefghij", validation_fraction=0.3) == ("abcdefg", "hij")
    assert [len(p) for p in split_train_validation(list(range(21)))] == [18, 3]   # int(21 * 0.9) = 18
    with pytest.raises(ValueError, match=r"^the corpus has 5 characters, too few .* gives 4 and 1\)"):
        split_train_validation("x" * 5)
    with pytest.raises(ValueError, match=r"^the corpus has 3 tokens, too few"):
        split_train_validation([1, 2, 3], validation_fraction=0.5)
    with pytest.raises(ValueError, match=r"strictly between 0 and 1, got 1.0"):
        split_train_validation("x" * 100, validation_fraction=1.0)
    with pytest.raises(ValueError, match=r"got 0"):
        split_train_validation("x" * 100, validation_fraction=0)


# -- batching -----------------------------------------------------------------------------

def _stream_chunks(batches):
    """Per row, the concatenation of its inputs and of its targets over one epoch."""
    chunks = list(batches)
    return torch.cat([x for x, _ in chunks], dim=1), torch.cat([y for _, y in chunks], dim=1), chunks


@pytest.mark.parametrize("length, batch_size, truncation", [(1000, 4, 35), (101, 5, 20), (17, 16, 3)])
def test_chunks_concatenate_to_contiguous_slices(length, batch_size, truncation):
    ids = torch.randint(0, 50, (length,))
    batches = ContiguousBatches(ids, batch_size, truncation)
    stream_length = (length - 1) // batch_size
    assert batches.stream_length == stream_length
    assert len(batches) == -(-stream_length // truncation)
    assert batches.tokens_per_epoch == batch_size * stream_length
    inputs, targets, chunks = _stream_chunks(batches)
    assert all(x.shape == y.shape and x.dtype == torch.int64 for x, y in chunks)
    assert [x.shape[1] for x, _ in chunks[:-1]] == [truncation] * (len(chunks) - 1)
    for b in range(batch_size):
        assert torch.equal(inputs[b], ids[b * stream_length:(b + 1) * stream_length])
        assert torch.equal(targets[b], ids[b * stream_length + 1:(b + 1) * stream_length + 1])


def test_every_pair_is_an_example_once():
    ids = torch.arange(103)
    inputs, targets, _ = _stream_chunks(ContiguousBatches(ids, 4, 7))
    assert torch.equal(targets - inputs, torch.ones_like(inputs))
    assert sorted(inputs.reshape(-1).tolist()) == list(range(4 * 25))      # 102 // 4 = 25


def test_two_processes_cover_the_streams_of_one():
    ids = torch.randint(0, 30, (500,))
    single = list(ContiguousBatches(ids, batch_size=6, truncation=9))
    ranks = [list(ContiguousBatches(ids, batch_size=3, truncation=9, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 10               # 499 // 6 = 83 = 9 * 9 + 2
    for k, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), x)
        assert torch.equal(torch.cat([ranks[0][k][1], ranks[1][k][1]]), y)


def test_resume_mid_epoch_and_epoch_rollover():
    ids = torch.randint(0, 30, (400,))
    batches = ContiguousBatches(ids, 3, 10)
    assert len(batches) == 14                                                 # 399 // 3 = 133
    reference = list(batches)
    assert batches.state_dict() == {"epoch": 1, "chunk": 0}
    iterator = iter(batches)
    for _ in range(5):
        next(iterator)
    state = batches.state_dict()
    assert state == {"epoch": 1, "chunk": 5}
    resumed = ContiguousBatches(ids, 3, 10)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    rest = list(resumed)
    assert len(rest) == 9
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, reference[5:]))
    assert resumed.state_dict() == {"epoch": 2, "chunk": 0}
    # A position saved after an epoch's last chunk begins the next epoch.
    resumed.load_state_dict({"epoch": 2, "chunk": 14})
    first = next(iter(resumed))
    assert torch.equal(first[0], reference[0][0]) and resumed.state_dict() == {"epoch": 3, "chunk": 1}
    with pytest.raises(ValueError, match="chunk 15 is past the 14 chunks of an epoch"):
        resumed.load_state_dict({"epoch": 0, "chunk": 15})
    with pytest.raises(ValueError, match=r"keys 'epoch' and 'chunk', got \['chunk', 'epoch', 'step'\]"):
        resumed.load_state_dict({"epoch": 0, "chunk": 1, "step": 3})


def test_too_short_corpus_and_bad_arguments():
    message = ("the corpus has 50 tokens, too few for 64 streams (batch_size 64 × 1 process) of at least "
               "2 tokens each; use a smaller --batch-size or more text")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ContiguousBatches(torch.arange(50), batch_size=64, truncation=35)
    with pytest.raises(ValueError, match=re.escape("64 streams (batch_size 32 × 2 processes)")):
        ContiguousBatches(torch.arange(64), batch_size=32, truncation=35, rank=1, world_size=2)
    assert ContiguousBatches(torch.arange(65), batch_size=64, truncation=35).stream_length == 1
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0; pass --batch-size"):
        ContiguousBatches(torch.arange(50), batch_size=0, truncation=35)
    with pytest.raises(TypeError, match=r"truncation must be an int, got float"):
        ContiguousBatches(torch.arange(50), batch_size=2, truncation=3.5)
    with pytest.raises(ValueError, match=re.escape("rank must be an integer in [0, 1], got 2; world_size is 2")):
        ContiguousBatches(torch.arange(50), batch_size=2, truncation=3, rank=2, world_size=2)
    with pytest.raises(TypeError, match="got dtype torch.float32"):
        ContiguousBatches(torch.rand(50), batch_size=2, truncation=3)
    with pytest.raises(ValueError, match=r"got shape \(5, 10\)"):
        ContiguousBatches(torch.arange(50).view(5, 10), batch_size=2, truncation=3)


def test_evaluation_batches_fit_a_small_validation_set():
    batches = evaluation_batches(list(range(40)), batch_size=64, truncation=8)
    assert (batches.batch_size, batches.stream_length, len(batches), batches.tokens_per_epoch) == (39, 1, 1, 39)
    big = evaluation_batches(torch.arange(1001), batch_size=10, truncation=30)
    inputs, targets, _ = _stream_chunks(big)
    assert torch.equal(inputs.reshape(-1), torch.arange(1000))
    assert torch.equal(targets, inputs + 1)
    with pytest.raises(ValueError, match="the validation set has 1 tokens"):
        evaluation_batches(torch.arange(1), batch_size=4, truncation=8)
