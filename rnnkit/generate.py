r"""Sampling text from a language model, one token at a time, in constant memory.

A language model gives next-token logits :math:`z \in \mathbb{R}^V`; a step of
generation draws

.. math::  x_{t+1} \sim \mathrm{softmax}\big(\mathrm{filter}(z / \tau)\big)

where :math:`\tau > 0` is the temperature and the filter sets to :math:`-\infty`
every token outside the top-k and/or the nucleus (top-p). Greedy decoding takes
:math:`\arg\max_v z_v` instead (the limit :math:`\tau \to 0`).

The model is only ever seen through two calls, ``model.initial_state(batch_size)``
and ``model(tokens (B, T), state) -> (logits (B, T, V), state)``; the vocabulary
through ``encode``, ``decode``, ``len``, ``level`` and ``start_id``/``end_id``.
The state is all the context there is, so :func:`stream` keeps only the state and
the last token: memory does not grow with ``length``.

>>> import torch
>>> class Alphabet:                           # ids 0 and 1 are <start> and <unk>, 7 is <end>
...     level, start_id, unk_id, end_id = "char", 0, 1, 7
...     symbols = ["<start>", "<unk>", "a", "b", "c", "d", "e", "<end>"]
...     def __len__(self): return len(self.symbols)
...     def encode(self, text, *, strict=False, what="text"): return [self.symbols.index(c) for c in text]
...     def decode(self, ids): return "".join(self.symbols[i] for i in ids)
>>> class NextLetter(torch.nn.Module):        # logits put their mass on "current id + 1"
...     def initial_state(self, batch_size): return torch.zeros(batch_size, 1)
...     def forward(self, tokens, state):
...         return 9.0 * torch.nn.functional.one_hot((tokens + 1) % 8, 8).float(), state
>>> model, vocab = NextLetter(), Alphabet()
>>> generate(model, vocab, "b", greedy=True)          # stops when <end> is drawn
'bcde'
>>> list(stream(model, vocab, "a", length=2, greedy=True))
['b', 'c']
>>> generate(model, vocab, "a", length=3, seed=0) == generate(model, vocab, "a", length=3, seed=0)
True
"""
from __future__ import annotations

import math
from itertools import chain
from numbers import Integral
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from ._arguments import check_int, check_number, check_positive
from .models.ensemble import LanguageModelEnsemble
from .models.language_model import LanguageModel

__all__ = ["filter_logits", "sample_next", "stream", "generate"]


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> Tensor:
    r"""Scale logits by the temperature, then keep the top-k, then the nucleus; ``-inf`` elsewhere.

    The three steps run in this order, each on the output of the one before:

    1. temperature: :math:`z \leftarrow z / \tau`, with :math:`\tau > 0`;
    2. top-k: keep the ``top_k`` largest logits (exactly ``top_k`` of them, ties
       broken arbitrarily; ``top_k >= V`` keeps all);
    3. top-p (nucleus): with :math:`p = \mathrm{softmax}(z)` over the tokens still
       kept (so renormalised after top-k, at temperature :math:`\tau`) sorted
       :math:`p_{(1)} \ge p_{(2)} \ge \dots`, keep the smallest prefix
       :math:`\{(1), \dots, (m)\}` with :math:`\sum_{i \le m} p_{(i)} \ge` ``top_p``.
       Token :math:`(i)` is kept iff the mass before it, :math:`\sum_{j < i} p_{(j)}`,
       is still below ``top_p``, so the most probable token is always kept;
       ``top_p=1`` keeps every token.

    ``logits`` (..., V) floating point; returns a new tensor (..., V) of the same
    dtype, each row filtered on its own.

    >>> import torch
    >>> z = torch.tensor([2.0, 1.0, 0.0, -1.0])
    >>> filter_logits(z, temperature=2.0)
    tensor([ 1.0000,  0.5000,  0.0000, -0.5000])
    >>> filter_logits(z, top_k=2)
    tensor([2., 1., -inf, -inf])
    >>> filter_logits(z, top_p=0.8)           # softmax(z) = 0.64, 0.24, 0.09, 0.03
    tensor([2., 1., -inf, -inf])
    """
    _check_options("filter_logits", temperature, top_k, top_p)
    _check_logits("filter_logits", logits, rank=None)
    return _filter(logits, temperature, top_k, top_p)


