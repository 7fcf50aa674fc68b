"""Pictures of what the analysis functions measure, as matplotlib Figures (and PNG files).

Every ``plot_*`` function takes the named result of an analysis function, returns a
``matplotlib.figure.Figure`` and, given ``path``, writes it there as a PNG. Figures are
built without ``pyplot``, so they touch no global state and need no backend; show one in
a notebook by leaving it as a cell's value. matplotlib is the optional extra ``plot``:
``pip install "rnnkit[plot]"``.

=========================  =================================================================
plot_gradient_flow         ‖∂L/∂s_t‖ and ‖∂L_T/∂s_t‖ against t, log scale (one or more models)
plot_jacobian_products     singular values of ∂s_T/∂s_k against the lag T − k
plot_spectrum              eigenvalues of the step Jacobians on the complex plane, unit circle
plot_forget_gates          LSTM forget gates over time and their product (memory retention)
plot_pca_trajectory        the state's path through its first principal components
plot_unit_responses        the units that track each feature, against the feature
plot_fixed_points          fixed points in the top principal components, their Jacobian spectra
=========================  =================================================================
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .._arguments import check_int
from .fixed_points import FixedPoints
from .gradients import GradientFlow
from .hidden import HiddenPCA, HiddenStates, UnitResponses
from .jacobians import ForgetGates, JacobianProducts, JacobianSpectrum

__all__ = ["plot_gradient_flow", "plot_jacobian_products", "plot_spectrum", "plot_forget_gates",
           "plot_pca_trajectory", "plot_unit_responses", "plot_fixed_points"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _figure(owner: str, figsize, *, dpi: float | None = 110, layout: str | None = None, **margins):
    """A Figure with fixed margins (a layout engine would cost more time than the drawing),
    or placed by ``layout`` where fixed margins cannot fit (3-D axes); ``dpi=None``: matplotlib's."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f'{owner} needs matplotlib, which is not installed: pip install "rnnkit[plot]"') \
            from error
    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    if layout is None:
        fig.subplots_adjust(**{"left": 0.1, "right": 0.97, "bottom": 0.12, "top": 0.9, **margins})
    return fig


