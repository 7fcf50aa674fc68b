r"""Exact evaluation of a language model on a token stream: every token predicted once.

The stream is cut into ``S`` rows that lie end to end, read in parallel in chunks with
the state carried along each row, as in training. The last row also takes the
``n - S·L`` tokens that do not divide evenly (the other rows are padded there and the
padding is masked out), so nothing is dropped: the summed negative log-likelihood
covers exactly the tokens asked for. Each row starts from the zero state, so a row's
first tokens are predicted with less context than a single stream would give; one row
(``batch_size=1``) is the sequential evaluation.

When the split has a context token (the token before it in the file, or ``<eos>`` at the
start of a word-level text) its first token is predicted from it: a word-level split of
``w`` words on ``l`` lines then scores exactly ``w + l`` tokens, the count behind the
per-word perplexities of the literature.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["token_nll", "ensemble_nll"]


def _window(tokens, context: Optional[int], start: int, stop: int) -> np.ndarray:
    """``x[start:stop]`` of the sequence ``x = [context] + tokens`` (or ``tokens`` alone)."""
    if context is None:
        return np.asarray(tokens[start:stop])
    if start == 0:
        return np.concatenate([np.asarray([context], dtype=np.int64),
                               np.asarray(tokens[0:stop - 1]).astype(np.int64)])
    return np.asarray(tokens[start - 1:stop - 1])


@torch.no_grad()
def token_nll(model, split, *, batch_size: int = 32, truncation: int = 256,
              max_tokens: Optional[int] = None, device=None) -> tuple[float, int]:
    """``(summed negative log-likelihood in nats, tokens predicted)`` of ``model`` on ``split``.

    ``split`` is a :class:`~rnnkit.data.tokens.TokenSplit` or a 1-D array or tensor of ids
    (then its first token is context only). ``model.token_nll(inputs, targets, state)``
    gives the per-token losses. ``max_tokens`` limits the evaluation to the first that
    many predictions.
    """
    tokens, context, count = stream(split, max_tokens)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total, state = 0.0, None
    for inputs, targets, mask in chunks(tokens, context, count, batch_size, truncation, device):
        nll, state = model.token_nll(inputs, targets, state)
        total += float(nll.double()[mask].sum())
    return total, count


@torch.no_grad()
def ensemble_nll(models: Sequence, split, *, batch_size: int = 32, truncation: int = 256,
                 max_tokens: Optional[int] = None, device=None) -> tuple[float, list, int]:
    """``(summed NLL of the ensemble, [summed NLL of each model], tokens predicted)``.

    The ensemble predicts each token with the mean of its models' probabilities,
    ``-log(mean_k exp(-nll_k))``, in float64; every model reads the same rows as
    :func:`token_nll` does, with its own state, in eval mode (each model's mode is restored
    after). One model is :func:`token_nll` itself.
    """
    models = list(models)
    if not models:
        raise ValueError("ensemble_nll: give at least one model")
    tokens, context, count = stream(split, max_tokens)
    if device is None:
        device = next((p.device for p in models[0].parameters()), torch.device("cpu"))
    total, members, states = 0.0, [0.0] * len(models), [None] * len(models)
    modes = [model.training for model in models]
    try:
        for model in models:
            model.eval()                  # dropout off: an ensemble of noisy members would be a silent error
        for inputs, targets, mask in chunks(tokens, context, count, batch_size, truncation, device):
            losses = []
            for k, model in enumerate(models):
                nll, states[k] = model.token_nll(inputs, targets, states[k])
                nll = nll.double()
                members[k] += float(nll[mask].sum())
                losses.append(nll)
            mixed = math.log(len(models)) - torch.logsumexp(-torch.stack(losses), dim=0)
            total += float(mixed[mask].sum())
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
    return total, members, count


def chunks(tokens, context, count: int, batch_size: int, truncation: int, device):
    """``(inputs, targets, mask)`` for each chunk of ``count`` predictions read as rows (see the
    module's docstring); a row's state carries from one chunk to the next."""
    rows = max(1, min(int(batch_size), count))
    length, extra = divmod(count, rows)
    longest = length + extra                            # the last row takes the remainder
    for begin in range(0, longest, truncation):
        end = min(begin + truncation, longest)
        inputs = np.zeros((rows, end - begin), dtype=np.int64)
        targets = np.zeros_like(inputs)
        mask = np.zeros(inputs.shape, dtype=bool)
        for row in range(rows):
            own = length if row < rows - 1 else longest
            stop = min(end, own)
            if stop <= begin:
                continue
            window = _window(tokens, context, row * length + begin, row * length + stop + 1)
            inputs[row, :stop - begin] = window[:-1]
            targets[row, :stop - begin] = window[1:]
            mask[row, :stop - begin] = True
        yield (torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device),
               torch.from_numpy(mask).to(device))


def stream(split, max_tokens):
    """``(tokens, context, count)`` of a split: its ids, its context token and how many are predicted."""
    context = getattr(split, "context", None)
    tokens = getattr(split, "tokens", split)
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    available = len(tokens) - (context is None)
    count = available if max_tokens is None else min(available, int(max_tokens))
    if count < 1:
        raise ValueError(f"nothing to evaluate: the split has {len(tokens)} token(s), and at least one "
                         f"must be predicted from one before it")
    return tokens, context, count
