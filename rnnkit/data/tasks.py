r"""The classic long-dependency problems, as small seeded data sets.

Every generator returns a :class:`Task`: the data, what kind of output it asks
for, and the ``baseline`` loss of the best predictor that does not carry the
long-range information, so a trained model's loss can be read against it.

==================  ==============  =================================  ==========================
task                kind            inputs                             baseline
==================  ==============  =================================  ==========================
adding_problem      regression      (N, T, 2) float                    MSE 1/6
copy_memory         tagging         (N, T) long ids                    CE  L ln K / T per step
parity              classification  (N, T, 1) float bits [+ lengths]   CE  ln 2
embedded_reber      tagging         (N, T, 7) one-hot + lengths        NLL ln 2 / 6 per step
delayed_recall      classification  (N, T, K + 1) float                CE  ln K
digits_rows         classification  (N, 8, 8) float                    CE  ln 10
flip_flop           tagging         (N, T, bits) float ±1 pulses       NLL bits ln 2 (1 - p) per step
==================  ==============  =================================  ==========================

Losses are per item for regression and classification, and the mean over valid
steps for tagging (``sequence_nll(..., reduction="mean")``). Random generators
take ``seed`` (default 0: two calls without one return the same data, so pass
different seeds for training and test sets) or a CPU ``generator`` to draw from.

>>> task = make_task("parity", num_sequences=3, length=5, seed=1)
>>> task
Task(name='parity', kind='classification', inputs=(3, 5, 1), targets=(3,),
     input_size=1, output_size=2, baseline=0.6931)
>>> bool((task.inputs.sum((1, 2)) % 2 == task.targets).all())
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral

import torch
from torch import Tensor

from .._arguments import check_int, check_number, check_probability
from .reber import EXPECTED_EMBEDDED_LENGTH, REBER_SYMBOLS, draw_embedded_reber, reber_accepts, reber_next_symbols

__all__ = ["Task", "KINDS", "adding_problem", "copy_memory", "parity", "embedded_reber", "reber_accepts",
           "reber_next_symbols", "is_valid_prediction", "REBER_SYMBOLS", "delayed_recall", "digits_rows",
           "flip_flop", "TASKS", "make_task"]

KINDS = ("regression", "classification", "tagging")


@dataclass(frozen=True, eq=False)
class Task:
    """One data set of a task.

    ``inputs`` (N, T, input_size) float, or (N, T) long token ids in
    ``[0, input_size)`` where the task says so; ``targets`` (N, output_size)
    floats for ``"regression"``, (N,) class ids in ``[0, output_size)`` for
    ``"classification"``, (N, T) class ids or (N, T, output_size) 0/1 sets for
    ``"tagging"``; ``lengths`` (N,) valid steps per sequence (the rest is zero
    padding), or None when every sequence has all T steps. ``baseline`` is the
    loss of the best predictor without the long-range memory, as documented by
    each generator.
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None
    kind: str
    baseline: float
    input_size: int
    output_size: int
    name: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Task: kind must be one of {list(KINDS)}, got {self.kind!r}")
        if len(self.targets) != len(self.inputs) or (self.lengths is not None
                                                     and len(self.lengths) != len(self.inputs)):
            raise ValueError(f"Task: inputs, targets and lengths must have the same first dimension, got "
                             f"{len(self.inputs)}, {len(self.targets)}"
                             + ("" if self.lengths is None else f" and {len(self.lengths)}"))

    def __len__(self) -> int:
        return len(self.inputs)

    def __repr__(self) -> str:
        lengths = "" if self.lengths is None else f", lengths={tuple(self.lengths.shape)}"
        return (f"Task(name={self.name!r}, kind={self.kind!r}, inputs={tuple(self.inputs.shape)}, "
                f"targets={tuple(self.targets.shape)}{lengths}, input_size={self.input_size}, "
                f"output_size={self.output_size}, baseline={self.baseline:.4g})")


