"""Training penalties computed from a recording of the states: Pascanu, Mikolov & Bengio (2013)'s
information-flow regularizer. (AR/TAR, the penalties on the outputs, belong to the language model.)

The penalty reads the states that :func:`rnnkit.analysis.record_states` kept during the forward pass
and differentiates through one batched cell step; :class:`~rnnkit.train.Trainer` adds it to the loss
with ``information_flow=λ``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..analysis.gradients import Recording, step_concatenated

__all__ = ["information_flow_penalty"]


def information_flow_penalty(loss: Tensor, recording: Recording) -> Tensor:
    r"""Pascanu, Mikolov & Bengio (2013)'s regularizer that keeps the error signal's size constant in time.

    .. math::  \Omega = \sum_{k=0}^{T-1} \left( \frac{\lVert g_{k+1}\, \partial s_{k+1}/\partial s_k \rVert}
               {\lVert g_{k+1} \rVert} - 1 \right)^2,\qquad g_{k+1} = \frac{\partial L}{\partial s_{k+1}},

    averaged over the sequences of the batch and summed over the recorded layers. As in the
    paper, :math:`g_{k+1}` is treated as a constant; the penalty's gradient flows through the
    one-step Jacobians, recomputed for all steps at once in one batched cell call
    (double backpropagation). Steps where :math:`g_{k+1} = 0` (padding) are left out.

    ``recording`` comes from :func:`record_states` (with probes) around the forward pass that
    computed ``loss``. Limits: only states that run through ``rnnkit.Recurrent`` layers are
    seen, and the layers run on the loop engine while recorded (slower than fused kernels).
    For a tuple state (LSTM) the Jacobian is that of the concatenated state ``[h; c]``.

    >>> import torch, rnnkit
    >>> from rnnkit.analysis import record_states
    >>> lstm = rnnkit.LSTM(3, 4, batch_first=True)
    >>> with record_states(lstm) as recording:
    ...     out, _ = lstm(torch.randn(2, 5, 3))
    >>> loss = out.pow(2).sum()
    >>> (loss + 0.1 * information_flow_penalty(loss, recording)).backward()
    """
    owner = "information_flow_penalty"
    if not isinstance(recording, Recording):
        raise TypeError(f"{owner}: expected the Recording from `with record_states(model) as recording:`, "
                        f"got {type(recording).__name__}")
    runs = recording.all_runs()
    if not runs:
        raise ValueError(f"{owner}: the recording holds no runs; compute the loss inside "
                         f"`with record_states(model) as recording:`")
    total = loss.new_zeros(())
    for run in runs:
        if run.probes is None:
            raise ValueError(f"{owner}: the recording was made with probe=False; use record_states(model)")
        batch, steps = run.inputs.shape[:2]
        g = run.probe_grads(loss)[:, 1:].detach()                         # g_{k+1}, (B, T, S)
        previous = run.stacked_states()[:, :-1]                           # s_k, (B, T, S)
        s = previous.reshape(batch * steps, -1).requires_grad_(True)
        x = run.inputs.detach().reshape(batch * steps, -1)
        with torch.enable_grad():
            new = step_concatenated(run.cell, x, s)
            (carried,) = torch.autograd.grad(new, s, grad_outputs=g.reshape(batch * steps, -1),
                                             create_graph=True)          # g_{k+1} ds_{k+1}/ds_k
        g_norm = g.reshape(batch * steps, -1).norm(dim=-1)
        live = g_norm > 0
        ratio = carried[live].norm(dim=-1) / g_norm[live]
        total = total + (ratio - 1).pow(2).sum() / batch
    return total
