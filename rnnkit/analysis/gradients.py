r"""Gradient flow through time: how much of the loss reaches each step's state.

For a loss :math:`L = \sum_t L_t` and the state :math:`s_t` of one recurrent layer,
backpropagation through time computes

.. math::  \frac{\partial L}{\partial s_k} = \frac{\partial L_k}{\partial s_k}
           + \frac{\partial L}{\partial s_{k+1}} \frac{\partial s_{k+1}}{\partial s_k},
   \qquad
   \frac{\partial L_T}{\partial s_k} = \frac{\partial L_T}{\partial s_T}
           \prod_{t=k+1}^{T} \frac{\partial s_t}{\partial s_{t-1}} ,

so the norms :math:`\lVert \partial L/\partial s_k \rVert` and, for the last-step loss,
:math:`\lVert \partial L_T/\partial s_k \rVert` show whether the error signal dies out
(vanishes) or blows up (explodes) on its way back in time.

How it is measured, for any model: :func:`record_states` swaps the engine of every
:class:`rnnkit.Recurrent` layer in the model for the reference loop (one cell call per
step) and adds a *probe* — a zero tensor that requires grad — to every state
``s_0 .. s_T``. The model computes exactly what it computed before (``s + 0 = s``), and
the gradient of the loss with respect to probe ``t`` is :math:`\partial L/\partial s_t`.
Only the cell contract is used, so every cell works.

*Which tensor is the state.* For a tuple state such as the LSTM's ``(h, c)`` the state
vector :math:`s_t` is all its tensors concatenated, ``[h; c]`` (size ``2H``); the
gradient on ``c`` is where the LSTM's memory path runs. ``GradientFlow.state_sizes``
says where each part starts, ``GradientFlow.component(1)`` picks one.

>>> import torch, rnnkit
>>> from rnnkit.analysis.gradients import gradient_flow
>>> cell = rnnkit.cells.ElmanCell(3, 8)
>>> flow = gradient_flow(cell, torch.randn(2, 10, 3), lambda out: out[0].pow(2).sum(-1))
>>> tuple(flow.norms.shape), tuple(flow.last_step_norms.shape)      # (B, T + 1): s_0 .. s_T
((2, 11), (2, 11))
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..cells.base import Cell, State, map_state, state_tensors
from ..engines.loop import LoopEngine
from ..layers import Recurrent
from ..models.ensemble import LanguageModelEnsemble
from ..models.language_model import LanguageModel

__all__ = ["GradientFlow", "LayerRun", "Recording", "record_states", "gradient_flow",
           "gradient_decay_rate"]


# ----- recording the states of every recurrent layer ------------------------------------------

def _sizes(cell: Cell) -> tuple:
    sizes = cell.state_sizes
    return (sizes,) if isinstance(sizes, int) else tuple(sizes)


def concat_state(state: State) -> Tensor:
    """A state as one vector per batch row: its tensors concatenated, (B, sum of sizes)."""
    return torch.cat(state_tensors(state), dim=-1)


@dataclass
class LayerRun:
    """One pass of one recurrent layer over a sequence, step by step.

    Attributes:
        name: the layer's module path in the model (``""`` for the model itself).
        cell: the layer's cell.
        inputs: what the cell read at each step, (B, T, input_size); for a layer with
            ``reverse=True`` this is the reversed sequence, the order it was processed in.
        states: ``T + 1`` states ``s_0 .. s_T`` exactly as the rest of the model used them.
        probes: per state, the zero tensors added to it (``None`` without probes).
        lengths: the layer's ``lengths`` (B,) for a padded batch, else ``None``.
    """
    name: str
    cell: Cell
    inputs: Tensor
    states: list = field(default_factory=list)
    probes: list | None = None
    lengths: Tensor | None = None

    @property
    def steps(self) -> int:
        return self.inputs.shape[1]

    @property
    def state_sizes(self) -> tuple:
        return _sizes(self.cell)

    def stacked_states(self) -> Tensor:
        """``s_0 .. s_T`` as one detached tensor (B, T + 1, S), state tensors concatenated."""
        return torch.stack([concat_state(s).detach() for s in self.states], dim=1)

    def probe_grads(self, loss: Tensor, *, create_graph: bool = False) -> Tensor:
        """The gradient of ``loss`` on every state ``s_0 .. s_T``, (B, T + 1, S); tuple states concatenated."""
        if self.probes is None:
            raise RuntimeError("this run was recorded without probes; use record_states(model, probe=True)")
        flat = [p for probes in self.probes for p in probes]
        grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True,
                                    create_graph=create_graph)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads)]
        count = len(self.probes[0])
        per_step = [torch.cat(grads[i:i + count], dim=-1) for i in range(0, len(grads), count)]
        return torch.stack(per_step, dim=1)


class _ProbedCell:
    """Stands in for a cell inside the loop engine: runs it, then probes and records the state."""

    def __init__(self, cell: Cell, run: LayerRun, probe: bool):
        self.cell, self.run, self.probe = cell, run, probe

    def touch(self, state: State) -> State:
        if self.probe:
            probes = tuple(torch.zeros_like(s, requires_grad=True) for s in state_tensors(state))
            state = map_state(torch.add, state, probes[0] if isinstance(state, Tensor) else probes)
            self.run.probes.append(probes)
        self.run.states.append(state)
        return state

    def __call__(self, x_t: Tensor, state: State) -> State:
        return self.touch(self.cell(x_t, state))

    def output(self, state: State) -> Tensor:
        return self.cell.output(state)


class _RecordingEngine:
    """The loop engine, recording every state of every call into ``recording``."""

    name = "loop"

    def __init__(self, layer_name: str, recording: "Recording", probe: bool):
        self.layer_name, self.recording, self.probe = layer_name, recording, probe

    def supports(self, cell: Cell) -> str | None:
        return None

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        # the layer drew the run's masks (cell.begin_sequence) before calling
        run = LayerRun(self.layer_name, cell, x, probes=[] if self.probe else None, lengths=lengths)
        self.recording.runs[self.layer_name].append(run)
        probed = _ProbedCell(cell, run, self.probe)
        return LoopEngine().run(probed, x, probed.touch(state), lengths)


class Recording:
    """What :func:`record_states` saw: the runs of every recurrent layer, by layer name."""

    def __init__(self, layer_names: list):
        self.layer_names = list(layer_names)
        self.runs = {name: [] for name in self.layer_names}

    def all_runs(self) -> list:
        return [run for name in self.layer_names for run in self.runs[name]]

    def run(self, layer, owner: str = "record_states") -> LayerRun:
        """The single run of ``layer`` (an index into :attr:`layer_names` or a name)."""
        names = self.layer_names
        if isinstance(layer, str):
            if layer not in self.runs:
                raise ValueError(f"{owner}: no recurrent layer named {layer!r}; the model has {names}")
            name = layer
        elif isinstance(layer, int) and not isinstance(layer, bool) and -len(names) <= layer < len(names):
            name = names[layer]
        else:
            raise ValueError(f"{owner}: layer must be an index in [0, {len(names)}) or one of {names}, "
                             f"got {layer!r}")
        runs = self.runs[name]
        if len(runs) != 1:
            raise ValueError(f"{owner}: recurrent layer {name or '(the model)'!r} ran {len(runs)} times in one "
                             f"forward pass; the analysis needs exactly one run over the whole sequence "
                             f"(a model that steps a layer one token at a time cannot be analysed this way)")
        return runs[0]


def _recurrent_layers(owner: str, model: nn.Module) -> list:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, Recurrent)]
    if not layers:
        raise ValueError(f"{owner}: found no rnnkit.Recurrent layer in {type(model).__name__}; pass a Cell, "
                         f"a Recurrent layer, or a model built from them (rnnkit.LSTM, LanguageModel, ...)")
    return layers


def record_states(model: nn.Module, *, probe: bool = True) -> Iterator[Recording]:
    """Record every state of every :class:`rnnkit.Recurrent` layer in ``model`` while inside.

    Inside the ``with`` block the layers run on the loop engine (slower than the fused
    kernels, same numbers); each call of a layer adds a :class:`LayerRun` to the
    recording. With ``probe=True`` every state gets a zero probe that requires grad, so
    ``run.probe_grads(loss)`` gives :math:`\\partial L/\\partial s_t` for every step. The
    engines are restored on exit, also after an error.

    >>> import torch, rnnkit
    >>> lstm = rnnkit.LSTM(3, 4, batch_first=True)
    >>> with record_states(lstm) as recording:
    ...     out, _ = lstm(torch.randn(2, 5, 3))
    >>> run = recording.run(0)
    >>> tuple(run.stacked_states().shape), lstm.engine            # [h; c] for s_0 .. s_5
    ((2, 6, 8), 'native')
    """
    return _recording("record_states", model, probe)


@contextmanager
def _recording(owner: str, model: nn.Module, probe: bool) -> Iterator[Recording]:
    layers = _recurrent_layers(owner, model)
    recording = Recording([name for name, _ in layers])
    with ExitStack() as stack:                   # every layer back on its own engine on exit
        for name, layer in layers:
            stack.enter_context(layer.running_on(_RecordingEngine(name, recording, probe)))
        yield recording


# ----- running a model once, losses per step -------------------------------------------------

def _as_module(owner: str, model) -> nn.Module:
    if isinstance(model, Cell):
        return Recurrent(model, engine="loop", name=f"{owner}({type(model).__name__})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{owner}: expected a Cell, a Recurrent layer or a model (torch.nn.Module) built "
                        f"from them, got {type(model).__name__}")
    return model


def _call(module: nn.Module, inputs, state):
    return module(inputs) if state is None else module(inputs, state)


def _record(owner: str, model, inputs, state, layer, *, probe: bool):
    """Run ``model`` once on ``inputs`` and return (module, outputs, the chosen LayerRun)."""
    module = _as_module(owner, model)
    with _recording(owner, module, probe) as recording:
        outputs = _call(module, inputs, state)
    return module, outputs, recording.run(layer, owner)


def trajectory(owner: str, model, inputs, state=None, layer=0) -> LayerRun:
    """The recorded run of ``layer`` (no probes, no graph): states and the inputs of each step."""
    with torch.no_grad():
        _, _, run = _record(owner, model, inputs, state, layer, probe=False)
    if run.lengths is not None:
        raise ValueError(f"{owner}: padded batches (lengths) are not supported here; pass sequences of "
                         f"one length")
    return run


def _language_model_losses(owner: str, module: nn.Module, outputs, targets) -> Tensor:
    if not isinstance(module, (LanguageModel, LanguageModelEnsemble)):
        raise TypeError(f"{owner}: targets= works for a LanguageModel (per-step cross-entropy); for "
                        f"{type(module).__name__} pass loss_fn=, a function of the model's output that "
                        f"returns per-step losses (B, T)")
    logits = outputs[0]                                                   # (B, T, V)
    if not isinstance(targets, Tensor) or targets.shape != logits.shape[:2]:
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"{owner}: expected targets of shape {tuple(logits.shape[:2])} (token ids, one per "
                         f"input), got {got}")
    return nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")   # (B, T)


def _losses(owner: str, module, outputs, loss_fn, targets, steps: int) -> Tensor:
    if (loss_fn is None) == (targets is None):
        raise ValueError(f"{owner}: pass exactly one of loss_fn= (a function of the model's output "
                         f"returning per-step losses (B, T) or a scalar) and targets= (for a LanguageModel)")
    losses = loss_fn(outputs) if loss_fn is not None else \
        _language_model_losses(owner, module, outputs, targets)
    if not isinstance(losses, Tensor) or not losses.is_floating_point():
        got = losses.dtype if isinstance(losses, Tensor) else type(losses).__name__
        raise TypeError(f"{owner}: loss_fn must return a floating-point tensor, got {got}")
    if losses.dim() > 0 and (losses.dim() > 2 or losses.shape[-1] != steps):
        raise ValueError(f"{owner}: loss_fn returned losses of shape {tuple(losses.shape)}, but the layer "
                         f"ran {steps} steps; return per-step losses (B, {steps}) or ({steps},), or a scalar")
    return losses


# ----- gradient flow --------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientFlow:
    r"""How the gradient of the loss is spread over the states of one layer.

    Step ``t = 0`` is the initial state, ``t = T`` the state after the last input.

    Attributes:
        grads: :math:`\partial L/\partial s_t`, (B, T + 1, S), the loss summed over batch and steps.
        norms: their Euclidean norms per sequence, (B, T + 1).
        last_step_grads: :math:`\partial L_T/\partial s_t` for the loss of the last step alone,
            (B, T + 1, S); ``None`` when the loss was a scalar (not split by step).
        last_step_norms: their norms, (B, T + 1), or ``None``.
        states: :math:`s_0 .. s_T`, (B, T + 1, S).
        state_sizes: sizes of the state's tensors, in the order they are concatenated.
        loss: the value of :math:`L`.
    """
    grads: Tensor
    norms: Tensor
    last_step_grads: Tensor | None
    last_step_norms: Tensor | None
    states: Tensor
    state_sizes: tuple
    loss: float

    @property
    def steps(self) -> Tensor:
        """``0 .. T``, the step of each column."""
        return torch.arange(self.norms.shape[1])

    def component(self, index: int, which: str = "grads") -> Tensor:
        """One state tensor's part of ``grads``, ``last_step_grads`` or ``states`` (``index`` 1 is
        the LSTM's ``c``)."""
        start = sum(self.state_sizes[:index])
        return getattr(self, which)[..., start:start + self.state_sizes[index]]


