"""Where a corpus comes from: a file, a directory of text files, standard input or the default
corpus, as one :class:`Source` read in blocks of bytes (checked for UTF-8 and hashed as it goes),
and the text of a byte range of it, cut where no character or line is split (:func:`text_blocks`)."""
from __future__ import annotations

import codecs
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

from .corpus import _DATA_HINT, _SNIFF_BYTES
from .vocab import safe_cut

__all__ = ["Source", "text_blocks", "progress_bar", "BLOCK"]

BLOCK = 1 << 24                          # bytes read at a time
_BOM = b"\xef\xbb\xbf"
_LISTED = 5
PathLike = Union[str, os.PathLike]


@dataclass
class _Piece:
    path: Path
    start: int          # first byte of text (after a byte-order mark)
    stop: int           # file size


@dataclass
class Source:
    """What ``--data`` names, as the byte stream its text files make when joined with ``"\\n"``."""

    kind: str                     # "file" | "directory" | "stdin" | "default"
    name: str                     # as the user wrote it ("-" for standard input)
    path: Optional[Path]          # absolute; None for standard input
    files: list                   # the candidate files, in reading order
    pieces: Optional[list] = None  # after check(): the files that hold text, without byte-order marks
    sha1: Optional[str] = None
    spooled: Optional[Path] = None  # standard input, saved to a temporary file

    @property
    def size(self) -> int:
        """Bytes of the joined text (after :meth:`check`)."""
        return sum(p.stop - p.start for p in self.pieces) + max(len(self.pieces) - 1, 0)

    def stats(self) -> list:
        """``[name, size, mtime_ns]`` of every file: unchanged stats mean unchanged text."""
        out = []
        for file in self.files:
            info = file.stat()
            out.append([str(file), info.st_size, info.st_mtime_ns])
        return out

    def describe(self) -> str:
        if self.kind == "stdin":
            return "standard input"
        if self.kind == "default":
            return f"the default corpus ({len(self.files)} Python standard-library files)"
        if self.kind == "directory":
            return f"'{self.name}' ({len(self.pieces or self.files)} files)"
        return f"'{self.name}'"

    def check(self, progress: bool = False) -> None:
        """Read every file once: hash it, check that it is UTF-8 text, drop byte-order marks.
        A directory skips (with one warning) the files that are not text; a single file that
        is not raises the reason."""
        digests, pieces, skipped = [], [], []
        total = sum(f.stat().st_size for f in self.files)
        with progress_bar(progress, total, "reading") as bar:
            for file in self.files:
                shown = self.name if self.kind in ("file", "stdin") else str(file)
                digest = hashlib.sha1()
                try:
                    piece, problem = _check_file(file, digest, bar)
                except OSError as error:
                    piece, problem = None, f"unreadable: {error.strerror}"
                if problem is None and piece.stop > piece.start:
                    pieces.append(piece)
                    digests.append(digest.hexdigest())
                    continue
                if self.kind in ("file", "stdin"):
                    raise ValueError(_problem_message(shown if self.kind == "file" else "standard input",
                                                      "empty" if problem is None else problem))
                if problem is not None:
                    skipped.append(f"{file.relative_to(self.path) if self.kind == 'directory' else file} "
                                   f"({problem})")
        if skipped:
            listed = ", ".join(skipped[:_LISTED]) + (f" and {len(skipped) - _LISTED} more"
                                                      if len(skipped) > _LISTED else "")
            warnings.warn(f"{self.name}: skipped {len(skipped)} of {len(self.files)} files that are not "
                          f"UTF-8 text: {listed}", stacklevel=3)
        if not pieces:
            if self.kind == "default":
                raise ValueError(f"the default corpus has no readable files; {_DATA_HINT}")
            found = (f"none of its {len(self.files)} files holds UTF-8 text" if self.files
                     else "it has no files (names starting with '.' are ignored)")
            raise ValueError(f"{self.name} has no text to train on: {found}; {_DATA_HINT}")
        # one file: its hash; several: the hash of their hashes in reading order
        self.pieces = pieces
        self.sha1 = digests[0] if len(pieces) == 1 and self.kind != "directory" else \
            hashlib.sha1("\n".join(digests).encode()).hexdigest()

    def read(self, start: int, stop: int) -> Iterator[bytes]:
        """The bytes ``[start, stop)`` of the joined stream, in blocks."""
        offset = 0
        for i, piece in enumerate(self.pieces):
            if i:                                   # the "\n" between two files
                if start <= offset < stop:
                    yield b"\n"
                offset += 1
            length = piece.stop - piece.start
            lo, hi = max(start, offset), min(stop, offset + length)
            if lo < hi:
                yield from _read_bytes(piece.path, piece.start + lo - offset, piece.start + hi - offset)
            offset += length
            if offset >= stop:
                return

    def byte_at(self, position: int) -> int:
        for block in self.read(position, position + 1):
            return block[0]
        raise IndexError(position)

    def find_newline(self, position: int) -> int:
        """The position just after the first ``"\\n"`` at or after ``position`` (the size if none)."""
        offset = position
        for block in self.read(position, self.size):
            found = block.find(b"\n")
            if found >= 0:
                return offset + found + 1
            offset += len(block)
        return self.size

    def close(self) -> None:
        if self.spooled is not None:
            self.spooled.unlink(missing_ok=True)
            self.spooled = None