def _save(fig, path, dpi: float | None = None):
    """Write ``fig`` to ``path`` (when given), at ``dpi`` or the figure's own."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, **({} if dpi is None else {"dpi": dpi}))
    return fig


def _named(owner: str, results, kind: type, what: str) -> dict:
    """One result or a mapping name -> result, as a dict."""
    if isinstance(results, kind):
        return {"": results}
    if isinstance(results, Mapping) and results and all(isinstance(r, kind) for r in results.values()):
        return dict(results)
    raise TypeError(f"{owner}: expected a {kind.__name__} (from {what}) or a dict name -> {kind.__name__}, "
                    f"got {type(results).__name__}")


def _positive(values: Tensor) -> Tensor:
    """Values for a log axis: zeros and non-finite values become NaN (gaps in the line)."""
    values = values.detach().to(torch.float64)
    return torch.where((values > 0) & torch.isfinite(values), values, torch.nan)


def _median_band(ax, x, rows: Tensor, color, label, style="-", band=True):
    """Median over rows (sequences) as a line, and the 10-90% range as a band when there are several."""
    rows = _positive(rows)
    ax.plot(x, rows.nanmedian(0).values.numpy(), style, color=color, lw=2, label=label)
    if band and rows.shape[0] > 1:
        low, high = rows.nanquantile(0.1, dim=0), rows.nanquantile(0.9, dim=0)
        ax.fill_between(x, low.numpy(), high.numpy(), color=color, alpha=0.15, lw=0)


# ----- gradient flow ------------------------------------------------------------------------------

def plot_gradient_flow(flow, path=None, *, theory: Mapping[str, Tensor] | None = None,
                       title: str | None = None):
    """‖∂L/∂s_t‖ (solid) and ‖∂L_T/∂s_t‖ (dashed) against the step t, on a log scale.

    Args:
        flow: a :class:`~rnnkit.analysis.gradients.GradientFlow`, or a dict name -> flow to
            compare models (one colour each). Lines are the median over the batch, bands
            its 10-90% range.
        path: where to write the PNG (optional).
        theory: name -> values (T + 1,) to draw as dotted black lines on top, e.g. the
            prediction ``|λ|^(T−t)`` for a linear RNN.
        title: the figure title.
    """
    owner = "plot_gradient_flow"
    flows = _named(owner, flow, GradientFlow, "gradient_flow")
    fig = _figure(owner, (7.5, 4.5))
    ax = fig.add_subplot()
    for (name, f), color in zip(flows.items(), _COLORS * 4):
        steps = f.steps.numpy()
        prefix = f"{name}: " if name else ""
        split = f.last_step_norms is not None
        _median_band(ax, steps, f.norms, color, prefix + "‖∂L/∂sₜ‖" + (" (losses of all steps)" if split else ""))
        if split:
            _median_band(ax, steps, f.last_step_norms, color, prefix + "‖∂L_T/∂sₜ‖ (last step's loss)",
                         style="--", band=False)
    for i, (name, values) in enumerate((theory or {}).items()):
        values = _positive(torch.as_tensor(values)).numpy()
        ax.plot(range(len(values)), values, ":", color="black", lw=2.2, zorder=5, label=name,
                dashes=(1, 1.5 + i))
    ax.set_yscale("log")
    ax.set_xlabel("step t (0 = initial state)")
    ax.set_ylabel("gradient norm")
    ax.set_title(title or "Gradient flow through time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_jacobian_products(products, path=None, *, title: str | None = None):
    """Singular values of the Jacobian products against the lag, on a log scale.

    For one :class:`~rnnkit.analysis.jacobians.JacobianProducts` every singular value is a
    thin line and the largest and smallest are bold (medians over the batch); for a dict
    name -> products, the largest (solid) and smallest (dotted) of each. Values below the
    round-off floor ``S·ε·σ_max`` of their product are not drawn: they are noise.
    """
    owner = "plot_jacobian_products"
    named = _named(owner, products, JacobianProducts, "jacobian_products")
    fig = _figure(owner, (7.5, 4.5))
    ax = fig.add_subplot()
    anchor = next(iter(named.values())).anchor
    for (name, p), color in zip(named.items(), _COLORS * 4):
        lags = p.lags.numpy()
        sv = _positive(p.singular_values)                                  # (B, T + 1, S)
        floor = sv[..., :1] * sv.shape[-1] * torch.finfo(p.singular_values.dtype).eps
        sv = torch.where(sv >= floor, sv, torch.nan)
        prefix = f"{name}: " if name else ""
        if len(named) == 1:
            for k in range(1, sv.shape[-1] - 1):
                ax.plot(lags, sv[..., k].nanmedian(0).values.numpy(), color=color, lw=0.5, alpha=0.35)
        _median_band(ax, lags, sv[..., 0], color, f"{prefix}largest singular value")
        _median_band(ax, lags, sv[..., -1], color, f"{prefix}smallest singular value", style=":")
    ax.axhline(1.0, color="gray", lw=1)
    ax.plot([], [], " ", label="(below round-off, S·ε·σ_max: not drawn)")
    ax.set_yscale("log")
    what = "∂s_T/∂s_(T−n)" if anchor == "end" else "∂sₙ/∂s₀"
    ax.set_xlabel("lag n = t − k (steps)")
    ax.set_ylabel(f"singular values of {what}")
    ax.set_title(title or "How far back the state's memory reaches")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# ----- spectra ------------------------------------------------------------------------------------

def plot_spectrum(spectrum: JacobianSpectrum, path=None, *, weights: Mapping[str, Tensor] | None = None,
                  title: str | None = None, max_points: int = 20000):
    """Eigenvalues of every step Jacobian on the complex plane with the unit circle, and the
    spectral radius and norm of each step.

    Left: one dot per eigenvalue of :math:`\\partial s_t/\\partial s_{t-1}`, coloured by the step
    ``t``; inside the circle a direction shrinks, outside it grows. ``weights`` (name ->
    eigenvalues, e.g. :func:`~rnnkit.analysis.jacobians.recurrent_eigenvalues`) adds those of
    the recurrent weight matrices as crosses. Right: spectral radius and largest singular
    value per step (medians over the batch) against the line 1.
    """
    owner = "plot_spectrum"
    if not isinstance(spectrum, JacobianSpectrum):
        raise TypeError(f"{owner}: expected a JacobianSpectrum (from jacobian_spectrum), got "
                        f"{type(spectrum).__name__}")
    fig = _figure(owner, (11, 5.6), left=0.07, wspace=0.3, top=0.9, bottom=0.25)
    ax, side = fig.subplots(1, 2, width_ratios=(1.1, 1))
    eig = spectrum.eigenvalues.detach()                                    # (B, T, S)
    steps = torch.arange(1, eig.shape[1] + 1).view(1, -1, 1).expand(eig.shape)
    eig, steps = eig.reshape(-1), steps.reshape(-1)
    if eig.numel() > max_points:                                           # keep the picture light
        keep = torch.linspace(0, eig.numel() - 1, max_points).long()
        eig, steps = eig[keep], steps[keep]
    dots = ax.scatter(eig.real.numpy(), eig.imag.numpy(), c=steps.numpy(), s=6, cmap="viridis", alpha=0.6,
                      label="eigenvalues of ∂sₜ/∂sₜ₋₁")
    fig.colorbar(dots, ax=ax, label="step t", shrink=0.8)
    angle = torch.linspace(0, 2 * math.pi, 361, dtype=torch.float64)
    ax.plot(angle.cos().numpy(), angle.sin().numpy(), color="black", lw=1.2, label="unit circle")
    for (name, values), color in zip((weights or {}).items(), _COLORS[1:] * 4):
        values = torch.as_tensor(values).detach().to(torch.complex128)
        ax.scatter(values.real.numpy(), values.imag.numpy(), marker="x", s=22, color=color, lw=1,
                   label=f"eigenvalues of {name}")
    ax.axhline(0, color="gray", lw=0.5)
    ax.axvline(0, color="gray", lw=0.5)
    reach = max(1.1, 1.05 * float(spectrum.eigenvalues.abs().max()))
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title("Step Jacobian eigenvalues")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    t = range(1, spectrum.eigenvalues.shape[1] + 1)
    _median_band(side, t, spectrum.spectral_radius, _COLORS[0], "spectral radius (largest |λ|)")
    _median_band(side, t, spectrum.largest_singular_value, _COLORS[1], "largest singular value (norm)")
    side.axhline(1.0, color="black", lw=1, label="1: neither shrinks nor grows")
    side.set_xlabel("step t")
    side.set_ylabel("spectral radius and norm of ∂sₜ/∂sₜ₋₁")
    side.set_title("Per step")
    side.grid(alpha=0.3)
    side.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_forget_gates(gates: ForgetGates, path=None, *, sequence: int = 0, title: str | None = None):
    """The LSTM's forget gates: left, :math:`f_t` of every unit over time (one sequence);
    right, the retention :math:`\\prod_{\\tau=k+1}^{T} f_\\tau` against the lag ``T − k``
    (median over units and sequences, 10-90% band): how much of a cell's content survives."""
    owner = "plot_forget_gates"
    if not isinstance(gates, ForgetGates):
        raise TypeError(f"{owner}: expected ForgetGates (from forget_gate_product), got {type(gates).__name__}")
    fig = _figure(owner, (11, 4.2), left=0.06, wspace=0.3, top=0.87, bottom=0.13)
    heat, curve = fig.subplots(1, 2)
    image = heat.imshow(gates.gates[sequence].detach().T.numpy(), aspect="auto", origin="lower",
                        cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=heat, label="forget gate f")
    heat.set_xlabel("step t")
    heat.set_ylabel("unit")
    heat.set_title(f"Forget gates of sequence {sequence}")
    retention = gates.retention.detach().flip(1)                          # column n: lag n = T - k
    rows = retention.permute(0, 2, 1).reshape(-1, retention.shape[1])      # (B·H, T + 1)
    _median_band(curve, range(rows.shape[1]), rows, _COLORS[0], "median unit, 10-90% band")
    curve.set_yscale("log")
    low = float(_positive(rows).nan_to_num(nan=1.0).min())
    curve.set_ylim(max(low, 1e-12) / 2, 2.0)            # below 1e-12 a unit has simply forgotten
    curve.set_xlabel("lag T − k (steps)")
    curve.set_ylabel("retention ∏ f (∂c_T/∂cₖ along the memory path)")
    curve.set_title("Memory retention")
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ----- hidden states ------------------------------------------------------------------------------

