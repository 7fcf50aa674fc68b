"""Language models over characters, words or BPE tokens: embedding -> recurrent stack -> softmax."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._arguments import check_int, check_number, check_positive, check_probability
from .._config import DictConfig
from ..readouts import CategoricalReadout
from ..cells.base import state_tensors
from ..regularizers import WeightDrop, embedding_dropout, locked_dropout
from ..shortcuts import cell_networks
from ..streaming import Inference, StackStream, check_batch_size

__all__ = ["LanguageModel", "LanguageModelConfig", "LanguageModelStream", "CELL_NETWORKS", "perplexity",
           "bits_per_token", "default_cutoffs"]

# the cells a language model can be built from, by the names the CLI takes
CELL_NETWORKS = cell_networks()
SOFTMAXES = ("full", "adaptive")


def default_cutoffs(vocab_size: int) -> list:
    """Cluster boundaries of an adaptive softmax for ``vocab_size`` frequency-ordered tokens:
    a head of the 2,000 most frequent (and 10,000 / 50,000 further steps where the vocabulary
    is larger), as Grave et al. (2017) split vocabularies of this size."""
    return [c for c in (2000, 10000, 50000) if c < vocab_size - 1] or [max(1, vocab_size // 4)]


@dataclass
class LanguageModelConfig(DictConfig):
    """Everything needed to rebuild a :class:`LanguageModel`; saved in every checkpoint.

    Dropout: ``dropout`` on the last layer's output (before the readout); ``input_dropout``
    on the embeddings and ``layer_dropout`` between layers default to ``dropout``;
    ``embedding_dropout`` drops whole words; ``weight_drop`` is DropConnect on every
    layer's recurrent matrix (:class:`rnnkit.regularizers.WeightDrop`). ``activation_penalty``
    and ``temporal_penalty`` are the weights of AR and TAR (Merity et al. 2018).
    ``projection_size`` maps the last layer's output to that size before the readout (so
    that a readout tied to a smaller embedding can follow a wide layer). ``softmax``:
    ``"full"``, or ``"adaptive"`` (Grave et al. 2017, ``torch.nn.AdaptiveLogSoftmaxWithLoss``)
    for large vocabularies ordered by frequency, with ``cutoffs`` (default
    :func:`default_cutoffs`). ``init_scale`` draws every parameter from U(-s, s)
    (Zaremba et al. 2014); None keeps each module's own initialisation. ``members`` > 1
    makes :func:`~rnnkit.models.build_language_model` build a
    :class:`~rnnkit.models.LanguageModelEnsemble` of that many such models trained side by
    side; ``snapshots`` > 1 one of that many snapshots of one model, each the end of a cycle of
    the learning-rate schedule.
    """

    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 1
    embedding_size: int = 64
    dropout: float = 0.0
    tie_weights: bool = False
    engine: str = "auto"
    embedding_dropout: float = 0.0
    input_dropout: Optional[float] = None
    layer_dropout: Optional[float] = None
    weight_drop: float = 0.0
    activation_penalty: float = 0.0
    temporal_penalty: float = 0.0
    projection_size: Optional[int] = None
    softmax: str = "full"
    cutoffs: Optional[list] = field(default=None)
    init_scale: Optional[float] = None
    locked_dropout: bool = False
    members: int = 1
    snapshots: int = 1

    def __post_init__(self):
        check_int("LanguageModel", "members", self.members, 1, hint="1 is one model; 2 or more an ensemble")
        check_int("LanguageModel", "snapshots", self.snapshots, 1, hint="1 is one model; 2 or more an ensemble")
        if self.members > 1 and self.snapshots > 1:
            raise ValueError(f"LanguageModel: an ensemble is either members trained side by side or snapshots of "
                             f"one run, got members={self.members} and snapshots={self.snapshots}; set one of "
                             f"them to 1")
        if self.cell not in CELL_NETWORKS:
            raise ValueError(f"LanguageModel: unknown cell {self.cell!r}; choose one of "
                             f"{sorted(CELL_NETWORKS)}")
        if self.tie_weights and self.embedding_size != self.output_size:
            raise ValueError(f"LanguageModel: tie_weights needs the embedding size ({self.embedding_size}) "
                             f"to equal the size the readout reads ({self.output_size}: the hidden size, "
                             f"or projection_size when set); set --embedding-size {self.output_size}")
        for name in ("dropout", "embedding_dropout", "input_dropout", "layer_dropout", "weight_drop"):
            if getattr(self, name) is not None:
                check_probability("LanguageModel", name, getattr(self, name))
        for name in ("activation_penalty", "temporal_penalty"):
            check_number("LanguageModel", name, getattr(self, name), low=0.0, high_closed=False,
                         what="a finite number >= 0")
        if self.softmax not in SOFTMAXES:
            raise ValueError(f"LanguageModel: softmax must be one of {SOFTMAXES}, got {self.softmax!r}")
        if self.softmax == "adaptive":
            if self.tie_weights:
                raise ValueError("LanguageModel: an adaptive softmax has no single output matrix to tie to the "
                                 "embedding; use --softmax full with --tie-weights, or drop --tie-weights")
            cutoffs = self.cutoffs if self.cutoffs is not None else default_cutoffs(self.vocab_size)
            if not cutoffs or list(cutoffs) != sorted(set(cutoffs)) or cutoffs[0] < 1 \
                    or cutoffs[-1] >= self.vocab_size - 1:
                raise ValueError(f"LanguageModel: adaptive softmax cutoffs must increase strictly between 1 "
                                 f"and vocab_size - 2 = {self.vocab_size - 2}, got {cutoffs}")
        elif self.cutoffs is not None:
            raise ValueError("LanguageModel: cutoffs apply to softmax='adaptive' only")
        if self.init_scale is not None:
            check_positive("LanguageModel", "init_scale", self.init_scale,
                           hint="None keeps each module's own initialisation")

    @property
    def output_size(self) -> int:
        """The size of what the readout reads."""
        return self.projection_size or self.hidden_size

    @property
    def models(self) -> int:
        """How many models of these settings: 1, or the ensemble's members or snapshots."""
        return max(self.members, self.snapshots)