# ----- argument checks --------------------------------------------------------------------------
def _count(owner: str, name: str, value, minimum: int, why: str = "") -> int:
    return check_int(owner, name, value, minimum, hint=why)


def _random_source(owner: str, generator, seed) -> torch.Generator:
    if generator is not None:
        if seed is not None:
            raise ValueError(f"{owner}: pass either generator or seed, not both")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{owner}: generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"{owner}: the data is drawn on the CPU, so generator must be a CPU generator, "
                             f"got one on {generator.device}")
        return generator
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{owner}: seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))


# ----- adding problem ---------------------------------------------------------------------------
def adding_problem(num_sequences: int, length: int, *, generator: torch.Generator | None = None,
                   seed: int | None = None) -> Task:
    r"""The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015).

    Channel 0 of ``inputs`` (N, T, 2) holds values :math:`v_t \sim U[0, 1]`;
    channel 1 is 1 at exactly two steps, :math:`a` uniform in the first half
    ``[0, T // 2)`` and :math:`b` uniform in the second ``[T // 2, T)``, and 0
    elsewhere. ``targets`` (N, 1) :math:`= v_a + v_b`. Kind ``"regression"``.

    Baseline: always predicting the mean, 1, has MSE
    :math:`\mathrm{Var}(v_a + v_b) = 2 \cdot \tfrac{1}{12} = 1/6 \approx 0.1667`,
    the least of any predictor that ignores the inputs.

    >>> task = adding_problem(4, length=10, seed=0)
    >>> tuple(task.inputs.shape), tuple(task.targets.shape), task.inputs[..., 1].sum(1).tolist()
    ((4, 10, 2), (4, 1), [2.0, 2.0, 2.0, 2.0])
    """
    owner = "adding_problem"
    count = _count(owner, "num_sequences", num_sequences, 1)
    steps = _count(owner, "length", length, 2, "one marker goes in each half")
    generator = _random_source(owner, generator, seed)
    values = torch.rand(count, steps, generator=generator)                        # (N, T)
    half = steps // 2
    first = torch.randint(0, half, (count, 1), generator=generator)
    second = torch.randint(half, steps, (count, 1), generator=generator)
    markers = torch.zeros_like(values)
    markers.scatter_(1, first, 1.0).scatter_(1, second, 1.0)
    targets = values.gather(1, first) + values.gather(1, second)                  # (N, 1)
    return Task(torch.stack([values, markers], dim=-1), targets, None, "regression", 1 / 6, 2, 1, owner)


# ----- copy memory ------------------------------------------------------------------------------
def copy_memory(num_sequences: int, delay: int, num_symbols: int = 8, copy_length: int = 10, *,
                generator: torch.Generator | None = None, seed: int | None = None) -> Task:
    r"""The copy-memory task of Arjovsky, Shah & Bengio 2016, as token ids.

    With :math:`L` = ``copy_length`` and :math:`K` = ``num_symbols``, a sequence
    has :math:`T = \text{delay} + 2L` steps. ``inputs`` (N, T) long: :math:`L`
    symbols drawn uniformly from ``1..K``, ``delay`` blanks (0), the delimiter
    :math:`K + 1`, then :math:`L - 1` blanks. ``targets`` (N, T) long: blank (0)
    except at the last :math:`L` steps, which repeat the :math:`L` symbols in
    order. Kind ``"tagging"``; ``input_size`` is :math:`K + 2` ids (embed or
    one-hot them), ``output_size`` :math:`K + 1` classes. (Arjovsky et al.'s code
    puts the delimiter one step earlier, after ``delay`` - 1 blanks, with
    :math:`L` blanks after it; the targets are the same.)

    Baseline: the memoryless strategy, blanks for the first
    :math:`\text{delay} + L` steps and a uniform guess over the :math:`K`
    symbols for the last :math:`L`, has cross-entropy per step
    :math:`L \ln K / T`; for the defaults :math:`10 \ln 8 / (\text{delay} + 20)`.

    >>> task = copy_memory(2, delay=3, num_symbols=4, copy_length=2, seed=0)
    >>> task.inputs.shape, bool((task.targets[:, -2:] == task.inputs[:, :2]).all())
    (torch.Size([2, 7]), True)
    >>> task.inputs[:, 2:].tolist()                  # delay blanks, delimiter 5, one more blank
    [[0, 0, 0, 5, 0], [0, 0, 0, 5, 0]]
    """
    owner = "copy_memory"
    count = _count(owner, "num_sequences", num_sequences, 1)
    delay = _count(owner, "delay", delay, 0)
    num_symbols = _count(owner, "num_symbols", num_symbols, 2)
    copy_length = _count(owner, "copy_length", copy_length, 1)
    generator = _random_source(owner, generator, seed)
    steps = delay + 2 * copy_length
    symbols = torch.randint(1, num_symbols + 1, (count, copy_length), generator=generator)
    inputs = torch.zeros(count, steps, dtype=torch.long)                          # (N, T)
    inputs[:, :copy_length] = symbols
    inputs[:, copy_length + delay] = num_symbols + 1
    targets = torch.zeros(count, steps, dtype=torch.long)
    targets[:, steps - copy_length:] = symbols
    baseline = copy_length * math.log(num_symbols) / steps
    return Task(inputs, targets, None, "tagging", baseline, num_symbols + 2, num_symbols + 1, owner)


