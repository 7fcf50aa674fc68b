r"""Recursive (tree-structured) networks: compose child states up a tree, read out at the root.

A tree is made of mutable :class:`Tree` nodes. A leaf carries a token id (or a
feature vector); an internal node carries a label id (an operator) and an
ordered list of children, of any arity. Node :math:`j` with children
:math:`C(j)` and label :math:`\ell_j` gets its state from theirs:

``"simple"`` (children summed, so their order is not seen), any arity:

.. math::  h_j = \tanh\big(W_{\ell_j} \textstyle\sum_{k \in C(j)} h_k + b_{\ell_j}\big)

``"simple-concat"`` (children concatenated in order; missing ones are zero), at most ``max_arity`` N:

.. math::  h_j = \tanh\big(W_{\ell_j} [h_{j,1}; \dots; h_{j,N}] + b_{\ell_j}\big)

``"child-sum-lstm"`` (the Child-Sum Tree-LSTM of Tai, Socher & Manning 2015), any arity,
with input :math:`x_j` the embedding of the leaf's token or of the node's label:

.. math::
   \tilde h_j = \textstyle\sum_{k \in C(j)} h_k, \quad
   i_j = \sigma(W_i x_j + U_i \tilde h_j + b_i), \quad
   o_j = \sigma(W_o x_j + U_o \tilde h_j + b_o), \quad
   u_j = \tanh(W_u x_j + U_u \tilde h_j + b_u),

   f_{jk} = \sigma(W_f x_j + U_f h_k + b_f), \quad
   c_j = i_j \odot u_j + \textstyle\sum_{k \in C(j)} f_{jk} \odot c_k, \quad
   h_j = o_j \odot \tanh(c_j).

A leaf's state is its embedding :math:`e(\text{token})` under the simple
compositions, and the Tree-LSTM step with no children under ``"child-sum-lstm"``.
Summing children makes ``"simple"`` and ``"child-sum-lstm"`` blind to their
order: they cannot tell ``(- 3 5)`` from ``(- 5 3)``; ``"simple-concat"`` can.

:class:`TreeRNN` computes a batch level by level: :func:`pack_trees` flattens the
trees into node arrays sorted by height (leaves first), and each level of all
trees is one step, its children's states summed in with ``index_add``.
:meth:`TreeRNN.encode_recursive` is the slow obvious twin, one call per node.

Expressions are written in prefix (Lisp) notation, ``"(+ 3 (* 2 4))"``, so an
operator takes any number of operands: ``(+ 1 2 3)`` is 6, ``(- 7 2 1)`` is 4,
``(- 3)`` is -3. Leaves are non-negative integers whose token id is their value.

>>> trees, values = arithmetic_expressions(4, max_depth=2, modulus=10, seed=0)
>>> model = TreeRNN(num_leaf_tokens=10, num_node_labels=3, hidden_size=8, num_classes=10)
>>> tuple(model(trees).shape), tuple(values.shape)
((4, 10), (4,))
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_features
from ..cells.base import check_sizes
from ..data.trees import (OPERATIONS, PackedTrees, Tree, TreeBatches, _flatten_all, _pack, arithmetic_expressions,
                          evaluate_expression, format_expression, pack_trees, parse_expression)
from ..readouts import CategoricalReadout, GaussianReadout

__all__ = ["Tree", "parse_expression", "format_expression", "evaluate_expression", "arithmetic_expressions",
           "PackedTrees", "pack_trees", "TreeBatches", "TreeRNN", "COMPOSITIONS", "OPERATIONS"]

COMPOSITIONS = ("simple", "simple-concat", "child-sum-lstm")


# ----- compositions ------------------------------------------------------------------------------
# A composition is a module with three methods; the runner in TreeRNN never asks which one it has.
#   leaf(x)                                   x (n, H) or (H,) -> state, a tuple of tensors
#   node(labels, children, parent, position)  one level, batched: labels (n,); children a state tuple with
#                                             one row per edge (E, H); parent (E,) in [0, n); position (E,)
#   one_node(label, children)                 the same maths for one node and a list of child states,
#                                             written plainly: the reference of the parity tests

class _SimpleComposition(nn.Module):
    """h = tanh(W_label z + b_label), z the sum of the children (slots=1) or their concatenation."""

    def __init__(self, num_labels: int, hidden_size: int, slots: int, **kw):
        super().__init__()
        self.hidden_size, self.slots = hidden_size, slots
        self.weight = nn.Parameter(torch.empty(num_labels, hidden_size, slots * hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(num_labels, hidden_size, **kw))
        bound = 1.0 / math.sqrt(slots * hidden_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def leaf(self, x):
        return (x,)

    def node(self, labels, children, parent, position):
        (h_children,) = children                                                         # (E, H)
        n, H, slots = len(labels), self.hidden_size, self.slots
        slot = parent * slots + position if slots > 1 else parent
        z = h_children.new_zeros(n * slots, H).index_add(0, slot, h_children).view(n, slots * H)
        # every label's map for every node, then each node's own: cheap while labels are few
        out = F.linear(z, self.weight.flatten(0, 1)).view(n, -1, H)                       # (n, L, H)
        return (torch.tanh(out[torch.arange(n, device=z.device), labels] + self.bias[labels]),)

    def one_node(self, label, children):
        hs = [h for (h,) in children]
        if self.slots == 1:
            z = hs[0]
            for h in hs[1:]:
                z = z + h
        else:
            z = torch.cat(hs + [torch.zeros_like(hs[0])] * (self.slots - len(hs)))
        return (torch.tanh(self.weight[label] @ z + self.bias[label]),)


class _ChildSumLSTM(nn.Module):
    """The Child-Sum Tree-LSTM; weights stacked as [i, o, u, f] like torch's LSTM."""

    def __init__(self, num_labels: int, hidden_size: int, **kw):
        super().__init__()
        H = self.hidden_size = hidden_size
        self.label_embedding = nn.Embedding(num_labels, H, **kw)
        self.weight_x = nn.Parameter(torch.empty(4 * H, H, **kw))      # W_i, W_o, W_u, W_f
        self.bias = nn.Parameter(torch.empty(4 * H, **kw))
        self.weight_h = nn.Parameter(torch.empty(3 * H, H, **kw))      # U_i, U_o, U_u (on the child sum)
        self.weight_f = nn.Parameter(torch.empty(H, H, **kw))          # U_f (on each child)
        bound = 1.0 / math.sqrt(H)
        with torch.no_grad():
            for p in (self.weight_x, self.bias, self.weight_h, self.weight_f):
                p.uniform_(-bound, bound)

    def _cell(self, x_gates, h_sum, forget_sum):
        """c = i * u + forget_sum, h = o * tanh(c), from W x + b (n, 4H) and the child sum (n, H)."""
        x_i, x_o, x_u, _ = x_gates.chunk(4, -1)
        h_i, h_o, h_u = F.linear(h_sum, self.weight_h).chunk(3, -1)
        c = torch.sigmoid(x_i + h_i) * torch.tanh(x_u + h_u) + forget_sum
        return torch.sigmoid(x_o + h_o) * torch.tanh(c), c

    def leaf(self, x):
        return self._cell(F.linear(x, self.weight_x, self.bias), torch.zeros_like(x), 0.0)

    def node(self, labels, children, parent, position):
        h_k, c_k = children                                                               # (E, H)
        x_gates = F.linear(self.label_embedding(labels), self.weight_x, self.bias)        # (n, 4H)
        f = torch.sigmoid(x_gates[parent, 3 * self.hidden_size:] + F.linear(h_k, self.weight_f))   # (E, H)
        zeros = h_k.new_zeros(len(labels), self.hidden_size)
        return self._cell(x_gates, zeros.index_add(0, parent, h_k), zeros.index_add(0, parent, f * c_k))

    def one_node(self, label, children):
        x = self.label_embedding.weight[label]
        W_i, W_o, W_u, W_f = self.weight_x.chunk(4)
        b_i, b_o, b_u, b_f = self.bias.chunk(4)
        U_i, U_o, U_u = self.weight_h.chunk(3)
        h_sum = children[0][0]
        for h, _ in children[1:]:
            h_sum = h_sum + h
        i = torch.sigmoid(W_i @ x + U_i @ h_sum + b_i)
        o = torch.sigmoid(W_o @ x + U_o @ h_sum + b_o)
        u = torch.tanh(W_u @ x + U_u @ h_sum + b_u)
        c = i * u
        for h, c_child in children:
            c = c + torch.sigmoid(W_f @ x + self.weight_f @ h + b_f) * c_child
        return o * torch.tanh(c), c


