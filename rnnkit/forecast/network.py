"""The forecaster's network, its two decoders, and the loop that trains it.

Both decoders read the window's rows (the scaled value, whether it was observed, the step's calendar
and future covariates, the past covariates, the static ones) with an LSTM (:class:`rnnkit.LSTM`):

- **direct** (the default): the last state gives, through one linear map, a context for each of the
  ``h`` steps ahead; a small network reads each step's context beside what is known ahead of it
  (calendar, future covariates) and gives that step's raw outputs for the head. All steps at once:
  no error feeds back, and one pass forecasts every horizon.
- **autoregressive**: the LSTM runs on past the window, each step reading the value before it, and
  every state gives the next value's distribution (trained on every step of the window with the true
  values fed in); forecasts are sample paths, each draw fed back as the next step's input, and the
  intervals are the paths' quantiles.

:func:`train` draws windows at random ends from every series (a series weighs by how many windows it
has), and runs Adam with a cosine decay for ``steps`` steps or until the time budget is spent.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..shortcuts import LSTM

__all__ = ["DECODERS", "Network", "Scaler", "scaled", "train"]

DECODERS = ("direct", "autoregressive")
PATHS = 200                       # sample paths per series of the autoregressive decoder


class Scaler:
    r"""What the network reads and models instead of ``y``: :math:`z = y/s`, or :math:`z = \log(1 + y/s)`
    (``log``, for series that are never negative: errors become relative, as the field's measures are,
    and the quantiles map back exactly, the map being increasing). Counts (the negative binomial) are
    modelled as they are, with a mean proportional to :math:`s`."""

    def __init__(self, log: bool = False, counts: bool = False):
        self.log, self.counts = log, counts

    def __call__(self, y, scale):
        z = y / scale
        return torch.log1p(z.clamp_min(0.0)) if self.log else z

    def inverse(self, z, scale):
        return (torch.expm1(z).clamp_min(0.0) if self.log else z) * scale

    def targets(self, y, scale) -> tuple:
        """``(target, scale)`` as the head's loss and quantiles take them."""
        return (y, scale) if self.counts else (self(y, scale), torch.ones_like(scale))

    def values(self, got, scale):
        """The head's quantiles or draws in the series' units."""
        return got if self.counts else self.inverse(got, scale)