# ----- parity -----------------------------------------------------------------------------------
def parity(num_sequences: int, length: int, variable_length: bool = False, *,
           generator: torch.Generator | None = None, seed: int | None = None) -> Task:
    r"""Parity: read bits, say whether the number of ones is odd.

    ``inputs`` (N, T, 1) float bits :math:`x_t \in \{0, 1\}`, ``targets`` (N,)
    long :math:`y = x_1 \oplus \dots \oplus x_\ell`. With ``variable_length``,
    each :math:`\ell` is uniform in ``[2, length]``, ``lengths`` (N,) holds it and
    steps past it are zero (so they leave the parity unchanged); otherwise
    :math:`\ell = T` = ``length`` and ``lengths`` is None. Kind ``"classification"``.

    Baseline: the parity is independent of every proper subset of the bits, so
    without memory of all of them the best cross-entropy is :math:`\ln 2`.

    >>> task = parity(3, length=6, variable_length=True, seed=0)
    >>> task.lengths.tolist(), task.targets.tolist()
    ([6, 5, 3], [0, 1, 1])
    """
    owner = "parity"
    count = _count(owner, "num_sequences", num_sequences, 1)
    steps = _count(owner, "length", length, 2)
    if not isinstance(variable_length, bool):
        raise TypeError(f"{owner}: variable_length must be True or False, got {type(variable_length).__name__}")
    generator = _random_source(owner, generator, seed)
    bits = torch.randint(0, 2, (count, steps), generator=generator)               # (N, T)
    lengths = None
    if variable_length:
        lengths = torch.randint(2, steps + 1, (count,), generator=generator)
        bits = bits * (torch.arange(steps) < lengths.unsqueeze(1))
    targets = bits.sum(1) % 2
    inputs = bits.unsqueeze(-1).to(torch.get_default_dtype())                     # (N, T, 1)
    return Task(inputs, targets, lengths, "classification", math.log(2), 1, 2, owner)


