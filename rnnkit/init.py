r"""Recurrent weight initialisation: orthogonal or identity blocks.

Gradients travel back through time through products of the recurrent weights, so their
spectrum at the start of training decides whether the error signal survives. Two classic
starting points, applied to every ``H × H`` gate block of every recurrent weight:

* ``"orthogonal"`` (Saxe et al. 2014): ``W = gain · Q`` with ``Q`` a random orthogonal
  matrix (Haar-distributed: QR of a Gaussian matrix with the signs of ``R``'s diagonal
  folded into ``Q``). Every singular value is ``gain``, so a linear recurrence neither
  shrinks nor grows any direction when ``gain = 1``.
* ``"identity"`` (Le, Jaitly & Hinton 2015, the IRNN): ``W = gain · I``; with ReLU units and
  zero biases an Elman network starts by copying its state forward.

Recurrent weights are found by name: every parameter called ``weight_hh`` (rnnkit's cells)
or ``weight_hh_l<k>[_reverse]`` (``torch.nn.RNN/LSTM/GRU``) of shape ``(k·H, H)``, cut into
``k`` blocks in the cell's gate order (LSTM: i, f, g, o; GRU: r, z, n). Input weights and
biases are left as they are.

>>> import torch, rnnkit
>>> lstm = rnnkit.LSTM(3, 4, batch_first=True)
>>> init_recurrent_(lstm, "identity", gain=0.5)
['stack.layers.0.cell.weight_hh']
>>> recurrent_blocks(lstm)["stack.layers.0.cell.weight_hh[f]"]
tensor([[0.5000, 0.0000, 0.0000, 0.0000],
        [0.0000, 0.5000, 0.0000, 0.0000],
        [0.0000, 0.0000, 0.5000, 0.0000],
        [0.0000, 0.0000, 0.0000, 0.5000]])
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ._arguments import check_positive

__all__ = ["SCHEMES", "init_recurrent_", "recurrent_blocks", "random_orthogonal"]

SCHEMES = ("orthogonal", "identity")

_RECURRENT_NAME = re.compile(r"weight_hh(_l\d+(_reverse)?)?")
# gate order of each weight layout, by the class that owns the weight
_GATES = {"LSTMCell": "ifgo", "LSTM": "ifgo", "GRUCell": "rzn", "GRU": "rzn", "GatedCell": ("gate", "candidate")}


def _recurrent_weights(owner: str, module: nn.Module) -> list:
    """``(name, parameter, gate labels)`` for every recurrent weight in ``module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{owner}: expected a torch.nn.Module (a cell, layer or model), got "
                        f"{type(module).__name__}")
    owners = dict(module.named_modules())
    found = []
    for name, param in module.named_parameters():
        path, _, leaf = name.rpartition(".")
        if not _RECURRENT_NAME.fullmatch(leaf):
            continue
        rows, hidden = param.shape if param.dim() == 2 else (0, 0)
        if param.dim() != 2 or hidden == 0 or rows % hidden:
            raise ValueError(f"{owner}: {name} has shape {tuple(param.shape)}, not (k·H, H) with H × H gate "
                             f"blocks; initialise it by hand")
        labels = _GATES.get(type(owners[path]).__name__)
        if labels is None or len(labels) != rows // hidden:
            labels = [str(i) for i in range(rows // hidden)] if rows // hidden > 1 else [""]
        found.append((name, param, list(labels)))
    if not found:
        raise ValueError(f"{owner}: found no recurrent weight (a parameter named weight_hh or weight_hh_l<k>) in "
                         f"{type(module).__name__}")
    return found


def recurrent_blocks(module: nn.Module) -> dict:
    """Every ``H × H`` gate block of every recurrent weight, by name (``"...weight_hh[f]"``).

    The blocks are detached views of the parameters (they change when the weights do).
    A weight with one block (Elman) is named without a suffix.
    """
    blocks = {}
    for name, param, labels in _recurrent_weights("recurrent_blocks", module):
        hidden = param.shape[1]
        for i, label in enumerate(labels):
            key = f"{name}[{label}]" if label else name
            blocks[key] = param.detach()[i * hidden:(i + 1) * hidden]
    return blocks


def random_orthogonal(size: int, *, generator: torch.Generator | None = None,
                      dtype=torch.float64) -> Tensor:
    """A random orthogonal ``size × size`` matrix, uniform (Haar) over the orthogonal group."""
    a = torch.randn(size, size, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)   # sign fix: without it Q is not uniform


def init_recurrent_(module: nn.Module, scheme: str = "orthogonal", gain: float = 1.0, *,
                    generator: torch.Generator | None = None) -> list:
    """Initialise every gate block of every recurrent weight in ``module``, in place.

    Args:
        module: a cell, layer, shortcut (``rnnkit.LSTM``), model, or ``torch.nn.LSTM``/``GRU``/``RNN``.
        scheme: ``"orthogonal"`` (``gain · Q``, a fresh random ``Q`` per block) or
            ``"identity"`` (``gain · I``).
        gain: the scale; every singular value of each block equals ``gain``.
        generator: a ``torch.Generator`` for reproducible orthogonal blocks (default: the
            global random state).

    Returns:
        The names of the weights initialised.
    """
    owner = "init_recurrent_"
    if scheme not in SCHEMES:
        raise ValueError(f"{owner}: unknown scheme {scheme!r}; choose one of {list(SCHEMES)}")
    check_positive(owner, "gain", gain)
    weights = _recurrent_weights(owner, module)
    with torch.no_grad():
        for _, param, labels in weights:
            hidden = param.shape[1]
            for i in range(len(labels)):
                block = (random_orthogonal(hidden, generator=generator) if scheme == "orthogonal"
                         else torch.eye(hidden, dtype=torch.float64))
                param[i * hidden:(i + 1) * hidden] = gain * block
    return [name for name, _, _ in weights]