def scaled(batch: dict, scaler: Scaler) -> tuple:
    """``(x, scale)``: the window's rows with ``y`` scaled (``scaler``) by the mean absolute value of the
    observed context (1 where that is 0)."""
    x = torch.from_numpy(batch["x"])
    y, observed = x[..., 0], x[..., 1]
    scale = (y.abs() * observed).sum(1) / observed.sum(1).clamp_min(1.0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.cat([(scaler(y, scale[:, None]) * observed).unsqueeze(-1), x[..., 1:]], -1), scale


class Network(nn.Module):
    def __init__(self, *, values: int, steps: int, past: int, static: int, h: int, outputs: int, hidden: int,
                 layers: int, decoder: str, season: int = 0):
        super().__init__()
        self.h, self.outputs, self.decoder, self.steps, self.season = h, outputs, decoder, steps, season
        self.rnn = LSTM(values + steps + past + static, hidden, num_layers=layers, batch_first=True)
        if decoder == "direct":
            self.width = max(8, hidden // 4)
            self.context = nn.Linear(hidden, h * self.width)
            extra = 1 if season else 0
            self.local = nn.Sequential(nn.Linear(self.width + steps + extra, hidden), nn.ReLU(),
                                       nn.Linear(hidden, outputs))
            self.skip = nn.Linear(self.width, outputs)
        else:
            self.out = nn.Linear(hidden, outputs)

    def _inputs(self, x, static):
        if static.shape[-1]:
            x = torch.cat([x, static.unsqueeze(1).expand(-1, x.shape[1], -1)], -1)
        return x

    def forward(self, x, ahead, static):
        """Direct: ``x`` (B, context, inputs), ``ahead`` (B, h, steps) -> raw outputs (B, h, outputs)."""
        out, _ = self.rnn(self._inputs(x, static))
        c = self.context(out[:, -1]).view(-1, self.h, self.width)
        if not self.season:
            return self.skip(c) + self.local(torch.cat([c, ahead], -1))
        base = self.baseline(x)                                                        # (B, h)
        raw = self.skip(c) + self.local(torch.cat([c, ahead, base.unsqueeze(-1)], -1))
        return raw + nn.functional.pad(base.unsqueeze(-1), (0, self.outputs - 1))

    def baseline(self, x):
        """The seasonal naive forecast of each step ahead in the network's units (the last value where the
        season is 1): the value one season before it, from the window's last season."""
        context = x.shape[1]
        rows = context - self.season + torch.arange(self.h) % self.season
        return x[:, rows.clamp_min(0), 0]

    def teacher_forced(self, x, ahead, y, static):
        """Autoregressive: raw outputs for every row of the window and the ``h`` after it, each from the
        rows before it (the true values fed in): (B, context + h, outputs), row ``t`` about ``y_t``."""
        rows = self._rows(x, ahead, y)
        shifted = torch.cat([torch.zeros_like(rows[:, :1, :2]), rows[:, :-1, :2]], 1)      # y, observed of t - 1
        out, _ = self.rnn(self._inputs(torch.cat([shifted, rows[..., 2:]], -1), static))
        return self.out(out)

    def _rows(self, x, ahead, y):
        """The window's rows and the ``h`` after it: (B, context + h, inputs) (y scaled, observed 1)."""
        later = torch.cat([y.unsqueeze(-1), torch.ones_like(y).unsqueeze(-1), ahead,
                           torch.zeros(*y.shape, x.shape[-1] - 2 - ahead.shape[-1], dtype=x.dtype)], -1)
        return torch.cat([x, later], 1)

    def paths(self, x, ahead, static, scale, head, scaler, generator, paths: int = PATHS):
        """Autoregressive forecasts: ``paths`` sample paths per series, (B, paths, h), in the series' units."""
        b = x.shape[0]
        rows = torch.cat([torch.zeros_like(x[:, :1, :2]), x[:, :-1, :2]], 1)
        out, state = self.rnn(self._inputs(torch.cat([rows, x[..., 2:]], -1), static))
        repeat = (lambda t: t.repeat_interleave(paths, 0))
        state = tuple(s.repeat_interleave(paths, 1) for s in state) if isinstance(state, tuple) else \
            state.repeat_interleave(paths, 1)
        last = repeat(torch.stack([x[:, -1, 0], x[:, -1, 1]], -1))                     # y_T (scaled), observed
        scale_p, static_p, ahead_p = repeat(scale), repeat(static), repeat(ahead)
        draws = []
        for k in range(ahead.shape[1]):
            step = torch.cat([last, ahead_p[:, k], torch.zeros(b * paths, x.shape[-1] - 2 - ahead.shape[-1],
                                                               dtype=x.dtype)], -1).unsqueeze(1)
            out, state = self.rnn(self._inputs(step, static_p), state)
            draw = head.sample(self.out(out[:, -1]), scaler.targets(scale_p, scale_p)[1], generator)
            value = scaler.values(draw, scale_p)
            draws.append(value)
            last = torch.stack([scaler(value, scale_p), torch.ones_like(draw)], -1).to(x.dtype)
        return torch.stack(draws, -1).view(b, paths, -1)


def loss_of(network: Network, head, scaler: Scaler, batch: dict) -> torch.Tensor:
    x, scale = scaled(batch, scaler)
    ahead, static = (torch.from_numpy(batch[k]) for k in ("ahead", "static"))
    y, known = torch.from_numpy(batch["y"]), torch.from_numpy(batch["known"])
    if network.decoder == "direct":
        return head.loss(network(x, ahead, static), *scaler.targets(y, scale[:, None]), known)
    raw = network.teacher_forced(x, ahead, scaler(y, scale[:, None]), static)
    y_all = torch.cat([torch.from_numpy(batch["x"])[..., 0], y], 1)
    known_all = torch.cat([x[..., 1], known], 1)
    return head.loss(raw, *scaler.targets(y_all, scale[:, None]), known_all)


def train(network: Network, head, scaler: Scaler, encoded, *, context: int, h: int, steps: int, batch_size: int, lr: float,
          budget: float | None, rng: np.random.Generator, progress: bool, desc: str = "fit") -> int:
    """Train ``network`` on windows of ``encoded`` (see the module's text); returns the steps taken."""
    counts = np.maximum(encoded.lengths - h, 0)                    # window ends 1 .. length - h
    weights = counts / counts.sum()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.05)
    started = time.perf_counter()
    network.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    taken = 0
    for taken in bar:
        series = rng.choice(len(counts), size=batch_size, p=weights)
        ends = 1 + np.floor(rng.random(batch_size) * counts[series]).astype(np.int64)
        batch = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v)
                 for k, v in encoded.windows(series, ends, context, h).items()}
        loss = loss_of(network, head, scaler, batch)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if budget is not None and time.perf_counter() - started > budget:
            break
    network.eval()
    return taken + 1
