"""Categorical HMM: filter / smoother / Viterbi against brute-force enumeration, the RNN form,
the parallel scan, the score-function gradient identity, EM monotonicity and error messages."""
import inspect
import itertools
import re

import pytest
import torch

import rnnkit
from rnnkit.cells.hmm import HMMFilterCell
from rnnkit.models.hmm import (
    CategoricalHMM,
    hmm_filter,
    hmm_parallel_filter,
    hmm_parallel_log_likelihood,
    hmm_sample,
    hmm_smoother,
    hmm_viterbi,
)

D = torch.float64


def _params(k, v, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(k, generator=g, dtype=D), torch.randn(k, k, generator=g, dtype=D),
            torch.randn(k, v, generator=g, dtype=D))


def _brute(log_initial, log_transition, log_emission, seq):
    """Joint log p(x, z) for every path z ∈ [K]^T: (paths, log-probs)."""
    lp, lP, lC = log_initial.log_softmax(-1), log_transition.log_softmax(-1), log_emission.log_softmax(-1)
    k, t = lp.shape[0], len(seq)
    paths = list(itertools.product(range(k), repeat=t))
    scores = []
    for z in paths:
        s = lp[z[0]] + lC[z[0], seq[0]]
        for i in range(1, t):
            s = s + lP[z[i - 1], z[i]] + lC[z[i], seq[i]]
        scores.append(s)
    return torch.tensor(paths), torch.stack(scores)


@pytest.mark.parametrize("k,v,t", [(2, 3, 1), (2, 2, 4), (3, 4, 5), (3, 2, 3)])
def test_against_brute_force(k, v, t):
    params = _params(k, v, seed=10 * k + t)
    g = torch.Generator().manual_seed(t)
    symbols = torch.randint(0, v, (3, t), generator=g)
    lengths = torch.tensor([t, max(1, t - 1), 1])
    filt = hmm_filter(*params, symbols, lengths)
    smooth = hmm_smoother(*params, symbols, lengths)
    vit = hmm_viterbi(*params, symbols, lengths)
    for b in range(3):
        n = int(lengths[b])
        seq = symbols[b, :n].tolist()
        paths, scores = _brute(*params, seq)
        loglik = torch.logsumexp(scores, 0)
        torch.testing.assert_close(filt.log_likelihood[b], loglik, atol=1e-10, rtol=0)
        torch.testing.assert_close(smooth.log_likelihood[b], loglik, atol=1e-10, rtol=0)
        w = (scores - loglik).exp()                                     # posterior over paths
        gamma = torch.zeros(t, k, dtype=D)
        xi = torch.zeros(max(t - 1, 0), k, k, dtype=D)
        for z, p in zip(paths, w):
            for i in range(n):
                gamma[i, z[i]] += p
            for i in range(n - 1):
                xi[i, z[i], z[i + 1]] += p
        torch.testing.assert_close(smooth.posterior[b], gamma, atol=1e-10, rtol=0)
        torch.testing.assert_close(smooth.pairwise[b], xi, atol=1e-10, rtol=0)
        # filtered marginal at the last valid step is the smoothed one there
        torch.testing.assert_close(filt.filtered[b, n - 1], gamma[n - 1], atol=1e-10, rtol=0)
        best = int(scores.argmax())
        assert vit.path[b, :n].tolist() == paths[best].tolist()
        assert (vit.path[b, n:] == -1).all()
        torch.testing.assert_close(vit.log_prob[b], scores[best], atol=1e-10, rtol=0)
        # prefix filtering: filtered marginals at step i are p(z_i | x_{1:i})
        for i in range(n):
            pp, ss = _brute(*params, seq[: i + 1])
            ww = (ss - torch.logsumexp(ss, 0)).exp()
            ref = torch.zeros(k, dtype=D).index_add_(0, pp[:, i], ww)
            torch.testing.assert_close(filt.filtered[b, i], ref, atol=1e-10, rtol=0)


def _model(k, v, seed):
    torch.manual_seed(seed)
    m = CategoricalHMM(k, v, dtype=D)
    with torch.no_grad():
        for p, q in zip(m.log_params(), _params(k, v, seed)):
            p.copy_(q)
    return m


