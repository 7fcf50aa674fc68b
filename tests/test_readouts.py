"""Readouts are the GLMs their docstrings state: likelihoods match torch.distributions, canonical
links have gradient y - mean, samples follow the distribution, and sequence_nll ignores padding."""
import pytest
import torch
from torch import distributions as D

from rnnkit.readouts import (BernoulliReadout, CategoricalReadout, GaussianReadout, PoissonReadout,
                             Readout, make_readout, sequence_nll)

from conftest import F64, assert_close

H, K = 6, 4                      # hidden_size, output_size / num_classes
LEAD = (3, 5)                    # leading dims of h: (batch, time)


def _eta(readout, h):
    """The linear predictor, written out independently of the module."""
    return h @ readout.weight.T + readout.bias


def _randomise(readout, scale=0.7):
    with torch.no_grad():
        for p in readout.parameters():
            p.normal_(0.0, scale)
    return readout


def _target(family, readout, h):
    eta = _eta(readout, h).detach()
    if family == "categorical":
        return torch.randint(0, K, h.shape[:-1])
    if family == "gaussian":
        return torch.randn(*h.shape[:-1], K, dtype=F64)
    if family == "bernoulli":
        return torch.bernoulli(torch.full((*h.shape[:-1], K), 0.5, dtype=F64))
    return torch.poisson(eta.exp())


FAMILIES = ["categorical", "gaussian", "bernoulli", "poisson"]


