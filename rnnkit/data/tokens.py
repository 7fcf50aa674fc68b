r"""Token files: a corpus tokenized once, read in place by every step that needs it.

A token file is a folder::

    tokens.bin    the ids, little-endian uint8 / uint16 / uint32 (the smallest that holds the vocabulary)
    vocab.json    the vocabulary (for BPE: the trained tokenizer)
    meta.json     format, id type, token count, the parts (train / validation / test: token ranges
                  and their character counts), the options, and a fingerprint of the source

:func:`prepare` writes one from a file, a directory of text files, standard input or
the default corpus. It reads the source in blocks of 16 MiB, three times at most
(check and hash, count the vocabulary of the training part, encode), so that its
memory does not grow with the corpus; the folder is written under a temporary name
and renamed into place, so a kill leaves no half file. :class:`TokenFile` opens it as
a read-only memory map: nothing ever holds the text or an int64 copy of the corpus,
and a process touches only the pages it reads (a data-parallel rank, its own shard).

**Splits.** The source is cut into consecutive parts by fractions of its bytes,
train first: ``train | validation | test``. A cut is moved forward to the next
character (char level) or the next line (word and BPE level), so that no word is
cut in two. The vocabulary is built from the training part alone: the validation
and test texts are never used for any choice, and a token they have that the
training text lacks is ``<unk>``. A separate test text (``rnnkit train --test-data``)
becomes its own token file with the training vocabulary.

**The cache.** ``rnnkit train --data PATH`` looks for a token file of the same source
(by content) and options in the cache folder — ``$RNNKIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit`` — and prepares one on first
use. A source whose size and modification time are unchanged is not even read again.
Delete the cache folder at any time; a run whose token file is gone prepares it again
from its source, if that source is unchanged.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "poem.txt").write_text("the cat sat\nthe dog sat\n" * 50)
1200
>>> tokens = prepare(folder / "poem.txt", level="word", split=(("train", 0.8), ("validation", 0.2)),
...                  out=folder / "poem.tokens", progress=False)
>>> tokens.dtype.name, len(tokens), tokens.vocab.tokens[3:]
('uint8', 400, ('<eos>', 'sat', 'the', 'cat', 'dog'))
>>> tokens.parts["validation"].tokens[:4].tolist()
[5, 6, 4, 3]
>>> tokens.vocab.decode(tokens.parts["validation"].tokens[:8])
'the cat sat\nthe dog sat\n'
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .._arguments import check_number
from .._files import cache_root, umask_mode, write_text_atomic
from .._version import __version__
from .corpus import _DATA_HINT, DEFAULT_CORPUS_MODULES, DataNotFoundError, _default_corpus_files, default_corpus
from .sources import BLOCK, Source, progress_bar, text_blocks
from .vocab import LEVELS, Vocabulary

__all__ = ["TokenFile", "TokenSplit", "prepare", "cache_dir", "is_token_file", "Source", "open_source",
           "TokenFileError", "id_dtype"]

FORMAT, VERSION = "rnnkit-tokens", 1
PathLike = Union[str, os.PathLike]


class TokenFileError(ValueError):
    """A token file that is missing, foreign, stale or damaged; the message says which and what to do."""


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"a vocabulary of {vocab_size:,} tokens does not fit the largest token id type "
                     f"(uint32, {2 ** 32:,} ids); pass a smaller --max-vocab")


def cache_dir(override: Optional[PathLike] = None) -> Path:
    """Where prepared token files are kept (see the module docstring)."""
    return Path(override) if override is not None else cache_root()


def open_source(data: Optional[PathLike], spool_dir: Optional[Path] = None) -> Source:
    """The :class:`Source` that ``--data`` names: a file, a directory, ``"-"`` (standard input,
    copied in blocks into ``spool_dir``) or None (the default corpus). Nothing is read yet but
    standard input."""
    if data is None:
        default_corpus()                    # refuses an installation stripped of its sources
        root, _, missing = _default_corpus_files()
        files = [root / m for m in DEFAULT_CORPUS_MODULES if m not in missing]
        return Source("default", "the default corpus", root, files)
    if isinstance(data, str) and data == "-":
        return _spool_stdin(spool_dir or cache_dir())
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"expected a path or '-', got {type(data).__name__}; {_DATA_HINT}")
    name, path = os.fspath(data), Path(data)
    if not path.exists():
        raise DataNotFoundError(f"no such file or directory: '{name}'; {_DATA_HINT}")
    path = path.resolve()
    if is_token_file(path):
        raise ValueError(f"'{name}' is a token file already, not text to tokenize; pass it to rnnkit train "
                         f"--data as it is")
    if path.is_dir():
        files = []
        for folder, subfolders, filenames in os.walk(path):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            files.extend(Path(folder, f) for f in filenames if not f.startswith("."))
        files = sorted((f for f in files if f.is_file()), key=lambda f: f.relative_to(path).parts)
        return Source("directory", name, path, files)
    return Source("file", name, path, [path])


def _spool_stdin(folder: Path) -> Source:
    stream = sys.stdin
    if stream is None:
        raise ValueError(f"--data - reads standard input, but this process has none; {_DATA_HINT}")
    if getattr(stream, "isatty", lambda: False)():
        raise ValueError("--data - reads standard input, but it is a terminal; pipe the text in, "
                         "e.g. cat book.txt | rnnkit train --data -")
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=".stdin-", suffix=".txt")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                shutil.copyfileobj(buffer, out, BLOCK)
            else:                                   # a text stream with no bytes underneath
                while chunk := stream.read(BLOCK):
                    out.write(chunk.encode("utf-8", "surrogatepass"))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Source("stdin", "-", None, [path], spooled=path)


# -- token files -----------------------------------------------------------------------------

@dataclass
class TokenSplit:
    """One part of a token file: its ids (a read-only memory map), the id that precedes it
    (``context``: the last token of the part before, or ``<eos>`` at the start of a word-level
    text; None when there is nothing to predict its first token from), and the characters of
    its text (for bits per character)."""

    name: str
    tokens: np.ndarray
    context: Optional[int]
    characters: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def predictions(self) -> int:
        """How many of its tokens an evaluation predicts: all, when there is a context."""
        return len(self.tokens) - (self.context is None)


class TokenFile:
    """A prepared token file (see the module docstring), opened read-only.

    Raises :class:`TokenFileError` for a folder that is not one, was written by a newer
    rnnkit, or whose ids or vocabulary do not match its record.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenFileError(f"'{self.path}' is not an rnnkit token file (it has no meta.json); make "
                                 f"one with: rnnkit prepare --data TEXT --out {self.path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TokenFileError(f"'{meta_path}' is damaged (not JSON); delete '{self.path}' and prepare "
                                 f"it again") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TokenFileError(f"'{self.path}' is not an rnnkit token file (its meta.json has no "
                                 f"format '{FORMAT}'); make one with: rnnkit prepare --data TEXT")
        if meta.get("version", 0) > VERSION:
            raise TokenFileError(f"'{self.path}' was written by a newer rnnkit (token format "
                                 f"{meta.get('version')}; this one reads {VERSION}); upgrade rnnkit or "
                                 f"prepare it again")
        self.meta = meta
        try:
            self.vocab = Vocabulary.load(self.path / "vocab.json")
        except (FileNotFoundError, ValueError, TypeError) as error:
            raise TokenFileError(f"'{self.path}': its vocabulary cannot be read ({error}); prepare the "
                                 f"token file again") from None
        if self.vocab.fingerprint() != meta["vocabulary"]:
            raise TokenFileError(f"'{self.path}': its vocab.json is not the vocabulary its ids were made "
                                 f"with; delete the folder and prepare it again")
        dtype = np.dtype(meta["dtype"])
        if len(self.vocab) > np.iinfo(dtype).max + 1:
            raise TokenFileError(f"'{self.path}': its vocabulary of {len(self.vocab):,} tokens does not fit "
                                 f"its {dtype} ids; the file is damaged, prepare it again")
        bin_path = self.path / "tokens.bin"
        expected = meta["count"] * dtype.itemsize
        actual = bin_path.stat().st_size if bin_path.exists() else None
        if actual != expected:
            raise TokenFileError(f"'{bin_path}' holds {actual if actual is not None else 'no'} bytes where "
                                 f"{expected:,} were written: it is truncated or altered; delete "
                                 f"'{self.path}' and prepare it again")
        self.dtype = dtype
        self.tokens = (np.memmap(bin_path, dtype=dtype.newbyteorder("<"), mode="r", shape=(meta["count"],))
                       if meta["count"] else np.zeros(0, dtype=dtype))

    # -- what it holds ----------------------------------------------------------------

    @property
    def id(self) -> str:
        """A fingerprint of the contents (source, options, vocabulary)."""
        return self.meta["id"]

    @property
    def level(self) -> str:
        return self.vocab.level

    @property
    def source(self) -> dict:
        return self.meta["source"]

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def parts(self) -> dict:
        """``{name: TokenSplit}`` in file order."""
        out, line_end = {}, self.vocab.line_end_id
        for name, part in self.meta["parts"].items():
            start, stop = part["start"], part["stop"]
            if start > 0:
                context = int(self.tokens[start - 1])
            else:
                context = line_end if self.level == "word" else None
            out[name] = TokenSplit(name, self.tokens[start:stop], context, part["characters"])
        return out

    def describe(self) -> str:
        counts = ", ".join(f"{len(p):,} {name}" for name, p in self.parts.items())
        return (f"{len(self):,} {self.level} tokens ({counts}) of {len(self.vocab):,} kinds, "
                f"{self.dtype.name} ids, from {self.meta['source']['name']}")

    def __repr__(self) -> str:
        return f"TokenFile('{self.path}': {self.describe()})"


