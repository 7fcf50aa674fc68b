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
import random
import re
from operator import itemgetter
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_features
from ..cells.base import check_sizes
from ..data.sequences import SequenceBatches
from ..readouts import CategoricalReadout, GaussianReadout

__all__ = ["Tree", "parse_expression", "format_expression", "evaluate_expression", "arithmetic_expressions",
           "PackedTrees", "pack_trees", "TreeBatches", "TreeRNN", "COMPOSITIONS", "OPERATIONS"]

OPERATIONS = {
    "+": lambda *v: sum(v),
    "-": lambda *v: -v[0] if len(v) == 1 else v[0] - sum(v[1:]),
    "*": lambda *v: math.prod(v),
}
COMPOSITIONS = ("simple", "simple-concat", "child-sum-lstm")


# ----- trees -----------------------------------------------------------------------------------
class Tree:
    """One node of a tree; nodes are mutable, so a tree can be built up (or broken) in place.

    A leaf has ``children=None`` and its ``label`` is a token id (int >= 0) or a
    feature vector (1-D float tensor). An internal node has an int ``label`` >= 0
    and an ordered, non-empty list of ``children``. A subtree may appear in
    several places (each occurrence is a separate node of the tree); a node may
    not be its own descendant.

    >>> tree = Tree(0, [Tree(3), Tree(2, [Tree(2), Tree(4)])])     # (+ 3 (* 2 4)) with "+-*"
    >>> tree.is_leaf, tree.num_nodes, tree.height
    (False, 5, 2)
    """

    __slots__ = ("label", "children")

    def __init__(self, label, children: Iterable[Tree] | None = None):
        self.label = label
        self.children = None if children is None else list(children)

    @property
    def is_leaf(self) -> bool:
        return self.children is None

    @property
    def num_nodes(self) -> int:
        return len(_flatten(self, "Tree", "the tree")[0])

    @property
    def height(self) -> int:
        """0 for a leaf, else 1 + the greatest height of the children."""
        return _flatten(self, "Tree", "the tree")[3][0]

    def __repr__(self) -> str:
        return self._repr(set())

    def _repr(self, path: set) -> str:
        if id(self) in path:
            return "<cycle>"
        label = self.label if not isinstance(self.label, Tensor) else f"tensor of shape {tuple(self.label.shape)}"
        if self.children is None:
            return f"Tree({label})"
        path.add(id(self))
        inner = ", ".join(c._repr(path) if isinstance(c, Tree) else repr(c) for c in self.children)
        path.discard(id(self))
        return f"Tree({label}, [{inner}])"


_LEAVE = object()


def _flatten(tree, owner: str, where: str):
    """Validated pre-order arrays of one tree: labels, parent (-1 at the root), position among
    siblings, height. Iterative, so deep trees do not hit Python's recursion limit."""
    labels, parents, positions = [], [], []
    path = set()                       # ids of the nodes on the way down from the root
    stack = [(tree, -1, 0)]
    while stack:
        node, parent, position = stack.pop()
        if node is _LEAVE:             # all of a node's descendants are done: it leaves the path
            path.discard(parent)
            continue
        if not isinstance(node, Tree):
            raise TypeError(f"{owner}: {where} holds a {type(node).__name__} where a Tree node was expected; "
                            f"build trees from Tree(label, children) or parse_expression")
        if id(node) in path:
            raise ValueError(f"{owner}: the tree has a cycle: in {where} the node with label {node.label!r} is "
                             f"its own descendant")
        label, children = node.label, node.children
        if children is None:
            if isinstance(label, Tensor):
                if label.dim() != 1 or not label.is_floating_point():
                    raise TypeError(f"{owner}: a leaf's feature vector must be a 1-D floating-point tensor, "
                                    f"got shape {tuple(label.shape)} and dtype {label.dtype} in {where}")
            elif isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise TypeError(f"{owner}: a leaf's label must be a token id (an int >= 0) or a feature vector, "
                                f"got {label!r} in {where}")
        else:
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise TypeError(f"{owner}: an internal node's label must be an int >= 0, got {label!r} in {where}")
            if not isinstance(children, (list, tuple)):
                raise TypeError(f"{owner}: a node's children must be a list of Trees (or None for a leaf), got "
                                f"{type(children).__name__} in {where}")
            if not children:
                raise ValueError(f"{owner}: the node with label {label} in {where} has no children and is not a "
                                 f"leaf; a leaf has children=None: Tree({label})")
        me = len(labels)
        labels.append(label)
        parents.append(parent)
        positions.append(position)
        if children:
            path.add(id(node))
            stack.append((_LEAVE, id(node), 0))
            stack.extend((child, me, p) for p, child in reversed(list(enumerate(children))))
    heights = [0] * len(labels)
    for node in range(len(labels) - 1, 0, -1):      # children come after their parent in pre-order
        parent = parents[node]
        heights[parent] = max(heights[parent], heights[node] + 1)
    return labels, parents, positions, heights


