r"""State machines: the one idea every model in rnnkit is an instance of.

A state machine is a tuple :math:`(S, X, Y, s_0, f_s, f_o)`:

.. math::  s_t = f_s(s_{t-1}, x_t), \qquad y_t = f_o(s_t), \qquad t = 1, \dots, T.

This module holds the machine in its plainest forms, before any learning:

- :class:`StateMachine` — any ``transition`` and ``output`` on plain Python values;
- :class:`FiniteStateMachine` — a deterministic finite automaton over symbols;
- :class:`LTISystem` — the linear time-invariant system, batched in torch;
- :class:`RationalRNN` / :func:`rational_sqrt2` — a scalar recurrence whose
  update is a rational function (Newton's iteration for :math:`\sqrt{a}`).

>>> counter = StateMachine(0, lambda s, x: s + x)
>>> counter.transduce([1, 2, 3])
[1, 3, 6]
"""
from __future__ import annotations

from fractions import Fraction
from numbers import Real
from typing import Any, Callable, Hashable, Iterable, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from ._arguments import check_int, check_positive
from ._checks import check_features

__all__ = ["StateMachine", "FiniteStateMachine", "LTISystem", "RationalRNN", "rational_sqrt2"]


def _identity(state):
    return state


class StateMachine:
    r"""A generic state machine on plain Python values.

    .. math::  s_t = f_s(s_{t-1}, x_t), \qquad y_t = f_o(s_t)

    ``transition(s, x) -> s'`` is :math:`f_s`; ``output(s) -> y`` is :math:`f_o`
    (the identity when ``None``, so the machine emits its states). Outputs are read
    *after* each transition: for inputs :math:`x_1..x_T` the machine emits
    :math:`y_1..y_T`, never :math:`f_o(s_0)`.

    >>> acc = StateMachine(0, lambda s, x: s + x, output=lambda s: s % 2 == 0)
    >>> acc.transduce([1, 1, 3])
    [False, True, False]
    >>> acc.run([1, 1, 3])
    ([False, True, False], 5)
    """

    def __init__(self, initial_state: Any, transition: Callable[[Any, Any], Any],
                 output: Optional[Callable[[Any], Any]] = None):
        owner = type(self).__name__
        if not callable(transition):
            raise TypeError(f"{owner}: transition must be a callable (state, x) -> state, "
                            f"got {type(transition).__name__}")
        if output is not None and not callable(output):
            raise TypeError(f"{owner}: output must be a callable state -> y or None for the "
                            f"identity, got {type(output).__name__}")
        self.initial_state = initial_state
        self.transition = transition
        self.output = output if output is not None else _identity

    def step(self, state: Any, x: Any) -> Tuple[Any, Any]:
        """One tick: ``(s_{t-1}, x_t) -> (s_t, y_t)``."""
        state = self.transition(state, x)
        return state, self.output(state)

    def run(self, xs: Iterable[Any], state: Any = None) -> Tuple[list, Any]:
        """Feed ``xs`` from ``state`` (``initial_state`` when None); return ``([y_1..y_T], s_T)``.

        ``None`` means "start from ``initial_state``"; a machine whose states can be
        ``None`` should be started through ``initial_state`` itself.
        """
        state = self.initial_state if state is None else state
        outputs = []
        for x in xs:
            state, y = self.step(state, x)
            outputs.append(y)
        return outputs, state

    def transduce(self, xs: Iterable[Any], state: Any = None) -> list:
        """The outputs ``[y_1, ..., y_T]``, one per input."""
        return self.run(xs, state)[0]

    def trace(self, xs: Iterable[Any], state: Any = None) -> list:
        """The states ``[s_1, ..., s_T]`` visited, one per input (``s_0`` excluded)."""
        state = self.initial_state if state is None else state
        states = []
        for x in xs:
            state = self.transition(state, x)
            states.append(state)
        return states

    def final_state(self, xs: Iterable[Any], state: Any = None) -> Any:
        """``s_T`` after feeding every input."""
        return self.run(xs, state)[1]

    def iterate(self, steps: int, state: Any = None) -> list:
        """Run an autonomous machine (one that ignores its input) for ``steps`` ticks.

        Feeds ``x_t = None``; returns ``[y_1, ..., y_steps]``.
        """
        check_int(type(self).__name__, "steps", steps, 0)
        return self.transduce([None] * steps, state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(initial_state={self.initial_state!r})"


class FiniteStateMachine(StateMachine):
    r"""A deterministic finite automaton :math:`(Q, \Sigma, \delta, q_0, F)`.

    .. math::  q_t = \delta(q_{t-1}, a_t), \qquad y_t = [\,q_t \in F\,]

    ``transitions`` maps every pair ``(state, symbol)`` to a state; the table must be
    complete. As a :class:`StateMachine` the automaton emits accept flags, so
    ``transduce(w)[t-1]`` says whether the prefix ``w[:t]`` is accepted, and
    ``trace(w)`` lists the states visited. A ``str`` input is read one character
    per symbol; any other iterable is read one item per symbol.

    >>> fsm = FiniteStateMachine.parity_of_zeros()
    >>> fsm.accepts("1001"), fsm.accepts("10")
    (True, False)
    >>> fsm.trace("010")
    ['odd', 'odd', 'even']
    """

    def __init__(self, states: Iterable[Hashable], alphabet: Iterable[Hashable],
                 transitions: Mapping[Tuple[Hashable, Hashable], Hashable],
                 start: Hashable, accepting: Iterable[Hashable]):
        owner = type(self).__name__
        self.states = _distinct(owner, "states", states)
        self.alphabet = _distinct(owner, "alphabet", alphabet)
        if not self.states:
            raise ValueError(f"{owner}: states must not be empty")
        if not self.alphabet:
            raise ValueError(f"{owner}: alphabet must not be empty")
        state_set, symbol_set = set(self.states), set(self.alphabet)
        if start not in state_set:
            raise ValueError(f"{owner}: start state {start!r} is not one of the states {_show(self.states)}")
        accepting = frozenset(accepting)
        unknown = [q for q in accepting if q not in state_set]
        if unknown:
            raise ValueError(f"{owner}: accepting state {unknown[0]!r} is not one of the states "
                             f"{_show(self.states)}")
        if not isinstance(transitions, Mapping):
            raise TypeError(f"{owner}: transitions must be a dict {{(state, symbol): state}}, "
                            f"got {type(transitions).__name__}")
        table = {}
        for key, target in transitions.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"{owner}: transition keys must be (state, symbol) pairs, got {key!r}")
            q, a = key
            if q not in state_set:
                raise ValueError(f"{owner}: transition {key!r} starts from {q!r}, which is not one "
                                 f"of the states {_show(self.states)}")
            if a not in symbol_set:
                raise ValueError(f"{owner}: transition {key!r} reads {a!r}, which is not in the "
                                 f"alphabet {_show(self.alphabet)}")
            if target not in state_set:
                raise ValueError(f"{owner}: transition {key!r} goes to {target!r}, which is not one "
                                 f"of the states {_show(self.states)}")
            table[key] = target
        for q in self.states:
            for a in self.alphabet:
                if (q, a) not in table:
                    raise ValueError(f"{owner}: the transition table is incomplete: no entry for "
                                     f"(state, symbol) = {(q, a)!r}; add transitions[{(q, a)!r}] = "
                                     f"<next state>")
        self.transitions = table
        self.start = start
        self.accepting = accepting
        super().__init__(start, self._delta, self._is_accepting)

    def _delta(self, state, symbol):
        try:
            return self.transitions[(state, symbol)]
        except (KeyError, TypeError):  # TypeError: an unhashable symbol
            pass
        if state not in self.states:
            raise ValueError(f"{type(self).__name__}: state {state!r} is not one of the states "
                             f"{_show(self.states)}")
        raise ValueError(f"{type(self).__name__}: symbol {symbol!r} is not in the alphabet "
                         f"{_show(self.alphabet)}; map the input onto the alphabet first")

    def _is_accepting(self, state) -> bool:
        return state in self.accepting

    def run(self, xs: Iterable[Hashable], state: Any = None) -> Tuple[list, Any]:
        xs = self._symbols(xs)
        return super().run(xs, state)

    def trace(self, xs: Iterable[Hashable], state: Any = None) -> list:
        return super().trace(self._symbols(xs), state)

    def _symbols(self, xs) -> list:
        """The input as a list, checked symbol by symbol (the error says where)."""
        xs = list(xs)
        symbol_set = set(self.alphabet)
        for position, a in enumerate(xs):
            try:
                known = a in symbol_set
            except TypeError:
                known = False
            if not known:
                raise ValueError(f"{type(self).__name__}: symbol {a!r} at position {position} is not "
                                 f"in the alphabet {_show(self.alphabet)}; map the input onto the "
                                 f"alphabet first")
        return xs

    def accepts(self, string: Iterable[Hashable]) -> bool:
        """True when the automaton ends in an accepting state after reading ``string``."""
        return self.final_state(string) in self.accepting

    @classmethod
    def parity_of_zeros(cls) -> "FiniteStateMachine":
        """Two states over ``{"0", "1"}``: accepts exactly the strings with an even number of zeros.

        >>> FiniteStateMachine.parity_of_zeros().accepts("0100")
        False
        """
        return cls(states=("even", "odd"), alphabet=("0", "1"),
                   transitions={("even", "0"): "odd", ("even", "1"): "even",
                                ("odd", "0"): "even", ("odd", "1"): "odd"},
                   start="even", accepting={"even"})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(states={list(self.states)!r}, alphabet={list(self.alphabet)!r}, "
                f"start={self.start!r}, accepting={sorted(self.accepting, key=repr)!r})")