def gradient_flow(model, inputs, loss_fn: Callable | None = None, *, targets: Tensor | None = None,
                  state=None, layer=0) -> GradientFlow:
    r""":math:`\partial L/\partial s_t` and :math:`\partial L_T/\partial s_t` for every step of one layer.

    Args:
        model: a :class:`rnnkit.cells.Cell` (run as ``Recurrent(cell)``), a
            :class:`rnnkit.Recurrent`, a shortcut such as :class:`rnnkit.LSTM`, or any model
            whose recurrence runs through ``Recurrent`` layers (``LanguageModel``, ...).
        inputs: what the model takes, e.g. (B, T, input_size) or token ids (B, T).
        loss_fn: ``loss_fn(output) -> Tensor`` where ``output`` is whatever ``model(inputs)``
            returns (``(outputs, final_state)`` for a cell or layer). Return the loss of every
            step, (B, T) or (T,), to get both :math:`L = \sum_t L_t` and the last-step loss
            :math:`L_T`; a scalar gives :math:`L` only. Losses are summed, not averaged, so a
            sequence's gradients do not depend on the batch size.
        targets: instead of ``loss_fn``, for a ``LanguageModel``: next-token ids (B, T); the
            per-step losses are the cross-entropies.
        state: initial state passed to the model (default: its own).
        layer: which recurrent layer, an index in module order (0 = the first, the one
            nearest the input) or its module name.

    The model runs in the mode it is in: call ``model.eval()`` first to switch dropout off.

    Returns:
        :class:`GradientFlow`.
    """
    owner = "gradient_flow"
    with torch.enable_grad():
        module, outputs, run = _record(owner, model, inputs, state, layer, probe=True)
        losses = _losses(owner, module, outputs, loss_fn, targets, run.steps)
        grads = run.probe_grads(losses.sum()).detach()
        last = run.probe_grads(losses[..., -1].sum()).detach() if losses.dim() > 0 else None
    return GradientFlow(grads=grads, norms=grads.norm(dim=-1), last_step_grads=last,
                        last_step_norms=None if last is None else last.norm(dim=-1),
                        states=run.stacked_states(), state_sizes=run.state_sizes,
                        loss=float(losses.sum().detach()))