def _bottom_up(tree, owner: str, leaf, node):
    """Fold a tree from the leaves: ``leaf(label)`` and ``node(label, [values of the children])``."""
    labels, parents, _, _ = _flatten(tree, owner, "the tree")
    children = [[] for _ in labels]
    values = [None] * len(labels)
    for j in range(len(labels) - 1, -1, -1):
        values[j] = node(labels[j], children[j][::-1]) if children[j] else leaf(labels[j])
        if parents[j] >= 0:
            children[parents[j]].append(values[j])
    return values[0]


# ----- arithmetic expressions ---------------------------------------------------------------------
def _operator_symbols(owner: str, operators) -> list:
    symbols = list(operators)
    unknown = [s for s in symbols if s not in OPERATIONS]
    if not symbols or unknown or len(set(symbols)) != len(symbols):
        raise ValueError(f"{owner}: operators must be distinct symbols from {sorted(OPERATIONS)}, got "
                         f"{operators!r}")
    return symbols


_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_expression(text: str, operators: str | Sequence[str] = "+-*") -> Tree:
    """Parse a prefix expression such as ``"(+ 3 (* 2 4))"`` into a :class:`Tree`.

    Internal nodes get the label ``operators.index(symbol)``; a number ``n`` becomes
    the leaf ``Tree(n)``. Operators take one or more operands.

    >>> parse_expression("(+ 3 (* 2 4))")
    Tree(0, [Tree(3), Tree(2, [Tree(2), Tree(4)])])
    """
    owner = "parse_expression"
    if not isinstance(text, str):
        raise TypeError(f"{owner}: expected a string, got {type(text).__name__}")
    symbols = _operator_symbols(owner, operators)
    open_nodes, result, want_operator = [], None, False
    for token in _TOKEN.findall(text):
        if result is not None:
            raise ValueError(f"{owner}: unexpected {token!r} after the complete expression in {text!r}")
        if want_operator:
            if token not in symbols:
                raise ValueError(f"{owner}: expected an operator from {symbols} after '(', got {token!r} in "
                                 f"{text!r}")
            open_nodes.append(Tree(symbols.index(token), []))
            want_operator = False
            continue
        if token == "(":
            want_operator = True
            continue
        if token == ")":
            if not open_nodes:
                raise ValueError(f"{owner}: unbalanced ')' in {text!r}")
            node = open_nodes.pop()
            if not node.children:
                raise ValueError(f"{owner}: operator {symbols[node.label]!r} has no operands in {text!r}")
        elif token.isdigit():
            node = Tree(int(token))
        else:
            raise ValueError(f"{owner}: expected a non-negative integer, '(' or ')', got {token!r} in {text!r}")
        if open_nodes:
            open_nodes[-1].children.append(node)
        else:
            result = node
    if result is None:
        raise ValueError(f"{owner}: incomplete expression {text!r}: missing "
                         f"{len(open_nodes) + want_operator} ')'" if text.strip() else f"{owner}: empty expression")
    return result


def format_expression(tree: Tree, operators: str | Sequence[str] = "+-*") -> str:
    """The prefix text of an expression tree; the inverse of :func:`parse_expression`.

    >>> format_expression(Tree(1, [Tree(7), Tree(2), Tree(1)]))
    '(- 7 2 1)'
    """
    symbols = _operator_symbols("format_expression", operators)
    return _bottom_up(tree, "format_expression", str,
                      lambda label, parts: f"({_symbol('format_expression', symbols, label)} {' '.join(parts)})")


def _symbol(owner: str, symbols: list, label: int) -> str:
    if label >= len(symbols):
        raise ValueError(f"{owner}: node label {label} is not an operator; operators are {symbols} "
                         f"(labels 0 to {len(symbols) - 1})")
    return symbols[label]


