"""Language models over characters or words: embedding -> recurrent stack -> softmax readout."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._config import DictConfig
from ..readouts import CategoricalReadout
from ..regularizers import embedding_dropout
from ..shortcuts import GRU, LSTM, ElmanRNN, GatedRNN, LeakyRNN

__all__ = ["LanguageModel", "LanguageModelConfig", "CELL_NETWORKS", "perplexity", "bits_per_token",
           "load_language_model"]

# the cells a language model can be built from, by the names the CLI takes
CELL_NETWORKS = {"lstm": LSTM, "gru": GRU, "elman": ElmanRNN, "gated": GatedRNN, "leaky": LeakyRNN}


@dataclass
class LanguageModelConfig(DictConfig):
    """Everything needed to rebuild a :class:`LanguageModel`; saved in every checkpoint."""

    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 1
    embedding_size: int = 64
    dropout: float = 0.0
    tie_weights: bool = False
    engine: str = "auto"
    embedding_dropout: float = 0.0

    def __post_init__(self):
        if self.cell not in CELL_NETWORKS:
            raise ValueError(f"LanguageModel: unknown cell {self.cell!r}; choose one of "
                             f"{sorted(CELL_NETWORKS)}")
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(f"LanguageModel: tie_weights needs embedding_size == hidden_size, got "
                             f"{self.embedding_size} and {self.hidden_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LanguageModel: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.embedding_dropout < 1:
            raise ValueError(f"LanguageModel: embedding_dropout must be in [0, 1), got {self.embedding_dropout}")


class LanguageModel(nn.Module):
    r"""Next-token model :math:`p(x_{t+1} \mid x_{\le t}) = \mathrm{softmax}(W h_t + b)`.

    ``h_t`` comes from a stack of recurrent layers over token embeddings; the
    state carried between calls is all the context the model has, so generation
    runs in constant memory. Dropout (when set) acts on the embeddings, between
    layers and before the readout; ``embedding_dropout`` drops whole words, rows of
    the embedding matrix, in training (:func:`rnnkit.regularizers.embedding_dropout`).
    ``tie_weights`` shares the embedding matrix with the readout (Press & Wolf 2017).

    ``forward(tokens (B, T), state=None) -> (logits (B, T, V), state)``.

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
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        self.rnn = CELL_NETWORKS[c.cell](c.embedding_size, c.hidden_size, c.num_layers,
                                         dropout=c.dropout if c.num_layers > 1 else 0.0, engine=c.engine)
        self.dropout = nn.Dropout(c.dropout)
        self.readout = CategoricalReadout(c.hidden_size, c.vocab_size)
        if c.tie_weights:
            self.readout.weight = self.embedding.weight

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def initial_state(self, batch_size: int):
        """Zeros in the layout of ``torch.nn`` (``(num_layers, B, H)``, a pair for LSTM)."""
        ref = self.embedding.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        parts = tuple(torch.zeros(shape, dtype=ref.dtype, device=ref.device)
                      for _ in self.rnn.state_names)
        return parts[0] if len(parts) == 1 else parts

    def forward(self, tokens: Tensor, state=None):
        self._check_tokens(tokens)
        p = self.config.embedding_dropout
        if p > 0 and self.training:
            embedded = nn.functional.embedding(tokens, embedding_dropout(self.embedding.weight, p))
        else:
            embedded = self.embedding(tokens)
        h, state = self.rnn(self.dropout(embedded), state)                 # (B, T, H)
        return self.readout.logits(self.dropout(h)), state

    def loss(self, inputs: Tensor, targets: Tensor, state=None):
        """Mean negative log-likelihood per predicted token (nats), and the new state."""
        if targets.shape != inputs.shape:
            raise ValueError(f"LanguageModel: targets must have the shape of the inputs "
                             f"{tuple(inputs.shape)}, got {tuple(targets.shape)}")
        logits, state = self(inputs, state)
        nll = nn.functional.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1))
        return nll, state

    @torch.no_grad()
    def log_prob(self, tokens: Tensor) -> Tensor:
        """``log p(x_2..x_T | x_1)`` of each sequence in ``tokens`` (B, T), in nats: (B,)."""
        logits, _ = self(tokens[:, :-1])
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(-1)

    def _check_tokens(self, tokens) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            what = tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"LanguageModel: expected token ids as an integer tensor (B, T), got {what}")
        if tokens.dim() != 2:
            raise ValueError(f"LanguageModel: expected token ids of shape (batch, time), got "
                             f"{tuple(tokens.shape)}")
        if tokens.numel():
            low, high = (int(v) for v in torch.aminmax(tokens))      # one pass, one sync per forward
            if high >= self.vocab_size or low < 0:
                raise ValueError(f"LanguageModel: token ids must lie in [0, {self.vocab_size}), got values "
                                 f"from {low} to {high}")


def perplexity(nll_nats: float) -> float:
    """``exp`` of the mean negative log-likelihood per token."""
    return math.exp(nll_nats)


def bits_per_token(nll_nats: float) -> float:
    """Mean negative log-likelihood in bits (bits per character for a character model)."""
    return nll_nats / math.log(2)


def load_language_model(run_dir, which: str = "best", *, device=None):
    """Rebuild a trained model and its vocabulary from a run directory alone.

    Returns ``(model, vocabulary, checkpoint_config)``; the model is in eval mode.
    """
    from ..data.vocab import Vocabulary
    from ..train.checkpoint import read_checkpoint

    weights, config, _ = read_checkpoint(run_dir, which)
    model = LanguageModel(LanguageModelConfig.from_dict(config["model"]))
    model.load_state_dict(weights)
    vocab = Vocabulary.from_dict(config["vocabulary"])
    if len(vocab) != model.vocab_size:
        raise ValueError(f"{run_dir}: the vocabulary has {len(vocab)} tokens but the model predicts "
                         f"{model.vocab_size}; the checkpoint is inconsistent")
    return model.to(device or "cpu").eval(), vocab, config