def test_cell_contract_and_rnn_form():
    cell = HMMFilterCell(3, 5).double()
    assert (cell.input_size, cell.hidden_size, cell.state_sizes, cell.output_size) == (5, 3, (3, 1), 5)
    alpha, ll = cell.initial_state(2)
    torch.testing.assert_close(alpha, cell.initial().expand(2, 3))
    assert (ll == 0).all()
    out, (alpha, ll) = rnnkit.Recurrent(cell)(torch.nn.functional.one_hot(torch.tensor([[0, 4, 2]]), 5).double())
    assert out.shape == (1, 3, 5)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 3, dtype=D))      # predictive distributions
    torch.testing.assert_close(alpha.sum(-1), torch.ones(1, dtype=D))


def test_three_likelihoods_agree_with_lengths():
    m = _model(3, 4, seed=1)
    symbols = torch.randint(0, 4, (4, 9), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([9, 5, 1, 8])
    a = m.log_likelihood(symbols, lengths)
    b = hmm_filter(*m.log_params(), symbols, lengths).log_likelihood
    c = m.parallel_log_likelihood(symbols, lengths)
    torch.testing.assert_close(a, b, atol=1e-8, rtol=0)
    torch.testing.assert_close(c, b, atol=1e-8, rtol=0)
    # padding symbols are ignored, whatever they are
    junk = symbols.clone()
    junk[1, 5:] = 99
    torch.testing.assert_close(m.log_likelihood(junk, lengths), a)
    torch.testing.assert_close(m.parallel_log_likelihood(junk, lengths), c)


def test_long_sequence_finite_and_equal():
    m = _model(3, 4, seed=2)
    sample = m.sample(1, 10_000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = m.log_likelihood(sample.symbols)
        b = hmm_filter(*m.log_params(), sample.symbols).log_likelihood
        c = m.parallel_log_likelihood(sample.symbols)
    assert torch.isfinite(a).all() and a.item() < -1000
    torch.testing.assert_close(a, b, atol=0, rtol=1e-8)
    torch.testing.assert_close(c, b, atol=0, rtol=1e-8)


def test_gradient_identity():
    """∂ log p / ∂ log_emission = E[emission counts] − row totals ⊙ C; likewise for log_transition with
    pairwise counts."""
    m = _model(3, 4, seed=3)
    symbols = torch.randint(0, 4, (3, 7), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([7, 4, 2])
    for fn in (m.log_likelihood, m.parallel_log_likelihood):
        m.zero_grad()
        fn(symbols, lengths).sum().backward()
        post = m.smoother(symbols, lengths)
        mask = (torch.arange(7) < lengths[:, None]).unsqueeze(-1)
        onehot = torch.nn.functional.one_hot(symbols, 4).to(D) * mask
        emis = torch.einsum("btk,btv->kv", post.posterior.detach(), onehot)
        trans = post.pairwise.detach().sum((0, 1))
        pi = post.posterior.detach()[:, 0].sum(0)
        C, P = m.cell.emission().detach(), m.cell.transition().detach()
        torch.testing.assert_close(m.cell.log_emission.grad, emis - emis.sum(-1, keepdim=True) * C,
                                   atol=1e-8, rtol=0)
        torch.testing.assert_close(m.cell.log_transition.grad, trans - trans.sum(-1, keepdim=True) * P,
                                   atol=1e-8, rtol=0)
        torch.testing.assert_close(m.cell.log_initial.grad, pi - pi.sum() * m.cell.initial().detach(),
                                   atol=1e-8, rtol=0)


def test_em_monotone_and_recovers_structure():
    truth = _model(2, 3, seed=4)
    with torch.no_grad():
        truth.cell.log_transition.copy_(torch.tensor([[0.95, 0.05], [0.1, 0.9]], dtype=D).log())
        truth.cell.log_emission.copy_(torch.tensor([[0.8, 0.15, 0.05], [0.05, 0.15, 0.8]], dtype=D).log())
    data = truth.sample(8, 60, generator=torch.Generator().manual_seed(5)).symbols
    lengths = torch.randint(20, 61, (8,), generator=torch.Generator().manual_seed(6))
    m = _model(2, 3, seed=7)
    history = m.fit_em(data, lengths, iterations=25)
    assert len(history) == 26
    for before, after in itertools.pairwise(history):
        assert after >= before - 1e-9
    assert history[-1] > history[0]
    torch.testing.assert_close(m.cell.transition().sum(-1), torch.ones(2, dtype=D))
    torch.testing.assert_close(m.cell.emission().sum(-1), torch.ones(2, dtype=D))
    assert m.fit_em(data, lengths, iterations=0) == pytest.approx([history[-1]], abs=1e-9)


def test_sample_reproducible_and_shapes():
    params = _params(3, 4, 0)
    a = hmm_sample(*params, 5, 7, generator=torch.Generator().manual_seed(3))
    b = hmm_sample(*params, 5, 7, generator=torch.Generator().manual_seed(3))
    assert a.states.shape == a.symbols.shape == (5, 7)
    assert torch.equal(a.states, b.states) and torch.equal(a.symbols, b.symbols)
    assert a.states.max() < 3 and a.symbols.max() < 4 and a.symbols.min() >= 0


def test_errors():
    params = _params(2, 3, 0)
    with pytest.raises(ValueError, match=re.escape("hmm_filter: symbols must lie in [0, V) = [0, 3), got 3")):
        hmm_filter(*params, torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match=re.escape("hmm_viterbi: symbols must lie in [0, V) = [0, 3), got -1")):
        hmm_viterbi(*params, torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match=re.escape(
            "hmm_smoother: every length must be at least 1, got a length of 0")):
        hmm_smoother(*params, torch.tensor([[0, 1], [1, 1]]), lengths=[2, 0])
    with pytest.raises(ValueError, match=re.escape(
            "hmm_filter: empty input; symbols must have at least one sequence and one step, got shape (1, 0)")):
        hmm_filter(*params, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape(
            "hmm_filter: lengths cannot exceed the 2 time steps of the input, got a length of 3")):
        hmm_filter(*params, torch.tensor([[0, 1]]), lengths=[3])
    with pytest.raises(ValueError, match=re.escape("hmm_filter: symbols must be an integer tensor (B, T), "
                                                   "got torch.float32")):
        hmm_filter(*params, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=re.escape(
            "hmm_filter: log_transition must be (K, K) = (2, 2), got shape (2, 3)")):
        hmm_filter(params[0], torch.zeros(2, 3, dtype=D), params[2], torch.tensor([[0]]))
    with pytest.raises(ValueError, match=re.escape("hmm_smoother: log_initial must be (K,), got shape (1, 2)")):
        hmm_smoother(params[0].view(1, 2), *params[1:], torch.tensor([[0]]))
    with pytest.raises(ValueError, match=re.escape(
            "hmm_viterbi: log_emission must be (K, V) with K = 2, got shape (3, 3)")):
        hmm_viterbi(*params[:2], torch.zeros(3, 3, dtype=D), torch.tensor([[0]]))
    with pytest.raises(ValueError, match=re.escape(
            "hmm_sample: log_emission must be a floating-point tensor, got torch.int64")):
        hmm_sample(*params[:2], torch.zeros(2, 3, dtype=torch.long), 1, 1)
    with pytest.raises(ValueError, match=re.escape(
            "CategoricalHMM.log_likelihood: symbols must lie in [0, V) = [0, 3), got 5")):
        CategoricalHMM(2, 3).log_likelihood(torch.tensor([[5]]))
    with pytest.raises(ValueError, match=re.escape("hmm_sample: length must be a positive integer, got 0")):
        hmm_sample(*params, 2, 0)
    with pytest.raises(ValueError, match=re.escape("HMMFilterCell: num_states must be a positive integer, got 0")):
        HMMFilterCell(0, 3)


def test_one_naming_of_the_parameters():
    """The pure functions take the parameters by the names the cell and the module hold them under."""
    m = _model(3, 4, seed=5)
    names = [name for name, _ in m.cell.named_parameters()]
    assert names == ["log_initial", "log_transition", "log_emission"]
    assert [p is q for p, q in zip(m.log_params(), (m.cell.log_initial, m.cell.log_transition, m.cell.log_emission))] \
        == [True] * 3
    for fn in (hmm_filter, hmm_smoother, hmm_viterbi, hmm_sample, hmm_parallel_log_likelihood, hmm_parallel_filter):
        assert list(inspect.signature(fn).parameters)[:3] == names, fn.__name__
    symbols = torch.randint(0, 4, (2, 6), generator=torch.Generator().manual_seed(0))
    by_name = hmm_filter(**dict(m.cell.named_parameters()), symbols=symbols)
    torch.testing.assert_close(by_name.log_likelihood, m.log_likelihood(symbols), atol=1e-12, rtol=0)
