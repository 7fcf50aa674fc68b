"""HMMs, second part: the fast recursions against the step-by-step twin, the parallel prefix
scan, Gaussian emissions, one EM step against brute-force counts, gradient fitting, hmmlearn
parity (when installed) and the errors for parameters given directly."""
import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cells.hmm import GaussianHMMFilterCell
from rnnkit.engines.scan import associative_scan, log_matmul, log_matmul_reference, sequential_scan
from rnnkit.models.hmm import fast as hmm_fast
from rnnkit.models.hmm import reference as hmm_reference
from rnnkit.models.hmm import CategoricalHMM, GaussianHMM, hmm_filter, hmm_parallel_filter, hmm_smoother

D = torch.float64


def _categorical(k, v, seed):
    g = torch.Generator().manual_seed(seed)
    m = CategoricalHMM(k, v, dtype=D)
    with torch.no_grad():
        for p in m.log_params():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return m


def _gaussian(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    m = GaussianHMM(k, d, dtype=D)
    with torch.no_grad():
        m.cell.log_initial.copy_(torch.randn(k, generator=g, dtype=D))
        m.cell.log_transition.copy_(torch.randn(k, k, generator=g, dtype=D))
        m.cell.means.copy_(2 * torch.randn(k, d, generator=g, dtype=D))
        m.cell.log_variances.copy_(0.5 * torch.randn(k, d, generator=g, dtype=D))
    return m


def _reference(model, obs, lengths):
    log_pi, log_P, em, _ = model._prepare("test", obs, lengths)
    return hmm_reference._reference_smoother(log_pi, log_P, em.log(), em.mask), (log_pi, log_P, em)


# ----- fast == step by step --------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 5), v=st.integers(1, 6), b=st.integers(1, 4), t=st.integers(1, 30),
       every=st.sampled_from([1, 3, 8]), seed=st.integers(0, 10_000))
