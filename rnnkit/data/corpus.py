"""Where the training text comes from: a file, a directory, standard input, or the default corpus.

:func:`read_text` reads what ``rnnkit train --data`` names and, when it cannot,
says why and what to do instead. :func:`split_train_validation` keeps the last
part of the text for validation, as nanoGPT splits tinyshakespeare.

The default corpus
------------------
With no ``--data``, ``rnnkit train`` learns from :func:`default_corpus`: the
Python source of a fixed list of standard-library modules
(:data:`DEFAULT_CORPUS_MODULES`, about 1.5 MB on Python 3.11). Every Python
installation carries these files, so training works offline, with no download
and no arguments, and the text is real, structured and large enough for a
character model to learn indentation, names and syntax. The modules were chosen
to exist at the same path from CPython 3.10 to 3.13 (pure Python, long-lived;
none of the modules that became packages, such as ``re``, ``zipfile`` or
``pathlib``). Their text still changes with the Python version, so a model
trained on one version's default corpus is not byte-for-byte reproducible on
another; :func:`describe_default_corpus` says which files were read.

>>> text = default_corpus()
>>> 500_000 < len(text) < 3_000_000
True
>>> train, validation = split_train_validation("abcdefghij" * 10)
>>> len(train), len(validation)
(90, 10)
"""
from __future__ import annotations

import math
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import TypeVar, Union

from .._arguments import check_number

__all__ = ["DataNotFoundError", "read_text", "DEFAULT_CORPUS_MODULES", "default_corpus",
           "describe_default_corpus", "split_train_validation"]

# Paths relative to sysconfig.get_paths()["stdlib"], read in this order.
DEFAULT_CORPUS_MODULES = (
    "argparse.py",
    "ast.py",
    "calendar.py",
    "collections/__init__.py",
    "configparser.py",
    "contextlib.py",
    "dataclasses.py",
    "difflib.py",
    "doctest.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "ipaddress.py",
    "logging/__init__.py",
    "pprint.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "traceback.py",
    "typing.py",
    "unittest/case.py",
    "urllib/parse.py",
)

_MIN_DEFAULT_CORPUS = 500_000   # characters; less means a stripped installation
_SNIFF_BYTES = 8192             # NUL bytes in this prefix mark a binary file
_LISTED = 5                     # skipped files named in the warning
_DATA_HINT = "pass --data a UTF-8 text file, a directory of them, or - for standard input"

PathLike = Union[str, os.PathLike]
Sliceable = TypeVar("Sliceable")


class DataNotFoundError(FileNotFoundError, ValueError):
    """The path given as training data does not exist (both a FileNotFoundError and a ValueError)."""


def read_text(source: PathLike) -> str:
    """The text of ``source``: a UTF-8 file, a directory of them, or ``"-"`` for standard input.

    A directory contributes every regular file under it whose name and folders do
    not start with ``"."``, recursively, in order of their path components, joined
    with ``"\\n"``. Its files that are binary or not UTF-8 are skipped with one
    warning; empty ones add nothing. A leading byte-order mark is dropped; line
    endings are kept as they are.

    Every failure is a ValueError (a missing path raises :class:`DataNotFoundError`,
    also a FileNotFoundError) that names the path and what to do:

    >>> read_text("no-such-file.txt")
    Traceback (most recent call last):
    ...
    rnnkit.data.corpus.DataNotFoundError: no such file or directory: 'no-such-file.txt'; pass --data a UTF-8 ...
    """
    if isinstance(source, str) and source == "-":
        return _read_stdin()
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read_text: expected a path or '-', got {type(source).__name__}; {_DATA_HINT}")
    name = os.fspath(source)
    path = Path(source)
    if not path.exists():
        raise DataNotFoundError(f"no such file or directory: '{name}'; {_DATA_HINT}")
    if path.is_dir():
        return _read_directory(path, name)
    return _decode(path.read_bytes(), name)


def _decode(data: bytes, name: str) -> str:
    """``data`` as text, or a ValueError saying why it is not usable text."""
    text, problem = _text_or_problem(data)
    if problem == "empty":
        raise ValueError(f"{name} is empty: there is no text to train on")
    if problem == "binary":
        raise ValueError(f"{name} looks like a binary file (it contains NUL bytes); rnnkit trains on UTF-8 text")
    if problem is not None:
        fix = ("pipe it through iconv -f latin1 -t utf-8" if name == "standard input"
               else f"iconv -f latin1 -t utf-8 {name} > converted.txt")
        raise ValueError(f"{name} is not valid UTF-8 (first bad byte at offset {problem}); convert it, e.g. {fix}")
    return text


def _text_or_problem(data: bytes) -> tuple[str, Union[str, int, None]]:
    """The text (without a byte-order mark) and None, or "" and what is wrong:
    ``"empty"``, ``"binary"`` or the offset of the first byte that is not UTF-8."""
    if b"\0" in data[:_SNIFF_BYTES]:
        return "", "binary"
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        return "", error.start
    return text, (None if text else "empty")