def gradient_decay_rate(flow, *, min_lag: int = 0, max_lag: int | None = None) -> float:
    r"""The factor :math:`r` per step back in time fitted to :math:`\lVert\partial L_T/\partial s_t\rVert \approx C r^{T-t}`.

    A least-squares line through :math:`\log\lVert\partial L_T/\partial s_t\rVert` against the
    lag :math:`T - t` (log-norms averaged over the batch), for lags in ``[min_lag, max_lag]``;
    :math:`r = e^{\text{slope}}`. ``r < 1``: the gradient vanishes, ``r > 1``: it explodes.
    For a linear RNN :math:`s_t = W s_{t-1} + U x_t` with :math:`W = \lambda Q`, ``Q``
    orthogonal, :math:`r = |\lambda|` exactly.

    ``flow`` is a :class:`GradientFlow` (its ``last_step_norms``, or ``norms`` when the loss
    was a scalar) or a tensor of norms (B, T + 1) or (T + 1,) indexed by step.

    >>> import torch
    >>> round(gradient_decay_rate(0.5 ** torch.arange(10.0).flip(0)), 6)
    0.5
    """
    owner = "gradient_decay_rate"
    if isinstance(flow, GradientFlow):
        norms = flow.last_step_norms if flow.last_step_norms is not None else flow.norms
    elif isinstance(flow, Tensor) and flow.dim() in (1, 2):
        norms = flow
    else:
        raise TypeError(f"{owner}: expected a GradientFlow or a tensor of norms (B, T + 1) or (T + 1,), got "
                        f"{tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__}")
    norms = norms.detach().to(torch.float64).reshape(-1, norms.shape[-1])
    steps = norms.shape[1] - 1
    max_lag = steps if max_lag is None else max_lag
    if not 0 <= min_lag < max_lag <= steps:
        raise ValueError(f"{owner}: need 0 <= min_lag < max_lag <= {steps} (the number of steps), got "
                         f"min_lag={min_lag}, max_lag={max_lag}")
    lags = torch.arange(steps, -1, -1, dtype=torch.float64)            # lag T - t of column t
    keep = (lags >= min_lag) & (lags <= max_lag)
    chosen = norms[:, keep]
    if not bool((chosen > 0).all() & torch.isfinite(chosen).all()):
        raise ValueError(f"{owner}: some gradient norms between lags {min_lag} and {max_lag} are 0 or not "
                         f"finite (vanished or overflowed in floating point); fit over fewer lags with max_lag=")
    y, x = chosen.log().mean(0), lags[keep]
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return math.exp(float(slope))


def step_concatenated(cell: Cell, x: Tensor, s: Tensor) -> Tensor:
    """One cell step on concatenated states, ``[h; c]`` for an LSTM: (N, X), (N, S) -> (N, S)."""
    sizes = _sizes(cell)
    state = s if len(sizes) == 1 else tuple(torch.split(s, list(sizes), dim=-1))
    return concat_state(cell(x, state))
