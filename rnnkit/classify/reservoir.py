r"""The reservoir half of the default recipe: echo-state features and a ridge readout chosen by
leave-one-out, the recurrent counterpart of random convolution kernels (ROCKET, MiniRocket).

Each of a few fixed random reservoirs (:class:`rnnkit.cells.ReservoirCell`), one per leak rate so that
together they remember over several time scales, reads a case forwards and backwards; a case's features
are, per reservoir and direction, the mean of its states over the case's steps and its last state.
Standardized features feed a ridge regression on one-hot classes (or standardized values), in its dual
form: with ``K = A A^T = Q \Lambda Q^T`` every penalty ``\alpha`` of a grid gives the hat matrix
``H = Q \Lambda (\Lambda + \alpha)^{-1} Q^T`` and with it the leave-one-out residuals
``(y_i - \hat y_i) / (1 - H_{ii})`` at no extra cost; the penalty with the least leave-one-out error
wins. Class probabilities are ``softmax(scores / \tau)``, the temperature ``\tau`` chosen on the
leave-one-out scores as well, so they are calibrated on cases the readout did not see.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cells.reservoir import ReservoirCell
from ..layers import reverse_padded
from .collection import batch_cases

__all__ = ["ReservoirReadout", "LEAK_RATES"]

LEAK_RATES = (1.0, 0.3, 0.1, 0.03)
_PENALTIES = np.logspace(-3, 4, 15)
_TEMPERATURES = np.logspace(-2, 1, 31)


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class ReservoirReadout:
    """Echo-state features and a ridge readout (see the module's text); ``fit`` then ``predict``.

    >>> rng = np.random.default_rng(0)
    >>> cases = [rng.normal(size=(1, 30)) + k for k in (0, 1) for _ in range(10)]
    >>> readout = ReservoirReadout(1, reservoir_size=20, seed=0).fit(cases, np.repeat([0, 1], 10), 2)
    >>> readout.predict(cases[:1] + cases[-1:]).argmax(1).tolist()
    [0, 1]
    """

    def __init__(self, channels: int, reservoir_size: int = 150, *, leak_rates=LEAK_RATES,
                 spectral_radius: float = 0.9, task: str = "classification", seed: int = 0):
        self.task = task
        sparsity = max(0.0, 1.0 - 15.0 / reservoir_size)            # about 15 connections per unit
        self.cells = [ReservoirCell(channels, reservoir_size, spectral_radius=spectral_radius, sparsity=sparsity,
                                    leak_rate=leak, seed=seed * 7919 + i, dtype=torch.float64)
                      for i, leak in enumerate(leak_rates)]

    @torch.no_grad()
    def features(self, cases: list, chunk: int = 64) -> np.ndarray:
        """``(N, 4 · reservoirs · size)``: per reservoir and direction the mean and the last state."""
        parts = []
        for start in range(0, len(cases), chunk):
            x, lengths = batch_cases(cases[start:start + chunk], 1, dtype=torch.float64)
            valid = (torch.arange(x.shape[1]) < lengths[:, None]).unsqueeze(-1)        # (B, T, 1)
            rows, ends = torch.arange(len(x)), lengths - 1
            found = []
            for reading in (x, reverse_padded(x, lengths)):
                for cell in self.cells:
                    h, _ = cell.run(reading)                                            # (B, T, H)
                    found += [(h * valid).sum(1) / lengths[:, None], h[rows, ends]]
            parts.append(torch.cat(found, -1).numpy())
        return np.concatenate(parts)

    def fit(self, cases: list, targets: np.ndarray, outputs: int) -> "ReservoirReadout":
        """``targets``: class indices (N,) for classification, standardized values (N, outputs) else."""
        a = self.features(cases)
        self.mean, self.scale = a.mean(0), a.std(0) + 1e-8
        a = (a - self.mean) / self.scale
        y = np.eye(outputs)[targets] if self.task == "classification" else np.asarray(targets, dtype=np.float64)
        self.offset = y.mean(0)
        y = y - self.offset
        eigenvalues, q = np.linalg.eigh(a @ a.T)                                        # K = Q Λ Q^T
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        qy = q.T @ y
        best = None
        for penalty in _PENALTIES:
            shrink = eigenvalues / (eigenvalues + penalty)
            fitted = q @ (shrink[:, None] * qy)
            leverage = np.einsum("ij,j,ij->i", q, shrink, q)
            loo = y - (y - fitted) / np.clip(1.0 - leverage, 1e-12, None)[:, None]     # leave-one-out scores
            error = float(((loo - y) ** 2).mean())
            if best is None or error < best[0]:
                best = (error, penalty, loo)
        _, self.penalty, loo = best
        dual = q @ ((q.T @ y) / (eigenvalues + self.penalty)[:, None])                  # (K + αI)^-1 Y
        self.weight = a.T @ dual                                                        # (F, outputs)
        self.temperature = 1.0
        if self.task == "classification":
            scores = loo + self.offset
            losses = [-np.log(_softmax(scores / t)[np.arange(len(targets)), targets] + 1e-12).mean()
                      for t in _TEMPERATURES]
            self.temperature = float(_TEMPERATURES[int(np.argmin(losses))])
        return self

    def scores(self, cases: list) -> np.ndarray:
        return ((self.features(cases) - self.mean) / self.scale) @ self.weight + self.offset

    def predict(self, cases: list) -> np.ndarray:
        """Class probabilities (N, K), or standardized values (N, outputs)."""
        scores = self.scores(cases)
        return _softmax(scores / self.temperature) if self.task == "classification" else scores

    def state(self) -> dict:
        """What :meth:`predict` needs besides the reservoirs (rebuilt from their seeds)."""
        return {"mean": self.mean, "scale": self.scale, "offset": self.offset, "weight": self.weight,
                "temperature": np.array(self.temperature), "penalty": np.array(self.penalty)}

    def load_state(self, state: dict) -> "ReservoirReadout":
        self.mean, self.scale, self.offset, self.weight = (np.asarray(state[k]) for k in
                                                           ("mean", "scale", "offset", "weight"))
        self.temperature, self.penalty = float(state["temperature"]), float(state["penalty"])
        return self
