r"""A vocabulary maps the tokens of a language model to integer ids and back.

Ids ``0, 1, 2`` are the specials ``<unk>`` (any token the corpus did not have),
``<start>`` and ``<end>``; the corpus tokens follow in sorted order, so the same
text always gives the same ids.

Two levels of token:

- ``"char"``: every character is a token.
- ``"word"``: runs of word characters (``\w+``), single punctuation marks, single
  line breaks and runs of other whitespace are tokens. Whitespace is kept, so
  ``decode(encode(text)) == text`` for any text whose tokens are all known:
  line breaks and indentation survive.

>>> vocab = Vocabulary.build("to be,\n  or not", level="word")
>>> vocab.tokenize("to be,\n  or not")
['to', ' ', 'be', ',', '\n', '  ', 'or', ' ', 'not']
>>> vocab.encode("not to be")
[8, 4, 10, 4, 7]
>>> vocab.decode(vocab.encode("or not to be,\n  or"))
'or not to be,\n  or'
>>> vocab.encode("to see")
[10, 4, 0]
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from numbers import Integral
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch

__all__ = ["Vocabulary", "LEVELS", "SPECIAL_TOKENS", "UNK", "START", "END"]

UNK, START, END = "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (UNK, START, END)
LEVELS = ("char", "word")

# A word, one punctuation mark, one line break, or a run of other whitespace.
# The four alternatives cover every character, so the tokens concatenate back to
# the text; line breaks stand alone so that "\n" and "\n    " share the "\n".
_WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\n|[^\S\n]+")

_NOUNS = {"char": "characters", "word": "words"}
_MAX_LISTED = 10


def _check_level(owner: str, level) -> str:
    if level not in LEVELS:
        raise ValueError(f"{owner}: level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    return level


def _tokenize(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else _WORD_PATTERN.findall(text)


class Vocabulary:
    """Tokens to ids and back, with the specials ``<unk>`` (0), ``<start>`` (1), ``<end>`` (2).

    ``Vocabulary(tokens, level)`` gives the corpus tokens ids ``3, 4, ...`` in the
    order given; :meth:`build` counts a text and sorts them. Use ``len(vocab)`` as
    the number of classes of the model's embedding and readout.

    >>> vocab = Vocabulary.build("hello\\n", level="char")
    >>> len(vocab), vocab.id_to_token(3), vocab.token_to_id("l")
    (8, '\\n', 6)
    >>> vocab.encode("hole"), vocab.decode([7, 6, 4, 0, 2])
    ([5, 7, 6, 4], 'ole<unk>')
    """

    def __init__(self, tokens: Iterable[str], level: str = "char"):
        self._level = _check_level("Vocabulary", level)
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
        self._tokens = SPECIAL_TOKENS + tuple(tokens)
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            repeated = sorted(t for t, c in Counter(self._tokens).items() if c > 1)
            raise ValueError(f"Vocabulary: tokens must be unique, got repeats of "
                             f"{', '.join(map(repr, repeated[:_MAX_LISTED]))}")

    @classmethod
    def build(cls, text: str, level: str = "char", min_count: int = 1,
              max_size: Optional[int] = None) -> "Vocabulary":
        """The vocabulary of ``text``: its tokens seen at least ``min_count`` times, sorted.

        ``max_size`` caps ``len(vocabulary)``, specials included, by keeping the most
        frequent tokens (ties go to the token that sorts first).

        >>> Vocabulary.build("abracadabra", min_count=2).tokens
        ('<unk>', '<start>', '<end>', 'a', 'b', 'r')
        >>> Vocabulary.build("abracadabra", max_size=5).tokens
        ('<unk>', '<start>', '<end>', 'a', 'b')
        """
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.build: expected the text as a str, got {type(text).__name__}")
        _check_level("Vocabulary.build", level)
        if isinstance(min_count, bool) or not isinstance(min_count, Integral) or min_count < 1:
            raise ValueError(f"Vocabulary.build: min_count must be a positive int, got {min_count!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, Integral)
                                     or max_size <= len(SPECIAL_TOKENS)):
            raise ValueError(f"Vocabulary.build: max_size counts the {len(SPECIAL_TOKENS)} specials, so it "
                             f"must be an int of at least {len(SPECIAL_TOKENS) + 1} (or None), got {max_size!r}")
        if not text:
            raise ValueError("Vocabulary.build: the text is empty; build the vocabulary from the training text")
        counts = Counter(_tokenize(text, level))
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIAL_TOKENS)]
        if not kept:
            raise ValueError(f"Vocabulary.build: no token occurs at least min_count={min_count} times in the "
                             f"{sum(counts.values())} tokens of the text; lower min_count")
        return cls(sorted(kept), level)

    # -- lookups ---------------------------------------------------------------

    @property
    def level(self) -> str:
        """``"char"`` or ``"word"``."""
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
        """Split ``text`` into tokens of this level; they concatenate back to ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.tokenize: expected a str, got {type(text).__name__}")
        return _tokenize(text, self._level)

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
        ids = self._ids
        encoded = [ids.get(token, 0) for token in self.tokenize(text)]
        if strict and 0 in encoded:
            unknown = list(dict.fromkeys(t for t in self.tokenize(text) if t not in ids))
            listed = ", ".join(map(repr, unknown[:_MAX_LISTED]))
            if len(unknown) > _MAX_LISTED:
                listed += f" and {len(unknown) - _MAX_LISTED} more"
            noun = _NOUNS[self._level]
            raise ValueError(f"{what} contains {noun} not in the vocabulary: {listed}; "
                             f"the model knows {len(self) - len(SPECIAL_TOKENS)} {noun}")
        return encoded

    def decode(self, ids: Union[Sequence[int], torch.Tensor]) -> str:
        """The text of a sequence of ids (a list or a 1-D integer tensor).

        ``<start>`` and ``<end>`` render as nothing, ``<unk>`` as ``"<unk>"``.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() > 1 or ids.is_floating_point() or ids.is_complex():
                raise TypeError(f"Vocabulary.decode: expected a 1-D integer tensor of ids, got dtype "
                                f"{ids.dtype} and shape {tuple(ids.shape)}")
            ids = ids.reshape(-1).tolist()
        tokens = self._tokens
        # <start> and <end> (ids 1 and 2) mark boundaries; they have no text.
        return "".join(tokens[i] for i in map(self._check_id, ids) if i == 0 or i > 2)

    # -- persistence ---------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-serialisable description: ``{"level": ..., "tokens": [...every token by id]}``."""
        return {"level": self._level, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocabulary":
        """The vocabulary :meth:`to_dict` described; unknown or missing keys raise ValueError."""
        if not isinstance(state, dict):
            raise TypeError(f"Vocabulary.from_dict: expected a dict, got {type(state).__name__}")
        expected = {"level", "tokens"}
        if set(state) != expected:
            unknown, missing = sorted(set(state) - expected), sorted(expected - set(state))
            raise ValueError(f"Vocabulary.from_dict: expected the keys 'level' and 'tokens', got "
                             f"unknown {unknown} and missing {missing}; pass what Vocabulary.to_dict() wrote")
        tokens = state["tokens"]
        if not isinstance(tokens, list) or tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"Vocabulary.from_dict: 'tokens' must be a list starting with the specials "
                             f"{list(SPECIAL_TOKENS)}, got {str(tokens)[:80]}")
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