# ----- the model ---------------------------------------------------------------------------------
class TreeRNN(nn.Module):
    r"""A recursive network over trees with a GLM readout at the root.

    The root state :math:`h_{\text{root}}` (see the module docstring for each
    ``composition``) feeds :class:`~rnnkit.readouts.CategoricalReadout` when
    ``num_classes`` is given, else a one-output :class:`~rnnkit.readouts.GaussianReadout`
    (regression, learned :math:`\sigma`).

    Args:
        num_leaf_tokens: leaves carry token ids in ``[0, num_leaf_tokens)``, embedded in ``hidden_size``;
            ``None`` when leaves carry feature vectors of ``leaf_size`` (mapped by a linear layer).
        num_node_labels: internal nodes carry labels in ``[0, num_node_labels)``.
        hidden_size: size of every node's state.
        composition: ``"simple"``, ``"simple-concat"`` or ``"child-sum-lstm"``.
        num_classes: classes of the categorical readout; ``None`` for regression.
        max_arity: most children per node under ``"simple-concat"``.

    Inputs are a list of :class:`Tree` or :class:`PackedTrees`. Shapes: ``encode``
    (B, hidden_size); ``forward`` the readout's predictor, (B, num_classes) logits
    or (B, 1) means; ``predict`` (B,); targets (B,), class ids or floats.

    >>> model = TreeRNN(10, 3, hidden_size=8, composition="simple-concat")
    >>> model.predict([parse_expression("(+ 1 2)"), parse_expression("(* 3 (- 4 5))")]).shape
    torch.Size([2])
    """

    def __init__(self, num_leaf_tokens: int | None, num_node_labels: int, hidden_size: int,
                 composition: str = "child-sum-lstm", *, num_classes: int | None = None, max_arity: int = 2,
                 leaf_size: int | None = None, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if composition not in COMPOSITIONS:
            raise ValueError(f"{name}: unknown composition {composition!r}; choose one of {list(COMPOSITIONS)}")
        if (num_leaf_tokens is None) == (leaf_size is None):
            raise ValueError(f"{name}: give num_leaf_tokens (leaves carry token ids) or leaf_size (leaves carry "
                             f"feature vectors), not {'both' if leaf_size is not None else 'neither'}")
        check_sizes(name, num_node_labels=num_node_labels, hidden_size=hidden_size, max_arity=max_arity,
                    **({"num_leaf_tokens": num_leaf_tokens} if leaf_size is None else {"leaf_size": leaf_size}),
                    **({} if num_classes is None else {"num_classes": num_classes}))
        kw = {"device": device, "dtype": dtype}
        self.num_leaf_tokens, self.num_node_labels, self.hidden_size = num_leaf_tokens, num_node_labels, hidden_size
        self.composition, self.max_arity, self.leaf_size = composition, max_arity, leaf_size
        self.leaf_input = (nn.Embedding(num_leaf_tokens, hidden_size, **kw) if leaf_size is None
                           else nn.Linear(leaf_size, hidden_size, **kw))
        self.cell = (_ChildSumLSTM(num_node_labels, hidden_size, **kw) if composition == "child-sum-lstm"
                     else _SimpleComposition(num_node_labels, hidden_size,
                                             max_arity if composition == "simple-concat" else 1, **kw))
        self.readout = (CategoricalReadout(hidden_size, num_classes, **kw) if num_classes is not None
                        else GaussianReadout(hidden_size, 1, **kw))

    # ----- encoding ----------------------------------------------------------------------
    def _packed(self, inputs) -> PackedTrees:
        name = type(self).__name__
        packed = inputs if isinstance(inputs, PackedTrees) else _pack(_flatten_all(inputs, name), name)
        packed = packed.to(self.readout.weight.device)
        labels, levels = packed.labels, packed.level_offsets
        num_leaves = int(levels[1])
        if packed.leaf_features is not None:
            if self.leaf_size is None:
                raise ValueError(f"{name}: the leaves carry feature vectors but the model embeds token ids "
                                 f"(num_leaf_tokens={self.num_leaf_tokens}); make it with leaf_size instead")
            check_features(name, "leaf features", packed.leaf_features, self.leaf_size,
                           self.leaf_input.weight, "model")
        elif self.leaf_size is not None:
            raise ValueError(f"{name}: the leaves carry token ids but the model takes feature vectors of size "
                             f"{self.leaf_size}; make it with num_leaf_tokens instead")
        else:
            top_token = int(labels[:num_leaves].max())
            if top_token >= self.num_leaf_tokens:
                raise ValueError(f"{name}: a leaf carries token {top_token} but num_leaf_tokens is "
                                 f"{self.num_leaf_tokens} (token ids run from 0 to {self.num_leaf_tokens - 1})")
        if len(labels) > num_leaves:
            top_label = int(labels[num_leaves:].max())
            if top_label >= self.num_node_labels:
                raise ValueError(f"{name}: an internal node carries label {top_label} but num_node_labels is "
                                 f"{self.num_node_labels} (labels run from 0 to {self.num_node_labels - 1})")
        if self.composition == "simple-concat" and len(packed.edge_position):
            arity = int(packed.edge_position.max()) + 1
            if arity > self.max_arity:
                raise ValueError(f"{name}: composition 'simple-concat' takes at most max_arity={self.max_arity} "
                                 f"children per node, got a node with {arity}; raise max_arity or use 'simple' "
                                 f"or 'child-sum-lstm'")
        return packed

    def encode(self, inputs) -> Tensor:
        """Root states (B, hidden_size), computed one tree level at a time for the whole batch."""
        packed = self._packed(inputs)
        levels, edges = packed.level_offsets.tolist(), packed.edge_offsets.tolist()
        leaves = packed.leaf_features if packed.leaf_features is not None else packed.labels[: levels[1]]
        states = self.cell.leaf(self.leaf_input(leaves))                          # each (num_leaves, H)
        for k in range(1, len(levels) - 1):
            first, last = edges[k], edges[k + 1]
            child = packed.edge_child[first:last]
            new = self.cell.node(packed.labels[levels[k]:levels[k + 1]], tuple(s[child] for s in states),
                                 packed.edge_parent[first:last] - levels[k], packed.edge_position[first:last])
            states = tuple(torch.cat([s, n]) for s, n in zip(states, new))      # nodes 0 .. levels[k+1]
        return states[0][packed.roots]

    def encode_recursive(self, trees: Sequence[Tree]) -> Tensor:
        """The slow obvious twin of :meth:`encode`: one Python call per node, children first."""
        self._packed(trees)                                      # the same checks, and no cycles below
        device = self.readout.weight.device

        def visit(node: Tree):
            if node.children is None:
                label = node.label if isinstance(node.label, Tensor) else torch.tensor(node.label)
                return self.cell.leaf(self.leaf_input(label.to(device)))
            return self.cell.one_node(node.label, [visit(child) for child in node.children])
        return torch.stack([visit(tree)[0] for tree in trees])

    # ----- readout and the trainer's contract -----------------------------------------------
    def forward(self, inputs) -> Tensor:
        """The readout's predictor at each root: logits (B, num_classes) or means (B, 1)."""
        return self.readout(self.encode(inputs))

    def loss(self, inputs, targets: Tensor, state=None):
        """Mean negative log-likelihood of the targets (B,) over the batch; no state to carry."""
        h = self.encode(inputs)
        if not isinstance(targets, Tensor) or tuple(targets.shape) != (len(h),):
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"{type(self).__name__}: expected targets of shape ({len(h)},), one per tree, "
                             f"got {got}")
        if isinstance(self.readout, GaussianReadout):
            targets = targets.unsqueeze(-1)
        return self.readout.nll(targets, h).mean(), None

    @torch.no_grad()
    def predict(self, inputs) -> Tensor:
        """The most probable class (B,), or the predicted mean (B,) for regression."""
        eta = self(inputs)
        return eta.argmax(-1) if isinstance(self.readout, CategoricalReadout) else eta.squeeze(-1)

    def extra_repr(self) -> str:
        leaves = (f"num_leaf_tokens={self.num_leaf_tokens}" if self.leaf_size is None
                  else f"leaf_size={self.leaf_size}")
        return (f"{leaves}, num_node_labels={self.num_node_labels}, hidden_size={self.hidden_size}, "
                f"composition={self.composition!r}" + (f", max_arity={self.max_arity}"
                                                       if self.composition == "simple-concat" else ""))
