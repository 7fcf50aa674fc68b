r"""A neural cache for evaluating language models (Grave, Joulin & Usunier 2017).

Text repeats itself: a name, a number or a topic word that came a few sentences ago
is likely to come again. A recurrent model can only remember that in its state; the
cache keeps the last ``window`` outputs ``h_j`` of the model's last layer, each with
the word that followed it, and predicts

.. math::

    p(w \mid h_t) = (1 - \lambda)\, p_{\text{model}}(w \mid h_t)
                    + \lambda \sum_{j:\ w_{j+1} = w} \operatorname{softmax}_j(\theta\, h_t \cdot h_j)

over the previous ``window`` positions ``j < t`` of the same stream. Nothing is trained:
``window``, ``theta`` and ``lambda`` are chosen on the validation text
(:func:`choose_cache`) and then the test text is scored once with them. Every
prediction still uses only the words before it, so the result is a perplexity like
any other; but it is the model *and* its cache, and the papers report the two apart,
as ``rnnkit train`` does (``test`` and ``test + cache``).

The rows are read as :func:`~rnnkit.train.evaluation.token_nll` reads them, each row
with its own cache, which starts empty; a position with nothing in its cache yet is
scored by the model alone.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from .evaluation import chunks, stream

__all__ = ["CacheSettings", "cache_nll", "choose_cache", "WINDOWS", "THETAS", "LAMBDAS"]

# the grid choose_cache searches on the validation text
WINDOWS = (100, 200, 400, 800)
THETAS = (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class CacheSettings:
    """The cache's size (``window`` previous positions), sharpness ``theta`` and weight ``lam``."""

    window: int
    theta: float
    lam: float

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"CacheSettings: window must be an int >= 1, got {self.window!r}")
        if not (isinstance(self.theta, (int, float)) and 0 < self.theta < math.inf):
            raise ValueError(f"CacheSettings: theta must be a number > 0, got {self.theta!r}")
        if not (isinstance(self.lam, (int, float)) and 0 <= self.lam < 1):
            raise ValueError(f"CacheSettings: lam must be in [0, 1), got {self.lam!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.lam == 0:
            return "no neural cache (none helped on the validation text)"
        return f"a neural cache of the last {self.window} tokens, theta {self.theta:g}, lambda {self.lam:g}"


@torch.no_grad()
def cache_nll(model, split, settings, *, batch_size: int = 32, truncation: int = 256,
              max_tokens: Optional[int] = None, device=None):
    """``(summed negative log-likelihood in nats, tokens predicted)`` of ``model`` with a neural cache.

    ``settings`` is one :class:`CacheSettings`, or a sequence of them: then the first item is
    a list of totals, one for each, computed in one pass. ``model`` is a
    :class:`~rnnkit.models.LanguageModel` (its ``features`` and ``readout_nll``); the other
    arguments are :func:`~rnnkit.train.evaluation.token_nll`'s.
    """
    many = not isinstance(settings, CacheSettings)
    grid = list(settings) if many else [settings]
    if not grid or not all(isinstance(s, CacheSettings) for s in grid):
        raise TypeError("cache_nll: settings must be a CacheSettings or a non-empty sequence of them")
    tokens, context, count = stream(split, max_tokens)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        totals = _score(model, tokens, context, count, grid, batch_size, truncation, device)
    finally:
        model.train(was_training)
    return (totals if many else totals[0]), count


def _score(model, tokens, context, count, grid, batch_size, truncation, device) -> list:
    widest = max(s.window for s in grid)
    pairs = sorted({(s.window, float(s.theta)) for s in grid})
    totals = torch.zeros(len(grid), dtype=torch.float64, device=device)
    state, keys, values, known = None, None, None, None
    for inputs, targets, mask in chunks(tokens, context, count, batch_size, truncation, device):
        h, state = model.features(inputs, state)
        nll = model.readout_nll(h, targets).double()                        # (B, T)
        h = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h  # float64 stays float64
        if keys is None:                                                    # an empty cache per row
            keys = h.new_zeros(h.shape[0], widest, h.shape[-1])
            values = targets.new_zeros(h.shape[0], widest)
            known = torch.zeros(h.shape[0], widest, dtype=torch.bool, device=h.device)
        keys, values, known = (torch.cat([keys, h], 1), torch.cat([values, targets], 1),
                               torch.cat([known, mask], 1))
        steps = h.shape[1]
        scores = h @ keys.transpose(1, 2)                                   # (B, T, W + T)
        query = torch.arange(steps, device=h.device)[:, None] + widest     # each query's own index
        index = torch.arange(widest + steps, device=h.device)[None, :]
        same = values[:, None, :] == targets[:, :, None]                   # the key's next word is the target
        cached = {}
        for window, theta in pairs:
            allowed = ((index < query) & (index >= query - window))[None] & known[:, None, :]
            weights = torch.softmax((theta * scores).masked_fill(~allowed, -math.inf), -1)
            probability = torch.nan_to_num(weights, 0.0).mul(same).sum(-1).double()
            cached[window, theta] = probability, allowed.any(-1)
        for i, s in enumerate(grid):                  # -log((1 - lam) p_model + lam p_cache), in log space
            probability, has = cached[s.window, float(s.theta)]
            mixed = -torch.logaddexp(math.log1p(-s.lam) - nll, torch.log(s.lam * probability))
            totals[i] += torch.where(has, mixed, nll)[mask].sum()
        keys, values, known = keys[:, -widest:], values[:, -widest:], known[:, -widest:]
    return totals.tolist()


def choose_cache(model, validation, *, windows: Sequence[int] = WINDOWS, thetas: Sequence[float] = THETAS,
                 lambdas: Sequence[float] = LAMBDAS, **options):
    """The :class:`CacheSettings` of the grid with the lowest loss on ``validation``, and that
    loss per token (nats); ``options`` are :func:`cache_nll`'s. The model alone (``lam`` 0) is
    among the candidates: a cache that does not help on validation is not used."""
    grid = [CacheSettings(w, float(t), float(lam)) for w, t, lam in itertools.product(windows, thetas, lambdas)]
    grid.insert(0, CacheSettings(min(windows), float(min(thetas)), 0.0))      # the model alone, chosen on a tie
    totals, count = cache_nll(model, validation, grid, **options)
    best = min(range(len(grid)), key=lambda i: totals[i])
    return grid[best], totals[best] / count