# ----- embedded Reber grammar -------------------------------------------------------------------
def embedded_reber(num_sequences: int, *, generator: torch.Generator | None = None,
                   seed: int | None = None) -> Task:
    r"""Strings of the embedded Reber grammar (Hochreiter & Schmidhuber 1997, experiment 1).

    A string is B, then T or P, a Reber string, the same T or P, then E (every
    branch taken with probability 1/2), e.g. ``BTBTXSETE``. ``inputs``
    (N, T, 7) one-hot over ``REBER_SYMBOLS`` = ``"BTSXPVE"``; ``lengths`` (N,) the
    string lengths (at least 9, 12 on average), zero padding after them.
    ``targets`` (N, T, 7) multi-hot: at step t, the set of symbols the grammar
    allows after the first t + 1 (what :func:`reber_next_symbols` returns; empty
    after the final E). Kind ``"tagging"``, for a Bernoulli readout whose loss is
    summed over the 7 symbols and averaged over valid steps; read it with a
    unidirectional network. :func:`is_valid_prediction` is the usual success
    criterion.

    Baseline: a predictor that knows the grammar state but has forgotten the
    second symbol makes every prediction exactly except the one after the inner
    E, where T and P are equally likely: a loss of :math:`2 \ln 2` once per string,
    :math:`2 \ln 2 / 12 = \ln 2 / 6 \approx 0.1155` per step in expectation, and
    at most half the strings predicted right. A predictor seeing only the
    current symbol does worse.

    >>> task = embedded_reber(2, seed=0)
    >>> ids = task.inputs.argmax(-1)                 # (N, T)
    >>> strings = ["".join(REBER_SYMBOLS[i] for i in row[:n]) for row, n in zip(ids, task.lengths)]
    >>> strings, [reber_accepts(s) for s in strings]
    (['BPBPVVEPE', 'BTBPVPSETE'], [True, True])
    """
    owner = "embedded_reber"
    count = _count(owner, "num_sequences", num_sequences, 1)
    generator = _random_source(owner, generator, seed)
    symbols, allowed = draw_embedded_reber(count, generator)                       # (N, T), (N, T, 7)
    lengths = (symbols >= 0).sum(1)
    inputs = torch.zeros(*symbols.shape, len(REBER_SYMBOLS))                      # (N, T, 7)
    inputs.scatter_(2, symbols.clamp(min=0).unsqueeze(-1), 1.0)
    inputs *= (symbols >= 0).unsqueeze(-1)
    targets = allowed.to(inputs.dtype)
    baseline = 2 * math.log(2) / EXPECTED_EMBEDDED_LENGTH
    return Task(inputs, targets, lengths, "tagging", baseline, 7, 7, owner)


def is_valid_prediction(probabilities: Tensor, targets: Tensor, lengths: Tensor | None = None,
                        threshold: float = 0.5) -> Tensor:
    """Hochreiter & Schmidhuber's criterion, per string: at every valid step the
    symbols predicted with probability above ``threshold`` are exactly the
    allowed next symbols.

    ``probabilities`` and ``targets`` (N, T, 7), ``lengths`` (N,) or None;
    returns a bool tensor (N,), whose mean is the fraction of strings solved.

    >>> task = embedded_reber(4, seed=0)
    >>> is_valid_prediction(task.targets, task.targets, task.lengths).tolist()
    [True, True, True, True]
    """
    owner = "is_valid_prediction"
    for name, value in (("probabilities", probabilities), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}: expected {name} to be a torch.Tensor, got {type(value).__name__}")
    if probabilities.dim() != 3 or probabilities.shape != targets.shape:
        raise ValueError(f"{owner}: expected probabilities and targets of the same shape (N, T, symbols), got "
                         f"{tuple(probabilities.shape)} and {tuple(targets.shape)}")
    wrong = ((probabilities > threshold) != targets.bool()).any(-1)              # (N, T)
    if lengths is not None:
        if not isinstance(lengths, Tensor) or lengths.shape != targets.shape[:1]:
            raise ValueError(f"{owner}: expected lengths as a tensor of shape ({len(targets)},), got "
                             f"{tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__}")
        wrong &= torch.arange(targets.shape[1], device=wrong.device) < lengths.to(wrong.device).unsqueeze(1)
    return ~wrong.any(1)