def test_fast_smoother_equals_reference_categorical(k, v, b, t, every, seed):
    m = _categorical(k, v, seed)
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(0, v, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    ref, (log_pi, log_P, em) = _reference(m, symbols, lengths)
    fast = hmm_fast._fast_passes(log_pi, log_P, em, backward=True, pairwise=True, every=every)
    torch.testing.assert_close(fast.posterior, ref.posterior.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.pairwise, ref.pairwise.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.transitions, ref.pairwise.detach().sum((0, 1)), atol=1e-11, rtol=0)
    torch.testing.assert_close(fast.log_likelihood, ref.log_likelihood.detach(), atol=1e-10, rtol=1e-12)
    filt, lognorm = hmm_reference._reference_filter(log_pi, log_P, em.log(), em.mask)
    torch.testing.assert_close(fast.filtered, filt.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.log_normalizers, lognorm.detach(), atol=1e-11, rtol=0)
    # the same forward loop alone: the filter (messages written over the emissions) and the likelihood
    forward = hmm_fast._fast_passes(log_pi, log_P, em, backward=False, every=every)
    torch.testing.assert_close(forward.filtered, filt.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(forward.log_normalizers, lognorm.detach(), atol=1e-11, rtol=0)
    torch.testing.assert_close(hmm_fast._fast_log_likelihood(log_pi, log_P, em, every=every),
                               ref.log_likelihood.detach(), atol=1e-10, rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 4), d=st.integers(1, 3), b=st.integers(1, 3), t=st.integers(1, 25),
       seed=st.integers(0, 10_000))
def test_fast_smoother_equals_reference_gaussian(k, d, b, t, seed):
    m = _gaussian(k, d, seed)
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(b, t, d, generator=g, dtype=D)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    ref, (log_pi, log_P, em) = _reference(m, x, lengths)
    fast = hmm_fast._fast_passes(log_pi, log_P, em, backward=True, pairwise=True)
    torch.testing.assert_close(fast.posterior, ref.posterior.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.pairwise, ref.pairwise.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.log_likelihood, ref.log_likelihood.detach(), atol=1e-9, rtol=1e-12)
    torch.testing.assert_close(hmm_fast._fast_log_likelihood(log_pi, log_P, em), ref.log_likelihood.detach(),
                               atol=1e-9, rtol=1e-12)
    filt, _ = hmm_reference._reference_filter(log_pi, log_P, em.log(), em.mask)
    torch.testing.assert_close(hmm_fast._fast_passes(log_pi, log_P, em, backward=False).filtered, filt.detach(),
                               atol=1e-12, rtol=0)


def test_fast_pass_falls_back_when_messages_underflow():
    """Symbol 0 has probability 1e-30 in every state, so eight steps between renormalizations
    would shrink a message to 1e-240 (below the 1e-200 guard, and to 0 in float32); the fast
    passes notice and rerun renormalizing at every step."""
    C = torch.tensor([[1e-30, 1 - 1e-30], [3e-30, 1 - 3e-30]], dtype=D)
    m = CategoricalHMM.from_probabilities([0.5, 0.5], [[0.7, 0.3], [0.4, 0.6]], C)
    symbols = torch.tensor([[0] * 12 + [1, 0, 1] + [0] * 9])
    ref, (log_pi, log_P, em) = _reference(m, symbols, None)
    assert float(ref.log_likelihood.detach()) < -21 * 30 * math.log(10)          # about 1e-30 per zero
    fast = hmm_fast._fast_passes(log_pi, log_P, em, backward=True, pairwise=True)
    torch.testing.assert_close(fast.log_likelihood, ref.log_likelihood.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(fast.posterior, ref.posterior.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.pairwise, ref.pairwise.detach(), atol=1e-12, rtol=0)
    assert m.score(symbols) == pytest.approx(float(ref.log_likelihood.detach()), rel=1e-12)
    filt, _ = hmm_reference._reference_filter(log_pi, log_P, em.log(), em.mask)
    with torch.no_grad():
        torch.testing.assert_close(m.filter(symbols).filtered, filt.detach(), atol=1e-12, rtol=0)


def test_filter_switches_to_the_differentiable_path_only_when_needed():
    m = _categorical(3, 4, 0)
    symbols = torch.randint(0, 4, (2, 9), generator=torch.Generator().manual_seed(0))
    with_grad = m.filter(symbols)
    assert with_grad.log_likelihood.requires_grad
    with torch.no_grad():
        fast = m.filter(symbols)
    assert not fast.log_likelihood.requires_grad
    torch.testing.assert_close(fast.filtered, with_grad.filtered.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.log_likelihood, with_grad.log_likelihood.detach(), atol=1e-11, rtol=0)


def test_fast_loops_on_torch_operations_equal_the_numpy_ones(monkeypatch):
    """The loops' torch branch (other devices and dtypes) is the twin of the NumPy one; a dtype NumPy
    lacks (bfloat16) takes it instead of failing."""
    m = _categorical(3, 4, 6)
    g = torch.Generator().manual_seed(6)
    symbols = torch.randint(0, 4, (3, 20), generator=g)
    lengths = torch.tensor([20, 7, 13])
    with torch.no_grad():
        expected = (m.smoother(symbols, lengths), m.filter(symbols, lengths), m.score(symbols, lengths))
        monkeypatch.setattr(hmm_fast, "_array_ops", lambda like: (torch, lambda u: u))
        got = (m.smoother(symbols, lengths), m.filter(symbols, lengths), m.score(symbols, lengths))
    torch.testing.assert_close(got[:2], expected[:2], atol=1e-12, rtol=0)
    assert got[2] == pytest.approx(expected[2], rel=1e-12)
    monkeypatch.undo()
    low = CategoricalHMM(3, 4, dtype=torch.bfloat16)
    low.load_state_dict({k: v.to(torch.bfloat16) for k, v in m.state_dict().items()})
    assert low.score(symbols, lengths) == pytest.approx(expected[2], rel=2e-2)


# ----- the parallel prefix scan ---------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33])
def test_associative_scan_non_commutative(n):
    """Products of random matrices (order matters) equal the left-to-right loop, values and gradients."""
    x = torch.randn(n, 2, 3, 3, dtype=D, requires_grad=True)
    out = associative_scan(torch.matmul, x)
    ref = sequential_scan(torch.matmul, x)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    w = torch.randn_like(out)
    (ga,) = torch.autograd.grad((out * w).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(ga, gb, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(associative_scan(torch.add, x.detach(), dim=0), x.detach().cumsum(0))
    torch.testing.assert_close(associative_scan(torch.add, x.detach().movedim(0, 2), dim=2),
                               x.detach().cumsum(0).movedim(0, 2))


def test_log_matmul_equals_logsumexp_form():
    a, b = 30 * torch.randn(4, 5, 5, dtype=D), 30 * torch.randn(4, 5, 5, dtype=D)
    torch.testing.assert_close(log_matmul(a, b), log_matmul_reference(a, b), atol=1e-10, rtol=1e-12)
    with pytest.raises(ValueError, match=re.escape(
            "associative_scan: elements must have at least one dimension to scan along, got a 0-d tensor")):
        associative_scan(torch.add, torch.tensor(1.0))


def test_parallel_filter_equals_sequential_with_lengths():
    m = _categorical(4, 5, 1)
    g = torch.Generator().manual_seed(1)
    symbols = torch.randint(0, 5, (5, 37), generator=g)
    lengths = torch.tensor([37, 1, 20, 36, 2])
    seq = hmm_filter(*m.log_params(), symbols, lengths)
    par = hmm_parallel_filter(*m.log_params(), symbols, lengths)
    torch.testing.assert_close(par.filtered, seq.filtered.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(par.log_normalizers, seq.log_normalizers.detach(), atol=1e-9, rtol=0)
    torch.testing.assert_close(par.log_likelihood, seq.log_likelihood.detach(), atol=1e-9, rtol=0)
    # gradients through the scan equal those through the RNN form
    m.zero_grad()
    m.parallel_filter(symbols, lengths).log_likelihood.sum().backward()
    grads = [p.grad.clone() for p in m.log_params()]
    m.zero_grad()
    m.log_likelihood(symbols, lengths).sum().backward()
    for a, b in zip(grads, (p.grad for p in m.log_params())):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_parallel_filter_long_sequence():
    m = _categorical(3, 4, 2)
    symbols = m.sample(2, 10_000, generator=torch.Generator().manual_seed(0)).symbols
    with torch.no_grad():
        seq = m.filter(symbols)
        par = m.parallel_filter(symbols)
    assert torch.isfinite(par.log_likelihood).all() and (par.log_likelihood < -5000).all()
    torch.testing.assert_close(par.log_likelihood, seq.log_likelihood, rtol=1e-10, atol=0)
    torch.testing.assert_close(par.filtered, seq.filtered, atol=1e-8, rtol=0)


# ----- Gaussian emissions ------------------------------------------------------------
def test_gaussian_against_brute_force_and_rnn_form():
    m = _gaussian(2, 2, seed=3)
    x = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(4), dtype=D)
    lengths = torch.tensor([4, 3])
    lp = m.cell.initial().log().detach()
    lP = m.cell.transition().log().detach()
    le = m.cell.log_emission_densities(x).detach()                    # (B, T, K)
    smooth = m.smoother(x, lengths)
    for b in range(2):
        n = int(lengths[b])
        paths = list(itertools.product(range(2), repeat=n))
        scores = torch.stack([lp[z[0]] + le[b, 0, z[0]] + sum(lP[z[i - 1], z[i]] + le[b, i, z[i]]
                                                             for i in range(1, n)) for z in paths])
        total = torch.logsumexp(scores, 0)
        torch.testing.assert_close(smooth.log_likelihood[b], total, atol=1e-10, rtol=0)
        gamma = torch.zeros(n, 2, dtype=D)
        for z, w in zip(paths, (scores - total).exp()):
            for i in range(n):
                gamma[i, z[i]] += w
        torch.testing.assert_close(smooth.posterior[b, :n], gamma, atol=1e-10, rtol=0)
    # the GaussianHMMFilterCell through Recurrent and the log-depth product agree
    torch.testing.assert_close(m.log_likelihood(x, lengths).detach(), smooth.log_likelihood, atol=1e-10, rtol=0)
    torch.testing.assert_close(m.parallel_log_likelihood(x, lengths).detach(), smooth.log_likelihood,
                               atol=1e-10, rtol=0)
    cell = GaussianHMMFilterCell(2, 2)
    assert (cell.input_size, cell.hidden_size, cell.state_sizes, cell.output_size) == (2, 2, (2, 1), 2)


def test_gaussian_gradient_identity_for_the_means():
    """∂ log p / ∂ μ_k = Σ_t γ_t(k) (x_t − μ_k) / σ²_k."""
    m = _gaussian(3, 2, seed=5)
    x = torch.randn(3, 6, 2, generator=torch.Generator().manual_seed(6), dtype=D)
    lengths = torch.tensor([6, 2, 5])
    m.log_likelihood(x, lengths).sum().backward()
    gamma = m.smoother(x, lengths).posterior                             # (B, T, K), 0 at padding
    var = m.cell.log_variances.exp().detach()
    mask = (torch.arange(6) < lengths[:, None]).unsqueeze(-1)
    diff = (x * mask).unsqueeze(2) - m.cell.means.detach()               # (B, T, K, D)
    expected = (gamma.unsqueeze(-1) * diff).sum((0, 1)) / var
    torch.testing.assert_close(m.cell.means.grad, expected, atol=1e-8, rtol=0)


def test_gaussian_em_recovers_parameters():
    truth = GaussianHMM.from_parameters([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.0, 1.0], [2.0, -1.0]],
                                        [[1.0, 0.5], [0.3, 2.0]])
    data = truth.sample(20, 200, generator=torch.Generator().manual_seed(1)).symbols
    torch.manual_seed(0)
    m = GaussianHMM(2, 2, dtype=D)
    history = m.fit_em(data, iterations=30)
    assert all(b >= a - 1e-8 for a, b in itertools.pairwise(history))
    assert history[-1] > truth.score(data)                  # ML estimate fits the sample at least as well
    order = m.cell.means[:, 0].argsort()
    # bounds of about three standard errors for 4,000 observations
    torch.testing.assert_close(m.cell.means[order].detach(), truth.cell.means.detach(), atol=0.12, rtol=0)
    torch.testing.assert_close(m.cell.log_variances.exp()[order].detach(),
                               truth.cell.log_variances.exp().detach(), atol=0, rtol=0.12)
    torch.testing.assert_close(m.cell.transition()[order][:, order].detach(), truth.cell.transition().detach(),
                               atol=0.03, rtol=0)


# ----- EM and gradient fitting ---------------------------------------------------------
def test_one_em_step_equals_brute_force_counts():
    m = _categorical(2, 3, seed=8)
    symbols = torch.randint(0, 3, (3, 5), generator=torch.Generator().manual_seed(9))
    lengths = torch.tensor([5, 3, 4])
    lp, lP, lC = (m.cell.initial().log().detach(), m.cell.transition().log().detach(),
                  m.cell.emission().log().detach())
    start, trans, emis = torch.zeros(2, dtype=D), torch.zeros(2, 2, dtype=D), torch.zeros(2, 3, dtype=D)
    for b in range(3):
        seq = symbols[b, :int(lengths[b])].tolist()
        paths = list(itertools.product(range(2), repeat=len(seq)))
        scores = torch.stack([lp[z[0]] + lC[z[0], seq[0]] + sum(lP[z[i - 1], z[i]] + lC[z[i], seq[i]]
                                                               for i in range(1, len(seq))) for z in paths])
        for z, w in zip(paths, (scores - torch.logsumexp(scores, 0)).exp()):
            start[z[0]] += w
            for i in range(len(seq)):
                emis[z[i], seq[i]] += w
            for i in range(1, len(seq)):
                trans[z[i - 1], z[i]] += w
    m.fit_em(symbols, lengths, iterations=1)
    torch.testing.assert_close(m.cell.initial().detach(), start / start.sum(), atol=1e-12, rtol=0)
    torch.testing.assert_close(m.cell.transition().detach(), trans / trans.sum(-1, keepdim=True),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(m.cell.emission().detach(), emis / emis.sum(-1, keepdim=True), atol=1e-12, rtol=0)


def test_em_tolerance_stops_early():
    m = _categorical(2, 3, seed=1)
    symbols = m.sample(4, 50, generator=torch.Generator().manual_seed(2)).symbols
    history = m.fit_em(symbols, iterations=500, tolerance=1e-3)
    assert 2 <= len(history) < 501
    assert history[-1] - history[-2] < 1e-3
    assert all(b - a >= 1e-3 for a, b in itertools.pairwise(history[:-1]))


def test_fit_gradient_raises_the_likelihood():
    truth = CategoricalHMM.from_probabilities([0.9, 0.1], [[0.95, 0.05], [0.1, 0.9]],
                                              [[0.8, 0.15, 0.05], [0.05, 0.15, 0.8]])
    data = truth.sample(16, 50, generator=torch.Generator().manual_seed(3)).symbols
    m = _categorical(2, 3, seed=4)
    history = m.fit_gradient(data, epochs=25, lr=0.1, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert len(history) == 26
    per_symbol = [h / data.numel() for h in history]
    truth_per_symbol = truth.score(data) / data.numel()              # -0.7746
    assert per_symbol[0] < -1.7                                      # measured: -1.753
    assert per_symbol[-1] > truth_per_symbol - 0.01                  # measured: -0.772


def test_em_matches_hmmlearn_per_iteration():
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(0)
    k, v = 3, 5
    pi, P, C = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k), k), rng.dirichlet(np.ones(v), k)
    lengths = [40, 25, 33]
    X = rng.integers(0, v, (sum(lengths), 1))
    peer = hmmlearn.CategoricalHMM(k, n_iter=1, tol=-np.inf, init_params="", params="ste",
                                   implementation="scaling", n_features=v)
    peer.startprob_, peer.transmat_, peer.emissionprob_ = pi, P, C
    theirs = []
    for _ in range(8):                                          # one EM iteration per fit: every log-likelihood
        peer.fit(X, lengths)
        theirs.append(peer.monitor_.history[-1])
    m = CategoricalHMM.from_probabilities(pi, P, C)
    padded = torch.zeros(3, max(lengths), dtype=torch.long)
    for i, (s, n) in enumerate(zip(np.cumsum([0] + lengths[:-1]), lengths)):
        padded[i, :n] = torch.from_numpy(X[s:s + n, 0])
    ours = m.fit_em(padded, lengths, iterations=8)[:8]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(m.cell.transition().detach().numpy(), peer.transmat_, atol=1e-10)
    np.testing.assert_allclose(m.score(padded, lengths), peer.score(X, lengths), rtol=1e-10)


# ----- errors ------------------------------------------------------------------------
def test_parameters_given_directly_must_be_stochastic():
    ok_pi, ok_P, ok_C = [0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.1, 0.9]]
    cases = [
        (([0.5, 0.6], ok_P, ok_C), "CategoricalHMM.set_probabilities: initial must be a probability vector; "
                                   "its sums to 1.1, not 1 (divide by the sum to normalize)"),
        ((ok_pi, [[0.9, 0.1], [0.2, 0.7]], ok_C),
         "CategoricalHMM.set_probabilities: transition must be row-stochastic (each row a probability vector); "
         "its row 1 sums to 0.9, not 1 (divide by the sum to normalize)"),
        ((ok_pi, ok_P, [[1.2, -0.2], [0.1, 0.9]]),
         "CategoricalHMM.set_probabilities: emission must be row-stochastic (each row a probability vector) "
         "with finite non-negative entries, got a negative or non-finite entry"),
        ((ok_pi, [[0.9, 0.1]], ok_C), "CategoricalHMM.set_probabilities: transition must have shape (2, 2), got (1, 2)"),
        (([[0.5, 0.5]], ok_P, ok_C), "CategoricalHMM.from_probabilities: initial must be a vector (K,), got shape (1, 2)"),
        ((ok_pi, ok_P, [0.5, 0.5]), "CategoricalHMM.from_probabilities: emission must be (K, V) with K = 2, "
                                    "got shape (2,)"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            CategoricalHMM.from_probabilities(*args)
    with pytest.raises(ValueError, match=re.escape("GaussianHMM.set_parameters: variances must all be > 0, got 0")):
        GaussianHMM.from_parameters(ok_pi, ok_P, [[0.0], [1.0]], [[1.0], [0.0]])
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.set_parameters: means must have shape (2, 1), got (2, 2)")):
        GaussianHMM(2, 1).set_parameters(ok_pi, ok_P, [[0.0, 1.0], [1.0, 2.0]], [[1.0], [1.0]])


def test_observation_and_fitting_errors():
    g = GaussianHMM(2, 3, dtype=D)
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.filter: observations must be (B, T, D) with D = 3, got shape (2, 5, 2)")):
        g.filter(torch.zeros(2, 5, 2, dtype=D))
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.smoother: observations must be a floating-point tensor (B, T, 3), got torch.int64")):
        g.smoother(torch.zeros(2, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.fit_em: empty input; observations must have at least one sequence and one step, "
            "got shape (0, 5, 3)")):
        g.fit_em(torch.zeros(0, 5, 3, dtype=D))
    bad = torch.zeros(1, 4, 3, dtype=D)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.log_likelihood: observations hold NaN or infinite values inside the sequences' lengths")):
        g.log_likelihood(bad)
    bad_after_end = g.score(bad, lengths=[1])                      # NaN past the length is padding
    assert math.isfinite(bad_after_end)
    c = CategoricalHMM(2, 3)
    symbols = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=re.escape("CategoricalHMM.fit_em: iterations must be a non-negative "
                                                   "integer, got -1")):
        c.fit_em(symbols, iterations=-1)
    with pytest.raises(ValueError, match=re.escape("CategoricalHMM.fit_em: tolerance must be None or >= 0, got -1")):
        c.fit_em(symbols, tolerance=-1)
    with pytest.raises(ValueError, match=re.escape(
            "CategoricalHMM.fit_gradient: optimizer must be one of ['adam', 'sgd'], got 'lbfgs'")):
        c.fit_gradient(symbols, optimizer="lbfgs")
    with pytest.raises(ValueError, match=re.escape("CategoricalHMM.fit_gradient: lr must be > 0, got 0")):
        c.fit_gradient(symbols, lr=0)
    with pytest.raises(ValueError, match=re.escape(
            "CategoricalHMM.fit_gradient: batch_size must be a positive integer, got 0")):
        c.fit_gradient(symbols, batch_size=0)
    with pytest.raises(ValueError, match=re.escape("GaussianHMM: min_variance must be > 0, got 0")):
        GaussianHMM(2, 1, min_variance=0)
    with pytest.raises(ValueError, match=re.escape(
            "hmm_smoother: symbols must lie in [0, V) = [0, 3), got 7")):
        hmm_smoother(*c.log_params(), torch.tensor([[0, 7]]))
    assert rnnkit.models.GaussianHMM is GaussianHMM


def test_gaussian_init_from_data_on_an_unstandardized_scale():
    truth = GaussianHMM.from_parameters([0.5, 0.5], [[0.95, 0.05], [0.05, 0.95]], [[100.0], [130.0]],
                                        [[25.0], [16.0]])
    data = truth.sample(10, 100, generator=torch.Generator().manual_seed(0)).symbols
    torch.manual_seed(0)
    plain = GaussianHMM(2, 1, dtype=D)
    plain_history = plain.fit_em(data, iterations=15)
    m = GaussianHMM(2, 1, dtype=D).init_from_data(data, generator=torch.Generator().manual_seed(0))
    assert sorted(m.cell.means[:, 0].tolist())[0] >= float(data.min())
    history = m.fit_em(data, iterations=15)
    order = m.cell.means[:, 0].argsort()
    torch.testing.assert_close(m.cell.means[order].detach(), truth.cell.means.detach(), atol=1.0, rtol=0)
    assert history[-1] >= plain_history[-1] - 1e-6
    with pytest.raises(ValueError, match=re.escape(
            "GaussianHMM.init_from_data: need at least 2 distinct observations to place 2 means, got 1")):
        GaussianHMM(2, 1, dtype=D).init_from_data(torch.ones(1, 5, 1, dtype=D))
