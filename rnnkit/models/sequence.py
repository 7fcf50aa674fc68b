"""Many-to-one (classification) and aligned many-to-many (tagging) models."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_lengths
from ..readouts import CategoricalReadout, sequence_nll
from .language_model import CELL_NETWORKS

__all__ = ["SequenceClassifier", "SequenceRegressor", "SequenceTagger"]

SUMMARIES = ("last", "mean", "max")


class _Encoder(nn.Module):
    """[embedding] -> recurrent stack, shared by the classifier and the tagger."""

    def __init__(self, owner, input_size, hidden_size, cell, num_layers, bidirectional, dropout, engine,
                 vocab_size):
        super().__init__()
        if cell not in CELL_NETWORKS:
            raise ValueError(f"{owner}: unknown cell {cell!r}; choose one of {sorted(CELL_NETWORKS)}")
        self.owner = owner
        self.embedding = nn.Embedding(vocab_size, input_size) if vocab_size else None
        self.rnn = CELL_NETWORKS[cell](input_size, hidden_size, num_layers, bidirectional,
                                       dropout if num_layers > 1 else 0.0, engine, batch_first=True)
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, inputs):
        x, lengths = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        if self.embedding is not None:
            x = self.embedding(x)
        if lengths is not None:
            lengths = check_lengths(self.owner, lengths, x.shape[0], x.shape[1])
        out, _ = self.rnn(x, lengths=lengths)                      # (B, T, D·H), zero past each end
        return out, lengths


class _ManyToOne(nn.Module):
    """Encoder + a summary of its states over each sequence's valid steps."""

    def __init__(self, input_size, hidden_size, *, cell, num_layers, bidirectional, summary, dropout,
                 engine, vocab_size):
        super().__init__()
        name = type(self).__name__
        if summary not in SUMMARIES:
            raise ValueError(f"{name}: summary must be one of {list(SUMMARIES)}, got {summary!r}")
        self.encoder = _Encoder(name, input_size, hidden_size, cell, num_layers, bidirectional, dropout,
                                engine, vocab_size)
        self.summary, self.bidirectional, self.hidden_size = summary, bidirectional, hidden_size
        self.dropout = nn.Dropout(dropout)

    def summarize(self, out: Tensor, lengths: Tensor | None) -> Tensor:
        batch, steps, _ = out.shape
        ends = (lengths.to(out.device) if lengths is not None
                else torch.full((batch,), steps, device=out.device)) - 1
        if self.summary == "last":
            last = out[torch.arange(batch, device=out.device), ends]            # (B, D·H)
            if self.bidirectional:                                                 # backward half: step 0
                last = torch.cat([last[:, : self.hidden_size], out[:, 0, self.hidden_size:]], dim=-1)
            return last
        valid = (torch.arange(steps, device=out.device) <= ends.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        if self.summary == "mean":
            return out.sum(1) / valid.sum(1).to(out.dtype)
        return out.masked_fill(~valid, float("-inf")).max(1).values

    def features(self, inputs) -> Tensor:
        """The summary vector of each sequence, (B, D·H)."""
        return self.dropout(self.summarize(*self.encoder(inputs)))


class SequenceClassifier(_ManyToOne):
    """Read a sequence, emit one label: ``p(y | x_{1:T}) = softmax(W s + b)``.

    The summary ``s`` of the hidden states is the state at each sequence's last
    valid step (``"last"``; for a bidirectional network the forward half at the
    end and the backward half at the start), or their ``"mean"`` or ``"max"``
    over valid steps. ``inputs`` is ``x`` (B, T, input_size) — or token ids
    (B, T) when ``vocab_size`` is given — or a pair ``(x, lengths)``.

    >>> import torch
    >>> model = SequenceClassifier(input_size=8, num_classes=3, hidden_size=16)
    >>> logits = model((torch.randn(4, 10, 8), torch.tensor([10, 7, 3, 1])))
    >>> tuple(logits.shape)
    (4, 3)
    """

    def __init__(self, input_size: int, num_classes: int, hidden_size: int = 64, *, cell: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = False, summary: str = "last",
                 dropout: float = 0.0, engine: str = "auto", vocab_size: int | None = None):
        super().__init__(input_size, hidden_size, cell=cell, num_layers=num_layers,
                         bidirectional=bidirectional, summary=summary, dropout=dropout, engine=engine,
                         vocab_size=vocab_size)
        self.readout = CategoricalReadout(self.encoder.output_size, num_classes)

    def forward(self, inputs) -> Tensor:
        return self.readout.logits(self.features(inputs))

    def loss(self, inputs, targets: Tensor, state=None):
        """Mean cross-entropy over the batch (the trainer's contract; no state to carry)."""
        return -self.readout.log_prob(targets, self.features(inputs)).mean(), None

    @torch.no_grad()
    def predict(self, inputs) -> Tensor:
        return self(inputs).argmax(-1)


class SequenceRegressor(_ManyToOne):
    """Read a sequence, emit a real vector ``ŷ = W s + b``; trained on the mean squared error.

    Same summaries and inputs as :class:`SequenceClassifier`; ``targets`` are
    (B, output_size). (The MSE is the Gaussian negative log-likelihood with unit
    variance, up to constants.)

    >>> import torch
    >>> model = SequenceRegressor(input_size=2, output_size=1, hidden_size=8)
    >>> tuple(model(torch.randn(3, 20, 2)).shape)
    (3, 1)
    """

    def __init__(self, input_size: int, output_size: int = 1, hidden_size: int = 64, *, cell: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = False, summary: str = "last",
                 dropout: float = 0.0, engine: str = "auto", vocab_size: int | None = None):
        super().__init__(input_size, hidden_size, cell=cell, num_layers=num_layers,
                         bidirectional=bidirectional, summary=summary, dropout=dropout, engine=engine,
                         vocab_size=vocab_size)
        self.readout = nn.Linear(self.encoder.output_size, output_size)

    def forward(self, inputs) -> Tensor:
        return self.readout(self.features(inputs))

    def loss(self, inputs, targets: Tensor, state=None):
        prediction = self(inputs)
        if targets.shape != prediction.shape:
            raise ValueError(f"{type(self).__name__}: expected targets of shape {tuple(prediction.shape)}, "
                             f"got {tuple(targets.shape)}")
        return (prediction - targets).pow(2).mean(), None


class SequenceTagger(nn.Module):
    """One label per step (aligned many-to-many), bidirectional by default.

    ``p(y_t | x_{1:T}) = softmax(W h_t + b)`` where ``h_t`` sees the whole sequence
    when ``bidirectional``. The loss is the mean cross-entropy over valid steps.

    >>> import torch
    >>> tagger = SequenceTagger(input_size=5, num_tags=4, hidden_size=8)
    >>> tuple(tagger(torch.randn(2, 6, 5)).shape)
    (2, 6, 4)
    """

    def __init__(self, input_size: int, num_tags: int, hidden_size: int = 64, *, cell: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.0,
                 engine: str = "auto", vocab_size: int | None = None):
        super().__init__()
        self.encoder = _Encoder(type(self).__name__, input_size, hidden_size, cell, num_layers,
                                bidirectional, dropout, engine, vocab_size)
        self.dropout = nn.Dropout(dropout)
        self.readout = CategoricalReadout(self.encoder.output_size, num_tags)

    def forward(self, inputs) -> Tensor:
        out, _ = self.encoder(inputs)
        return self.readout.logits(self.dropout(out))                  # (B, T, num_tags)

    def loss(self, inputs, targets: Tensor, state=None):
        out, lengths = self.encoder(inputs)
        return sequence_nll(self.readout, targets, self.dropout(out), lengths, reduction="mean"), None

    def loss_weight(self, inputs, targets: Tensor) -> int:
        """How many tags the loss averages over: the valid steps."""
        lengths = inputs[1] if isinstance(inputs, (tuple, list)) else None
        return int(lengths.sum()) if lengths is not None else targets.shape[0] * targets.shape[1]

    @torch.no_grad()
    def predict(self, inputs) -> Tensor:
        return self(inputs).argmax(-1)