# ----- delayed recall ---------------------------------------------------------------------------
def delayed_recall(num_sequences: int, delay: int, num_symbols: int = 4, noise_std: float = 1.0, *,
                   generator: torch.Generator | None = None, seed: int | None = None) -> Task:
    r"""Recall a symbol shown once, after ``delay`` steps of distracting noise.

    ``inputs`` (N, T, K + 1) float with :math:`T` = ``delay`` + 1 and :math:`K` =
    ``num_symbols``: step 0 is the one-hot symbol in channels ``0..K-1``; steps
    ``1..delay`` hold :math:`\mathcal{N}(0, \text{noise\_std}^2)` noise in channel
    :math:`K` and zeros elsewhere. ``targets`` (N,) long, the symbol, drawn
    uniformly. Kind ``"classification"`` (read the last step).

    Baseline: the noise says nothing about the symbol, so without memory of step
    0 the best cross-entropy is :math:`\ln K`.

    >>> task = delayed_recall(2, delay=3, num_symbols=4, seed=0)
    >>> tuple(task.inputs.shape), torch.equal(task.inputs[:, 0, :4].argmax(-1), task.targets)
    ((2, 4, 5), True)
    """
    owner = "delayed_recall"
    count = _count(owner, "num_sequences", num_sequences, 1)
    delay = _count(owner, "delay", delay, 1)
    num_symbols = _count(owner, "num_symbols", num_symbols, 2)
    check_number(owner, "noise_std", noise_std, low=0.0, high_closed=False, what="a finite number >= 0")
    generator = _random_source(owner, generator, seed)
    targets = torch.randint(0, num_symbols, (count,), generator=generator)
    inputs = torch.zeros(count, delay + 1, num_symbols + 1)                       # (N, T, K + 1)
    inputs[torch.arange(count), 0, targets] = 1.0
    inputs[:, 1:, num_symbols] = noise_std * torch.randn(count, delay, generator=generator)
    return Task(inputs, targets, None, "classification", math.log(num_symbols), num_symbols + 1,
                num_symbols, owner)


# ----- digits, row by row -----------------------------------------------------------------------
_DIGITS_TOTAL = 1797


@lru_cache(maxsize=1)
def _digits(load_digits) -> tuple[Tensor, Tensor]:
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float64) / 16.0            # (1797, 8, 8)
    return images, torch.as_tensor(data.target, dtype=torch.long)


def digits_rows(split: str = "train", test_fraction: float = 0.25, seed: int = 0) -> Task:
    r"""scikit-learn's 8×8 handwritten digits, read one pixel row per step.

    ``inputs`` (N, 8, 8) float in [0, 1] (grey levels 0..16 divided by 16), row
    :math:`t` of the image at step :math:`t`; ``targets`` (N,) long digits 0..9.
    The 1797 images (shipped with scikit-learn, nothing is downloaded) are split
    by class: the test set holds ``round(test_fraction · 1797)`` images (449 of
    them by default, the training set 1348), shared among the digits in
    proportion to their counts (largest remainders), each digit's images chosen
    by a permutation seeded by ``seed``. Items keep the data set's order. Kind
    ``"classification"``.

    Baseline: :math:`\ln 10 \approx 2.3026`, the cross-entropy of a uniform
    guess (guessing the class frequencies does only 1e-4 better, 2.3025).

    >>> train, test = digits_rows("train"), digits_rows("test")
    >>> len(train), len(test), tuple(test.inputs.shape)
    (1348, 449, (449, 8, 8))
    """
    owner = "digits_rows"
    if split not in ("train", "test"):
        raise ValueError(f"{owner}: split must be 'train' or 'test', got {split!r}")
    check_number(owner, "test_fraction", test_fraction, low=0.0, high=1.0, low_closed=False, high_closed=False)
    num_test = round(test_fraction * _DIGITS_TOTAL)
    if not 0 < num_test < _DIGITS_TOTAL:
        raise ValueError(f"{owner}: test_fraction {test_fraction} leaves an empty split of the "
                         f"{_DIGITS_TOTAL} images")
    generator = _random_source(owner, None, seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(f"{owner}: needs scikit-learn for its bundled digits; install it with "
                          f"pip install scikit-learn") from error
    images, labels = _digits(load_digits)
    counts = torch.bincount(labels, minlength=10)
    shares = test_fraction * counts.double()
    per_class = shares.floor().long()
    leftover = num_test - int(per_class.sum())
    per_class[torch.argsort(shares - per_class, descending=True, stable=True)[:leftover]] += 1
    in_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):
        members = (labels == digit).nonzero().squeeze(1)
        in_test[members[torch.randperm(len(members), generator=generator)[: int(per_class[digit])]]] = True
    keep = in_test if split == "test" else ~in_test
    return Task(images[keep].to(torch.get_default_dtype()), labels[keep], None, "classification",
                math.log(10), 8, 10, owner)


