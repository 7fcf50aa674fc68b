"""The confusion matrix as a picture: a row per true class, a column per predicted class, each cell its
count, shaded by the share of its row (so a rare class reads as clearly as a common one).

The figure is built without ``pyplot`` (no global state; a PNG is written by matplotlib's Agg renderer),
so it works on a server and shows in a notebook as a cell's value. matplotlib is the optional extra
``plot``: ``pip install "rnnkit[plot]"``.

>>> import numpy as np
>>> figure = plot_confusion(np.array([[5, 1], [0, 6]]), ["slow", "fast"])
>>> figure.axes[0].get_xlabel(), len(figure.axes[0].texts)
('predicted', 4)
"""
from __future__ import annotations

import numpy as np

from .._files import write_figure_atomic

__all__ = ["plot_confusion"]


def plot_confusion(matrix, labels, path=None):
    """The confusion matrix ``matrix`` (K, K) (rows: true class, columns: predicted, both in the order of
    ``labels``) as a matplotlib ``Figure``, written to ``path`` (optional) through a temporary file
    renamed once complete."""
    matrix = np.asarray(matrix)
    labels = [str(label) for label in labels]
    if matrix.ndim != 2 or matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"plot_confusion: the matrix is {matrix.shape} but there are {len(labels)} labels; expected "
                         f"({len(labels)}, {len(labels)})")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plot_confusion needs matplotlib, which is not installed: pip install "rnnkit[plot]"') \
            from None
    side = 1.6 + 0.55 * len(labels)
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)         # each row's cases as shares of it
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, str(count), ha="center", va="center", fontsize=9,
                color="white" if shares[row, column] > 0.5 else "black")
    slanted = max(map(len, labels)) > 3                                   # long names would overlap upright
    ax.set_xticks(range(len(labels)), labels, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    if path is not None:
        write_figure_atomic(fig, path)
    return fig