def _read_stdin() -> str:
    stream = sys.stdin
    if stream is None:
        raise ValueError(f"--data - reads standard input, but this process has none; {_DATA_HINT}")
    if getattr(stream, "isatty", lambda: False)():
        raise ValueError("--data - reads standard input, but it is a terminal; pipe the text in, "
                         "e.g. cat book.txt | rnnkit train --data -")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return _decode(buffer.read(), "standard input")
    # A text stream with no bytes underneath (io.StringIO, or a replaced sys.stdin).
    return _decode(stream.read().encode("utf-8", "surrogatepass"), "standard input")


def _read_directory(root: Path, name: str) -> str:
    files = []
    for folder, subfolders, filenames in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files.extend(Path(folder, f) for f in filenames if not f.startswith("."))
    files = sorted((f for f in files if f.is_file()), key=lambda f: f.relative_to(root).parts)

    texts, skipped = [], []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as error:
            skipped.append(f"{file.relative_to(root)} (unreadable: {error.strerror})")
            continue
        text, problem = _text_or_problem(data)
        if problem is None:
            texts.append(text)
        elif problem != "empty":
            reason = "binary" if problem == "binary" else f"not UTF-8 at byte {problem}"
            skipped.append(f"{file.relative_to(root)} ({reason})")

    if skipped:
        listed = ", ".join(skipped[:_LISTED]) + (f" and {len(skipped) - _LISTED} more"
                                                  if len(skipped) > _LISTED else "")
        warnings.warn(f"{name}: skipped {len(skipped)} of {len(files)} files that are not UTF-8 text: "
                      f"{listed}", stacklevel=3)
    if not texts:
        found = (f"none of its {len(files)} files holds UTF-8 text" if files
                 else "it has no files (names starting with '.' are ignored)")
        raise ValueError(f"{name} has no text to train on: {found}; {_DATA_HINT}")
    return "\n".join(texts)


# -- the default corpus ----------------------------------------------------------

def _default_corpus_files() -> tuple[Path, list[str], list[str]]:
    """The stdlib folder, the texts of the listed modules it has, and the ones it lacks."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, missing = [], []
    for relative in DEFAULT_CORPUS_MODULES:
        try:
            texts.append((root / relative).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            missing.append(relative)
    return root, texts, missing


def default_corpus() -> str:
    """The text of :data:`DEFAULT_CORPUS_MODULES`, joined with ``"\\n"`` (see the module docstring).

    Modules this installation lacks are skipped; if what is left is under 500,000
    characters (an installation stripped of its sources), a ValueError asks for ``--data``.
    """
    root, texts, missing = _default_corpus_files()
    text = "\n".join(texts)
    if len(text) < _MIN_DEFAULT_CORPUS:
        raise ValueError(f"the default corpus needs the Python standard library's source files, but "
                         f"{root} has only {len(texts)} of the {len(DEFAULT_CORPUS_MODULES)} listed "
                         f"({len(text):,} characters, fewer than {_MIN_DEFAULT_CORPUS:,}); this Python "
                         f"installation ships without them, so {_DATA_HINT}")
    return text


def describe_default_corpus() -> str:
    """One line: how many files the default corpus has, how many characters, and where they are.

    >>> describe_default_corpus()
    'default corpus: ... Python 3... standard-library files, ... characters, from ...'
    """
    root, texts, missing = _default_corpus_files()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lacking = f" ({len(missing)} listed files missing)" if missing else ""
    characters = sum(map(len, texts)) + max(len(texts) - 1, 0)
    return (f"default corpus: {len(texts)} Python {version} standard-library files{lacking}, "
            f"{characters:,} characters, from {root}")


# -- train / validation split ------------------------------------------------------

def split_train_validation(ids_or_text: Sliceable, validation_fraction: float = 0.1
                           ) -> tuple[Sliceable, Sliceable]:
    """The first ``1 - validation_fraction`` of a text or id sequence, and the rest.

    The training part has ``floor(n * (1 - validation_fraction))`` items, as nanoGPT's
    ``data[:int(n * 0.9)]``; both are slices of the input (a str, list or 1-D tensor),
    and both must hold at least 2 items, one input and one target.

    >>> split_train_validation(list(range(25)), validation_fraction=0.2)
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23, 24])
    """
    check_number("split_train_validation", "validation_fraction", validation_fraction, low=0.0, high=1.0,
                 low_closed=False, high_closed=False, what="a number strictly between 0 and 1",
                 hint="0.1 keeps the last 10% for validation")
    if getattr(ids_or_text, "dim", None) is not None and ids_or_text.dim() != 1:
        raise ValueError(f"split_train_validation: expected a 1-D tensor of token ids, got shape "
                         f"{tuple(ids_or_text.shape)}")
    total = len(ids_or_text)
    # round() first, so that float error (n * 0.7 = 6.9999...) cannot take an item off.
    train_size = math.floor(round(total * (1 - validation_fraction), 6))
    validation_size = total - train_size
    if train_size < 2 or validation_size < 2:
        unit = "characters" if isinstance(ids_or_text, str) else "tokens"
        raise ValueError(f"the corpus has {total} {unit}, too few to split into training and validation "
                         f"parts of at least 2 {unit} each (validation_fraction {validation_fraction} gives "
                         f"{train_size} and {validation_size}); use more text or another validation_fraction")
    return ids_or_text[:train_size], ids_or_text[train_size:]
