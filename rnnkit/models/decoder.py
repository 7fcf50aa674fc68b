r"""The decoder that the encoder–decoder models of :mod:`rnnkit.models.seq2seq` share, and its decoding.

The decoder models :math:`p(y_{1:n} \mid \text{source}) = \prod_t p(y_t \mid y_{<t}, c)`
one explicit cell step at a time (it needs the attention between steps):

.. math::
    s_t &= f_s\big(s_{t-1},\ [E y_{t-1};\ c\ (\text{every step});\ \tilde h_{t-1}\ (\text{input feeding})]\big),
    \qquad h_t = f_o(s_t) \\
    a_t &= \sum_j \alpha_{tj} m_j, \qquad \alpha_{t} = \mathrm{softmax}_j\,\mathrm{score}(h_t, m_j)
    \quad (\text{padding } j \ge \ell: \alpha_{tj} = 0) \\
    \tilde h_t &= \tanh(W_c [a_t; h_t]) \ \text{with attention, else } h_t, \qquad
    p(y_t \mid \cdot) = \mathrm{softmax}(W_o \tilde h_t + b_o)

``score`` is additive, :math:`v^\top \tanh(W_q q + W_k k)` (Bahdanau et al. 2015),
or multiplicative, :math:`q^\top W k` (Luong et al. 2015, "general"); the query
is the current decoder output :math:`h_t` (Luong's arrangement for both). The
context :math:`c` — the encoder's summary — starts the decoder
(``context="initial_state"``), is read at every step (``"every_step"``), or both.

Decoding (greedy and beam search) runs the whole batch at once, beams flattened into the
batch dimension, and returns :class:`Decoded`. An encoder–decoder model subclasses
:class:`_EncoderDecoder` and supplies the encoder: its summary state, and the encoder's outputs
to attend to (:meth:`_EncoderDecoder._memory`).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._arguments import check_int, check_number, check_probability
from ..cells import CELLS
from ..cells.base import State, check_sizes, map_state
from ..layers import Recurrent
from ..readouts import CategoricalReadout
from .attention import ATTENTIONS, Attention

__all__ = ["Decoded", "CONTEXTS"]

CONTEXTS = ("initial_state", "every_step", "both")


class Decoded(NamedTuple):
    """What decoding returns, one entry per batch item.

    ``tokens``: the best output of each item, a list of ids without ``<start>``
    and ``<end>``. ``log_probs`` (B,): its log-probability under the model
    (the ``<end>`` step included). ``scores`` (B,): what the search ranked by —
    ``log_probs`` divided by the length penalty (equal to ``log_probs`` when the
    penalty is 0).
    """

    tokens: List[List[int]]
    scores: Tensor
    log_probs: Tensor


class _Memory(NamedTuple):
    """What the decoder reads about one batch of sources."""

    state: State                 # decoder initial state
    context: Tensor              # (B, H) the summary c
    values: Optional[Tensor]     # (B, S, H) encoder outputs, for attention
    keys: Optional[Tensor]       # (B, S, A) their projection
    mask: Optional[Tensor]       # (B, S) valid source steps

    def select(self, index: Tensor) -> "_Memory":
        """Rows ``index`` of every tensor (used to copy each item once per beam)."""
        pick = (lambda t: None if t is None else t.index_select(0, index))
        return _Memory(map_state(pick, self.state), *(pick(t) for t in self[1:]))


def _make_cell(name: str, input_size: int, hidden_size: int):
    # a Jordan cell feeds back its output, so give it one of the hidden size
    extra = {"output_size": hidden_size} if name == "jordan" else {}
    return CELLS[name](input_size, hidden_size, **extra)


def _check_tokens(owner: str, what: str, tokens) -> Tensor:
    """A (batch, time) tensor of integer ids with at least one step, as int64."""
    if not isinstance(tokens, Tensor):
        raise TypeError(f"{owner}: expected {what} to be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"{owner}: expected {what} to hold integer token ids, got dtype {tokens.dtype}; "
                        f"convert it with .long()")
    if tokens.dim() != 2:
        raise ValueError(f"{owner}: expected {what} of shape (batch, time), got shape {tuple(tokens.shape)}")
    if tokens.shape[1] == 0:
        raise ValueError(f"{owner}: expected at least one step in {what}, got shape {tuple(tokens.shape)}")
    return tokens.long()


def _check_vocabulary(owner: str, what: str, tokens: Tensor, vocab_size: int,
                      valid: Optional[Tensor] = None) -> Tensor:
    """Every id of ``tokens`` (where ``valid``) lies in [0, vocab_size)."""
    checked = tokens if valid is None else tokens[valid]
    outside = (checked < 0) | (checked >= vocab_size)
    if bool(outside.any()):
        raise ValueError(f"{owner}: {what} holds token id {checked[outside][0].item()}, outside the "
                         f"vocabulary [0, {vocab_size})")
    return tokens


def _check_ids(owner: str, what: str, tokens, vocab_size: int) -> Tensor:
    """(batch, time) integer ids, all in the vocabulary, as int64."""
    return _check_vocabulary(owner, what, _check_tokens(owner, what, tokens), vocab_size)


class _EncoderDecoder(nn.Module):
    """The decoder and the decoding algorithms; subclasses supply ``_encode``'s summary."""

    def __init__(self, target_vocab_size, hidden_size, embedding_size, cell, attention, context,
                 input_feeding, dropout, start_id, end_id, pad_id, teacher_forcing, sampling, engine):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, target_vocab_size=target_vocab_size, hidden_size=hidden_size,
                    embedding_size=embedding_size)
        if cell not in CELLS:
            raise ValueError(f"{name}: unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        if attention not in ATTENTIONS:
            raise ValueError(f"{name}: attention must be None, 'additive' or 'multiplicative', got {attention!r}")
        if context not in CONTEXTS:
            raise ValueError(f"{name}: context must be one of {list(CONTEXTS)}, got {context!r}")
        if input_feeding and attention is None:
            raise ValueError(f"{name}: input_feeding feeds the attentional vector back; it needs attention")
        if sampling not in ("argmax", "sample"):
            raise ValueError(f"{name}: sampling must be 'argmax' or 'sample', got {sampling!r}")
        for what, value in (("start_id", start_id), ("end_id", end_id), ("pad_id", pad_id)):
            check_int(name, what, value, 0, f"target_vocab_size is {target_vocab_size}",
                      maximum=target_vocab_size - 1)
        self.target_vocab_size, self.hidden_size = target_vocab_size, hidden_size
        self.cell_name, self.attention_kind, self.context = cell, attention, context
        self.input_feeding = bool(input_feeding)
        self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
        self.dropout = nn.Dropout(check_probability(name, "dropout", dropout))
        self.teacher_forcing = check_probability(name, "teacher_forcing", teacher_forcing, one=True)
        self.sampling = sampling
        self.attention_weights: Optional[Tensor] = None

        self.target_embedding = nn.Embedding(target_vocab_size, embedding_size)
        step_input = embedding_size + hidden_size * (context != "initial_state") + hidden_size * self.input_feeding
        self.decoder = Recurrent(_make_cell(cell, step_input, hidden_size), engine, name=f"{name} decoder")
        self.attention = Attention(hidden_size, hidden_size, attention) if attention else None
        self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False) if attention else None
        self.readout = CategoricalReadout(hidden_size, target_vocab_size)

    # ----- the decoder ------------------------------------------------------------
    def _memory(self, summary: State, values: Optional[Tensor], mask: Optional[Tensor]) -> _Memory:
        """Start the decoder from the encoder's summary state (the context ``c = f_o(summary)``)."""
        cell = self.decoder.cell
        context = cell.output(summary)                                         # (B, H)
        state = summary if self.context != "every_step" else cell.initial_state(
            context.shape[0], device=context.device, dtype=context.dtype)
        keys = self.attention.prepare(values) if self.attention is not None else None
        return _Memory(state, context, values, keys, mask)

    def _step_input(self, embedded: Tensor, context: Tensor, feed: Optional[Tensor]) -> Tensor:
        parts = [embedded]
        if self.context != "initial_state":
            parts.append(context.unsqueeze(1).expand(-1, embedded.shape[1], -1) if embedded.dim() == 3
                         else context)
        if feed is not None:
            parts.append(feed)
        return torch.cat(parts, dim=-1)

    def _attend(self, h: Tensor, memory: _Memory):
        """``(h̃, alpha)`` from decoder outputs ``h`` (B[, T], H)."""
        if self.attention is None:
            return h, None
        attended, weights = self.attention(h, memory.keys, memory.values, memory.mask)
        return torch.tanh(self.combine(torch.cat([attended, h], dim=-1))), weights

    def _step(self, tokens: Tensor, state: State, feed: Optional[Tensor], memory: _Memory):
        """One decoder step from the previous tokens (B,): ``(logits (B, V), state, feed, alpha)``;
        ``feed`` is h̃ with input feeding, else None."""
        x = self._step_input(self.dropout(self.target_embedding(tokens)), memory.context, feed)
        state = self.decoder.cell(x, state)
        attentional, weights = self._attend(self.decoder.cell.output(state), memory)
        feed = attentional if self.input_feeding else None
        return self.readout.logits(self.dropout(attentional)), state, feed, weights

    def _initial_feed(self, memory: _Memory) -> Optional[Tensor]:
        return torch.zeros_like(memory.context) if self.input_feeding else None

    def _decode(self, memory: _Memory, target_in: Tensor) -> Tensor:
        """Logits (B, T, V) for the decoder inputs ``target_in`` (teacher forcing, or
        scheduled sampling when training with ``teacher_forcing < 1``)."""
        sampling = self.training and self.teacher_forcing < 1
        if not (self.input_feeding or sampling):
            # every decoder input is known in advance: one pass of the engine, then attention for all steps
            x = self._step_input(self.dropout(self.target_embedding(target_in)), memory.context, None)
            h, _ = self.decoder(x, memory.state)                                # (B, T, H)
            attentional, weights = self._attend(h, memory)
            self.attention_weights = None if weights is None else weights.detach()
            return self.readout.logits(self.dropout(attentional))             # (B, T, V)
        state, feed, logits, weights = memory.state, self._initial_feed(memory), [], []
        tokens = target_in[:, 0]
        for t in range(target_in.shape[1]):
            if t > 0:
                tokens = target_in[:, t]
                if sampling:
                    own = self._predict(logits[-1].detach())
                    use_own = torch.rand(tokens.shape, device=tokens.device) >= self.teacher_forcing
                    tokens = torch.where(use_own, own, tokens)
            step_logits, state, feed, alpha = self._step(tokens, state, feed, memory)
            logits.append(step_logits)
            weights.append(alpha)
        self.attention_weights = None if self.attention is None else torch.stack(weights, 1).detach()
        return torch.stack(logits, dim=1)

    def _predict(self, logits: Tensor) -> Tensor:
        if self.sampling == "argmax":
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)

    def loss_weight(self, inputs, targets: Tensor) -> int:
        """How many tokens the loss averages over: the targets that are not padding."""
        return int((targets != self.pad_id).sum())

    def _nll(self, logits: Tensor, targets) -> Tensor:
        owner = f"{type(self).__name__}.loss"
        targets = _check_ids(owner, "targets", targets, self.target_vocab_size)
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"{owner}: expected targets of shape {tuple(logits.shape[:2])} to match the "
                             f"decoder inputs, got {tuple(targets.shape)}")
        empty = (targets == self.pad_id).all(1)
        if bool(empty.any()):
            row = int(empty.nonzero()[0])
            raise ValueError(f"{owner}: target row {row} holds only pad_id={self.pad_id}; every target "
                             f"needs at least one token (its <end> at least)")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=self.pad_id)

    def _shifted(self, targets: Tensor) -> Tensor:
        """Teacher-forcing inputs ``[<start>, y_1, ..., y_{n-1}]`` for targets ``[y_1, ..., y_n]``."""
        start = torch.full_like(targets[:, :1], self.start_id)
        return torch.cat([start, targets[:, :-1]], dim=1)

    # ----- decoding ------------------------------------------------------------------
    def _check_max_length(self, max_length) -> int:
        check_sizes(type(self).__name__, max_length=max_length)
        return max_length

    def _greedy(self, memory: _Memory, max_length: int) -> Decoded:
        max_length = self._check_max_length(max_length)
        batch = memory.context.shape[0]
        state, feed = memory.state, self._initial_feed(memory)
        tokens = torch.full((batch,), self.start_id, dtype=torch.long, device=memory.context.device)
        total = memory.context.new_zeros(batch)
        finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
        steps, weights = [], []
        for _ in range(max_length):
            logits, state, feed, alpha = self._step(tokens, state, feed, memory)
            log_p = torch.log_softmax(logits, dim=-1)                           # (B, V)
            tokens = log_p.argmax(-1)
            total = total + torch.where(finished, 0.0, log_p.gather(1, tokens[:, None]).squeeze(1))
            steps.append(torch.where(finished, self.end_id, tokens))
            weights.append(alpha)
            finished = finished | (tokens == self.end_id)
            if bool(finished.all()):
                break
        if self.attention is not None:
            self.attention_weights = torch.stack(weights, 1)
        return Decoded(self._strip(torch.stack(steps, 1)), total, total)

    def _strip(self, sequences: Tensor) -> List[List[int]]:
        """Token lists up to (not including) each row's first ``<end>``."""
        out = []
        for row in sequences.tolist():
            out.append(row[: row.index(self.end_id)] if self.end_id in row else row)
        return out

    def _beam_search(self, memory: _Memory, beam_width: int, max_length: int, length_penalty: float) -> Decoded:
        owner = f"{type(self).__name__}.beam_search"
        check_int(owner, "beam_width", beam_width, hint="1 is greedy decoding")
        check_number(owner, "length_penalty", length_penalty, low=0.0, high_closed=False, what="a finite number >= 0",
                     hint="0 ranks by log-probability alone")
        max_length = self._check_max_length(max_length)
        self.attention_weights = None             # a beam has no single alignment to show
        batch, k, vocab = memory.context.shape[0], beam_width, self.target_vocab_size
        device, dtype = memory.context.device, memory.context.dtype
        memory = memory.select(torch.arange(batch, device=device).repeat_interleave(k))   # (B·k, ...)
        state, feed = memory.state, self._initial_feed(memory)
        tokens = torch.full((batch * k,), self.start_id, dtype=torch.long, device=device)
        # only the first beam is live at the start, so the k beams do not repeat one hypothesis
        scores = torch.full((batch, k), float("-inf"), dtype=dtype, device=device)
        scores[:, 0] = 0.0                                                      # (B, k) log-probabilities
        lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
        finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
        # a finished hypothesis has one continuation, <pad> at no cost: it keeps its slot and stops growing
        frozen = torch.full((vocab,), float("-inf"), dtype=dtype, device=device)
        frozen[self.pad_id] = 0.0
        width = min(k, vocab)
        offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)          # (B, 1)
        history = []
        for _ in range(max_length):
            logits, state, feed, _ = self._step(tokens, state, feed, memory)
            log_p = torch.log_softmax(logits, dim=-1).view(batch, k, vocab)
            log_p = torch.where(finished.unsqueeze(-1), frozen, log_p)
            # the k best continuations of one hypothesis are its k most probable tokens (they share
            # its score and length), so k of each are all the candidates the next beam can need
            step_log_p, step_tokens = log_p.topk(width, dim=-1)                  # (B, k, width)
            candidates = (scores.unsqueeze(-1) + step_log_p).view(batch, k * width)
            grown = lengths + (~finished).long()                                  # (B, k)
            penalty = self._length_penalty(grown, length_penalty, dtype).repeat_interleave(width, dim=1)
            _, best = (candidates / penalty).topk(k, dim=1)                      # (B, k), best first
            parent, tokens = best // width, step_tokens.view(batch, k * width).gather(1, best)
            scores = candidates.gather(1, best)
            lengths = grown.gather(1, parent)
            was_finished = finished.gather(1, parent)
            # hypotheses still at -inf (k > V at the first step) will never win: retire them too
            finished = was_finished | (tokens == self.end_id) | torch.isneginf(scores)
            history.append((parent, torch.where(was_finished, self.end_id, tokens)))
            rows = (parent + offsets).view(-1)
            state = map_state(lambda s: s.index_select(0, rows), state)
            feed = None if feed is None else feed.index_select(0, rows)
            tokens = tokens.view(-1)
            if bool(finished.all()) or (length_penalty == 0 and self._settled(scores, finished)):
                break
        best_beam = torch.zeros(batch, dtype=torch.long, device=device)           # topk sorted: beam 0 wins
        sequence = []
        for parent, step_tokens in reversed(history):
            sequence.append(step_tokens.gather(1, best_beam[:, None]).squeeze(1))
            best_beam = parent.gather(1, best_beam[:, None]).squeeze(1)
        log_probs = scores[:, 0]
        ranked = log_probs / self._length_penalty(lengths[:, 0], length_penalty, dtype)
        return Decoded(self._strip(torch.stack(sequence[::-1], 1)), ranked, log_probs)

    @staticmethod
    def _length_penalty(lengths: Tensor, alpha: float, dtype) -> Tensor:
        """Wu et al. (2016): ``lp(Y) = ((5 + |Y|) / 6) ** alpha``, |Y| counting ``<end>``."""
        return ((5.0 + lengths.to(dtype)) / 6.0) ** alpha

    @staticmethod
    def _settled(scores: Tensor, finished: Tensor) -> bool:
        """With no length penalty a live score can only fall, so a finished hypothesis that
        beats every live one of its item has won."""
        best_finished = scores.masked_fill(~finished, float("-inf")).max(1).values
        best_live = scores.masked_fill(finished, float("-inf")).max(1).values
        return bool(((best_finished > best_live) & finished.any(1)).all())
