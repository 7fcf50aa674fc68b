r"""Encoder–decoder models: sequence-to-sequence and vector-to-sequence, with attention.

Both put an encoder in front of the one decoder of :mod:`rnnkit.models.decoder` (its equations,
attention scores and decoding are described there): :class:`Seq2Seq` reads a token sequence
(forward or bidirectional), :class:`VectorToSequence` a feature vector. The encoder's summary is
the context :math:`c` that starts the decoder (``context="initial_state"``), is read at every
step (``"every_step"``), or both.

Decoding (:meth:`~Seq2Seq.greedy`, :meth:`~Seq2Seq.beam_search`) runs the whole
batch at once, beams flattened into the batch dimension, and returns
:class:`Decoded`. Like any torch module it runs in the mode it is in: call
``model.eval()`` first when the model has dropout.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._arguments import check_int
from .._checks import check_lengths
from ..cells.base import check_sizes, state_tensors
from ..layers import Bidirectional, Recurrent
from .attention import ATTENTIONS, Attention
from .decoder import (CONTEXTS, Decoded, _check_ids, _check_tokens, _check_vocabulary, _EncoderDecoder, _make_cell,
                      _Memory)

__all__ = ["Attention", "Seq2Seq", "VectorToSequence", "Decoded", "ATTENTIONS", "CONTEXTS"]


class Seq2Seq(_EncoderDecoder):
    r"""Encoder–decoder for sequence transduction (Sutskever et al. 2014; Cho et al. 2014),
    with optional attention (Bahdanau et al. 2015; Luong et al. 2015).

    The encoder embeds the source and runs ``cell`` over it (forward, or a
    bidirectional pair whose outputs and final states are projected back to
    ``hidden_size``: :math:`s = \tanh(W [s_\rightarrow; s_\leftarrow])` per state
    tensor). Its final state at each source's own last step is the summary; the
    context is :math:`c = f_o(s)`. The decoder (same cell type) is described in
    :mod:`rnnkit.models.decoder`.

    Args:
        cell: a name from :data:`rnnkit.cells.CELLS` (``"lstm"``, ``"gru"``, ...).
        attention: ``None``, ``"additive"`` or ``"multiplicative"``.
        context: ``"initial_state"``, ``"every_step"`` or ``"both"``.
        input_feeding: feed :math:`\tilde h_{t-1}` into step ``t`` (Luong); needs attention.
        teacher_forcing: probability of feeding the true previous token while
            training; below 1 each step (per sequence) feeds the model's own
            previous prediction instead (scheduled sampling, Bengio et al. 2015),
            its ``argmax`` or a ``"sample"`` by ``sampling``. A plain attribute, so
            a schedule can lower it during training.

    Shapes: ``source`` (B, S) token ids, ``source_lengths`` (B,) or None (all
    full; steps past a length are never read), ``target_in`` (B, T) decoder
    inputs starting with ``start_id``. ``forward`` returns logits (B, T, V) and
    leaves ``attention_weights`` (B, T, S) for inspection (``greedy`` leaves its
    own; None without attention).

    >>> import torch
    >>> model = Seq2Seq(10, 12, hidden_size=16, embedding_size=8, attention="additive")
    >>> source, lengths = torch.randint(3, 10, (2, 5)), torch.tensor([5, 3])
    >>> tuple(model(source, lengths, torch.randint(3, 12, (2, 4))).shape)
    (2, 4, 12)
    >>> len(model.beam_search(source, lengths, beam_width=3, max_length=6).tokens)
    2
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, hidden_size: int = 128,
                 embedding_size: int = 64, *, cell: str = "lstm", attention: Optional[str] = None,
                 context: str = "initial_state", bidirectional_encoder: bool = False,
                 input_feeding: bool = False, dropout: float = 0.0, start_id: int = 1, end_id: int = 2,
                 pad_id: int = 0, teacher_forcing: float = 1.0, sampling: str = "argmax",
                 engine: str = "auto"):
        super().__init__(target_vocab_size, hidden_size, embedding_size, cell, attention, context,
                         input_feeding, dropout, start_id, end_id, pad_id, teacher_forcing, sampling, engine)
        name = type(self).__name__
        check_sizes(name, source_vocab_size=source_vocab_size)
        check_int(name, "pad_id", pad_id, 0, f"it is a source token id too, and source_vocab_size is "
                  f"{source_vocab_size}", maximum=source_vocab_size - 1)
        self.source_vocab_size, self.bidirectional_encoder = source_vocab_size, bool(bidirectional_encoder)
        self.source_embedding = nn.Embedding(source_vocab_size, embedding_size)

        def runner(reverse: bool) -> Recurrent:
            return Recurrent(_make_cell(cell, embedding_size, hidden_size), engine, reverse=reverse,
                             name=f"{name} encoder")

        if self.bidirectional_encoder:
            self.encoder = Bidirectional(runner(False), runner(True))
            sizes = self.decoder.cell.state_sizes
            self.state_projections = nn.ModuleList(
                nn.Linear(2 * s, s) for s in ((sizes,) if isinstance(sizes, int) else sizes))
            if attention:
                self.output_projection = nn.Linear(2 * hidden_size, hidden_size)
        else:
            self.encoder = runner(False)

    def _encode(self, source, source_lengths) -> _Memory:
        name = type(self).__name__
        source = _check_tokens(name, "source", source)
        lengths = check_lengths(name, source_lengths, source.shape[0], source.shape[1])
        if lengths is None:
            valid = torch.ones(source.shape, dtype=torch.bool, device=source.device)     # (B, S)
        else:
            valid = torch.arange(source.shape[1], device=source.device) < lengths.to(source.device)[:, None]
        _check_vocabulary(name, "source", source, self.source_vocab_size, valid)
        # what lies past a length is never read: replace it, so that it may hold anything
        source = torch.where(valid, source, self.pad_id)
        outputs, final = self.encoder(self.dropout(self.source_embedding(source)), lengths=lengths)
        if self.bidirectional_encoder:
            forward_state, backward_state = (state_tensors(s) for s in final)
            parts = tuple(torch.tanh(project(torch.cat(pair, dim=-1))) for project, pair
                          in zip(self.state_projections, zip(forward_state, backward_state)))
            final = parts[0] if isinstance(self.decoder.cell.state_sizes, int) else parts
            if self.attention is not None:
                outputs = self.output_projection(outputs)                           # (B, S, H)
        return self._memory(final, outputs if self.attention is not None else None, valid)

    def forward(self, source: Tensor, source_lengths, target_in: Tensor) -> Tensor:
        """Logits (B, T, V) of every next token given ``target_in`` (teacher forcing)."""
        memory = self._encode(source, source_lengths)
        target_in = _check_ids(type(self).__name__, "target_in", target_in, self.target_vocab_size)
        if target_in.shape[0] != source.shape[0]:
            raise ValueError(f"{type(self).__name__}: source has {source.shape[0]} sequences but target_in "
                             f"has {target_in.shape[0]}")
        return self._decode(memory, target_in)

    def loss(self, inputs, targets: Tensor, state=None):
        """Mean cross-entropy per target token, pad positions ignored: ``(loss, None)``.

        ``inputs`` is ``(source, source_lengths, target_in)``, or ``(source,
        source_lengths)`` — what :class:`rnnkit.data.SequenceBatches` yields with
        ``lengths`` — and then ``target_in`` is ``targets`` shifted right behind
        ``start_id``. ``targets`` (B, T) end with ``end_id`` and are padded with ``pad_id``.
        """
        if not isinstance(inputs, (tuple, list)) or len(inputs) not in (2, 3):
            raise TypeError(f"{type(self).__name__}.loss: expected inputs (source, source_lengths, target_in) "
                            f"or (source, source_lengths), got {type(inputs).__name__}"
                            + (f" of {len(inputs)}" if isinstance(inputs, (tuple, list)) else ""))
        source, lengths = inputs[0], inputs[1]
        target_in = inputs[2] if len(inputs) == 3 else self._shifted(
            _check_ids(f"{type(self).__name__}.loss", "targets", targets, self.target_vocab_size))
        return self._nll(self(source, lengths, target_in), targets), None

    @torch.no_grad()
    def greedy(self, source: Tensor, source_lengths=None, max_length: int = 50) -> Decoded:
        """Take the most probable token at every step, for the whole batch at once."""
        return self._greedy(self._encode(source, source_lengths), max_length)

    @torch.no_grad()
    def beam_search(self, source: Tensor, source_lengths=None, beam_width: int = 4, max_length: int = 50,
                    length_penalty: float = 0.0) -> Decoded:
        r"""Keep the ``beam_width`` best hypotheses per item; return the best of each.

        Hypotheses are ranked by :math:`\log p(Y) / lp(Y)` with
        :math:`lp(Y) = ((5 + |Y|)/6)^\alpha` (Wu et al. 2016, ``alpha = length_penalty``;
        1 when it is 0). A hypothesis that emits ``end_id`` is finished: it keeps
        its place and stops growing. Hypotheses unfinished after ``max_length``
        steps compete as they are. ``beam_width=1`` is :meth:`greedy`.
        """
        return self._beam_search(self._encode(source, source_lengths), beam_width, max_length, length_penalty)


