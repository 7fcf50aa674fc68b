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
K runs side by side on one core each train more, see ``benchmarks/word_lm.py``).

An ensemble of ``snapshots`` (Huang et al. 2017, "Snapshot ensembles: train 1, get M for
free") costs one model's work instead: its members are one model at the ends of the K cycles
of a cosine schedule with restarts. Only the newest member trains; at the start of cycle k the
trainer calls :meth:`LanguageModelEnsemble.start_cycle`, which freezes the members so far and
makes member k a copy of the newest, to continue from the peak rate. In evaluation the members
so far predict together (until the first cycle ends, the one member alone).

Everything that takes a language model takes an ensemble:
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
    r"""``config.members`` language models trained side by side, or ``config.snapshots`` of one
    model, predicting :math:`p(x_{t+1}) = \frac1K \sum_k p_k(x_{t+1})`.

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
        if config.models < 2:
            raise ValueError(f"LanguageModelEnsemble: members or snapshots must be at least 2, got "
                             f"{config.models}; one model is a LanguageModel")
        self.config = config
        single = dataclasses.replace(config, members=1, snapshots=1)
        self.members = nn.ModuleList(LanguageModel(single) for _ in range(config.models))
        if config.snapshots > 1:             # the member in training; those before it are frozen
            self.register_buffer("newest", torch.zeros((), dtype=torch.long))      # saved with the weights
            self._newest = 0                 # and as a number, so that export and compile see a constant
            self.register_load_state_dict_post_hook(_read_newest)

    @property
    def cycles(self):
        """The cycles of the schedule that a snapshot ensemble needs (None for side-by-side members)."""
        return self.config.snapshots if self.config.snapshots > 1 else None

    def live(self) -> list:
        """The members that compute: all of them side by side; of snapshots, the newest alone in
        training, and the members so far in evaluation."""
        if self.cycles is None:
            return list(self.members)
        newest = self._newest
        return [self.members[newest]] if self.training else list(self.members[:newest + 1])

    @torch.no_grad()
    def start_cycle(self, cycle: int) -> list:
        """Cycle ``cycle`` of a snapshot ensemble begins: the members before it are frozen and
        member ``cycle`` continues from the newest one's weights (a member skipped by a cycle
        shorter than a step is that copy too). Returns the ``(old, new)`` parameter pairs whose
        optimizer state moves with them; none when the cycle has already begun."""
        if self.cycles is None:
            raise TypeError("LanguageModelEnsemble: start_cycle is for snapshots; these members train side by side")
        cycle, newest = min(int(cycle), len(self.members) - 1), self._newest
        pairs = []
        if cycle > newest:
            for member in self.members[newest + 1: cycle + 1]:
                member.load_state_dict(self.members[newest].state_dict())
            pairs = list(zip(self.members[newest].parameters(), self.members[cycle].parameters()))
            self.newest.fill_(cycle)
            self._newest = cycle
        for k, member in enumerate(self.members):
            member.requires_grad_(k == max(cycle, newest))
        return pairs

    @property
    def engine(self) -> str:
        return self.members[0].engine

    def initial_state(self, batch_size: int):
        """A tuple of the members' zero states."""
        return tuple(member.initial_state(batch_size) for member in self.live())

    def features(self, tokens: Tensor, state=None):
        """``(h (B, T, K * output_size), state)``: the members' features side by side (in training,
        each member keeps its AR/TAR term for :meth:`penalty`)."""
        members = self.live()
        state = self._member_states(state, len(members))
        members[0]._check_tokens(tokens)                           # once: the members share the ids
        outputs = [member._features(tokens, s) for member, s in zip(members, state)]
        return torch.cat([h for h, _ in outputs], -1), tuple(s for _, s in outputs)

    def forward(self, tokens: Tensor, state=None):
        h, state = self.features(tokens, state)
        log_p = _log_mean_exp(torch.stack([member.readout.logits(part).log_softmax(-1)
                                           for member, part in self._with_parts(h)]))
        return log_p, state

    def readout_nll(self, h: Tensor, targets: Tensor) -> Tensor:
        """In evaluation, the NLL of the mean of the members' probabilities; in training, the
        mean of the members' NLLs whose gradient is their sum (each member's own gradient)."""
        nll = torch.stack([member.readout_nll(part, targets) for member, part in self._with_parts(h)])
        if self.training:
            return _mean_value_summed_gradient(nll)
        return -_log_mean_exp(-nll)

    def penalty(self):
        """The members' AR/TAR terms, combined as their losses are (None when off)."""
        terms = [member.penalty() for member in self.live()]
        if any(term is None for term in terms):
            return None
        return _mean_value_summed_gradient(torch.stack([torch.as_tensor(t) for t in terms]))

    def clip_groups(self) -> list:
        """One parameter list per member that trains: the trainer clips each member's gradient on its own."""
        return [list(member.parameters()) for member in self.live()]

    def stream(self, batch_size: int = 1, state=None, *, grad: bool = False) -> "LanguageModelEnsembleStream":
        """A :class:`LanguageModelEnsembleStream`: one token per call, like :meth:`LanguageModel.stream`."""
        return LanguageModelEnsembleStream(self, batch_size, state, grad=grad)

    def _with_parts(self, h: Tensor):
        """Each member that computes, with its part of the features ``h`` (side by side)."""
        members = self.live()
        return zip(members, h.chunk(len(members), dim=-1))

    def _member_states(self, state, count: int):
        if state is None:
            return (None,) * count
        if not isinstance(state, (tuple, list)) or len(state) != count:
            raise TypeError(f"LanguageModelEnsemble: expected the state as a tuple of {count} "
                            f"members' states (what the ensemble returns), got {type(state).__name__}"
                            + (f" of {len(state)}" if isinstance(state, (tuple, list)) else ""))
        return state


def _read_newest(module, incompatible_keys) -> None:
    newest = int(module.newest)
    if not 0 <= newest < len(module.members):
        raise ValueError(f"LanguageModelEnsemble: the weights name snapshot {newest} as the newest of "
                         f"{len(module.members)}; they are damaged or belong to another model")
    module._newest = newest


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
        self.streams = [member.stream(batch_size, grad=grad) for member in model.live()]
        self.reset(state)

    @property
    def state(self):
        return tuple(stream.state for stream in self.streams)

    def reset(self, state=None) -> None:
        for stream, own in zip(self.streams, self.model._member_states(state, len(self.streams))):
            stream.reset(own)

    def _advance(self, tokens: Tensor) -> Tensor:
        tokens, unbatched = self.streams[0]._read(tokens)         # checked once: the members share the ids
        log_p = _log_mean_exp(torch.stack([stream._logits(tokens).log_softmax(-1) for stream in self.streams]))
        return log_p.squeeze(0) if unbatched else log_p

    def __repr__(self) -> str:
        return f"LanguageModelEnsembleStream(members={len(self.streams)}, batch_size={self.batch_size})"