def evaluate_expression(tree: Tree, operators: str | Sequence[str] = "+-*", modulus: int | None = None) -> int:
    """The value of an expression tree, an int (in ``[0, modulus)`` when ``modulus`` is given).

    ``+`` and ``*`` fold over their operands; ``-`` subtracts the rest from the
    first, and negates a single operand. Leaves are their token ids.

    >>> evaluate_expression(parse_expression("(+ 3 (* 2 4))"))
    11
    >>> evaluate_expression(parse_expression("(- 3 5)"), modulus=10)
    8
    """
    owner = "evaluate_expression"
    symbols = _operator_symbols(owner, operators)
    if modulus is not None:
        check_sizes(owner, modulus=modulus)

    def leaf(label):
        if isinstance(label, Tensor):
            raise TypeError(f"{owner}: leaves must carry integers to be evaluated, got a feature vector")
        return label
    value = _bottom_up(tree, owner, leaf, lambda label, args: OPERATIONS[_symbol(owner, symbols, label)](*args))
    return value if modulus is None else value % modulus


def arithmetic_expressions(num: int, max_depth: int, digits: Iterable[int] = range(10),
                           operators: str | Sequence[str] = "+-*", *, arities: Sequence[int] = (2,),
                           modulus: int | None = None, seed: int = 0) -> tuple[list, Tensor]:
    """``num`` random expression trees and their values, an int64 tensor (num,).

    The root is an operator (unless ``max_depth`` is 0); every child below it is a
    digit with probability 1/2, or an operator while the depth is below
    ``max_depth``. Operators draw their arity from ``arities``. Values are exact,
    or taken mod ``modulus``.

    >>> trees, values = arithmetic_expressions(3, max_depth=2, seed=1)
    >>> [format_expression(t) for t in trees], values.tolist()
    (['(+ 7 (- 3 1))', '(- (- 9 0) (- 9 1))', '(- 8 6)'], [9, 1, 2])
    """
    owner = "arithmetic_expressions"
    symbols = _operator_symbols(owner, operators)
    digits, arities = list(digits), list(arities)
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"{owner}: num must be an int >= 0, got {num!r}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"{owner}: max_depth must be an int >= 0, got {max_depth!r}")
    if not digits or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in digits):
        raise ValueError(f"{owner}: digits must be non-empty non-negative ints (they are the token ids), "
                         f"got {digits!r}")
    if not arities or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in arities):
        raise ValueError(f"{owner}: arities must be positive ints, got {arities!r}")
    if modulus is not None:
        check_sizes(owner, modulus=modulus)
    rng = random.Random(seed)

    def grow(depth: int) -> tuple[Tree, int]:
        if depth == max_depth or (depth > 0 and rng.random() < 0.5):
            digit = rng.choice(digits)
            return Tree(digit), digit
        label = rng.randrange(len(symbols))
        children, values = zip(*(grow(depth + 1) for _ in range(rng.choice(arities))))
        return Tree(label, children), OPERATIONS[symbols[label]](*values)
    trees, values = zip(*(grow(0) for _ in range(num))) if num else ((), ())
    trees, values = list(trees), [v if modulus is None else v % modulus for v in values]
    if any(abs(v) >= 2 ** 63 for v in values):
        raise ValueError(f"{owner}: a value does not fit in int64; lower max_depth or pass a modulus")
    return trees, torch.tensor(values, dtype=torch.int64)


# ----- packing ---------------------------------------------------------------------------------
class PackedTrees(tuple):
    """A batch of trees as node arrays, sorted by height so that each level is a contiguous slice.

    A tuple of tensors (so :func:`rnnkit.train.trainer` moves it between devices like any input):

    - ``labels`` (N,) int64: leaves' token ids (0 for feature leaves), internal nodes' label ids;
    - ``level_offsets`` (K+1,): level ``k`` (nodes of height ``k``) is ``[level_offsets[k], level_offsets[k+1])``;
      level 0 is exactly the leaves;
    - ``edge_parent``, ``edge_child``, ``edge_position`` (N-B,): one edge per non-root node, sorted by
      parent and position;
    - ``edge_offsets`` (K+1,): the edges into level ``k`` are ``[edge_offsets[k], edge_offsets[k+1])``;
    - ``roots`` (B,): the node index of each tree's root, in batch order;
    - ``leaf_features`` (num_leaves, leaf_size) or ``None`` when leaves carry token ids.
    """

    __slots__ = ()
    labels = property(itemgetter(0))
    level_offsets = property(itemgetter(1))
    edge_parent = property(itemgetter(2))
    edge_child = property(itemgetter(3))
    edge_position = property(itemgetter(4))
    edge_offsets = property(itemgetter(5))
    roots = property(itemgetter(6))
    leaf_features = property(itemgetter(7))

    @property
    def num_trees(self) -> int:
        return len(self.roots)

    def to(self, device) -> PackedTrees:
        return PackedTrees(None if t is None else t.to(device) for t in self)