def _distinct(owner: str, name: str, items) -> tuple:
    items = tuple(items)
    seen = set()
    for item in items:
        try:
            hash(item)
        except TypeError:
            raise TypeError(f"{owner}: {name} must be hashable values, got {item!r}") from None
        if item in seen:
            raise ValueError(f"{owner}: {name} lists {item!r} twice; each must appear once")
        seen.add(item)
    return items


def _show(items) -> str:
    return "[" + ", ".join(repr(v) for v in items) + "]"


class LTISystem(nn.Module):
    r"""A discrete linear time-invariant system.

    .. math::  s_t = A s_{t-1} + B x_t, \qquad y_t = C s_t,
       \qquad\text{so}\qquad y_t = C A^t s_0 + \sum_{k=1}^{t} C A^{t-k} B x_k.

    ``A`` (n, n), ``B`` (n, input_size), ``C`` (output_size, n) are stored as buffers
    (not trained), in the dtype they were given — float64 included — or ``dtype``.

    Shapes: ``forward(xs, state)`` takes ``xs`` (batch, T, input_size) and ``state``
    (batch, n) (zeros when None) and returns ``ys`` (batch, T, output_size) and the
    final state (batch, n). An unbatched ``xs`` (T, input_size) gives (T, output_size)
    and (n,).

    >>> import torch
    >>> sys = LTISystem(torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    >>> ys, s = sys(torch.ones(1, 3, 1))
    >>> ys.flatten().tolist(), s.flatten().tolist()
    ([2.0, 3.0, 3.5], [1.75])
    """

    A: Tensor
    B: Tensor
    C: Tensor

    def __init__(self, A, B, C, *, dtype: Optional[torch.dtype] = None, device=None):
        super().__init__()
        owner = type(self).__name__
        mats = {name: _as_matrix(owner, name, m) for name, m in (("A", A), ("B", B), ("C", C))}
        if dtype is None:
            dtype = mats["A"].dtype
            for m in mats.values():
                dtype = torch.promote_types(dtype, m.dtype)
            if not dtype.is_floating_point:
                dtype = torch.get_default_dtype()
        elif not dtype.is_floating_point:
            raise TypeError(f"{owner}: dtype must be a floating-point dtype, got {dtype}")
        A, B, C = (mats[k].to(device=device, dtype=dtype) for k in ("A", "B", "C"))
        n = A.shape[0]
        if A.shape != (n, n):
            raise ValueError(f"{owner}: A must be square (n, n), got shape {tuple(A.shape)}")
        if B.shape[0] != n:
            raise ValueError(f"{owner}: B must have n = {n} rows to match A, got shape {tuple(B.shape)}")
        if C.shape[1] != n:
            raise ValueError(f"{owner}: C must have n = {n} columns to match A, got shape {tuple(C.shape)}")
        self.register_buffer("A", A)
        self.register_buffer("B", B)
        self.register_buffer("C", C)

    @property
    def state_size(self) -> int:
        return self.A.shape[0]

    @property
    def input_size(self) -> int:
        return self.B.shape[1]

    @property
    def output_size(self) -> int:
        return self.C.shape[0]

    def initial_state(self, batch_size: int) -> Tensor:
        """Zeros ``(batch_size, n)``."""
        return self.A.new_zeros(batch_size, self.state_size)

    def transition(self, state: Tensor, x_t: Tensor) -> Tensor:
        """:math:`f_s`: ``s_t = A s_{t-1} + B x_t`` on ``(..., n)`` and ``(..., input_size)``."""
        return state @ self.A.T + x_t @ self.B.T

    def output(self, state: Tensor) -> Tensor:
        """:math:`f_o`: ``y_t = C s_t``, ``(..., n) -> (..., output_size)``."""
        return state @ self.C.T

    def step(self, state: Tensor, x_t: Tensor) -> Tuple[Tensor, Tensor]:
        """One tick: ``(s_{t-1}, x_t) -> (s_t, y_t)``."""
        state = self.transition(state, x_t)
        return state, self.output(state)

    def linear_coefficients(self, xs: Tensor) -> Tuple[Tensor, Tensor]:
        r"""The recurrence as ``s_t = A s_{t-1} + b_t``: returns ``(A, b)``.

        ``A`` is the (n, n) transition, shared by every step; ``b`` is
        :math:`b_t = B x_t` for all steps at once, (batch, T, n) — what a parallel
        scan over the affine maps :math:`s \mapsto A s + b_t` needs.
        """
        xs = self._check_xs(xs)
        return self.A, xs @ self.B.T

    def forward(self, xs: Tensor, state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        xs = self._check_xs(xs)
        unbatched = xs.dim() == 2
        if unbatched:
            xs = xs.unsqueeze(0)
        batch, steps = xs.shape[0], xs.shape[1]
        if state is None:
            state = self.initial_state(batch)
        else:
            state = self._check_state(state, batch, unbatched)
        drive = xs @ self.B.T                                 # (B, T, n): b_t = B x_t
        states = []
        for t in range(steps):
            state = state @ self.A.T + drive[:, t]
            states.append(state)
        ys = torch.stack(states, dim=1) @ self.C.T if steps else xs.new_zeros(batch, 0, self.output_size)
        if unbatched:
            return ys.squeeze(0), state.squeeze(0)
        return ys, state

    def impulse_response(self, steps: int) -> Tensor:
        r"""The Markov parameters :math:`h_k = C A^k B`, ``k = 0..steps-1``: (steps, output_size, input_size).

        Starting from rest, an impulse :math:`x_1 = e_j` gives :math:`y_{k+1} = h_k e_j`,
        and any input gives :math:`y_t = \sum_{k=1}^{t} h_{t-k} x_k`.
        """
        check_int(type(self).__name__, "steps", steps, 0)
        out, power = [], self.B                                # power = A^k B
        for _ in range(steps):
            out.append(self.C @ power)
            power = self.A @ power
        if not out:
            return self.A.new_zeros(0, self.output_size, self.input_size)
        return torch.stack(out)

    def _check_xs(self, xs) -> Tensor:
        owner = type(self).__name__
        if not isinstance(xs, Tensor):
            raise TypeError(f"{owner}: expected the input to be a torch.Tensor, got {type(xs).__name__}")
        if xs.dim() not in (2, 3):
            raise ValueError(f"{owner}: expected input of shape (batch, T, input_size) or (T, input_size), "
                             f"got shape {tuple(xs.shape)}")
        check_features(owner, "input", xs, self.input_size, self.A, "system")
        return xs

    def _check_state(self, state, batch: int, unbatched: bool) -> Tensor:
        owner = type(self).__name__
        if not isinstance(state, Tensor):
            raise TypeError(f"{owner}: expected the state to be a torch.Tensor, got {type(state).__name__}")
        expected = (self.state_size,) if unbatched else (batch, self.state_size)
        if tuple(state.shape) != expected:
            raise ValueError(f"{owner}: expected state of shape {expected}, got {tuple(state.shape)}")
        if state.dtype != self.A.dtype:
            raise TypeError(f"{owner}: state dtype {state.dtype} does not match the system's dtype "
                            f"{self.A.dtype}; convert it with .to({self.A.dtype})")
        if state.device != self.A.device:
            raise ValueError(f"{owner}: state is on {state.device} but the system is on {self.A.device}")
        return state.unsqueeze(0) if unbatched else state

    def extra_repr(self) -> str:
        return (f"state_size={self.state_size}, input_size={self.input_size}, "
                f"output_size={self.output_size}, dtype={self.A.dtype}")


def _as_matrix(owner: str, name: str, value) -> Tensor:
    if isinstance(value, Tensor):
        m = value.detach().clone()
    else:
        try:
            m = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{owner}: {name} must be a matrix (tensor, array or nested list), "
                            f"got {type(value).__name__}") from None
    if m.dim() != 2:
        raise ValueError(f"{owner}: {name} must be a 2-D matrix, got shape {tuple(m.shape)}")
    if m.is_complex() or m.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be real, got dtype {m.dtype}")
    return m


