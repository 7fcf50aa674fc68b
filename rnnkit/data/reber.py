"""The (embedded) Reber grammar as a finite automaton: which strings it accepts, which symbols may come
next, and many strings drawn at once with the allowed next symbols at every step. The task built from
it is :func:`rnnkit.data.tasks.embedded_reber`."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["REBER_SYMBOLS", "reber_accepts", "reber_next_symbols", "draw_embedded_reber",
           "EXPECTED_EMBEDDED_LENGTH"]

REBER_SYMBOLS = "BTSXPVE"

# The Reber grammar as a finite automaton: node -> ((symbol, next node), ...); node 7 is "done".
_REBER = {0: (("B", 1),), 1: (("T", 2), ("P", 3)), 2: (("S", 2), ("X", 4)), 3: (("T", 3), ("V", 5)),
          4: (("X", 3), ("S", 6)), 5: (("P", 4), ("V", 6)), 6: (("E", 7),), 7: ()}


def _embedded_automaton() -> dict:
    """B, then T or P, a Reber string, the same T or P again, E: the second symbol is
    remembered only by which copy ("arm") of the Reber automaton the string runs through."""
    graph = {"start": (("B", "choose"),), "choose": (("T", ("T", 0)), ("P", ("P", 0))),
             "close": (("E", "end"),), "end": ()}
    for arm in "TP":
        for node, edges in _REBER.items():
            graph[(arm, node)] = tuple((symbol, (arm, target)) for symbol, target in edges)
        graph[(arm, 7)] = ((arm, "close"),)
    return graph


_AUTOMATON = _embedded_automaton()
_STATES = list(_AUTOMATON)
_INDEX = {state: i for i, state in enumerate(_STATES)}
# Tables for drawing many strings at once: from state s, choice c in {0, 1} emits _EMIT[s, c]
# (-1: nothing, the string has ended) and moves to _MOVE[s, c]; one-way states repeat their edge.
_EMIT = torch.tensor([[REBER_SYMBOLS.index(e[c % len(e)][0]) if e else -1 for c in (0, 1)]
                      for e in _AUTOMATON.values()])
_MOVE = torch.tensor([[_INDEX[e[c % len(e)][1]] if e else _INDEX["end"] for c in (0, 1)]
                      for e in _AUTOMATON.values()])
_NEXT_SET = torch.tensor([[float(any(s == symbol for s, _ in e)) for symbol in REBER_SYMBOLS]
                          for e in _AUTOMATON.values()])                          # (states, 7)
EXPECTED_EMBEDDED_LENGTH = 12  # 4 + the Reber string's 8: solve L(n) = 1 + mean L(next) from node 0


def _walk(owner: str, string, embedded: bool):
    """The automaton state after reading ``string``, or None if no grammatical string starts so."""
    if not isinstance(string, str):
        raise TypeError(f"{owner}: expected a string over {REBER_SYMBOLS!r}, got {type(string).__name__}")
    if not isinstance(embedded, bool):
        raise TypeError(f"{owner}: embedded must be True or False, got {type(embedded).__name__}")
    state = "start" if embedded else ("T", 0)
    for symbol in string:
        state = dict(_AUTOMATON[state]).get(symbol)
        if state is None:
            return None
    return state


def reber_accepts(string: str, embedded: bool = True) -> bool:
    """Whether ``string`` belongs to the embedded Reber grammar (or, with
    ``embedded=False``, to the plain Reber grammar).

    >>> reber_accepts("BTBPVVETE"), reber_accepts("BTBPVVEPE"), reber_accepts("BPVVE", embedded=False)
    (True, False, True)
    """
    state = _walk("reber_accepts", string, embedded)
    return state == ("end" if embedded else ("T", 7))


def reber_next_symbols(prefix: str, embedded: bool = True) -> str:
    """The symbols that may follow ``prefix`` in the (embedded) Reber grammar, in
    ``REBER_SYMBOLS`` order; ``""`` after a complete string.

    >>> reber_next_symbols("B"), reber_next_symbols("BPBTX"), reber_next_symbols("BPBTXSE")
    ('TP', 'SX', 'P')
    """
    owner = "reber_next_symbols"
    state = _walk(owner, prefix, embedded)
    if state is None:
        grammar = "embedded Reber" if embedded else "Reber"
        raise ValueError(f"{owner}: {prefix!r} does not begin any string of the {grammar} grammar")
    if not embedded and state == ("T", 7):
        return ""
    return "".join(symbol for symbol in REBER_SYMBOLS if symbol in dict(_AUTOMATON[state]))


def draw_embedded_reber(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` strings of the embedded Reber grammar, every branch taken with probability 1/2.

    Returns ``symbols`` (N, T) long, indices into ``REBER_SYMBOLS`` and -1 after each string's end
    (T is the longest string's length), and ``allowed`` (N, T, 7) float, the multi-hot set of symbols
    the grammar allows after the first t + 1 symbols (empty after the final E and past the end)."""
    state = torch.full((count,), _INDEX["start"])
    emitted, visited = [], []
    while True:
        choice = torch.randint(0, 2, (count,), generator=generator)
        symbol = _EMIT[state, choice]
        if bool((symbol < 0).all()):
            break
        state = _MOVE[state, choice]
        emitted.append(symbol)
        visited.append(state)
    symbols, states = torch.stack(emitted, 1), torch.stack(visited, 1)           # (N, T)
    return symbols, _NEXT_SET[states]                                             # "end": the empty set