def plot_pca_trajectory(pca: HiddenPCA, path=None, *, sequence: int = 0, annotations=None,
                        title: str | None = None, max_annotations: int = 120):
    """The path of one sequence's state through its first two principal components (left,
    coloured by time, from the circle to the square) and every component against time (right).

    ``annotations``: a label per step (e.g. the characters read) written next to the
    points, for at most ``max_annotations`` steps.
    """
    owner = "plot_pca_trajectory"
    if not isinstance(pca, HiddenPCA):
        raise TypeError(f"{owner}: expected a HiddenPCA (from hidden_pca), got {type(pca).__name__}")
    projected = pca.projected.detach()
    if projected.dim() == 2:
        projected = projected.unsqueeze(0)
    check_int(owner, "sequence", sequence, 0, f"the states hold {projected.shape[0]} sequence(s)",
              maximum=projected.shape[0] - 1)
    path_k = projected[sequence].to(torch.float64)                           # (T, K)
    steps, count = path_k.shape
    ratio = pca.explained_variance_ratio.tolist()
    fig = _figure(owner, (11, 4.8), left=0.07, wspace=0.25, top=0.88)
    ax, over_time = fig.subplots(1, 2, width_ratios=(1.1, 1))
    y = path_k[:, 1] if count > 1 else torch.zeros(steps, dtype=torch.float64)
    ax.plot(path_k[:, 0].numpy(), y.numpy(), color="gray", lw=0.8, alpha=0.6)
    dots = ax.scatter(path_k[:, 0].numpy(), y.numpy(), c=range(steps), cmap="viridis", s=14, zorder=3)
    fig.colorbar(dots, ax=ax, label="step t", shrink=0.8)
    ax.scatter(path_k[:1, 0].numpy(), y[:1].numpy(), marker="o", s=90, facecolors="none", edgecolors="green",
               lw=2, zorder=4, label="start")
    ax.scatter(path_k[-1:, 0].numpy(), y[-1:].numpy(), marker="s", s=90, facecolors="none", edgecolors="red",
               lw=2, zorder=4, label="end")
    if annotations is not None:
        for t, label in enumerate(list(annotations)[:min(steps, max_annotations)]):
            ax.annotate(repr(label)[1:-1] if isinstance(label, str) else str(label),
                        (float(path_k[t, 0]), float(y[t])), fontsize=6, alpha=0.8,
                        textcoords="offset points", xytext=(2, 2))
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}% of variance)" if count > 1 else "(one component)")
    ax.set_title("Hidden-state trajectory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for k, color in zip(range(count), _COLORS * 4):
        over_time.plot(range(steps), path_k[:, k].numpy(), color=color, lw=1.2,
                       label=f"PC{k + 1} ({100 * ratio[k]:.0f}%)")
    over_time.set_xlabel("step t")
    over_time.set_ylabel("projection")
    over_time.set_title("Components over time")
    over_time.grid(alpha=0.3)
    over_time.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_unit_responses(responses: UnitResponses, hidden, features: Mapping[str, Tensor], path=None, *,
                        sequence: int = 0, steps: int = 200, text=None, title: str | None = None):
    """For each feature, its best unit's activation (line) over the feature's values (shaded,
    rescaled to the unit's range), for the first ``steps`` steps of one sequence.

    ``hidden`` is the :class:`~rnnkit.analysis.hidden.HiddenStates` (or states tensor) and
    ``features`` the dict given to :func:`~rnnkit.analysis.hidden.unit_responses`. ``text``
    (the characters read) labels the time axis when ``steps`` is at most 120.
    """
    owner = "plot_unit_responses"
    if not isinstance(responses, UnitResponses):
        raise TypeError(f"{owner}: expected UnitResponses (from unit_responses), got {type(responses).__name__}")
    states = hidden.states if isinstance(hidden, HiddenStates) else hidden
    states = states.detach()
    if states.dim() == 2:
        states = states.unsqueeze(0)
    shown = min(steps, states.shape[1])
    rows = len(responses.features)
    height = 1.7 * rows + 1.0
    fig = _figure(owner, (11, height), left=0.07, right=0.98, top=1 - 0.55 / height, bottom=0.6 / height,
                  hspace=0.55)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (i, name), color in zip(axes, enumerate(responses.features), _COLORS * 4):
        unit = int(responses.top_units[i, 0])
        r = float(responses.top_correlations[i, 0])
        activation = states[sequence, :shown, unit].to(torch.float64)
        values = torch.as_tensor(features[name]).to(torch.float64)
        values = (values if values.dim() == 1 else values[sequence])[:shown]
        # the feature, rescaled onto the unit's range (flipped when they anti-correlate)
        span = values.max() - values.min()
        scaled = (values - values.min()) / span if span > 0 else torch.zeros_like(values)
        scaled = 1 - scaled if r < 0 else scaled
        low, high = activation.min(), activation.max()
        ax.fill_between(range(shown), (low + scaled * (high - low)).numpy(), low.item(), step="mid",
                        color="gray", alpha=0.3, lw=0, label=f"{name}{' (flipped)' if r < 0 else ''}, rescaled")
        ax.plot(range(shown), activation.numpy(), color=color, lw=1.3, label=f"unit {responses.labels[unit]}")
        ax.set_ylabel(responses.labels[unit], color=color)
        ax.set_title(f"{name}: best unit {responses.labels[unit]} (r = {r:+.2f})", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("step t")
    if text is not None and shown <= 120:
        axes[-1].set_xticks(range(shown))
        axes[-1].set_xticklabels([repr(c)[1:-1] for c in list(text)[:shown]], fontsize=6, family="monospace")
    fig.suptitle(title or "Which units respond to what (line: unit activation, shaded: feature)")
    return _save(fig, path)


# ----- fixed points -------------------------------------------------------------------------------

_BASES = ("trajectories", "points", "stable")


def plot_fixed_points(result: FixedPoints, trajectories: Tensor | None = None, path=None, *,
                      components: int | None = None, basis: str | None = None, max_trajectories: int = 30,
                      title: str | None = None):
    """Draw the fixed points in the top principal components, next to their Jacobian spectra.

    Left: the points, and ``trajectories`` (B, T, S) or (T, S) — states the
    network visits, drawn as thin lines, at most ``max_trajectories`` of them —
    projected onto the top ``components`` (2 or 3; default 3 when the state has
    at least 3 dimensions) principal components of ``basis``:

    - ``"trajectories"`` (the default when there are any): the visited states;
    - ``"points"``: all the fixed points;
    - ``"stable"``: the stable points only — for a memory network, the subspace
      its memories span (the cube of a 3-bit flip-flop).

    Stable points are filled black dots, unstable ones red crosses; each axis
    gives its component's share of the variance of the basis states. Right:
    every point's Jacobian eigenvalues in the complex plane, with the unit
    circle that separates stable from unstable directions.

    Returns the matplotlib ``Figure``; with ``path`` it is also saved there (the
    format follows the suffix, e.g. ``.png``). Needs matplotlib
    (``pip install "rnnkit[plot]"``); pyplot is not used, so no window opens.

    >>> import torch
    >>> from rnnkit.analysis import find_fixed_points
    >>> from rnnkit.cells import ElmanCell
    >>> cell = ElmanCell(1, 1, bias=False, dtype=torch.float64)
    >>> with torch.no_grad():
    ...     _ = cell.weight_hh.fill_(2.0)                 # h' = tanh(2 h)
    >>> result = find_fixed_points(cell, initial_states=torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None])
    >>> figure = plot_fixed_points(result)
    >>> [axes.get_xlabel() for axes in figure.axes], figure.axes[0].get_ylabel()
    (['PC1 (100% of variance)', 'Re λ'], 'PC2')
    """
    owner = "plot_fixed_points"
    if not isinstance(result, FixedPoints):
        raise TypeError(f"{owner}: expected the FixedPoints that find_fixed_points returns, got "
                        f"{type(result).__name__}")
    size = result.points.shape[1]
    if trajectories is not None:
        if not isinstance(trajectories, Tensor) or trajectories.dim() not in (2, 3) \
                or trajectories.shape[-1] != size:
            got = tuple(trajectories.shape) if isinstance(trajectories, Tensor) else type(trajectories).__name__
            raise ValueError(f"{owner}: expected trajectories of shape (batch, time, {size}) or "
                             f"(time, {size}), got {got}")
        trajectories = trajectories.detach().to("cpu", torch.float64)
        if trajectories.dim() == 2:
            trajectories = trajectories.unsqueeze(0)
        trajectories = trajectories[:max_trajectories]
    if basis is None:
        basis = "points" if trajectories is None else "trajectories"
    elif basis not in _BASES:
        raise ValueError(f"{owner}: basis must be one of {list(_BASES)}, got {basis!r}")
    elif basis == "trajectories" and trajectories is None:
        raise ValueError(f"{owner}: basis='trajectories' needs trajectories; pass them or use basis='points'")
    if components is None:
        components = 3 if size >= 3 else 2
    else:
        check_int(owner, "components", components, 2, maximum=3)
    points = result.points.detach().to("cpu", torch.float64)                  # (N, S)
    stable = result.stable.cpu()
    center, axes_of, share = _principal_axes(
        {"trajectories": lambda: trajectories.reshape(-1, size), "points": lambda: points,
         "stable": lambda: points[stable]}[basis](), size, components)

    def project(x: Tensor) -> list:
        coords = (x - center) @ axes_of                                       # (..., components)
        return [coords[..., i].numpy() for i in range(components)]

    # a 3-D axes has no fixed margins that fit: the layout engine places the panels
    figure = _figure(owner, (12, 5.5), dpi=None, layout="constrained")
    figure.suptitle(title or f"Fixed points with the input held at {_short(result.inputs)}")
    space = figure.add_subplot(1, 2, 1, projection="3d" if components == 3 else None)
    if trajectories is not None:
        for states in trajectories:
            space.plot(*project(states), color="tab:blue", alpha=0.4, linewidth=0.8)
        space.plot(*[[] for _ in range(components)], color="tab:blue", alpha=0.6, linewidth=0.8,
                   label=f"trajectories ({len(trajectories)})")
    for mask, style in ((~stable, dict(color="tab:red", marker="x", s=70, label=f"unstable ({result.num_unstable})")),
                        (stable, dict(color="black", marker="o", s=60, label=f"stable ({result.num_stable})"))):
        if components == 3:
            style["depthshade"] = False                # keep the markers' colours true at any depth
        space.scatter(*project(points[mask]), **style)
    labels = [f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" if i < len(share) else f"PC{i + 1}"
              for i in range(components)]
    space.set_xlabel(labels[0])
    space.set_ylabel(labels[1])
    if components == 3:
        space.set_zlabel(labels[2])
    space.legend(loc="upper left", fontsize=8)
    space.set_title(f"state space, top principal components of the {basis if basis != 'stable' else 'stable points'}",
                    fontsize=10)

    spectrum = figure.add_subplot(1, 2, 2)
    circle = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
    spectrum.plot(torch.cos(circle).numpy(), torch.sin(circle).numpy(), color="grey", linestyle="--",
                  linewidth=1, label="|λ| = 1")
    eigenvalues = result.eigenvalues.detach().cpu()
    for mask, style in ((~stable, dict(marker="x", s=22, color="tab:red", label="at unstable points")),
                        (stable, dict(marker="o", s=10, color="black", label="at stable points"))):
        values = eigenvalues[mask].reshape(-1)
        spectrum.scatter(values.real.numpy(), values.imag.numpy(), alpha=0.7, **style)
    spectrum.set_aspect("equal", adjustable="datalim")
    spectrum.set_xlabel("Re λ")
    spectrum.set_ylabel("Im λ")
    spectrum.set_title("Jacobian eigenvalues (a point is stable when all lie inside the circle)", fontsize=10)
    spectrum.legend(loc="upper left", fontsize=8)
    return _save(figure, path, dpi=120)


def _principal_axes(states: Tensor, size: int, components: int):
    """Mean (S,), top ``components`` axes (S, components) and their variance shares of ``states`` (M, S).

    With fewer informative directions than components (one point, a 1-D state),
    the missing axes are zero columns: those coordinates plot as 0.
    """
    axes = torch.zeros(size, components, dtype=torch.float64)
    if len(states) == 0:
        return torch.zeros(size, dtype=torch.float64), axes, []
    center = states.mean(0)
    _, singular, vh = torch.linalg.svd(states - center, full_matrices=False)  # vh (min(M, S), S)
    kept = min(components, vh.shape[0])
    axes[:, :kept] = vh[:kept].T
    variance = singular.pow(2)
    total = variance.sum().item()
    share = [(v / total if total > 0 else 0.0) for v in variance[:kept].tolist()]
    return center, axes, share


def _short(inputs: Tensor) -> str:
    values = inputs.detach().cpu().tolist()
    if len(values) > 4:
        return "zero" if not any(values) else f"a {len(values)}-vector"
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
