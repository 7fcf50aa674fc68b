"""Several language models trained side by side in one run and predicting as one.

A :class:`LanguageModelEnsemble` holds ``members`` language models
(:class:`~rnnkit.models.LanguageModel`) of one configuration. They read the same batches,
each with its own weights (drawn one after the other), dropout masks and state:

- in training each member learns as it would alone: the loss's gradient is the sum of the
  members' own gradients, and its value their mean (so that it reads like one model's loss);
  the trainer clips each member's gradient on its own (:meth:`LanguageModelEnsemble.clip_groups`);
- in evaluation a token's probability is the mean of the members' probabilities,
  ``-log(mean_k exp(-nll_k))``, never worse than the members' mean loss (Jensen's inequality).

Each step costs K models' work: in a budget of steps or epochs each member gets every step a
separate run would; in a budget of minutes each member gets about 1/K of them (on the CPU,
K runs side by side on one core each train more, see ``benchmarks/word_lm.py``). Everything that takes a language model takes an ensemble:
training, resume, evaluation, the neural cache (the keys are the members' features side by
side), sampling (through :meth:`LanguageModelEnsemble.stream`) and export.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ..streaming import Inference, check_batch_size
from .language_model import LanguageModel, NextTokenModel

__all__ = ["LanguageModelEnsemble", "LanguageModelEnsembleStream"]


class LanguageModelEnsemble(NextTokenModel, nn.Module):
    r"""``config.members`` language models trained together, predicting
    :math:`p(x_{t+1}) = \frac1K \sum_k p_k(x_{t+1})`.

    ``forward(tokens (B, T), state=None) -> (log-probabilities (B, T, V), state)``; the
    state is a tuple of the members' states, each in :class:`LanguageModel`'s layout.
    Softmax and sampling treat the log-probabilities as logits.

    >>> import torch
    >>> from rnnkit.models import LanguageModelConfig
    >>> torch.manual_seed(0) and None
    >>> ensemble = LanguageModelEnsemble(LanguageModelConfig(vocab_size=10, hidden_size=16, members=2)).eval()
    >>> tokens = torch.randint(10, (2, 5))
    >>> log_p, state = ensemble(tokens)
    >>> alone = [member(tokens)[0].softmax(-1) for member in ensemble.members]
    >>> torch.allclose(log_p.exp(), (alone[0] + alone[1]) / 2, atol=1e-6)
    True
    """

    def __init__(self, config):
        super().__init__()
        if config.members < 2:
            raise ValueError(f"LanguageModelEnsemble: members must be at least 2, got {config.members}; "
                             f"one member is a LanguageModel")
        self.config = config
        single = dataclasses.replace(config, members=1)
        self.members = nn.ModuleList(LanguageModel(single) for _ in range(config.members))

    @property
    def engine(self) -> str:
        return self.members[0].engine

    def initial_state(self, batch_size: int):
        """A tuple of the members' zero states."""
        return tuple(member.initial_state(batch_size) for member in self.members)

    def features(self, tokens: Tensor, state=None):
        """``(h (B, T, K * output_size), state)``: the members' features side by side (in training,
        each member keeps its AR/TAR term for :meth:`penalty`)."""
        state = self._member_states(state)
        self.members[0]._check_tokens(tokens)                      # once: the members share the ids
        outputs = [member._features(tokens, s) for member, s in zip(self.members, state)]
        return torch.cat([h for h, _ in outputs], -1), tuple(s for _, s in outputs)

    def forward(self, tokens: Tensor, state=None):
        h, state = self.features(tokens, state)
        log_p = _log_mean_exp(torch.stack([member.readout.logits(part).log_softmax(-1)
                                           for member, part in zip(self.members, self._split(h))]))
        return log_p, state

    def readout_nll(self, h: Tensor, targets: Tensor) -> Tensor:
        """In evaluation, the NLL of the mean of the members' probabilities; in training, the
        mean of the members' NLLs whose gradient is their sum (each member's own gradient)."""
        nll = torch.stack([member.readout_nll(part, targets) for member, part in zip(self.members, self._split(h))])
        if self.training:
            return _mean_value_summed_gradient(nll)
        return -_log_mean_exp(-nll)

    def penalty(self):
        """The members' AR/TAR terms, combined as their losses are (None when off)."""
        terms = [member.penalty() for member in self.members]
        if any(term is None for term in terms):
            return None
        return _mean_value_summed_gradient(torch.stack([torch.as_tensor(t) for t in terms]))

    def clip_groups(self) -> list:
        """One parameter list per member: the trainer clips each member's gradient on its own."""
        return [list(member.parameters()) for member in self.members]

    def stream(self, batch_size: int = 1, state=None, *, grad: bool = False) -> "LanguageModelEnsembleStream":
        """A :class:`LanguageModelEnsembleStream`: one token per call, like :meth:`LanguageModel.stream`."""
        return LanguageModelEnsembleStream(self, batch_size, state, grad=grad)

    def _split(self, h: Tensor):
        return h.chunk(len(self.members), dim=-1)

    def _member_states(self, state):
        if state is None:
            return (None,) * len(self.members)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.members):
            raise TypeError(f"LanguageModelEnsemble: expected the state as a tuple of {len(self.members)} "
                            f"members' states (what the ensemble returns), got {type(state).__name__}"
                            + (f" of {len(state)}" if isinstance(state, (tuple, list)) else ""))
        return state


def _log_mean_exp(stacked: Tensor) -> Tensor:
    """``log(mean_k exp(stacked[k]))``: the log of the members' mean probability."""
    return torch.logsumexp(stacked, 0) - math.log(stacked.shape[0])


def _mean_value_summed_gradient(stacked: Tensor) -> Tensor:
    """``stacked.mean(0)`` in value, with the gradient of ``stacked.sum(0)``."""
    total = stacked.sum(0)
    return total - total.detach() * (1 - 1 / stacked.shape[0])


class LanguageModelEnsembleStream(Inference):
    """A :class:`LanguageModelEnsemble`, one token per call: ``log_p = stream(tokens)``, the log of
    the mean of the members' next-token probabilities; each member steps through its own
    :class:`~rnnkit.models.LanguageModelStream`. ``state`` and ``reset(state)`` take the
    ensemble's layout (a tuple of the members' states)."""

    def __init__(self, model: LanguageModelEnsemble, batch_size: int = 1, state=None, *, grad: bool = False):
        if not isinstance(model, LanguageModelEnsemble):
            raise TypeError(f"LanguageModelEnsembleStream: expected a LanguageModelEnsemble, got "
                            f"{type(model).__name__}")
        self.model, self._grad = model, bool(grad)
        self.batch_size = check_batch_size("LanguageModelEnsembleStream", batch_size)
        self.streams = [member.stream(batch_size, grad=grad) for member in model.members]
        self.reset(state)

    @property
    def state(self):
        return tuple(stream.state for stream in self.streams)

    def reset(self, state=None) -> None:
        for stream, own in zip(self.streams, self.model._member_states(state)):
            stream.reset(own)

    def _advance(self, tokens: Tensor) -> Tensor:
        tokens, unbatched = self.streams[0]._read(tokens)         # checked once: the members share the ids
        log_p = _log_mean_exp(torch.stack([stream._logits(tokens).log_softmax(-1) for stream in self.streams]))
        return log_p.squeeze(0) if unbatched else log_p

    def __repr__(self) -> str:
        return f"LanguageModelEnsembleStream(members={len(self.streams)}, batch_size={self.batch_size})"
