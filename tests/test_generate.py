"""Sampling: filters against brute-force oracles, empirical frequencies against softmax,
seeds, laziness and constant memory of the stream, and exact greedy output."""
import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

from rnnkit.generate import filter_logits, generate, sample_next, stream

F64 = torch.float64


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# ---------------------------------------------------------------- stand-ins

class CharVocab:
    """Character vocabulary: ids 0, 1, 2 are <start>, <end>, <unk>, then one id per symbol."""

    level = "char"
    start_id, end_id, unk_id = 0, 1, 2

    def __init__(self, symbols="abcdefgh"):
        self.itos = ["<start>", "<end>", "<unk>", *symbols]
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text, *, strict=False, what="text"):
        unknown = sorted({c for c in text if c not in self.stoi})
        if strict and unknown:
            raise ValueError(f"CharVocab: unknown characters in the {what}: {unknown}")
        return [self.stoi.get(c, self.unk_id) for c in text]

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)


class WordVocab(CharVocab):
    """Word vocabulary: whitespace-separated words, decoded joined by single spaces."""

    level = "word"

    def encode(self, text, *, strict=False, what="text"):
        if strict:
            raise AssertionError("a word-level prime must be encoded non-strictly")
        return [self.stoi.get(w, self.unk_id) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.itos[i] for i in ids)


class Log:
    """What a stand-in model saw: calls, the largest tensor passed in (tokens or state), and
    per call the token shape, the training flag and the grad mode."""

    def __init__(self):
        self.calls, self.largest, self.shapes, self.first_tokens = 0, 0, [], None
        self.training, self.grad = [], []


class Recorder(nn.Module):
    """A model stand-in that logs its calls; its state (1, 3) counts the tokens seen."""

    def __init__(self):
        super().__init__()
        self.log = Log()

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, 3)

    def forward(self, tokens, state):
        log = self.log
        if log.first_tokens is None:
            log.first_tokens = tokens.tolist()
        log.calls += 1
        log.largest = max(log.largest, tokens.numel(), state.numel())
        log.shapes.append(tuple(tokens.shape))
        log.training.append(self.training)
        log.grad.append(torch.is_grad_enabled())
        return self.next_logits(tokens), state + tokens.shape[1]


class TableModel(Recorder):
    """Deterministic next token: logits = 30 * one_hot(successor[current]) (B, T, V)."""

    def __init__(self, successor):
        super().__init__()
        self.successor = torch.as_tensor(successor)

    def next_logits(self, tokens):
        return 30.0 * nn.functional.one_hot(self.successor[tokens], len(self.successor)).float()