# ----- flip-flop memory --------------------------------------------------------------------------
def flip_flop(num_sequences: int, length: int, bits: int = 3, pulse_probability: float = 0.05, *,
              generator: torch.Generator | None = None, seed: int | None = None) -> Task:
    r"""The ``bits``-bit flip-flop of Sussillo & Barak 2013: remember the sign of each channel's last pulse.

    ``inputs`` (N, T, bits) float: mostly zero, with pulses of +1 or -1 (equally
    likely). Every channel has a pulse at step 0, so the memory is always
    defined; at each later step each channel pulses independently with
    probability ``pulse_probability``. ``targets`` (N, T, bits) float 0/1: 1 where
    the channel's latest pulse up to and including step t was +1 (``2·y - 1`` is
    the ±1 output of the original task). A pulse may repeat the stored sign.
    Kind ``"tagging"`` (a Bernoulli readout per bit, or a regression on ``2·y - 1``).
    A network that solves it needs :math:`2^{\text{bits}}` memory states — stable
    fixed points of its dynamics, which :func:`rnnkit.analysis.fixed_points.find_fixed_points`
    finds.

    Baseline: a predictor that sees the current input but has no memory knows a
    bit exactly at its pulses and is at chance (:math:`\ln 2`) otherwise, so its
    expected loss per step, summed over the bits, is
    :math:`\text{bits} \cdot \ln 2 \cdot (1 - p)(T - 1) / T`.

    >>> task = flip_flop(1, length=6, bits=2, pulse_probability=0.3, seed=4)
    >>> task.inputs[0].T.tolist()                    # (bits, T): the pulses of each channel
    [[1.0, -1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, -1.0]]
    >>> task.targets[0].T.tolist()                   # the sign of the latest pulse, as 0/1
    [[1.0, 0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]]
    """
    owner = "flip_flop"
    count = _count(owner, "num_sequences", num_sequences, 1)
    steps = _count(owner, "length", length, 1)
    bits = _count(owner, "bits", bits, 1)
    check_probability(owner, "pulse_probability", pulse_probability, one=True)
    generator = _random_source(owner, generator, seed)
    pulsed = torch.rand(count, steps, bits, generator=generator) < pulse_probability    # (N, T, bits)
    pulsed[:, 0] = True
    signs = torch.randint(0, 2, (count, steps, bits), generator=generator) * 2 - 1
    inputs = (pulsed * signs).to(torch.get_default_dtype())
    time = torch.arange(steps).view(1, steps, 1)
    last = torch.where(pulsed, time, torch.zeros((), dtype=time.dtype)).cummax(1).values  # latest pulse
    targets = (signs.gather(1, last) > 0).to(inputs.dtype)
    baseline = bits * math.log(2) * (1 - pulse_probability) * (steps - 1) / steps
    return Task(inputs, targets, None, "tagging", baseline, bits, bits, owner)


# ----- registry ---------------------------------------------------------------------------------
TASKS = {generate.__name__: generate for generate in
         (adding_problem, copy_memory, parity, embedded_reber, delayed_recall, digits_rows, flip_flop)}


def make_task(name: str, **kwargs) -> Task:
    """The task called ``name`` (a key of ``TASKS``), built with ``kwargs``.

    >>> make_task("copy_memory", num_sequences=5, delay=20).inputs.shape
    torch.Size([5, 40])
    """
    if not isinstance(name, str):
        raise TypeError(f"make_task: name must be a string, one of {sorted(TASKS)}, got {type(name).__name__}")
    if name not in TASKS:
        raise ValueError(f"make_task: unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)
