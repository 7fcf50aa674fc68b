r"""Trees for recursive networks (:class:`rnnkit.models.TreeRNN`): the :class:`Tree` node, prefix
(Lisp) arithmetic expressions to parse, print, evaluate and draw at random, and the packing of a
batch of trees into node arrays sorted by height (:func:`pack_trees`, :class:`TreeBatches`).

Expressions are written in prefix notation, ``"(+ 3 (* 2 4))"``, so an operator takes any number
of operands: ``(+ 1 2 3)`` is 6, ``(- 7 2 1)`` is 4, ``(- 3)`` is -3. Leaves are non-negative
integers whose token id is their value.

>>> tree = parse_expression("(+ 3 (* 2 4))")
>>> evaluate_expression(tree), format_expression(tree)
(11, '(+ 3 (* 2 4))')
"""
from __future__ import annotations

import math
import random
import re
from operator import itemgetter
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._arguments import check_int
from ..cells.base import check_sizes
from .sequences import SequenceBatches

__all__ = ["Tree", "parse_expression", "format_expression", "evaluate_expression", "arithmetic_expressions",
           "PackedTrees", "pack_trees", "TreeBatches", "OPERATIONS"]

OPERATIONS = {
    "+": lambda *v: sum(v),
    "-": lambda *v: -v[0] if len(v) == 1 else v[0] - sum(v[1:]),
    "*": lambda *v: math.prod(v),
}


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
    check_int(owner, "num", num, 0)
    check_int(owner, "max_depth", max_depth, 0)
    if not digits or not arities:
        raise ValueError(f"{owner}: digits and arities must not be empty, got {digits!r} and {arities!r}")
    digits = [check_int(owner, f"digits[{i}]", d, 0, "digits are token ids") for i, d in enumerate(digits)]
    arities = [check_int(owner, f"arities[{i}]", a) for i, a in enumerate(arities)]
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