class RationalRNN(StateMachine):
    r"""A scalar RNN whose update is a rational function: Newton's iteration for :math:`\sqrt{a}`.

    .. math::  h_t = \frac{h_{t-1}}{2} + \frac{a}{2\,h_{t-1}}, \qquad h_0 > 0

    With ``a = 2``, ``h_0 = 2`` this is :math:`h_t = h_{t-1}/2 + 1/h_{t-1}`. It
    ignores its input (drive it with :meth:`iterate`), emits its state, and
    converges quadratically to :math:`\sqrt{a}`. In exact arithmetic, for any
    :math:`h_0 > 0` every :math:`h_t` (:math:`t \ge 1`) lies above :math:`\sqrt a`
    and the sequence strictly decreases from there, since
    :math:`h_t^2 - a = (h_{t-1}^2 - a)^2 / (4 h_{t-1}^2)`. In floats it settles
    within an ulp of :math:`\sqrt a` and stays there.

    ``exact=True`` computes in :class:`fractions.Fraction` (no rounding at all;
    numerators and denominators double in length each step).

    >>> RationalRNN().iterate(3)
    [1.5, 1.4166666666666665, 1.4142156862745097]
    """

    def __init__(self, a: Real = 2, initial_state: Real = 2, *, exact: bool = False):
        owner = type(self).__name__
        for name, value in (("a", a), ("initial_state", initial_state)):
            check_positive(owner, name, value, hint="Newton's iteration for sqrt(a) needs a > 0 and h_0 > 0")
        convert = Fraction if exact else float
        self.a, self.exact = convert(a), exact
        half_a = self.a / 2
        super().__init__(convert(initial_state), lambda h, x: h / 2 + half_a / h)


def rational_sqrt2(steps: int, *, exact: bool = False) -> list:
    r"""The states :math:`h_1..h_{steps}` of :math:`h_t = h_{t-1}/2 + 1/h_{t-1}`, :math:`h_0 = 2`.

    They decrease to :math:`\sqrt 2`; five steps reach it to float precision.

    >>> abs(rational_sqrt2(5)[-1] - 2 ** 0.5) < 1e-15
    True
    """
    return RationalRNN(2, 2, exact=exact).iterate(steps)
