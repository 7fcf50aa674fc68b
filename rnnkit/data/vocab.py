r"""A vocabulary maps the tokens of a language model to integer ids and back.

Ids ``0, 1, 2`` are the specials ``<unk>`` (any token the training text did not
have), ``<start>`` and ``<end>``; the corpus tokens follow. Three levels of token:

- ``"char"``: every character is a token, in code-point order. Lossless:
  ``decode(encode(text)) == text`` when every character is known.
- ``"word"``: the convention of the word-level literature (Penn Treebank,
  WikiText; Mikolov's and Zaremba et al.'s code, the PyTorch example):
  whitespace-separated words, and ``<eos>`` at the end of every line. A literal
  ``<unk>`` in the text *is* the unknown token. Words are ordered by frequency
  (most frequent first), which an adaptive softmax relies on. Perplexity per token
  is then perplexity per word, as the papers count it (words plus one ``<eos>`` a
  line). Decoding joins words with single spaces and turns ``<eos>`` into a line
  break.
- ``"bpe"``: byte-level byte-pair encoding, trained with the ``tokenizers``
  library. Lossless for any text, with no unknown tokens.

>>> vocab = Vocabulary.build("the cat sat\nthe <unk> sat on the mat\n", level="word")
>>> vocab.tokens[3:8]
('the', '<eos>', 'sat', 'cat', 'mat')
>>> vocab.tokenize("the dog\nsat")
['the', 'dog', '<eos>', 'sat']
>>> vocab.encode("the dog <unk>\nsat")
[3, 0, 0, 4, 5]
>>> vocab.decode([3, 6, 5, 4, 3])
'the cat sat\nthe'
>>> chars = Vocabulary.build("hello\n")
>>> chars.encode("hole"), chars.decode(chars.encode("hello\n")) == "hello\n"
([5, 7, 6, 4], True)
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from numbers import Integral
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .._arguments import check_int

__all__ = ["Vocabulary", "LEVELS", "SPECIAL_TOKENS", "UNK", "START", "END", "EOS", "BYTE_ALPHABET"]

UNK, START, END = "<unk>", "<start>", "<end>"
EOS = "<eos>"                      # end of a line, a word-level token
SPECIAL_TOKENS = (UNK, START, END)
LEVELS = ("char", "word", "bpe")
BYTE_ALPHABET = 256                # the tokens every byte-level BPE vocabulary starts with

_NOUNS = {"char": "characters", "word": "words", "bpe": "tokens"}
_MAX_LISTED = 10
_MAX_CODE_POINT = 0x10FFFF


def _check_level(owner: str, level) -> str:
    if level not in LEVELS:
        raise ValueError(f"{owner}: level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    return level


def word_tokens(text: str, close_line: bool = False) -> list[str]:
    """The words of ``text`` with ``<eos>`` for every line break; with ``close_line`` a last line
    that does not end in a line break gets its ``<eos>`` too (as a file's last line does)."""
    words = text.replace("\n", f" {EOS} ").split()
    if close_line and words and words[-1] != EOS and not text.endswith("\n"):
        words.append(EOS)
    return words


def _require_tokenizers(what: str):
    try:
        import tokenizers
    except ImportError:
        raise ValueError(f"{what} needs the 'tokenizers' library; pip install tokenizers") from None
    return tokenizers


def train_bpe(blocks: Iterable[str], vocab_size: int, min_count: int = 2):
    """A byte-level BPE ``tokenizers.Tokenizer`` of ``vocab_size`` tokens trained on ``blocks``
    (strings cut at line starts); ids 0-2 are rnnkit's specials."""
    tokenizers = _require_tokenizers("level 'bpe'")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    smallest = len(SPECIAL_TOKENS) + BYTE_ALPHABET
    if vocab_size < smallest:
        raise ValueError(f"a byte-level BPE vocabulary holds the {BYTE_ALPHABET} bytes and the "
                         f"{len(SPECIAL_TOKENS)} specials, so its size must be at least {smallest}, got "
                         f"{vocab_size}; pass --max-vocab {smallest} or more (8192 is a common choice)")
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_count, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(blocks, trainer=trainer)
    return tokenizer


class Vocabulary:
    """Tokens to ids and back, with the specials ``<unk>`` (0), ``<start>`` (1), ``<end>`` (2).

    ``Vocabulary(tokens, level)`` gives the corpus tokens ids ``3, 4, ...`` in the
    order given; :meth:`build` counts a text (:meth:`from_blocks` a text in pieces)
    and orders them; :meth:`from_tokenizer` wraps a trained byte-level BPE. Use
    ``len(vocab)`` as the number of classes of the model's embedding and readout.

    >>> vocab = Vocabulary.build("hello\\n", level="char")
    >>> len(vocab), vocab.id_to_token(3), vocab.token_to_id("l")
    (8, '\\n', 6)
    >>> vocab.encode("hole"), vocab.decode([7, 6, 4, 0, 2])
    ([5, 7, 6, 4], 'ole<unk>')
    """

    def __init__(self, tokens: Iterable[str], level: str = "char", *, tokenizer=None):
        self._level = _check_level("Vocabulary", level)
        if (level == "bpe") != (tokenizer is not None):
            raise ValueError("Vocabulary: a 'bpe' vocabulary is made from its tokenizer; use "
                             "Vocabulary.from_tokenizer (and only for level 'bpe')")
        tokens = list(tokens)
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise TypeError(f"Vocabulary: every token must be a non-empty str, got {token!r}")
            if token in SPECIAL_TOKENS:
                raise ValueError(f"Vocabulary: {token!r} is a special token with a fixed id; "
                                 f"leave it out of the corpus tokens")
            if level == "char" and len(token) != 1:
                raise ValueError(f"Vocabulary: a char-level token is one character, got {token!r}; "
                                 f"use level='word' for longer tokens")
            if level == "word" and len(token.split()) != 1:
                raise ValueError(f"Vocabulary: a word-level token has no whitespace, got {token!r}")
        self._tokenizer = tokenizer
        self._tokens = SPECIAL_TOKENS + tuple(tokens)
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            repeated = sorted(t for t, c in Counter(self._tokens).items() if c > 1)
            raise ValueError(f"Vocabulary: tokens must be unique, got repeats of "
                             f"{', '.join(map(repr, repeated[:_MAX_LISTED]))}")
        self._table = None                 # char level: code point -> id, made on first use

    # -- building ------------------------------------------------------------------

    @classmethod
    def build(cls, text: str, level: str = "char", min_count: int = 1,
              max_size: Optional[int] = None) -> "Vocabulary":
        """The vocabulary of ``text``: its tokens seen at least ``min_count`` times.

        ``max_size`` caps ``len(vocabulary)``, specials included, by keeping the most
        frequent tokens (ties go to the token that sorts first); for ``"bpe"`` it is
        the size the BPE is trained to (default 8192). Characters are kept in code-point
        order, words and BPE tokens by frequency.

        >>> Vocabulary.build("abracadabra", min_count=2).tokens
        ('<unk>', '<start>', '<end>', 'a', 'b', 'r')
        >>> Vocabulary.build("abracadabra", max_size=5).tokens
        ('<unk>', '<start>', '<end>', 'a', 'b')
        """
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.build: expected the text as a str, got {type(text).__name__}")
        if not text:
            raise ValueError("Vocabulary.build: the text is empty; build the vocabulary from the training text")
        return cls.from_blocks([text], level, min_count, max_size, close_line=False)

    @classmethod
    def from_blocks(cls, blocks: Iterable[str], level: str = "char", min_count: int = 1,
                    max_size: Optional[int] = None, *, close_line: bool = True) -> "Vocabulary":
        """Like :meth:`build`, over a text given in pieces (cut at line starts for word and
        BPE level), so that a corpus never has to be in memory at once. With ``close_line``
        the text's last line counts its ``<eos>`` even without a final line break."""
        owner = "Vocabulary.build"
        _check_level(owner, level)
        check_int(owner, "min_count", min_count)
        if max_size is not None:
            check_int(owner, "max_size", max_size, len(SPECIAL_TOKENS) + 1,
                      f"max_size counts the {len(SPECIAL_TOKENS)} specials")
        if level == "bpe":
            return cls.from_tokenizer(train_bpe(blocks, 8192 if max_size is None else int(max_size),
                                                max(min_count, 2)))
        if level == "char":
            counts = np.zeros(_MAX_CODE_POINT + 1, dtype=np.int64)
            for block in blocks:
                counts += np.bincount(_code_points(block), minlength=len(counts))
            present = np.flatnonzero(counts)
            counts = {chr(c): int(counts[c]) for c in present}
        else:
            counts, last = Counter(), None
            for block in blocks:
                counts.update(word_tokens(block))
                last = block or last
            if close_line and last is not None and not last.endswith("\n") and last.split():
                counts[EOS] += 1
            counts.pop(UNK, None)                        # a literal <unk> is the unknown token
            for special in SPECIAL_TOKENS[1:]:
                counts.pop(special, None)
        total = sum(counts.values())
        if not total:
            what = "is empty" if level == "char" else "has no words (it is empty, blank or only <unk>)"
            raise ValueError(f"{owner}: the text {what}; build the vocabulary from the training text")
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIAL_TOKENS)]
        if not kept:
            raise ValueError(f"{owner}: no token occurs at least min_count={min_count} times in the "
                             f"{total} tokens of the text; lower min_count")
        return cls(sorted(kept) if level == "char" else kept, level)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Vocabulary":
        """Wrap a trained byte-level BPE ``tokenizers.Tokenizer`` whose ids 0-2 are the specials."""
        size = tokenizer.get_vocab_size()
        tokens = [tokenizer.id_to_token(i) for i in range(size)]
        if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or None in tokens:
            raise ValueError(f"Vocabulary.from_tokenizer: the tokenizer's ids 0-2 must be "
                             f"{list(SPECIAL_TOKENS)} and its ids contiguous; train it with "
                             f"rnnkit.data.vocab.train_bpe")
        return cls(tokens[len(SPECIAL_TOKENS):], "bpe", tokenizer=tokenizer)

    # -- lookups ---------------------------------------------------------------

    @property
    def level(self) -> str:
        """``"char"``, ``"word"`` or ``"bpe"``."""
        return self._level

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token, indexed by id (the specials first)."""
        return self._tokens

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def line_end_id(self) -> Optional[int]:
        """The id of the token that ends a line (``<eos>``, ``"\\n"``), or None if there is none."""
        if self._level == "word":
            return self._ids.get(EOS)
        if self._level == "char":
            return self._ids.get("\n")
        ids = self._tokenizer.encode("\n").ids
        return ids[0] if len(ids) == 1 else None

    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` of a ``"bpe"`` vocabulary (None for the other levels)."""
        return self._tokenizer

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._level == other._level and self._tokens == other._tokens

    __hash__ = None

    def __repr__(self) -> str:
        return f"Vocabulary({len(self) - len(SPECIAL_TOKENS)} {_NOUNS[self._level]} + {len(SPECIAL_TOKENS)} specials)"

    def token_to_id(self, token: str) -> int:
        """The id of ``token``, or :attr:`unk_id` when the vocabulary lacks it."""
        return self._ids.get(token, 0)

    def id_to_token(self, token_id: int) -> str:
        """The token with id ``token_id``; ids outside ``[0, len(self))`` raise ValueError."""
        return self._tokens[self._check_id(token_id)]

    def _check_id(self, token_id) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, Integral):
            raise TypeError(f"Vocabulary: expected integer token ids, got {token_id!r} "
                            f"({type(token_id).__name__})")
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"Vocabulary: token id {int(token_id)} is out of range; this vocabulary has ids "
                             f"0 to {len(self._tokens) - 1}. Decode with the vocabulary the model was "
                             f"trained with")
        return int(token_id)

    # -- text <-> ids ------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into tokens of this level (characters; words and ``<eos>``; BPE pieces)."""
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.tokenize: expected a str, got {type(text).__name__}")
        if self._level == "char":
            return list(text)
        if self._level == "word":
            return word_tokens(text)
        return self._tokenizer.encode(text).tokens

    def encode(self, text: str, *, strict: bool = False, what: str = "prime text") -> list[int]:
        """The ids of the tokens of ``text``; unknown tokens become :attr:`unk_id`.

        With ``strict=True`` unknown tokens raise a ValueError that names up to ten
        of them; ``what`` says what the text is, to start that message.

        >>> vocab = Vocabulary.build("abc")
        >>> vocab.encode("cab!")
        [5, 3, 4, 0]
        >>> vocab.encode("cab!", strict=True)
        Traceback (most recent call last):
        ...
        ValueError: prime text contains characters not in the vocabulary: '!'; the model knows 3 characters
        """
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.encode: expected a str, got {type(text).__name__}")
        if self._level == "bpe":
            return self._tokenizer.encode(text).ids
        ids = self._ids
        tokens = self.tokenize(text)
        encoded = [ids.get(token, 0) for token in tokens]
        if strict and 0 in encoded:
            unknown = list(dict.fromkeys(t for t in tokens if t not in ids))
            listed = ", ".join(map(repr, unknown[:_MAX_LISTED]))
            if len(unknown) > _MAX_LISTED:
                listed += f" and {len(unknown) - _MAX_LISTED} more"
            noun = _NOUNS[self._level]
            raise ValueError(f"{what} contains {noun} not in the vocabulary: {listed}; "
                             f"the model knows {len(self) - len(SPECIAL_TOKENS)} {noun}")
        return encoded

    def encode_array(self, text: str, *, close_line: bool = False, dtype=np.uint32) -> np.ndarray:
        """The ids of ``text`` as a NumPy array, the fast path for whole corpora: a lookup table
        over code points for characters, one dictionary pass for words, the tokenizer's batch
        encoding for BPE. ``close_line`` gives a last unterminated line its ``<eos>`` (word level).
        Equal to ``encode`` otherwise (tested)."""
        if self._level == "char":
            table = self._char_table()
            points = _code_points(text)
            if len(table) <= _MAX_CODE_POINT:
                points = np.where(points < len(table), points, 0)   # code point 0 is never a token
            return table[points].astype(dtype, copy=False)
        if self._level == "word":
            get = self._ids.get
            words = word_tokens(text, close_line)
            return np.fromiter((get(w, 0) for w in words), dtype=dtype, count=len(words))
        pieces = _bpe_pieces(text)
        encoded = self._tokenizer.encode_batch(pieces, add_special_tokens=False) if pieces else []
        return np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encoded] or
                              [np.zeros(0, dtype=dtype)])

    def _char_table(self) -> np.ndarray:
        if self._table is None:
            points = [ord(t) for t in self._tokens[len(SPECIAL_TOKENS):]]
            table = np.zeros(max(points, default=0) + 1, dtype=np.uint32)
            table[points] = np.arange(len(SPECIAL_TOKENS), len(self._tokens), dtype=np.uint32)
            self._table = table
        return self._table

    def decode(self, ids: Union[Sequence[int], torch.Tensor, np.ndarray]) -> str:
        """The text of a sequence of ids (a list or a 1-D integer tensor or array).

        ``<start>`` and ``<end>`` render as nothing, ``<unk>`` as ``"<unk>"``; at word
        level words are joined by single spaces and ``<eos>`` is a line break.
        """
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            if ids.ndim > 1 or not (ids.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                  torch.uint8) or np.issubdtype(ids.dtype, np.integer)):
                raise TypeError(f"Vocabulary.decode: expected a 1-D integer tensor of ids, got dtype "
                                f"{ids.dtype} and shape {tuple(ids.shape)}")
            ids = ids.reshape(-1).tolist()
        kept = [i for i in map(self._check_id, ids) if i == 0 or i > 2]   # <start>/<end> have no text
        if self._level == "char":
            return "".join(self._tokens[i] for i in kept)
        if self._level == "bpe":
            pieces, run = [], []
            for i in kept:                     # <unk> is never produced by a byte-level BPE, but say it
                if i == 0:
                    pieces += [self._tokenizer.decode(run), UNK]
                    run = []
                else:
                    run.append(i)
            return "".join(pieces) + self._tokenizer.decode(run)
        text, need_space = [], False
        for i in kept:
            token = self._tokens[i]
            if token == EOS:
                text.append("\n")
                need_space = False
            else:
                text.append(" " + token if need_space else token)
                need_space = True
        return "".join(text)

    # -- persistence ---------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-serialisable description: ``{"level", "tokens"}``, or ``{"level", "tokenizer"}``
        (the tokenizer's own JSON) for BPE."""
        if self._level == "bpe":
            return {"level": "bpe", "tokenizer": self._tokenizer.to_str()}
        return {"level": self._level, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocabulary":
        """The vocabulary :meth:`to_dict` described; unknown or missing keys raise ValueError."""
        if not isinstance(state, dict):
            raise TypeError(f"Vocabulary.from_dict: expected a dict, got {type(state).__name__}")
        if state.get("level") == "bpe":
            expected = {"level", "tokenizer"}
            if set(state) != expected:
                raise ValueError(f"Vocabulary.from_dict: a 'bpe' vocabulary has the keys 'level' and "
                                 f"'tokenizer', got {sorted(state)}; pass what Vocabulary.to_dict() wrote")
            tokenizers = _require_tokenizers("this BPE vocabulary")
            return cls.from_tokenizer(tokenizers.Tokenizer.from_str(state["tokenizer"]))
        expected = {"level", "tokens"}
        if set(state) != expected:
            unknown, missing = sorted(set(state) - expected), sorted(expected - set(state))
            raise ValueError(f"Vocabulary.from_dict: expected the keys 'level' and 'tokens', got "
                             f"unknown {unknown} and missing {missing}; pass what Vocabulary.to_dict() wrote")
        tokens = state["tokens"]
        if not isinstance(tokens, list) or tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"Vocabulary.from_dict: 'tokens' must be a list starting with the specials "
                             f"{list(SPECIAL_TOKENS)}, got {str(tokens)[:80]}")
        if state["level"] == "word" and any(isinstance(t, str) and len(t.split()) != 1 for t in tokens):
            raise ValueError("Vocabulary.from_dict: this word vocabulary has whitespace tokens: it was "
                             "built by rnnkit 0.1, whose word level counted spaces and line breaks as "
                             "tokens. Word level now follows the Penn Treebank convention (words and "
                             "<eos>); train the model again with --level word")
        return cls(tokens[len(SPECIAL_TOKENS):], state["level"])

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_dict` as a UTF-8 JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Vocabulary":
        """Read a vocabulary that :meth:`save` wrote."""
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"Vocabulary.load: {os.fspath(path)} is not a vocabulary JSON file ({error}); "
                             f"pass a file written by Vocabulary.save") from None
        return cls.from_dict(state)

    def fingerprint(self) -> str:
        """A short hash of the vocabulary, to tell token files made with it from others."""
        return hashlib.sha1(json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as uint32 (ASCII text through a one-byte view, 4x less work)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.uint32)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


_BPE_PIECE = 1 << 16          # characters per piece handed to the tokenizer's batch encoder


def _bpe_pieces(text: str) -> list[str]:
    """``text`` cut into pieces of about 64k characters at :func:`safe_cut` points, so that
    the tokenizer's batch encoder can share the work and the pieces encode to the ids of the whole."""
    pieces, start = [], 0
    while len(text) - start > _BPE_PIECE:
        cut = safe_cut(text, start + _BPE_PIECE, start)
        if cut <= start:
            break                                  # no safe point: the rest is one piece
        pieces.append(text[start:cut])
        start = cut
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def safe_cut(text: str, before: int, after: int = 0) -> int:
    """The last position ``p`` in ``(after, before]`` with ``text[p - 2:p + 1]`` a non-space
    character, a line break and a non-space character, or ``after`` if there is none. Byte-level
    BPE's pre-tokenizer ends a piece there whatever follows, so text cut at such points encodes
    (and trains) exactly as the whole."""
    position = min(before, len(text) - 1)
    while True:
        newline = text.rfind("\n", after + 1, position)
        if newline < 0:
            return after
        if not text[newline - 1].isspace() and not text[newline + 1].isspace():
            return newline + 1
        position = newline