class NextTokenModel:
    """What a language model and an ensemble of them share: the losses built on ``features``
    and ``readout_nll``, and the vocabulary's size from the config."""

    config: LanguageModelConfig

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def loss(self, inputs: Tensor, targets: Tensor, state=None):
        """Mean negative log-likelihood per predicted token (nats), and the new state."""
        nll, state = self.token_nll(inputs, targets, state)
        return nll.mean(), state

    def token_nll(self, inputs: Tensor, targets: Tensor, state=None):
        """Negative log-likelihood of every target (B, T), in nats, and the new state."""
        if targets.shape != inputs.shape:
            raise ValueError(f"{type(self).__name__}: targets must have the shape of the inputs "
                             f"{tuple(inputs.shape)}, got {tuple(targets.shape)}")
        h, state = self.features(inputs, state)
        return self.readout_nll(h, targets), state

    @torch.no_grad()
    def log_prob(self, tokens: Tensor) -> Tensor:
        """``log p(x_2..x_T | x_1)`` of each sequence in ``tokens`` (B, T), in nats: (B,)."""
        nll, _ = self.token_nll(tokens[:, :-1], tokens[:, 1:])
        return -nll.sum(-1)


class LanguageModel(NextTokenModel, nn.Module):
    r"""Next-token model :math:`p(x_{t+1} \mid x_{\le t}) = \mathrm{softmax}(W h_t + b)`.

    ``h_t`` comes from a stack of recurrent layers over token embeddings; the
    state carried between calls is all the context the model has, so generation
    runs in constant memory. Regularizers and the adaptive softmax: see
    :class:`LanguageModelConfig`. ``tie_weights`` shares the embedding matrix with the
    readout (Press & Wolf 2017; Inan et al. 2017).

    ``forward(tokens (B, T), state=None) -> (logits (B, T, V), state)``; with an adaptive
    softmax the "logits" are the log-probabilities, which softmax and sampling treat alike.

    >>> import torch
    >>> model = LanguageModel(LanguageModelConfig(vocab_size=10, hidden_size=16, embedding_size=8))
    >>> tokens = torch.randint(10, (2, 5))
    >>> logits, state = model(tokens)
    >>> tuple(logits.shape)
    (2, 5, 10)
    >>> loss, _ = model.loss(tokens[:, :-1], tokens[:, 1:])
    >>> round(loss.item(), 1)                     # ~ ln 10 before training
    2.3
    """

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        if config.models != 1:
            raise ValueError(f"LanguageModel: the config asks for an ensemble of {config.models}; build it "
                             f"with build_language_model(config)")
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        wrapper = (lambda cell: WeightDrop(cell, c.weight_drop)) if c.weight_drop > 0 else None
        between = c.dropout if c.layer_dropout is None else c.layer_dropout
        self.rnn = CELL_NETWORKS[c.cell](c.embedding_size, c.hidden_size, c.num_layers,
                                         dropout=between if c.num_layers > 1 else 0.0, engine=c.engine,
                                         cell_wrapper=wrapper, locked_dropout=c.locked_dropout,
                                         batch_first=True)
        dropout = _LockedDropout if c.locked_dropout else nn.Dropout
        self.input_dropout = dropout(c.dropout if c.input_dropout is None else c.input_dropout)
        self.dropout = dropout(c.dropout)
        self.projection = nn.Linear(c.hidden_size, c.projection_size, bias=False) if c.projection_size else None
        if c.softmax == "adaptive":
            self.readout = AdaptiveReadout(c.output_size, c.vocab_size, c.cutoffs or default_cutoffs(c.vocab_size))
        else:
            self.readout = CategoricalReadout(c.output_size, c.vocab_size)
        if c.init_scale is not None:
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.uniform_(-c.init_scale, c.init_scale)
        if c.tie_weights:
            self.readout.weight = self.embedding.weight
        self._penalty = None

    @property
    def engine(self) -> str:
        """The engine the recurrent layers run on."""
        return self.rnn.engine

    def initial_state(self, batch_size: int):
        """Zeros in the layout of ``torch.nn`` (``(num_layers, B, H)``, a pair for LSTM)."""
        ref = self.embedding.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        parts = tuple(torch.zeros(shape, dtype=ref.dtype, device=ref.device)
                      for _ in self.rnn.state_names)
        return parts[0] if len(parts) == 1 else parts

    def features(self, tokens: Tensor, state=None):
        """``(h (B, T, output_size), state)``: what the readout reads, dropout applied.
        In training with AR/TAR on, their penalty is kept for :meth:`penalty`."""
        self._check_tokens(tokens)
        return self._features(tokens, state)

    def _features(self, tokens: Tensor, state=None):
        """:meth:`features` of ids already checked (an ensemble checks them once for all its members)."""
        c = self.config
        if c.embedding_dropout > 0 and self.training:
            embedded = F.embedding(tokens, embedding_dropout(self.embedding.weight, c.embedding_dropout))
        else:
            embedded = self.embedding(tokens)
        raw, state = self.rnn(self.input_dropout(embedded), state)                 # (B, T, H)
        if self.projection is not None:
            raw = self.projection(raw)
        h = self.dropout(raw)
        self._penalty = None
        if self.training and (c.activation_penalty > 0 or c.temporal_penalty > 0):
            penalty = c.activation_penalty * h.pow(2).mean() if c.activation_penalty > 0 else 0.0
            if c.temporal_penalty > 0 and raw.shape[1] > 1:
                penalty = penalty + c.temporal_penalty * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
            self._penalty = penalty
        return h, state

    def forward(self, tokens: Tensor, state=None):
        h, state = self.features(tokens, state)
        return self.readout.logits(h), state

    def readout_nll(self, h: Tensor, targets: Tensor) -> Tensor:
        """Negative log-likelihood of ``targets`` (B, T) under the readout of features ``h`` (B, T, D)."""
        flat_h, flat_y = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        if isinstance(self.readout, AdaptiveReadout):
            nll = self.readout.nll(flat_h, flat_y)
        else:
            nll = F.cross_entropy(self.readout.logits(flat_h), flat_y, reduction="none")
        return nll.view(targets.shape)

    def stream(self, batch_size: int = 1, state=None, *, grad: bool = False) -> "LanguageModelStream":
        """A :class:`LanguageModelStream`: one token per call, the state kept inside (its layout is
        the one ``model(tokens, state)`` takes and returns); under ``no_grad`` unless ``grad=True``."""
        return LanguageModelStream(self, batch_size, state, grad=grad)

    def penalty(self):
        """The AR/TAR term of the latest training forward pass (None when off or in evaluation):
        the trainer adds it to the loss it minimises, and logs it apart."""
        return self._penalty

    def _check_tokens(self, tokens) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            what = tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"LanguageModel: expected token ids as an integer tensor (B, T), got {what}")
        if tokens.dim() != 2:
            raise ValueError(f"LanguageModel: expected token ids of shape (batch, time), got "
                             f"{tuple(tokens.shape)}")
        # a compiled or exported graph cannot read values on the host; the embedding's own bounds
        # check (eager's and inductor's) still refuses an id out of range there
        if tokens.numel() and not torch.compiler.is_compiling():
            low, high = (int(v) for v in torch.aminmax(tokens))      # one pass, one sync per forward
            if high >= self.vocab_size or low < 0:
                raise ValueError(f"LanguageModel: token ids must lie in [0, {self.vocab_size}), got values "
                                 f"from {low} to {high}")