# ----- likelihoods equal torch.distributions --------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_equals_torch_distributions(family):
    readout = _randomise(make_readout(family, H, K, dtype=F64))
    h = torch.randn(*LEAD, H, dtype=F64)
    y = _target(family, readout, h)
    eta = _eta(readout, h).detach()
    if family == "categorical":
        expected = D.Categorical(logits=eta).log_prob(y)
    elif family == "gaussian":
        expected = D.Normal(eta, readout.log_std.detach().exp()).log_prob(y).sum(-1)
    elif family == "bernoulli":
        expected = D.Bernoulli(logits=eta).log_prob(y).sum(-1)
    else:
        expected = D.Poisson(eta.exp()).log_prob(y).sum(-1)
    got = readout.log_prob(y, h)
    assert got.shape == LEAD and got.dtype == F64
    assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert_close(readout.nll(y, h), -expected, rtol=1e-10, atol=1e-12)
    assert_close(readout(h), eta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("std", ["learned", "predicted", 0.3])
def test_gaussian_log_prob_for_every_std_mode(std):
    readout = _randomise(GaussianReadout(H, K, std=std, dtype=F64))
    h = torch.randn(*LEAD, H, dtype=F64)
    y = torch.randn(*LEAD, K, dtype=F64)
    with torch.no_grad():
        if std == "predicted":
            sigma = (h @ readout.std_weight.T + readout.std_bias).exp()
        elif std == "learned":
            sigma = readout.log_std.exp().expand(*LEAD, K)
        else:
            sigma = torch.full((*LEAD, K), 0.3, dtype=F64)
        expected = D.Normal(_eta(readout, h), sigma).log_prob(y).sum(-1)
    assert_close(readout.std(h), sigma, rtol=1e-12, atol=0)
    assert_close(readout.log_prob(y, h), expected, rtol=1e-10, atol=1e-12)
    trained = {n for n, _ in readout.named_parameters()}
    assert ("log_std" in trained) == (std == "learned")
    assert ("std_weight" in trained) == (std == "predicted")
    if std == 0.3:
        assert "log_std" in dict(readout.named_buffers())


def test_categorical_mean_logits_and_unbatched_hidden_state():
    readout = _randomise(CategoricalReadout(H, K, dtype=F64))
    h = torch.randn(H, dtype=F64)
    assert_close(readout.logits(h), readout.weight @ h + readout.bias)
    assert_close(readout.mean(h), torch.softmax(readout.weight @ h + readout.bias, -1))
    assert readout.log_prob(torch.tensor(2), h).shape == ()


def test_readouts_without_bias_and_with_integer_or_bool_targets():
    h = torch.randn(4, H, dtype=F64)
    bern = BernoulliReadout(H, K, bias=False, dtype=F64)
    assert bern.bias is None and [n for n, _ in bern.named_parameters()] == ["weight"]
    y = torch.rand(4, K) > 0.5
    assert_close(bern.log_prob(y, h), bern.log_prob(y.to(F64), h))
    pois = PoissonReadout(H, K, dtype=F64)
    counts = torch.randint(0, 5, (4, K))
    assert_close(pois.log_prob(counts, h), pois.log_prob(counts.to(F64), h))


# ----- gradients --------------------------------------------------------------------

@pytest.mark.parametrize("family", ["categorical", "bernoulli", "poisson"])
def test_canonical_link_gradient_is_y_minus_mean(family):
    readout = _randomise(make_readout(family, H, K, dtype=F64), scale=0.4)
    h = torch.randn(*LEAD, H, dtype=F64, requires_grad=True)
    y = _target(family, readout, h.detach())
    readout.log_prob(y, h).sum().backward()
    y_vec = torch.nn.functional.one_hot(y, K).to(F64) if family == "categorical" else y
    residual = (y_vec - readout.mean(h)).detach()                        # dlogp/deta = y - mean
    hd = h.detach()
    assert_close(readout.weight.grad, torch.einsum("bto,bth->oh", residual, hd), rtol=1e-9, atol=1e-11)
    assert_close(readout.bias.grad, residual.sum((0, 1)), rtol=1e-9, atol=1e-11)
    assert_close(h.grad, residual @ readout.weight.detach(), rtol=1e-9, atol=1e-11)


def test_canonical_link_gradient_wrt_eta_directly():
    readout = _randomise(PoissonReadout(H, K, dtype=F64), scale=0.4)
    h = torch.randn(7, H, dtype=F64)
    y = _target("poisson", readout, h)
    eta = readout(h)
    eta.retain_grad()
    (y * eta - eta.exp() - torch.lgamma(y + 1)).sum().backward()
    assert_close(eta.grad, y - readout.mean(h).detach())


class _LogProb(torch.nn.Module):
    """Exposes ``readout.log_prob(y, h)`` as ``forward`` so torch.func can swap the parameters."""

    def __init__(self, readout):
        super().__init__()
        self.readout = readout

    def forward(self, y, h):
        return self.readout.log_prob(y, h)


@pytest.mark.parametrize("std", ["learned", "predicted", 0.5])
def test_gaussian_gradients_match_finite_differences(std):
    wrapped = _LogProb(_randomise(GaussianReadout(3, 2, std=std, dtype=F64), scale=0.3))
    h = torch.randn(4, 3, dtype=F64, requires_grad=True)
    y = torch.randn(4, 2, dtype=F64)
    names = [n for n, _ in wrapped.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in wrapped.named_parameters())

    def log_prob(h, *ps):
        return torch.func.functional_call(wrapped, dict(zip(names, ps)), (y, h))

    assert torch.autograd.gradcheck(log_prob, (h, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gaussian_fixed_std_gradient_is_scaled_residual():
    readout = _randomise(GaussianReadout(H, K, std=0.5, dtype=F64))
    h = torch.randn(8, H, dtype=F64)
    y = torch.randn(8, K, dtype=F64)
    readout.log_prob(y, h).sum().backward()                  # dlogp/dmu = (y - mu) / sigma^2
    expected_w = torch.einsum("bo,bh->oh", (y - readout.mean(h).detach()) / 0.25, h)
    assert_close(readout.weight.grad, expected_w, rtol=1e-10, atol=1e-12)
    assert list(readout.named_buffers())[0][1].grad is None   # the fixed std is not trained


# ----- sampling -----------------------------------------------------------------------

N = 20000


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_mean_matches_mean_and_seeded_generator_is_deterministic(family):
    readout = _randomise(make_readout(family, H, K, dtype=F64), scale=0.3)
    h = torch.randn(2, H, dtype=F64)
    many = h.expand(N, 2, H)
    draws = readout.sample(many, generator=torch.Generator().manual_seed(5))
    again = readout.sample(many, generator=torch.Generator().manual_seed(5))
    assert torch.equal(draws, again)
    mean = readout.mean(h).detach()
    if family == "categorical":
        assert draws.shape == (N, 2) and draws.dtype == torch.int64
        freq = torch.nn.functional.one_hot(draws, K).to(F64).mean(0)
        assert_close(freq, mean, rtol=0, atol=0.02)
    else:
        assert draws.shape == (N, 2, K) and draws.dtype == F64
        # within 5 standard errors of the mean
        if family == "gaussian":
            sd = readout.std(h).detach()
        else:
            sd = (mean * (1 - mean)).sqrt() if family == "bernoulli" else mean.sqrt()
        assert ((draws.mean(0) - mean).abs() <= 5 * sd / N ** 0.5 + 1e-12).all()
    if family == "bernoulli":
        assert set(draws.unique().tolist()) <= {0.0, 1.0}
    if family == "poisson":
        assert (draws >= 0).all() and torch.equal(draws, draws.round())


def test_gaussian_sample_spread_matches_predicted_std():
    readout = _randomise(GaussianReadout(H, 2, std="predicted", dtype=F64), scale=0.3)
    h = torch.randn(H, dtype=F64)
    draws = readout.sample(h.expand(N, H), generator=torch.Generator().manual_seed(1))
    assert_close(draws.std(0), readout.std(h).detach(), rtol=0.05, atol=0)


def test_categorical_temperature_sharpens_and_flattens():
    readout = _randomise(CategoricalReadout(H, K, dtype=F64), scale=0.5)
    h = torch.randn(H, dtype=F64)
    logits = readout.logits(h).detach()
    for tau in (0.5, 3.0):
        draws = readout.sample(h.expand(N, H), temperature=tau, generator=torch.Generator().manual_seed(2))
        freq = torch.bincount(draws, minlength=K).to(F64) / N
        assert_close(freq, torch.softmax(logits / tau, -1), rtol=0, atol=0.02)
    greedy = readout.sample(h.expand(3, H), temperature=0)
    assert greedy.tolist() == [int(logits.argmax())] * 3


# ----- sequence_nll -------------------------------------------------------------------

def _sequence_setup(family):
    readout = _randomise(make_readout(family, H, K, dtype=F64), scale=0.4)
    h = torch.randn(4, 7, H, dtype=F64)
    y = _target(family, readout, h)
    return readout, h, y, torch.tensor([7, 3, 1, 5])


@pytest.mark.parametrize("family", FAMILIES)
def test_sequence_nll_equals_manual_sum_over_valid_steps(family):
    readout, h, y, lengths = _sequence_setup(family)
    manual = sum(-readout.log_prob(y[b, t], h[b, t]) for b in range(4) for t in range(int(lengths[b])))
    total = sequence_nll(readout, y, h, lengths)
    assert_close(total, manual, rtol=1e-10, atol=1e-12)
    assert_close(sequence_nll(readout, y, h, lengths.tolist(), reduction="mean"), manual / 16, rtol=1e-10)
    per_step = sequence_nll(readout, y, h, lengths, reduction="none")
    assert per_step.shape == (4, 7)
    pad = torch.arange(7) >= lengths.unsqueeze(1)
    assert (per_step[pad] == 0).all()
    assert_close(per_step.sum(), manual, rtol=1e-10)
    full = sequence_nll(readout, y, h)                       # lengths=None: every step counts
    assert_close(full, readout.nll(y, h).sum())
    assert_close(sequence_nll(readout, y, h, torch.full((4,), 7)), full)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequence_nll_never_reads_padding(family):
    readout, h, y, lengths = _sequence_setup(family)
    pad = torch.arange(7) >= lengths.unsqueeze(1)            # (B, T)

    def loss_and_grads(y, h):
        readout.zero_grad()
        h = h.clone().requires_grad_()
        loss = sequence_nll(readout, y, h, lengths)
        loss.backward()
        return loss.detach(), readout.weight.grad.clone(), h.grad

    base = loss_and_grads(y, h)
    h2 = h.clone()
    h2[pad] = float("nan")                                   # garbage hidden states at padding
    y2 = y.clone()
    y2[pad] = {"categorical": 999, "gaussian": float("inf"), "bernoulli": 7.0, "poisson": -3.0}[family]
    changed = loss_and_grads(y2, h2)
    assert torch.isfinite(changed[0]) and torch.isfinite(changed[2]).all()
    assert_close(changed[0], base[0], rtol=0, atol=0)
    assert_close(changed[1], base[1], rtol=0, atol=0)
    assert_close(changed[2], base[2], rtol=0, atol=0)
    assert (changed[2][pad] == 0).all()


def test_sequence_nll_validates_lengths_shapes_and_reduction():
    readout, h, y, _ = _sequence_setup("categorical")
    with pytest.raises(ValueError, match=r"sequence_nll: every length must be at least 1, got a length of 0"):
        sequence_nll(readout, y, h, torch.tensor([7, 0, 1, 5]))
    with pytest.raises(ValueError, match=r"sequence_nll: lengths cannot exceed the 7 time steps .* got a length of 8"):
        sequence_nll(readout, y, h, torch.tensor([8, 3, 1, 5]))
    with pytest.raises(ValueError, match=r"sequence_nll: expected lengths of shape \(4,\), one per sequence, got \(3,\)"):
        sequence_nll(readout, y, h, torch.tensor([7, 3, 1]))
    with pytest.raises(TypeError, match=r"sequence_nll: lengths must hold integers, got dtype torch.float32"):
        sequence_nll(readout, y, h, torch.tensor([7.0, 3.0, 1.0, 5.0]))
    with pytest.raises(ValueError, match=r"sequence_nll: unknown reduction 'avg'; choose one of \['sum', 'mean', 'none'\]"):
        sequence_nll(readout, y, h, reduction="avg")
    with pytest.raises(ValueError, match=r"sequence_nll: expected hidden states h of shape \(batch, T, hidden_size\)"):
        sequence_nll(readout, y[0], h[0])
    with pytest.raises(ValueError, match=r"sequence_nll: expected targets y of shape \(4, 7, \.\.\.\) .* got \(4, 6\)"):
        sequence_nll(readout, y[:, :6], h)
    with pytest.raises(TypeError, match=r"sequence_nll: expected a Readout .* got Linear"):
        sequence_nll(torch.nn.Linear(H, K), y, h)


# ----- construction and error messages ------------------------------------------------

def test_make_readout_builds_each_family_and_lists_choices_for_unknown_ones():
    kinds = {"categorical": CategoricalReadout, "gaussian": GaussianReadout,
             "bernoulli": BernoulliReadout, "poisson": PoissonReadout}
    for family, cls in kinds.items():
        readout = make_readout(family, 32, 10)
        assert type(readout) is cls and isinstance(readout, Readout)
        assert readout.weight.shape == (10, 32)
    assert make_readout("categorical", 32, 10).num_classes == 10
    assert make_readout("gaussian", 8, 2, std="predicted").std_mode == "predicted"
    with pytest.raises(ValueError, match=r"make_readout: unknown family 'normal'; choose one of "
                                         r"\['bernoulli', 'categorical', 'gaussian', 'poisson'\]"):
        make_readout("normal", 8, 2)


def test_hidden_state_errors_name_the_class_and_both_sizes():
    readout = CategoricalReadout(32, 10)
    with pytest.raises(ValueError, match=r"CategoricalReadout: expected hidden state of size 32 in the last dimension, got 31$"):
        readout(torch.randn(4, 31))
    with pytest.raises(TypeError, match=r"PoissonReadout: hidden state dtype torch.float64 does not match "
                                        r"the readout's dtype torch.float32"):
        PoissonReadout(8, 2).mean(torch.randn(3, 8, dtype=F64))
    with pytest.raises(TypeError, match=r"GaussianReadout: expected the hidden state to be a torch.Tensor, got list"):
        GaussianReadout(2, 2).mean([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"CategoricalReadout: num_classes must be a positive integer, got 0"):
        CategoricalReadout(8, 0)


def test_target_errors_say_what_was_given_and_what_was_expected():
    h = torch.randn(3, 8)
    cat = CategoricalReadout(8, 10)
    with pytest.raises(ValueError, match=r"CategoricalReadout: target contains class 12 but num_classes is 10"):
        cat.log_prob(torch.tensor([1, 12, 3]), h)
    with pytest.raises(ValueError, match=r"CategoricalReadout: target contains class -1; classes run from 0 to"):
        cat.log_prob(torch.tensor([1, -1, 3]), h)
    with pytest.raises(TypeError, match=r"CategoricalReadout: expected integer class ids .* torch.float32; .*\.long\(\)"):
        cat.log_prob(torch.tensor([1.0, 2.0, 3.0]), h)
    with pytest.raises(ValueError, match=r"CategoricalReadout: expected target of shape \(3,\) for hidden state "
                                         r"of shape \(3, 8\), got \(3, 1\)"):
        cat.log_prob(torch.zeros(3, 1, dtype=torch.long), h)
    with pytest.raises(ValueError, match=r"PoissonReadout: targets must be non-negative counts, got -2"):
        PoissonReadout(8, 2).log_prob(torch.tensor([[0.0, 1.0], [-2.0, 0.0], [1.0, 1.0]]), h)
    with pytest.raises(ValueError, match=r"PoissonReadout: targets must be whole counts, got 1.5"):
        PoissonReadout(8, 2).log_prob(torch.tensor([[0.0, 1.5], [2.0, 0.0], [1.0, 1.0]]), h)
    with pytest.raises(ValueError, match=r"BernoulliReadout: targets must be 0 or 1, got 0.5"):
        BernoulliReadout(8, 2).log_prob(torch.tensor([[0.0, 1.0], [0.5, 0.0], [1.0, 1.0]]), h)
    with pytest.raises(ValueError, match=r"GaussianReadout: expected target of shape \(3, 2\) .* got \(3, 3\)"):
        GaussianReadout(8, 2).log_prob(torch.zeros(3, 3), h)
    with pytest.raises(TypeError, match=r"GaussianReadout: target dtype torch.float64 does not match .* torch.float32"):
        GaussianReadout(8, 2).log_prob(torch.zeros(3, 2, dtype=F64), h)
    with pytest.raises(TypeError, match=r"GaussianReadout: expected a floating-point target, got dtype torch.int64"):
        GaussianReadout(8, 2).log_prob(torch.zeros(3, 2, dtype=torch.long), h)


def test_construction_errors():
    with pytest.raises(ValueError, match=r"GaussianReadout: std must be 'learned', 'predicted' or a positive float, got 'fixed'"):
        GaussianReadout(8, 2, std="fixed")
    with pytest.raises(ValueError, match=r"GaussianReadout: std must be a positive finite number, got -1.0"):
        GaussianReadout(8, 2, std=-1.0)
    with pytest.raises(TypeError, match=r"GaussianReadout: std must be .* got NoneType"):
        GaussianReadout(8, 2, std=None)
    with pytest.raises(ValueError, match=r"CategoricalReadout: temperature must be a finite number >= 0, got -1; "
                                         r"0 means greedy argmax"):
        CategoricalReadout(8, 3).sample(torch.randn(2, 8), temperature=-1)