def _filter(logits: Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> Tensor:
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kept = logits.topk(int(top_k), dim=-1).indices
        drop = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, kept, False)
        logits = logits.masked_fill(drop, -math.inf)
    if top_p is not None and top_p < 1:
        # sorted by logit, not by probability: logits a rounding step apart tie once exponentiated
        sorted_logits, order = logits.sort(dim=-1, descending=True)                  # (..., V)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1).roll(1, dims=-1)
        mass_before[..., 0] = 0.0
        sorted_drop = mass_before >= top_p
        drop = torch.empty_like(sorted_drop).scatter_(-1, order, sorted_drop)    # back to token order
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, greedy: bool = False,
                generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Draw one token id per row: :math:`x \sim \mathrm{softmax}(\mathrm{filter}(z/\tau))`.

    ``logits`` (B, V) → LongTensor (B,). The filter is :func:`filter_logits`.
    The draw is an exponential race: with :math:`E_v \sim \mathrm{Exp}(1)` i.i.d.,
    :math:`\arg\max_v p_v / E_v` is token :math:`v` with probability exactly
    :math:`p_v` (:math:`E_v / p_v \sim \mathrm{Exp}(p_v)`, and the first of
    independent exponential clocks to ring is :math:`v` with probability
    :math:`p_v / \sum_u p_u`). It costs one random number per vocabulary entry but, unlike
    :func:`torch.multinomial`, no search and no host synchronisation on a GPU.

    ``greedy=True`` returns :math:`\arg\max_v z_v` (the first one on ties); the
    other options cannot change it (scaling is monotone, and top-k and top-p
    always keep the most probable token), so they are checked and otherwise
    ignored. ``generator`` drives the draws; ``None`` draws from torch's global
    generator.

    >>> import torch
    >>> z = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]])
    >>> sample_next(z, greedy=True)
    tensor([1, 0])
    >>> sample_next(z, top_k=1, generator=torch.Generator().manual_seed(0))
    tensor([1, 0])
    """
    _check_options("sample_next", temperature, top_k, top_p)
    _check_logits("sample_next", logits, rank=2)
    return _sample(logits, temperature, top_k, top_p, greedy, generator)


def _sample(logits: Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
            greedy: bool, generator: Optional[torch.Generator]) -> Tensor:
    if greedy:
        return logits.argmax(dim=-1)
    probs = _filter(logits, temperature, top_k, top_p).softmax(dim=-1)                 # (B, V)
    # the exponential race: clamped so that a dropped token (p = 0) scores 0, never 0/0 = nan
    race = torch.empty_like(probs).exponential_(generator=generator)
    race.clamp_(min=torch.finfo(probs.dtype).tiny)
    return (probs / race).argmax(dim=-1)                                               # (B,)


def stream(model: nn.Module, vocab, prime: str = "", *, length: int = 500, temperature: float = 1.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None, greedy: bool = False,
           seed: Optional[int] = None, stop_at_end: bool = True) -> Iterator[str]:
    r"""Yield the text of each new token as soon as it is drawn (batch size 1).

    The prime is fed in one call, ``model(prime (1, P), initial_state(1))``; then
    each further token costs one call ``model(last (1, 1), state)``, made only when
    the consumer asks for that token. Only the state and the last token are kept,
    so memory is constant in ``length``. At most ``length`` tokens are yielded;
    with ``stop_at_end``, drawing ``<end>`` stops the stream (its text is not
    yielded).

    - ``prime``: for a character vocabulary it is encoded strictly, so an unknown
      character raises the vocabulary's ``ValueError``; for a word vocabulary
      unknown words become ``<unk>``. An empty prime starts from ``<start>``.
    - ``temperature``, ``top_k``, ``top_p``, ``greedy``: see :func:`sample_next`.
    - ``seed``: draws come from a private ``torch.Generator`` seeded with it, so
      the same seed gives the same text and torch's global generator is left
      untouched; ``None`` draws from the global generator.

    The text of a token is what decoding it after the token before adds, so
    the pieces join into what ``decode`` makes of the whole sequence, whatever
    the vocabulary puts between words.
    The model runs in eval mode without autograd; every submodule's training
    flag is restored when the stream ends, fails, or is closed early. Arguments
    are checked and the prime encoded when ``stream`` is called; the model is
    first touched on the first ``next()``.

    >>> import torch
    >>> class Letters:
    ...     level, start_id, unk_id, end_id = "char", 0, 1, 2
    ...     def __len__(self): return 6
    ...     def encode(self, text, *, strict=False, what="text"): return ["^?$xyz".index(c) for c in text]
    ...     def decode(self, ids): return "".join("^?$xyz"[i] for i in ids)
    >>> class LikesZ(torch.nn.Module):
    ...     def initial_state(self, batch_size): return torch.zeros(batch_size, 1)
    ...     def forward(self, tokens, state):
    ...         return torch.tensor([0.0, 0, 0, 0, 0, 4]).expand(*tokens.shape, 6), state
    >>> tokens = stream(LikesZ(), Letters(), "xy", length=10**9, top_k=1)   # lazy: nothing drawn yet
    >>> next(tokens), next(tokens)
    ('z', 'z')
    """
    return _stream("stream", model, vocab, prime, length=length, temperature=temperature, top_k=top_k,
                   top_p=top_p, greedy=greedy, seed=seed, stop_at_end=stop_at_end)


def generate(model: nn.Module, vocab, prime: str = "", *, length: int = 500, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, greedy: bool = False,
             seed: Optional[int] = None, stop_at_end: bool = True) -> str:
    """The prime followed by up to ``length`` generated tokens: ``prime + "".join(stream(...))``.

    Every option is that of :func:`stream`; see the module docstring for an example.

    >>> import torch
    >>> class Letters:
    ...     level, start_id, unk_id, end_id = "char", 0, 1, 2
    ...     def __len__(self): return 4
    ...     def encode(self, text, *, strict=False, what="text"): return ["^?$x".index(c) for c in text]
    ...     def decode(self, ids): return "".join("^?$x"[i] for i in ids)
    >>> class AlwaysX(torch.nn.Module):
    ...     def initial_state(self, batch_size): return torch.zeros(batch_size, 1)
    ...     def forward(self, tokens, state):
    ...         return torch.tensor([0.0, 0, 0, 1]).expand(*tokens.shape, 4), state
    >>> generate(AlwaysX(), Letters(), "x", length=3, greedy=True)
    'xxxx'
    """
    tokens = _stream("generate", model, vocab, prime, length=length, temperature=temperature, top_k=top_k,
                     top_p=top_p, greedy=greedy, seed=seed, stop_at_end=stop_at_end)
    return prime + "".join(tokens)


def _stream(owner: str, model: nn.Module, vocab, prime: str, *, length: int, temperature: float,
            top_k: Optional[int], top_p: Optional[float], greedy: bool, seed: Optional[int],
            stop_at_end: bool) -> Iterator[str]:
    """Check everything and encode the prime now; return the lazy token generator."""
    _check_options(owner, temperature, top_k, top_p)
    check_int(owner, "length", length)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral)):
        raise TypeError(f"{owner}: seed must be an int or None, got {type(seed).__name__}; "
                        f"pass an int such as seed=0 for reproducible text")
    if not isinstance(prime, str):
        raise TypeError(f"{owner}: prime must be a str, got {type(prime).__name__}")
    prime_ids = vocab.encode(prime, strict=vocab.level == "char", what="prime") if prime else []
    sampling = (temperature, top_k, top_p, greedy)
    return _tokens(owner, model, vocab, prime_ids or [vocab.start_id], int(length), sampling,
                   None if seed is None else int(seed), stop_at_end)


def _tokens(owner: str, model: nn.Module, vocab, prime_ids: list, length: int, sampling: tuple,
            seed: Optional[int], stop_at_end: bool) -> Iterator[str]:
    vocab_size = len(vocab)
    device = next((t.device for t in chain(model.parameters(), model.buffers())), torch.device("cpu"))
    generator = None

    # never drawn: <start> (no text follows from it), and at the character and subword levels <unk>
    # (it stands for characters the training text did not have, and would print as the literal
    # "<unk>"; at the word level "<unk>" is a word of the corpus, as in Penn Treebank)
    banned = [i for i in (getattr(vocab, "start_id", None),
                          None if getattr(vocab, "level", None) == "word" else getattr(vocab, "unk_id", None))
              if i is not None and 0 <= i < vocab_size]

    def draw(logits) -> Tensor:                                              # (1, 1) next token
        nonlocal generator
        _check_model_logits(owner, logits, vocab_size)
        if seed is not None and generator is None:
            generator = torch.Generator(device=logits.device).manual_seed(seed)
        last = logits[:, -1]
        if banned and len(banned) < vocab_size:
            last = last.index_fill(-1, torch.tensor(banned, device=last.device), -math.inf)
        return _sample(last, *sampling, generator).view(1, 1)

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        previous = prime_ids[-1]
        # no_grad only around the model: the consumer runs between yields, in its own grad mode
        with torch.no_grad():
            prime = torch.tensor([prime_ids], dtype=torch.long, device=device)           # (1, P)
            logits, state = model(prime, model.initial_state(1))                      # (1, P, V)
            token = draw(logits)
            step = _one_token_step(model, state)
        # byte-level tokens can end inside a character: such a piece waits (up to 3 tokens) for the
        # rest of it, so that what is printed is always whole characters
        held = [] if getattr(vocab, "level", None) == "bpe" else None
        for produced in range(1, length + 1):
            token_id = int(token)
            if stop_at_end and token_id == vocab.end_id:
                break
            if held is None:
                yield _token_text(vocab, previous, token_id)
            else:
                held.append(token_id)
                piece = vocab.decode(held)
                if not piece.endswith("\ufffd") or len(held) >= 4 or produced == length:
                    yield piece
                    held = []
            if produced == length:
                break
            previous = token_id
            with torch.no_grad():
                token = draw(step(token))                                             # (1, 1, V)
        if held:
            yield vocab.decode(held)
    finally:
        for module, training in modes:
            module.training = training


def _one_token_step(model: nn.Module, state):
    """``token (1, 1) -> logits (1, 1, V)``, carrying the state: an rnnkit LanguageModel goes
    through :meth:`rnnkit.models.LanguageModel.stream` (torch's one-step kernels, 3-9x less
    overhead per token), an ensemble of them through its members' streams; any other model
    through ``model(token, state)``."""
    streams = isinstance(model, LanguageModelEnsemble) or (isinstance(model, LanguageModel)
                                                           and not model.rnn.bidirectional)
    if streams:
        stream = model.stream(state=state)
        return lambda token: stream(token.view(1)).view(1, 1, -1)
    carried = [state]

    def step(token):
        logits, carried[0] = model(token, carried[0])
        return logits
    return step


def _token_text(vocab, previous: int, token: int) -> str:
    """What ``token`` adds to the text after ``previous``: decoding the pair minus decoding
    ``previous`` alone, so the vocabulary's own separators appear between words."""
    alone = vocab.decode([token])
    if previous == vocab.start_id:
        return alone
    before, pair = vocab.decode([previous]), vocab.decode([previous, token])
    return pair[len(before):] if pair.startswith(before) else alone


def _check_options(owner: str, temperature, top_k, top_p) -> None:
    check_positive(owner, "temperature", temperature, hint="use greedy=True for argmax decoding")
    if top_k is not None:
        check_int(owner, "top_k", top_k, hint="use top_k=None to keep every token")
    if top_p is not None:
        check_number(owner, "top_p", top_p, low=0.0, high=1.0, low_closed=False,
                     hint="use top_p=None to keep every token")


def _check_logits(owner: str, logits, rank: Optional[int]) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{owner}: expected logits as a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{owner}: expected floating-point logits, got {logits.dtype}; "
                        f"convert them with logits.float()")
    if rank is not None and logits.dim() != rank:
        raise ValueError(f"{owner}: expected logits of shape (batch, vocab), got {tuple(logits.shape)}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"{owner}: expected logits (..., vocab) with at least one token, "
                         f"got shape {tuple(logits.shape)}")


def _check_model_logits(owner: str, logits, vocab_size: int) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 3 or logits.shape[0] != 1 \
            or logits.shape[-1] != vocab_size:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{owner}: expected the model to return logits of shape (1, time, {vocab_size}) "
                         f"(batch, time, len(vocab)), got {got}; check that the model was built for "
                         f"this vocabulary")