def _pack(flats: list, owner: str) -> PackedTrees:
    if not flats:
        raise ValueError(f"{owner}: expected a non-empty batch of trees, got an empty one")
    labels, parents, positions, heights, roots = [], [], [], [], []
    for tree_labels, tree_parents, tree_positions, tree_heights in flats:
        base = len(labels)
        roots.append(base)
        labels += tree_labels
        parents += [p + base if p >= 0 else -1 for p in tree_parents]
        positions += tree_positions
        heights += tree_heights
    heights = torch.tensor(heights)
    order = torch.sort(heights, stable=True).indices                   # new index -> old index
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))                               # old index -> new index
    num_levels = int(heights.max()) + 1
    level_offsets = F.pad(torch.bincount(heights, minlength=num_levels).cumsum(0), (1, 0))

    leaf_labels = [labels[i] for i in order[: int(level_offsets[1])].tolist()]
    features = [isinstance(label, Tensor) for label in leaf_labels]
    leaf_features = None
    if any(features):
        if not all(features):
            raise ValueError(f"{owner}: some leaves carry token ids and some feature vectors; a batch needs one kind")
        shapes = {(tuple(f.shape), f.dtype) for f in leaf_labels}
        if len(shapes) > 1:
            raise ValueError(f"{owner}: leaf feature vectors differ in size or dtype: {sorted(map(str, shapes))}")
        leaf_features = torch.stack(leaf_labels)
        labels = [0 if isinstance(label, Tensor) else label for label in labels]
    labels = torch.tensor(labels, dtype=torch.int64)[order]

    old_parent = torch.tensor(parents)
    child_old = (old_parent >= 0).nonzero().squeeze(1)
    parent_new, child_new = rank[old_parent[child_old]], rank[child_old]
    position = torch.tensor(positions)[child_old]
    edge_order = torch.argsort(parent_new * (max(positions, default=0) + 1) + position)   # keys are unique
    edge_level = heights[old_parent[child_old]]
    edge_offsets = F.pad(torch.bincount(edge_level, minlength=num_levels).cumsum(0), (1, 0))
    return PackedTrees((labels, level_offsets, parent_new[edge_order], child_new[edge_order], position[edge_order],
                        edge_offsets, rank[torch.tensor(roots)], leaf_features))


def pack_trees(trees: Sequence[Tree]) -> PackedTrees:
    """Validate a batch of trees and flatten it into :class:`PackedTrees`.

    >>> packed = pack_trees([parse_expression("(+ 3 (* 2 4))"), parse_expression("7")])
    >>> packed.labels.tolist(), packed.level_offsets.tolist(), packed.roots.tolist()
    ([3, 2, 4, 7, 2, 0], [0, 4, 5, 6], [5, 3])
    """
    return _pack(_flatten_all(trees, "pack_trees"), "pack_trees")


def _flatten_all(trees, owner: str) -> list:
    if isinstance(trees, Tree) or not isinstance(trees, (list, tuple)):
        raise TypeError(f"{owner}: expected a list of Trees, got {type(trees).__name__}"
                        + ("; wrap a single tree in a list: [tree]" if isinstance(trees, Tree) else ""))
    return [_flatten(tree, owner, f"tree {b}") for b, tree in enumerate(trees)]


class TreeBatches(SequenceBatches):
    """Shuffled, resumable minibatches of ``(PackedTrees, targets)`` for the trainer.

    ``trees`` is a list of :class:`Tree` (validated and read once, here) and
    ``targets`` (N,) a tensor. Follows the batch-source protocol of
    :class:`rnnkit.data.SequenceBatches`.

    >>> trees, values = arithmetic_expressions(5, max_depth=2, modulus=10, seed=0)
    >>> [packed.num_trees for packed, _ in TreeBatches(trees, values, batch_size=2)]
    [2, 2, 1]
    """

    def __init__(self, trees: Sequence[Tree], targets: Tensor, *, batch_size: int, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if not isinstance(targets, Tensor):
            raise TypeError(f"{type(self).__name__}: expected targets to be a tensor, got {type(targets).__name__}")
        flats = _flatten_all(trees, type(self).__name__)
        super().__init__(flats, targets, batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size)

    def _take(self, index: Tensor):
        return _pack([self.inputs[i] for i in index.tolist()], type(self).__name__), self.targets[index]


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
