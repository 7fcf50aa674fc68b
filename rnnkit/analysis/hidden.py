r"""Hidden-state pictures: where the state goes (PCA) and which units respond to what.

:func:`hidden_states` records the states :math:`s_1 .. s_T` of one layer (the state after
reading each input); :func:`hidden_pca` projects them onto their principal components, so
a trajectory through a 256-dimensional state space can be drawn in two; and
:func:`unit_responses` correlates every unit with named features of the input — for a
character model, :func:`text_features` gives "inside a string", "position in the line",
"bracket depth" and more, and the units that track them stand out (Karpathy, Johnson &
Fei-Fei 2015).

>>> import torch, rnnkit
>>> model = rnnkit.LSTM(3, 8, batch_first=True)
>>> hidden = hidden_states(model, torch.randn(2, 20, 3))
>>> tuple(hidden.states.shape), hidden.labels[:2], hidden.labels[8]     # [h; c], s_1 .. s_T
((2, 20, 16), ['h0', 'h1'], 'c0')
>>> pca = hidden_pca(hidden, num_components=2)
>>> tuple(pca.projected.shape), bool(pca.explained_variance_ratio.sum() <= 1)
((2, 20, 2), True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from .._arguments import check_int
from ..cells.lstm import LSTMCell
from .gradients import trajectory

__all__ = ["HiddenStates", "hidden_states", "HiddenPCA", "hidden_pca", "UnitResponses", "unit_responses",
           "text_features"]


@dataclass(frozen=True)
class HiddenStates:
    """The states of one layer after each input.

    Attributes:
        states: :math:`s_1 .. s_T`, (B, T, S): tuple states concatenated (LSTM: ``[h; c]``).
        labels: a name per unit: ``h0 .. h{H-1}`` (and ``c0 ..`` for an LSTM; ``s<i>_<j>`` for
            other tuple states).
        state_sizes: sizes of the concatenated state tensors.
    """
    states: Tensor
    labels: list
    state_sizes: tuple


def _labels(cell, sizes: tuple) -> list:
    if len(sizes) == 1:
        return [f"h{j}" for j in range(sizes[0])]
    prefixes = ("h", "c") if isinstance(cell, LSTMCell) else tuple(f"s{i}_" for i in range(len(sizes)))
    return [f"{prefix}{j}" for prefix, size in zip(prefixes, sizes) for j in range(size)]


def hidden_states(model, inputs, *, state=None, layer=0) -> HiddenStates:
    """The states of one recurrent layer after each step, (B, T, S).

    ``model``, ``inputs``, ``state`` and ``layer`` as in
    :func:`rnnkit.analysis.gradients.gradient_flow`.
    """
    run = trajectory("hidden_states", model, inputs, state, layer)
    return HiddenStates(run.stacked_states()[:, 1:], _labels(run.cell, run.state_sizes), run.state_sizes)


def _as_states(owner: str, states) -> Tensor:
    states = states.states if isinstance(states, HiddenStates) else states
    if not isinstance(states, Tensor) or states.dim() not in (2, 3) or not states.is_floating_point():
        got = f"shape {tuple(states.shape)} {states.dtype}" if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"{owner}: expected HiddenStates or a float tensor of states (B, T, S) or (N, S), "
                         f"got {got}")
    return states.detach()


@dataclass(frozen=True)
class HiddenPCA:
    """Principal components of a set of states.

    Attributes:
        projected: the states in component coordinates, shaped like the input with ``K``
            in place of ``S``.
        components: (K, S), orthonormal rows, largest variance first; each row's sign is
            fixed so that its largest-magnitude entry is positive.
        mean: (S,), the mean state that was subtracted.
        scale: (S,), what each unit was divided by (its standard deviation with
            ``standardize=True``, else ones).
        explained_variance: (K,), the variance along each component.
        explained_variance_ratio: (K,), its share of the total variance.
    """
    projected: Tensor
    components: Tensor
    mean: Tensor
    scale: Tensor
    explained_variance: Tensor
    explained_variance_ratio: Tensor


def hidden_pca(states, num_components: int = 2, *, standardize: bool = False) -> HiddenPCA:
    r"""PCA of states (B, T, S) or (N, S), pooled over batch and time.

    With the centred data :math:`X` (N × S) and its SVD :math:`X = U \Sigma V^\top`, the
    components are the first ``K`` rows of :math:`V^\top` and the variances
    :math:`\sigma_k^2/(N-1)`. ``standardize=True`` first divides each unit by its standard
    deviation (PCA of the correlation matrix), so that a few large-valued units — an LSTM's
    integrating cells ``c`` — do not fill the first components alone; constant units are
    left unscaled.
    """
    owner = "hidden_pca"
    states = _as_states(owner, states)
    flat = states.reshape(-1, states.shape[-1]).to(torch.float64)
    count, size = flat.shape
    limit = min(count, size)
    check_int(owner, "num_components", num_components, 1, f"{limit} is the smaller of {count} states and {size} units",
              maximum=limit)
    if count < 2:
        raise ValueError(f"{owner}: PCA needs at least 2 states, got {count}")
    mean = flat.mean(0)
    scale = flat.std(0) if standardize else torch.ones(size, dtype=torch.float64)
    scale = torch.where(scale > 0, scale, 1.0)
    centred = (flat - mean) / scale
    _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
    components = vt[:num_components]
    biggest = components.abs().argmax(-1)
    components = components * torch.sign(components.gather(1, biggest[:, None]))
    variance = singular ** 2 / (count - 1)
    total = variance.sum()
    ratio = variance[:num_components] / total if total > 0 else torch.zeros(num_components, dtype=torch.float64)
    projected = (centred @ components.T).reshape(*states.shape[:-1], num_components)
    dtype = states.dtype
    return HiddenPCA(projected.to(dtype), components.to(dtype), mean.to(dtype), scale.to(dtype),
                     variance[:num_components].to(dtype), ratio.to(dtype))


@dataclass(frozen=True)
class UnitResponses:
    """How each unit's activation correlates with each feature.

    Attributes:
        features: the feature names, in order.
        correlations: Pearson correlation of every feature with every unit, (F, S); 0 where
            the feature or the unit is constant.
        labels: the unit names (``h3``, ``c17``, ...).
        top_units: per feature, the ``top`` units with the largest ``|correlation|``, (F, top).
        top_correlations: their correlations, (F, top).
    """
    features: list
    correlations: Tensor
    labels: list
    top_units: Tensor
    top_correlations: Tensor

    def describe(self) -> list:
        """One line per feature: its best units and their correlations."""
        lines = []
        for i, name in enumerate(self.features):
            best = ", ".join(f"{self.labels[u]} ({c:+.2f})"
                             for u, c in zip(self.top_units[i].tolist(), self.top_correlations[i].tolist()))
            lines.append(f"{name}: {best}")
        return lines


def unit_responses(states, features: Mapping[str, Tensor], *, top: int = 3) -> UnitResponses:
    r"""Correlate every unit with every feature over batch and time.

    Args:
        states: :class:`HiddenStates` or a tensor (B, T, S) (or (T, S)).
        features: name -> values with the states' leading shape, (B, T) (or (T,)); e.g.
            :func:`text_features` for a character model.
        top: how many units to name per feature.

    :math:`r = \frac{\sum (a - \bar a)(f - \bar f)}{\sqrt{\sum (a - \bar a)^2 \sum (f - \bar f)^2}}`,
    pooled over every step of every sequence.

    >>> import torch
    >>> states = torch.randn(50, 4)
    >>> states[:, 2] = torch.arange(50.0)                   # unit 2 counts the steps
    >>> unit_responses(states, {"step": torch.arange(50)}, top=1).describe()
    ['step: h2 (+1.00)']
    """
    owner = "unit_responses"
    labels = states.labels if isinstance(states, HiddenStates) else None
    states = _as_states(owner, states)
    size = states.shape[-1]
    labels = labels or [f"h{j}" for j in range(size)]
    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"{owner}: expected features as a non-empty dict name -> tensor "
                         f"{tuple(states.shape[:-1])}, got {type(features).__name__}")
    check_int(owner, "top", top, 1, f"there are {size} units", maximum=size)
    a = states.reshape(-1, size).to(torch.float64)
    a = a - a.mean(0)
    a_norm = a.norm(dim=0)                                              # (S,)
    rows = []
    for name, values in features.items():
        values = torch.as_tensor(values)
        if values.shape != states.shape[:-1]:
            raise ValueError(f"{owner}: feature {name!r} has shape {tuple(values.shape)}, but the states are "
                             f"{tuple(states.shape)}; give one value per state, {tuple(states.shape[:-1])}")
        f = values.reshape(-1).to(torch.float64)
        f = f - f.mean()
        denominator = f.norm() * a_norm
        rows.append(torch.where(denominator > 0, (f @ a) / denominator.clamp_min(1e-300), 0.0))
    correlations = torch.stack(rows)                                    # (F, S)
    order = correlations.abs().argsort(dim=-1, descending=True)[:, :top]
    return UnitResponses(list(features), correlations, labels, order, correlations.gather(1, order))


def text_features(text) -> dict:
    """Features of a character sequence that a good character model tracks, one value per character.

    Each value describes the text *after* reading that character:

    * ``"inside string"``: 1 between an opening quote (``'`` or ``"``) and its closing one on
      the same line, quotes included — a line break ends an unclosed string;
    * ``"line position"``: characters since the last line break (0 at the break itself);
    * ``"indentation"``: the number of leading spaces of the current line;
    * ``"bracket depth"``: how many ``(``, ``[``, ``{`` are open;
    * ``"space"``: 1 for a space character.

    ``text`` is a string or a list of one-character strings.

    >>> f = text_features('a("b")\\n x')
    >>> f["inside string"].tolist(), f["bracket depth"].tolist(), f["line position"].tolist()
    ([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 1.0, 2.0])
    """
    owner = "text_features"
    if isinstance(text, (list, tuple)):
        bad = [c for c in text if not (isinstance(c, str) and len(c) == 1)]
        if bad:
            raise ValueError(f"{owner}: expected a list of single characters, got one holding {bad[0]!r}; "
                             f"map longer tokens (such as '<unk>') to one character first")
        text = "".join(text)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{owner}: expected a non-empty string (or a list of characters), got "
                         f"{text!r:.40}")
    names = ("inside string", "line position", "indentation", "bracket depth", "space")
    values = {name: [] for name in names}
    quote, position, indent, counting_indent, depth = None, 0, 0, True, 0
    for char in text:
        if char == "\n":
            quote, position, indent, counting_indent = None, 0, 0, True
        else:
            position += 1
            if counting_indent and char == " ":
                indent += 1
            else:
                counting_indent = False
        closing = quote is not None and char == quote
        if quote is None and char in "'\"":
            quote = char
        inside = quote is not None
        if closing:
            quote = None
        if not inside:
            depth += char in "([{"
            depth = max(0, depth - (char in ")]}"))
        for name, value in zip(names, (inside, position, indent, depth, char == " ")):
            values[name].append(float(value))
    return {name: torch.tensor(v) for name, v in values.items()}