class VectorToSequence(_EncoderDecoder):
    r"""One-to-many: generate a sequence from a feature vector (image captioning style).

    The vector :math:`f` (B, feature_size) gives the summary state
    :math:`s = \tanh(W_k f + b_k)` per state tensor and the context :math:`c = f_o(s)`,
    used by ``context`` as in :class:`Seq2Seq`; the decoder is the same (no attention).

    >>> import torch
    >>> model = VectorToSequence(6, 9, hidden_size=16, embedding_size=8, context="both")
    >>> tuple(model(torch.randn(3, 6), torch.randint(3, 9, (3, 4))).shape)
    (3, 4, 9)
    """

    def __init__(self, feature_size: int, target_vocab_size: int, hidden_size: int = 128,
                 embedding_size: int = 64, *, cell: str = "lstm", context: str = "initial_state",
                 dropout: float = 0.0, start_id: int = 1, end_id: int = 2, pad_id: int = 0,
                 teacher_forcing: float = 1.0, sampling: str = "argmax", engine: str = "auto"):
        super().__init__(target_vocab_size, hidden_size, embedding_size, cell, None, context, False, dropout,
                         start_id, end_id, pad_id, teacher_forcing, sampling, engine)
        check_sizes(type(self).__name__, feature_size=feature_size)
        self.feature_size = feature_size
        sizes = self.decoder.cell.state_sizes
        self.state_projections = nn.ModuleList(
            nn.Linear(feature_size, s) for s in ((sizes,) if isinstance(sizes, int) else sizes))

    def _encode(self, features) -> _Memory:
        name = type(self).__name__
        like = self.target_embedding.weight
        if not isinstance(features, Tensor):
            raise TypeError(f"{name}: expected features to be a torch.Tensor, got {type(features).__name__}")
        if features.dim() != 2 or features.shape[1] != self.feature_size:
            raise ValueError(f"{name}: expected features of shape (batch, {self.feature_size}), got "
                             f"{tuple(features.shape)}")
        if features.dtype != like.dtype:
            raise TypeError(f"{name}: features dtype {features.dtype} does not match the model's {like.dtype}")
        parts = tuple(torch.tanh(project(features)) for project in self.state_projections)
        return self._memory(parts[0] if len(parts) == 1 else parts, None, None)

    def forward(self, features: Tensor, target_in: Tensor) -> Tensor:
        """Logits (B, T, V) of every next token given ``target_in`` (teacher forcing)."""
        memory = self._encode(features)
        target_in = _check_ids(type(self).__name__, "target_in", target_in, self.target_vocab_size)
        if target_in.shape[0] != features.shape[0]:
            raise ValueError(f"{type(self).__name__}: features has {features.shape[0]} rows but target_in "
                             f"has {target_in.shape[0]}")
        return self._decode(memory, target_in)

    def loss(self, inputs, targets: Tensor, state=None):
        """Mean cross-entropy per target token; ``inputs`` is ``features`` or ``(features, target_in)``."""
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise TypeError(f"{type(self).__name__}.loss: expected inputs features or (features, "
                                f"target_in), got a {type(inputs).__name__} of {len(inputs)}")
            features, target_in = inputs
        else:
            features = inputs
            target_in = self._shifted(_check_ids(f"{type(self).__name__}.loss", "targets", targets,
                                                 self.target_vocab_size))
        return self._nll(self(features, target_in), targets), None

    @torch.no_grad()
    def greedy(self, features: Tensor, max_length: int = 50) -> Decoded:
        """Take the most probable token at every step."""
        return self._greedy(self._encode(features), max_length)

    @torch.no_grad()
    def beam_search(self, features: Tensor, beam_width: int = 4, max_length: int = 50,
                    length_penalty: float = 0.0) -> Decoded:
        """Beam search as in :meth:`Seq2Seq.beam_search`."""
        return self._beam_search(self._encode(features), beam_width, max_length, length_penalty)