def is_token_file(path: PathLike) -> bool:
    """True when ``path`` is a folder with a ``meta.json`` (a token file, or a damaged one)."""
    path = Path(path)
    return path.is_dir() and (path / "meta.json").is_file()


# -- preparing -------------------------------------------------------------------------

def _check_split(split) -> tuple:
    if not split or not all(isinstance(p, tuple) and len(p) == 2 for p in split):
        raise ValueError(f"split must be ((name, fraction), ...), got {split!r}")
    names = [name for name, _ in split]
    if len(set(names)) != len(names):
        raise ValueError(f"split: part names must differ, got {names}")
    for name, fraction in split:
        check_number("split", f"the fraction of '{name}'", fraction, low=0.0, high=1.0, low_closed=False)
    if abs(sum(f for _, f in split) - 1) > 1e-9:
        raise ValueError(f"split: the fractions must add up to 1, got {[f for _, f in split]}")
    return tuple((str(n), float(f)) for n, f in split)


def prepare(data: Optional[PathLike], *, level: str = "char",
            split: Sequence = (("train", 0.9), ("validation", 0.1)), min_count: int = 1,
            max_vocab: Optional[int] = None, vocab: Optional[Vocabulary] = None,
            out: Optional[PathLike] = None, cache: Optional[PathLike] = None,
            progress: bool = True) -> TokenFile:
    """The token file of ``data`` (a file, a directory, ``"-"``, or None for the default corpus).

    ``split`` names the parts and their fractions of the source's bytes, in order. The
    vocabulary is built from the first part (``min_count``, ``max_vocab``: see
    :meth:`Vocabulary.build`) unless ``vocab`` is given, as it is for a test text that a
    trained model is measured on. With ``out`` the token file is written there (and reused
    if it already holds this one); otherwise it lives in the cache (:func:`cache_dir`),
    where it is found again while the source is unchanged.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    if vocab is not None and vocab.level != level:
        raise ValueError(f"the vocabulary is {vocab.level}-level but level {level!r} was asked for")
    split = _check_split(split)
    options = {"level": level, "split": [list(p) for p in split],
               "min_count": None if vocab is not None else min_count,
               "max_vocab": None if vocab is not None else max_vocab,
               "vocabulary": vocab.fingerprint() if vocab is not None else None}
    root = cache_dir(cache)
    tokens_root = root / "tokens"
    source = open_source(data, spool_dir=tokens_root)
    try:
        return _prepare(source, options, split, min_count, max_vocab, vocab,
                        Path(out) if out is not None else None, tokens_root, progress)
    finally:
        source.close()


def _options_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True)


def _prepare(source: Source, options, split, min_count, max_vocab, vocab, out, tokens_root, progress):
    record = None
    if out is None and source.kind != "stdin":
        # unchanged stats: the token file made last time is the answer, without reading the source
        key = hashlib.sha1(f"{source.path}\n{_options_key(options)}".encode()).hexdigest()[:24]
        record = tokens_root / "sources" / f"{key}.json"
        stats = source.stats()
        try:
            seen = json.loads(record.read_text())
            if seen["stats"] == stats and is_token_file(tokens_root / seen["folder"]):
                found = TokenFile(tokens_root / seen["folder"])
                if found.meta["source"]["sha1"] == seen["sha1"]:
                    return found
        except (OSError, ValueError, KeyError, TypeError):
            pass
    source.check(progress)
    identity = hashlib.sha1(f"{FORMAT} {VERSION}\n{source.sha1}\n{_options_key(options)}".encode()).hexdigest()
    if out is None:
        stem = "stdin" if source.kind == "stdin" else "default" if source.kind == "default" else \
            "".join(c if c.isalnum() or c in "-_." else "_" for c in source.path.name)[:40]
        target = tokens_root / f"{stem}-{options['level']}-{identity[:16]}"
    else:
        target = out
    if is_token_file(target):
        existing = TokenFile(target)
        if existing.id != identity:
            raise TokenFileError(f"'{target}' already holds a token file of another source or other options "
                                 f"({existing.describe()}); pass another --out or delete it")
        result = existing
    elif target.exists() and any(target.iterdir()):
        raise TokenFileError(f"'{target}' exists and is not a token file; pass --out a new folder")
    else:
        result = _write(source, options, split, min_count, max_vocab, vocab, target, identity, progress)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(record, json.dumps({"stats": source.stats(), "sha1": source.sha1,
                                              "folder": target.name}, indent=1))
    return result


def _cuts(source: Source, split, level: str) -> list:
    """Byte offsets of the parts, each cut moved to the next character or line start."""
    size, cuts, acc = source.size, [0], 0.0
    for _, fraction in split[:-1]:
        acc += fraction
        position = max(math.floor(round(size * acc, 6)), cuts[-1])
        if level == "char":
            while position < size and (source.byte_at(position) & 0xC0) == 0x80:
                position += 1
        elif position > 0 and source.byte_at(position - 1) != ord("\n"):
            position = source.find_newline(position)
        cuts.append(position)
    cuts.append(size)
    return cuts


def _write(source: Source, options, split, min_count, max_vocab, vocab, target: Path, identity: str,
           progress: bool) -> TokenFile:
    level = options["level"]
    started = time.perf_counter()
    cuts = _cuts(source, split, level)
    for (name, _), lo, hi in zip(split, cuts, cuts[1:]):
        if hi <= lo:
            what = "line" if level != "char" else "character"
            raise ValueError(f"the {name} part of {source.describe()} is empty: {source.size:,} bytes "
                             f"cut at {cuts[1:-1]} leave it no {what}; use more text or a larger "
                             f"fraction for it")
    if vocab is None:
        with progress_bar(progress, cuts[1], "vocabulary") as bar:
            vocab = Vocabulary.from_blocks(text_blocks(source, 0, cuts[1], level, bar), level,
                                           min_count, max_vocab)
    dtype = id_dtype(len(vocab))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    umask_mode(staging, directory=True)
    try:
        parts, count = {}, 0
        with open(staging / "tokens.bin", "wb") as handle, progress_bar(progress, source.size, "tokenizing") as bar:
            for (name, _), lo, hi in zip(split, cuts, cuts[1:]):
                start, characters, pending = count, 0, None
                for block in text_blocks(source, lo, hi, level, bar):
                    if pending is not None:     # the last block of a part closes its last line
                        count += _emit(handle, vocab, pending, False, dtype)
                    characters += len(block)
                    pending = block
                if pending is not None:
                    count += _emit(handle, vocab, pending, True, dtype)
                if count == start:
                    raise ValueError(f"the {name} part of {source.describe()} holds no {level} tokens "
                                     f"(only whitespace?); use more text or a larger fraction for it")
                parts[name] = {"start": start, "stop": count, "characters": characters, "bytes": hi - lo}
            handle.flush()
            os.fsync(handle.fileno())
        vocab.save(staging / "vocab.json")
        meta = {"format": FORMAT, "version": VERSION, "id": identity, "dtype": dtype.name, "count": count,
                "vocabulary": vocab.fingerprint(), "vocabulary_size": len(vocab), "parts": parts,
                "options": options,
                "source": {"kind": source.kind, "name": source.name,
                           "path": None if source.path is None else str(source.path),
                           "sha1": source.sha1, "bytes": source.size,
                           "files": len(source.pieces)},
                "seconds": round(time.perf_counter() - started, 3), "rnnkit_version": __version__}
        write_text_atomic(staging / "meta.json", json.dumps(meta, indent=1))
        try:
            os.replace(staging, target)
        except OSError:
            if not is_token_file(target):       # not a concurrent twin that got there first
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise ValueError(f"no space left on the device while writing tokens to '{target.parent}'; free "
                             f"some, or point RNNKIT_CACHE_DIR (or --cache-dir) at a disk with room") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TokenFile(target)


def _emit(handle, vocab: Vocabulary, text: str, close_line: bool, dtype) -> int:
    ids = vocab.encode_array(text, close_line=close_line, dtype=dtype)
    ids.astype(dtype.newbyteorder("<"), copy=False).tofile(handle)
    return len(ids)
