"""Hidden Markov models: filtering, smoothing, Viterbi, sampling, EM and gradient fitting.

Parameters are *unconstrained log-weights*, normalized here with ``log_softmax``:

- ``log_initial``    (K,)    → ``π = softmax(log_initial)``,              ``π_k = p(z_1 = k)``
- ``log_transition`` (K, K)  → ``P = softmax(log_transition, dim=-1)``,   ``P_ij = p(z_{t+1} = j | z_t = i)``
- ``log_emission``   (K, V)  → ``C = softmax(log_emission, dim=-1)``,     ``C_kv = p(x_t = v | z_t = k)``

(already-normalized log-probabilities pass through unchanged). These are the one set of
names: the pure functions take them (``hmm_filter(*model.log_params(), symbols)``), the filter
cells and so the modules hold them as parameters, and error messages name them; the
constructors ``from_probabilities(initial, transition, emission)`` take ``π``, ``P``, ``C``
themselves (the cells' ``initial()``, ``transition()``, ``emission()``). The symbols π, P, C
(and ``log_pi``, ``log_P``, ``log_C`` inside the code) mean the normalized values only.

Observations are integer symbols ``(B, T)`` in ``[0, V)`` (:class:`CategoricalHMM`) or real vectors
``(B, T, D)`` with diagonal-Gaussian emissions (:class:`GaussianHMM`); ``lengths`` (B,)
marks a right-padded batch, and padded positions are ignored (they may hold anything).

Every routine runs the scaled recursions, so sequences of any length stay finite. With
``e_t(k) = p(x_t | z_t = k)``::

    α̂_t = p(z_t | x_{1:t}) ∝ (α̂_{t-1} P) ⊙ e_t,   z_t = p(x_t | x_{1:t-1}),
    log p(x_{1:T}) = Σ_t log z_t,
    β̂_T = 1,  β̂_t = P (e_{t+1} ⊙ β̂_{t+1}) / z_{t+1},
    γ_t = α̂_t ⊙ β̂_t = p(z_t | x_{1:T}),
    ξ_t(i, j) = α̂_t(i) P_ij e_{t+1}(j) β̂_{t+1}(j) / z_{t+1} = p(z_t=i, z_{t+1}=j | x_{1:T}).

**The gradient identity.** Differentiating ``log p(x_{1:T})`` through the filter (the
RNN form, by autograd) gives exactly the expected sufficient statistics of the
forward–backward pass, minus what the softmax parameterization subtracts::

    ∂ log p / ∂ log_emission[k, v]   = Σ_t γ_t(k) [x_t = v]  −  C_kv Σ_t γ_t(k)
    ∂ log p / ∂ log_transition[i, j] = Σ_t ξ_t(i, j)         −  P_ij Σ_j' Σ_t ξ_t(i, j')
    ∂ log p / ∂ log_initial[k]       = γ_1(k)                −  π_k

(the log-likelihood is a log-partition function of the path distribution, and the
gradient of a log-partition function is an expectation). So backpropagation through
time on this RNN *is* the E-step, and EM's M-step is the closed-form solution of the
gradient's fixed point. ``tests/test_hmm.py::test_gradient_identity`` checks it to 1e-8.

The forward recursion is written three times, once per reason. The *reference* follows
these lines step by step with autograd, on the filter cell's own step
(:func:`rnnkit.cells.hmm.filter_step`); it is used whenever a gradient is needed, and the
cell run through :class:`rnnkit.Recurrent` is the same maths as an RNN. The *fast* one (no
gradient; EM, scoring, filtering, smoothing: one forward loop for all of them) runs the
recursions with two operations per step on reused buffers (NumPy on the CPU, the fused
engine's buffer pool), renormalizes only every few steps, and computes normalizers,
posteriors and the summed pairwise counts afterwards in a few large matrix products. Padded
steps get ``e = 1``, which leaves every message unchanged, so no per-step masking is needed.
The tests hold the two to 1e-12. The *log-depth* forms (:func:`hmm_parallel_log_likelihood`,
:func:`hmm_parallel_filter`) multiply log-space transfer matrices in a tree instead of a loop.

:mod:`.inference` holds the public pure functions of the log-parameters and picks the recursion;
the recursions are :mod:`.reference`, :mod:`.fast` and :mod:`.scans`, beside :mod:`.checks` (the
arguments), :mod:`.emissions` (observations to likelihoods), :mod:`.sampling` and :mod:`.results`
(the named results). :mod:`.models` holds the modules that own parameters and fit them.
"""
from .inference import (FilterResult, HMMSample, SmootherResult, ViterbiResult, hmm_filter, hmm_parallel_filter,
                        hmm_parallel_log_likelihood, hmm_sample, hmm_smoother, hmm_viterbi)
from .models import CategoricalHMM, GaussianHMM

__all__ = ["CategoricalHMM", "GaussianHMM", "FilterResult", "HMMSample", "SmootherResult", "ViterbiResult",
           "hmm_filter", "hmm_parallel_filter", "hmm_parallel_log_likelihood", "hmm_sample", "hmm_smoother",
           "hmm_viterbi"]