class _LockedDropout(nn.Dropout):
    """``nn.Dropout`` with one mask per sequence (B, 1, F); a single step (B, F) in a stream is
    treated as a batch of one-step sequences."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return super().forward(x)
        return locked_dropout(x, self.p, self.training)


class AdaptiveReadout(nn.Module):
    """An adaptive softmax (``torch.nn.AdaptiveLogSoftmaxWithLoss``) with the readout interface
    the language model, the sampler and the streams use: ``logits(h)`` gives full
    log-probabilities, ``nll(h, y)`` the loss of each target at a fraction of the cost."""

    def __init__(self, hidden_size: int, num_classes: int, cutoffs, div_value: float = 4.0):
        super().__init__()
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, num_classes, list(cutoffs),
                                                      div_value=div_value)
        self.num_classes = num_classes

    def logits(self, h: Tensor) -> Tensor:
        with self._full_precision(h) as h:
            flat = self.adaptive.log_prob(h.reshape(-1, h.shape[-1]))
        return flat.view(*h.shape[:-1], self.num_classes)

    def nll(self, h: Tensor, y: Tensor) -> Tensor:
        with self._full_precision(h) as h:
            return -self.adaptive(h, y).output

    @contextlib.contextmanager
    def _full_precision(self, h: Tensor):
        """Autocast off, ``h`` in the weights' dtype: torch's adaptive softmax writes each cluster's
        log-probabilities into a buffer of the input's dtype, which mixed dtypes break (and a
        softmax is where autocast keeps float32 anyway)."""
        device = h.device.type
        if not torch.is_autocast_enabled(device):
            yield h
            return
        with torch.autocast(device, enabled=False):
            yield h.to(self.adaptive.head.weight.dtype)


class LanguageModelStream(Inference):
    """A :class:`~rnnkit.models.LanguageModel`, one token per call: ``logits = stream(tokens)``.

    ``tokens`` (batch_size,) integer ids, or a 0-d tensor when ``batch_size`` is 1;
    returns the next-token logits (batch_size, vocab_size), or (vocab_size,). The state
    is in the model's own layout — ``(num_layers, B, H)``, a pair for an LSTM — so it
    passes to and from ``model(tokens, state)`` unchanged: read a prompt in one call of
    the model, then continue with ``stream.reset(state)`` and one call per token.

    >>> import torch
    >>> from rnnkit.models import LanguageModel, LanguageModelConfig
    >>> model = LanguageModel(LanguageModelConfig(vocab_size=10, hidden_size=16, embedding_size=8)).eval()
    >>> logits, state = model(torch.tensor([[1, 2, 3]]))
    >>> stream = model.stream(state=state)
    >>> next_logits = stream(torch.tensor([4]))
    >>> torch.allclose(next_logits, model(torch.tensor([[1, 2, 3, 4]]))[0][:, -1])
    True
    """

    def __init__(self, model, batch_size: int = 1, state=None, *, grad: bool = False):
        owner = "LanguageModelStream"
        if not isinstance(model, LanguageModel):
            raise TypeError(f"{owner}: expected an rnnkit LanguageModel, got {type(model).__name__}")
        if model.rnn.bidirectional:
            raise ValueError(f"{owner}: the model is bidirectional; a stream reads one token at a time")
        self.owner, self.model, self._grad = owner, model, bool(grad)
        self.batch_size = check_batch_size(owner, batch_size)
        self._names = model.rnn.state_names
        self.layers = StackStream(model.rnn.stack, batch_size, None, grad=True, owner=owner)
        self.reset(state)

    @property
    def state(self):
        """The state in the model's layout: ``(num_layers, B, H)`` per tensor (a pair for an LSTM)."""
        per_layer = [state_tensors(s) for s in self.layers.state]
        parts = tuple(torch.stack([p[k] for p in per_layer]) for k in range(len(self._names)))
        return parts[0] if len(parts) == 1 else parts

    def reset(self, state=None) -> None:
        """Start again from zeros, or from ``state`` in the model's layout (what ``model(...)`` returns)."""
        if state is None:
            return self.layers.reset()
        model = self.model
        like = model.embedding.weight
        shape = (model.config.num_layers, self.batch_size, model.config.hidden_size)
        tensors = state_tensors(state) if isinstance(state, (Tensor, tuple, list)) else ()
        if len(tensors) != len(self._names) or (len(self._names) == 1) != isinstance(state, Tensor):
            want = "a tensor" if len(self._names) == 1 else f"a tuple ({', '.join(self._names)})"
            raise TypeError(f"{self.owner}: expected the state to be {want} of shape {shape}")
        for name, tensor in zip(self._names, tensors):
            if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape or tensor.dtype != like.dtype:
                got = (tuple(tensor.shape), tensor.dtype) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"{self.owner}: expected {name} of shape {shape} and dtype {like.dtype}, got {got}")
        per_layer = [tuple(t[i] for t in tensors) for i in range(shape[0])]
        self.layers.reset([p[0] if len(p) == 1 else p for p in per_layer])

    def _advance(self, tokens: Tensor) -> Tensor:
        tokens, unbatched = self._read(tokens)
        logits = self._logits(tokens)
        return logits.squeeze(0) if unbatched else logits

    def _read(self, tokens) -> tuple:
        """``(ids (B,), unbatched)``: the ids checked, a 0-d id of a one-sequence stream as a batch of one."""
        unbatched = isinstance(tokens, Tensor) and tokens.dim() == 0 and self.batch_size == 1
        if unbatched:
            tokens = tokens.unsqueeze(0)
        self._check_tokens(tokens)
        return tokens, unbatched

    def _logits(self, tokens: Tensor) -> Tensor:
        """The next-token logits (B, V) after checked ids (B,); the state moves one step."""
        model = self.model
        x_t = model.input_dropout(model.embedding(tokens))               # (B, E)
        h = self.layers._advance(x_t)                                    # (B, H)
        if model.projection is not None:
            h = model.projection(h)
        return model.readout.logits(model.dropout(h))                    # (B, V)

    def _check_tokens(self, tokens) -> None:
        owner, vocab = self.owner, self.model.vocab_size
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            what = tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"{owner}: expected token ids as an integer tensor ({self.batch_size},), got {what}")
        if tokens.shape != (self.batch_size,):
            raise ValueError(f"{owner}: expected token ids of shape ({self.batch_size},), one per sequence, "
                             f"got {tuple(tokens.shape)}")
        low, high = (int(v) for v in torch.aminmax(tokens))
        if low < 0 or high >= vocab:
            raise ValueError(f"{owner}: token ids must lie in [0, {vocab}), got values from {low} to {high}")

    def __repr__(self) -> str:
        return f"LanguageModelStream(batch_size={self.batch_size}, grad={self._grad})"


def perplexity(nll_nats: float) -> float:
    """``exp`` of the mean negative log-likelihood per token (``inf`` beyond a float's range, as for a
    diverged model, rather than an OverflowError)."""
    return math.exp(nll_nats) if nll_nats < 709.0 else math.inf


def bits_per_token(nll_nats: float) -> float:
    """Mean negative log-likelihood in bits (bits per character for a character model)."""
    return nll_nats / math.log(2)
