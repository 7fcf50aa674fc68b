"""Gradient clipping as the trainer applies it, an ensemble's members one by one."""
from __future__ import annotations

import torch

__all__ = ["clip_gradients"]


def clip_gradients(model, params: list, clip_value=None, clip_norm=None):
    """Clip each gradient to ``[-clip_value, clip_value]``, then rescale so that the gradient's norm
    is at most ``clip_norm``; returns the norm before that rescaling (None without ``clip_norm``).

    A model with ``clip_groups()`` (an ensemble: one parameter list per member) has each group
    clipped on its own, as each member would be if trained alone; the norm returned is theirs
    together.
    """
    if clip_value:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if not clip_norm:
        return None
    groups = model.clip_groups() if hasattr(model, "clip_groups") else [params]
    norms = [torch.nn.utils.clip_grad_norm_(group, clip_norm) for group in groups]
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