class FixedModel(nn.Module):
    """The same logits at every step, whatever came before (no log: it runs 20k steps)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, 3)

    def forward(self, tokens, state):
        return self.logits.expand(*tokens.shape, len(self.logits)), state


class BigramModel(Recorder):
    """A random bigram table: logits = W[current] with W (V, V) ~ N(0, 1), except that the
    three special tokens (ids 0-2) are never drawn, so every token is one character."""

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        self.table = torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(seed))
        self.table[:, :3] = -math.inf

    def next_logits(self, tokens):
        return self.table[tokens]


def cyclic(vocab):
    """The model whose next token is (current + 1) mod V."""
    return TableModel([(i + 1) % len(vocab) for i in range(len(vocab))])


# ---------------------------------------------------------------- filter_logits

logit_rows = st.lists(st.floats(-6, 6, allow_nan=False, width=64), min_size=1, max_size=7)


@settings(max_examples=150, deadline=None)
@given(row=logit_rows, k=st.integers(1, 9))
def test_top_k_keeps_exactly_the_k_largest(row, k):
    z = torch.tensor(row, dtype=F64)
    out = filter_logits(z, top_k=k)
    kept = torch.isfinite(out)
    assert int(kept.sum()) == min(k, len(row))
    assert torch.equal(out[kept], z[kept])
    if not kept.all():
        assert z[kept].min() >= z[~kept].max()


def _nucleus_size_by_enumeration(probs, top_p):
    """The smallest number of tokens any subset needs for its probability to reach top_p."""
    for size in range(1, len(probs) + 1):
        if any(sum(s) >= top_p for s in itertools.combinations(probs, size)):
            return size
    raise AssertionError("the probabilities sum to less than top_p")


@settings(max_examples=200, deadline=None)
@given(row=logit_rows, top_p=st.floats(0.01, 1.0), temperature=st.sampled_from([0.5, 1.0, 3.0]))
@example(row=[0.0, 2.5471009882695956e-17], top_p=0.25, temperature=1.0)     # a tie within rounding
def test_top_p_keeps_the_smallest_most_probable_set_reaching_p(row, top_p, temperature):
    z = np.array(row) / temperature
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    prefix_sums = np.cumsum(np.sort(probs)[::-1])
    assume(np.all(np.abs(prefix_sums - top_p) > 1e-9))          # no tie with p at the boundary
    out = filter_logits(torch.tensor(row, dtype=F64), temperature=temperature, top_p=top_p)
    kept = torch.isfinite(out).numpy()
    expected_size = len(row) if top_p == 1.0 else _nucleus_size_by_enumeration(probs, top_p)
    assert kept.sum() == expected_size
    assert probs[kept].sum() >= top_p - 1e-12
    if not kept.all():
        # the most probable ones (logits that differ by less than a rounding step tie in probability)
        assert z[kept].min() >= z[~kept].max() and probs[kept].min() >= probs[~kept].max() - 1e-15
    np.testing.assert_array_equal(out.numpy()[kept], z[kept])


def test_top_p_one_keeps_every_token_and_the_most_probable_always_survives():
    z = torch.tensor([0.0, -30.0, -60.0, -100.0])
    assert torch.isfinite(filter_logits(z, top_p=1.0)).all()
    assert torch.isfinite(filter_logits(z, top_p=1e-9)).tolist() == [True, False, False, False]


def test_temperature_divides_exactly():
    z = torch.randn(4, 9, dtype=F64)
    for temperature in (0.1, 0.7, 1.0, 2.5):
        assert torch.equal(filter_logits(z, temperature=temperature), z / temperature)
    assert torch.equal(filter_logits(z), z)


def test_order_is_temperature_then_top_k_then_top_p_on_the_renormalised_survivors():
    z = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64).log()
    # after top-2 the survivors renormalise to 4/7, 3/7: 4/7 >= 0.5 keeps one token.
    # (top-p first on 0.4, 0.3, ... would have kept two)
    assert torch.isfinite(filter_logits(z, top_k=2, top_p=0.5)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(z, top_k=3, top_p=0.6)).tolist() == [True, True, False, False]
    # temperature flattens the distribution before the nucleus is taken: 0.5, 0.3, 0.2 at tau = 1
    z = torch.tensor([0.5, 0.3, 0.2], dtype=F64).log()
    assert int(torch.isfinite(filter_logits(z, top_p=0.5)).sum()) == 1
    flat = torch.softmax(z / 10, -1)                         # 0.35, 0.33, 0.32: two needed for 0.5
    assert flat[0] < 0.5 <= flat[:2].sum()
    assert int(torch.isfinite(filter_logits(z, temperature=10.0, top_p=0.5)).sum()) == 2
    out = filter_logits(z, temperature=10.0, top_k=2, top_p=0.6)          # 0.52, 0.48 after top-2
    assert torch.equal(out, torch.stack([z[0] / 10, z[1] / 10, torch.tensor(-math.inf, dtype=F64)]))


def test_rows_are_filtered_independently_and_the_input_is_untouched():
    z = torch.randn(2, 3, 10)
    copy = z.clone()
    out = filter_logits(z, temperature=0.8, top_k=6, top_p=0.7)
    assert torch.equal(z, copy)
    for i, j in itertools.product(range(2), range(3)):
        assert torch.equal(out[i, j], filter_logits(z[i, j], temperature=0.8, top_k=6, top_p=0.7))


# ---------------------------------------------------------------- sampling

def _frequencies(text, symbols):
    return np.array([text.count(s) for s in symbols]) / len(text)


LETTER_LOGITS = np.array([1.0, 0.0, -0.5, 2.0])


def _softmax_and_tolerance(temperature, draws):
    """softmax(z / tau), and four standard errors of a frequency over ``draws`` draws (~0.012 at most)."""
    expected = np.exp(LETTER_LOGITS / temperature) / np.exp(LETTER_LOGITS / temperature).sum()
    return expected, 4 * np.sqrt(expected * (1 - expected) / draws)


def test_generated_frequencies_match_softmax_of_logits_over_temperature():
    vocab = CharVocab("abcd")
    model = FixedModel([-math.inf, -math.inf, -math.inf, *LETTER_LOGITS])    # specials never drawn
    draws, temperature = 20_000, 0.7
    text = generate(model, vocab, "a", length=draws, temperature=temperature, seed=1)[1:]
    assert len(text) == draws
    expected, tolerance = _softmax_and_tolerance(temperature, draws)
    assert np.all(np.abs(_frequencies(text, "abcd") - expected) < tolerance)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampled_frequencies_match_softmax_at_each_temperature(temperature):
    draws = 20_000
    logits = torch.tensor(LETTER_LOGITS, dtype=torch.float32).expand(draws, 4)
    ids = sample_next(logits, temperature=temperature, generator=torch.Generator().manual_seed(2))
    expected, tolerance = _softmax_and_tolerance(temperature, draws)
    assert np.all(np.abs(np.bincount(ids.numpy(), minlength=4) / draws - expected) < tolerance)


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(20_000, 5)
    generator = torch.Generator().manual_seed(3)
    draws = sample_next(logits, temperature=0.9, top_k=4, top_p=0.85, generator=generator)
    # after top-4 at tau = 0.9: 0.615, 0.203, 0.116, 0.067; the mass before token 2 is 0.818 < 0.85
    expected = torch.softmax(filter_logits(logits[0], temperature=0.9, top_k=4, top_p=0.85), -1).numpy()
    assert expected[3] == expected[4] == 0.0 and expected[2] > 0                # the nucleus is {0, 1, 2}
    frequencies = np.bincount(draws.numpy(), minlength=5) / len(draws)
    tolerance = 4 * np.sqrt(expected * (1 - expected) / len(draws))
    assert np.all(np.abs(frequencies - expected) <= tolerance)


def test_top_k_one_is_greedy():
    logits = torch.randn(64, 10)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, top_k=1, generator=generator), logits.argmax(-1))
    assert torch.equal(sample_next(logits, greedy=True, temperature=5.0, top_p=0.3), logits.argmax(-1))
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    greedy = generate(model, vocab, "abc", length=50, greedy=True, stop_at_end=False)
    assert generate(model, vocab, "abc", length=50, top_k=1, seed=7, stop_at_end=False) == greedy
    assert generate(model, vocab, "abc", length=50, temperature=1e-3, seed=7, stop_at_end=False) == greedy


def test_sample_next_returns_one_long_id_per_row():
    ids = sample_next(torch.randn(5, 7), generator=torch.Generator().manual_seed(0))
    assert ids.dtype == torch.int64 and ids.shape == (5,) and 0 <= int(ids.min()) <= int(ids.max()) < 7


# ---------------------------------------------------------------- seeds

def test_same_seed_same_text_different_seeds_different_text_and_the_global_rng_is_untouched():
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    options = dict(length=200, temperature=1.5, stop_at_end=False)
    before = torch.get_rng_state()
    first = generate(model, vocab, "ab", seed=11, **options)
    assert torch.equal(torch.get_rng_state(), before)
    assert generate(model, vocab, "ab", seed=11, **options) == first
    others = {generate(model, vocab, "ab", seed=s, **options) for s in (12, 13, 14)}
    assert first not in others and len(others) == 3
    assert len(first) == 202


def test_without_a_seed_the_global_generator_is_used():
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    torch.manual_seed(5)
    first = generate(model, vocab, "ab", length=100, temperature=1.5, stop_at_end=False)
    torch.manual_seed(5)
    assert generate(model, vocab, "ab", length=100, temperature=1.5, stop_at_end=False) == first


# ---------------------------------------------------------------- stream

def test_stream_is_lazy_one_model_call_per_token_and_equals_generate():
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    tokens = stream(model, vocab, "abc", length=6, seed=2, stop_at_end=False)
    assert model.log.calls == 0                                       # nothing happens before next()
    texts = []
    for k in range(1, 7):
        texts.append(next(tokens))
        assert model.log.calls == k                               # the prime call drew the first token
    assert list(tokens) == [] and model.log.calls == 6                # no wasted call after the last token
    assert model.log.shapes == [(1, 3)] + [(1, 1)] * 5                # the prime goes in one call
    assert "abc" + "".join(texts) == generate(model, vocab, "abc", length=6, seed=2, stop_at_end=False)


def test_memory_is_constant_in_length():
    vocab = CharVocab()
    largest = {}
    for length in (10, 1000):
        model = BigramModel(len(vocab))
        text = generate(model, vocab, "abcd", length=length, seed=0, stop_at_end=False)
        assert len(text) == 4 + length and model.log.calls == length
        largest[length] = model.log.largest
    assert largest[10] == largest[1000] == 4          # the prime (1, 4); then state (1, 3), tokens (1, 1)


def test_cyclic_model_greedy_output_is_exact():
    vocab = CharVocab("abcdefgh")                      # ids: <start> 0, <end> 1, <unk> 2, a..h 3..10
    model = cyclic(vocab)
    assert generate(model, vocab, "abc", length=5, greedy=True) == "abcdefgh"
    assert list(stream(model, vocab, "f", length=2, greedy=True)) == ["g", "h"]
    # h's successor is <start> (id 0), which is never drawn: the best of the rest, <end> (id 1), stops
    assert generate(model, vocab, "f", length=100, greedy=True) == "fgh"


@pytest.mark.parametrize("vocab, allowed", [(CharVocab("abc"), {"a", "b", "c", "<end>"}),
                                            (WordVocab(["the", "cat"]), {"the", "cat", "<end>", "<unk>"})])
def test_start_is_never_drawn_and_unk_only_at_the_word_level(vocab, allowed):
    # uniform logits, as a huge temperature makes them: before, <start> and <unk> were printed literally
    model = FixedModel([0.0] * len(vocab))
    text = list(stream(model, vocab, length=400, temperature=1e30, seed=0, stop_at_end=False))
    assert {t.strip() for t in text} == allowed


def test_end_token_stops_generation():
    vocab = CharVocab("abcd")                          # a..d are ids 3..6; d is followed by <end>
    model = TableModel([3, 3, 3, 4, 5, 6, 1])
    assert generate(model, vocab, "a", length=100, greedy=True) == "abcd"
    assert model.log.calls == 4                            # a→b, b→c, c→d, d→<end>
    assert generate(model, vocab, "a", length=2, greedy=True) == "abc"
    assert generate(model, vocab, "a", length=7, greedy=True, stop_at_end=False) == "abcd<end>abc"


def test_empty_prime_starts_from_start():
    vocab = CharVocab("abcd")
    model = TableModel([4, 1, 1, 1, 5, 6, 1])          # <start> → b → c → d → <end>
    assert generate(model, vocab, "", greedy=True) == "bcd"
    assert model.log.first_tokens == [[vocab.start_id]]


def test_word_level_prime_is_non_strict_and_words_are_spaced():
    vocab = WordVocab(["the", "cat", "sat"])          # ids: the 3, cat 4, sat 5
    model = TableModel([3, 0, 3, 4, 5, 1])            # <start>/<unk> → the → cat → sat → <end>
    assert generate(model, vocab, "the dog", greedy=True) == "the dog the cat sat"
    assert model.log.first_tokens == [[3, vocab.unk_id]]
    assert generate(model, vocab, "", greedy=True) == "the cat sat"


def test_unknown_prime_character_raises_the_vocab_error_before_touching_the_model():
    vocab = CharVocab()
    model = cyclic(vocab)
    with raises(ValueError, "CharVocab: unknown characters in the prime: ['y', 'z']"):
        stream(model, vocab, "abzy")
    with raises(ValueError, "CharVocab: unknown characters in the prime: ['z']"):
        generate(model, vocab, "z")
    assert model.log.calls == 0 and model.training


def test_training_mode_is_restored_and_the_model_runs_in_eval_without_grad():
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    model.dropout = nn.Dropout(0.5)
    model.dropout.eval()                               # a mixed setting must survive as it was
    generate(model, vocab, "ab", length=5, seed=0)
    assert model.training and not model.dropout.training
    assert not any(model.log.training) and not any(model.log.grad)
    model.eval()
    generate(model, vocab, "ab", length=5, seed=0)
    assert not model.training


def test_training_mode_is_restored_when_the_consumer_stops_early_or_the_model_fails():
    vocab = CharVocab()
    model = BigramModel(len(vocab))
    tokens = stream(model, vocab, "ab", length=100, seed=0)
    assert model.training                              # untouched until the first next()
    next(tokens)
    assert not model.training
    assert torch.is_grad_enabled()                     # the consumer's grad mode is its own
    tokens.close()
    assert model.training
    for _ in stream(model, vocab, "ab", length=100, seed=0, stop_at_end=False):
        assert torch.is_grad_enabled() and not model.training
        break
    assert model.training

    class Failing(BigramModel):
        def forward(self, tokens, state):
            if self.log.calls == 2:
                raise RuntimeError("model failed")
            return super().forward(tokens, state)

    failing = Failing(len(vocab))
    with pytest.raises(RuntimeError, match="model failed"):
        generate(failing, vocab, "ab", length=10, seed=0, stop_at_end=False)
    assert failing.training


# ---------------------------------------------------------------- errors

def test_bad_options_give_exact_messages():
    z = torch.zeros(2, 4)
    with raises(ValueError, "filter_logits: temperature must be a positive finite number, got 0; "
                            "use greedy=True for argmax decoding"):
        filter_logits(z, temperature=0)
    with raises(ValueError, "sample_next: temperature must be a positive finite number, got -1.0; "
                            "use greedy=True for argmax decoding"):
        sample_next(z, temperature=-1.0)
    with raises(TypeError, "filter_logits: temperature must be a number, got str"):
        filter_logits(z, temperature="hot")
    with raises(ValueError, "filter_logits: top_k must be a positive integer, got 0; "
                            "use top_k=None to keep every token"):
        filter_logits(z, top_k=0)
    with raises(TypeError, "filter_logits: top_k must be an int, got float"):
        filter_logits(z, top_k=2.0)
    with raises(ValueError, "filter_logits: top_p must be in (0, 1], got 0; "
                            "use top_p=None to keep every token"):
        filter_logits(z, top_p=0)
    with raises(ValueError, "filter_logits: top_p must be in (0, 1], got 1.5; "
                            "use top_p=None to keep every token"):
        filter_logits(z, top_p=1.5)
    with raises(TypeError, "filter_logits: top_p must be a number, got str"):
        filter_logits(z, top_p="0.9")
    with raises(TypeError, "filter_logits: expected floating-point logits, got torch.int64; "
                           "convert them with logits.float()"):
        filter_logits(torch.zeros(4, dtype=torch.int64))
    with raises(ValueError, "sample_next: expected logits of shape (batch, vocab), got (1, 1, 4)"):
        sample_next(torch.zeros(1, 1, 4))


def test_bad_generation_arguments_give_exact_messages():
    vocab = CharVocab()
    model = cyclic(vocab)
    with raises(ValueError, "generate: temperature must be a positive finite number, got 0.0; "
                            "use greedy=True for argmax decoding"):
        generate(model, vocab, "a", temperature=0.0)
    with raises(ValueError, "stream: top_p must be in (0, 1], got 2; use top_p=None to keep every token"):
        stream(model, vocab, "a", top_p=2)
    with raises(ValueError, "generate: length must be a positive integer, got 0"):
        generate(model, vocab, "a", length=0)
    with raises(TypeError, "stream: length must be an int, got float"):
        stream(model, vocab, "a", length=2.5)
    assert generate(model, vocab, "a", length=np.int64(2), top_k=np.int32(1), seed=np.int64(3)) == "abc"
    with raises(TypeError, "generate: seed must be an int or None, got float; "
                           "pass an int such as seed=0 for reproducible text"):
        generate(model, vocab, "a", seed=1.0)
    with raises(TypeError, "generate: prime must be a str, got list"):
        generate(model, vocab, [3, 4])
    wrong = FixedModel([0.0, 1.0, 2.0])                # built for 3 tokens, the vocabulary has 11
    with raises(ValueError, "generate: expected the model to return logits of shape (1, time, 11) "
                            "(batch, time, len(vocab)), got (1, 1, 3); check that the model was built "
                            "for this vocabulary"):
        generate(wrong, vocab, "a")
    assert wrong.training


def test_language_models_sample_through_the_one_step_stream_with_the_same_result():
    """An rnnkit LanguageModel samples through LanguageModelStream (torch's one-step kernels);
    hidden behind a plain wrapper it samples through model(token, state): same text, same seed."""
    import torch

    from rnnkit.data import Vocabulary
    from rnnkit.models import LanguageModel, LanguageModelConfig

    text = "the quick brown fox jumps over the lazy dog\n" * 3
    vocab = Vocabulary.build(text)
    for cell in ("lstm", "gru", "gated"):
        torch.manual_seed(0)
        model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=24,
                                                  embedding_size=8, num_layers=2)).double()

        class Plain(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def initial_state(self, batch_size):
                return self.inner.initial_state(batch_size)

            def forward(self, tokens, state):
                return self.inner(tokens, state)

        fast = generate(model, vocab, "the ", length=120, seed=5, temperature=1.5, stop_at_end=False)
        slow = generate(Plain(model), vocab, "the ", length=120, seed=5, temperature=1.5, stop_at_end=False)
        assert fast == slow and len(fast) > 100, cell           # 120 tokens; <unk> and <start> print differently