def _read_bytes(path: Path, start: int, stop: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = stop - start
        while left > 0:
            block = handle.read(min(BLOCK, left))
            if not block:
                raise ValueError(f"{path} became shorter while it was read; was it changed? Run again")
            left -= len(block)
            yield block


def _check_file(path: Path, digest, bar) -> tuple:
    """``(piece, problem)``: the file's text range and None, or None/piece and what is wrong
    (``"binary"``, ``"not UTF-8 at byte N"``)."""
    size = path.stat().st_size
    decoder = codecs.getincrementaldecoder("utf-8")()
    start, offset = 0, 0
    for block in _read_bytes(path, 0, size):
        if offset == 0:
            if b"\0" in block[:_SNIFF_BYTES]:
                return None, "binary"
            if block.startswith(_BOM):
                start = len(_BOM)
        if digest is not None:
            digest.update(block[start:] if offset == 0 else block)
        try:
            decoder.decode(block)
        except UnicodeDecodeError as error:
            return None, f"not UTF-8 at byte {offset + error.start}"
        offset += len(block)
        bar.update(len(block))
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 at byte {offset - len(error.object) + error.start}"
    return _Piece(path, start, size), None


def _problem_message(name: str, problem: str) -> str:
    if problem == "empty":
        return f"{name} is empty: there is no text to train on"
    if problem == "binary":
        return f"{name} looks like a binary file (it contains NUL bytes); rnnkit trains on UTF-8 text"
    if problem.startswith("not UTF-8 at byte "):
        offset = problem.rsplit(" ", 1)[1]
        fix = ("pipe it through iconv -f latin1 -t utf-8" if name == "standard input"
               else f"iconv -f latin1 -t utf-8 {name} > converted.txt")
        return f"{name} is not valid UTF-8 (first bad byte at offset {offset}); convert it, e.g. {fix}"
    return f"{name} is {problem}; {_DATA_HINT}"


class _NoBar:
    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(progress: bool, total: int, what: str):
    if not progress or total < BLOCK:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, leave=False, dynamic_ncols=True)


# -- reading text in blocks -------------------------------------------------------------

def text_blocks(source: Source, start: int, stop: int, level: str, bar=None) -> Iterator[str]:
    """The text of bytes ``[start, stop)``, in blocks that each end where the level allows a cut:
    anywhere between characters, at a line start (word), at a :func:`safe_cut` point (BPE)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry = ""
    for block in source.read(start, stop):
        if bar is not None:
            bar.update(len(block))
        text = carry + decoder.decode(block)
        if level == "char":
            cut = len(text)
        elif level == "word":
            cut = text.rfind("\n") + 1
        else:
            cut = safe_cut(text, len(text))
        if cut > 0:
            yield text[:cut]
        carry = text[cut:]
    carry += decoder.decode(b"", final=True)
    if carry:
        yield carry
