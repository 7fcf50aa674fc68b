"""Checks on the shape of the package that any reader can repeat: imports go down the layers of
ARCHITECTURE.md only (imports inside functions count too, and so does the package ``__init__`` that
every import of a submodule runs first), no module imports another package's private module, no
import cycle, no source file over 500 lines, and every private torch API in one module
(rnnkit/_torch_private.py)."""
import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnkit"
MAX_LINES = 500

# ARCHITECTURE.md's layers, bottom first. A module may import its own part of the package and any
# part of the same or a lower layer, never one of a higher layer. A part is a top-level module or
# subpackage of rnnkit; "rnnkit" itself is the package's face (its __init__), above everything.
LAYERS = (
    ("helpers", {"rnnkit._arguments", "rnnkit._buffers", "rnnkit._checkpoint", "rnnkit._checks", "rnnkit._config", "rnnkit._files",
                 "rnnkit._state", "rnnkit._torch_private", "rnnkit._version"}),
    ("cells", {"rnnkit.cells", "rnnkit.init", "rnnkit.machine", "rnnkit.reference"}),
    ("engines", {"rnnkit.engines", "rnnkit.regularizers"}),
    ("layers", {"rnnkit.layers", "rnnkit.streaming"}),
    ("blocks", {"rnnkit.shortcuts", "rnnkit.readouts", "rnnkit.data"}),
    ("models", {"rnnkit.models"}),
    ("analysis", {"rnnkit.analysis"}),
    ("train", {"rnnkit.train", "rnnkit.generate"}),
    ("products", {"rnnkit.forecast", "rnnkit.classify", "rnnkit.sklearn"}),
    ("commands", {"rnnkit.commands", "rnnkit.cli"}),
    ("face", {"rnnkit"}),
)


def modules() -> dict:
    """``{dotted name: path}`` of every module of the package (a package by its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _ancestors(name: str) -> list:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, known: dict, source: str | None = None) -> set:
    """The package's modules that ``name`` imports, anywhere in its source (``source``, or the file at
    ``path``), with the packages whose ``__init__`` such an import runs first."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:          # a name inside a module: the module
                candidate = candidate.rpartition(".")[0]
            if not candidate:
                continue
            # importing a.b.c runs a/__init__ and a/b/__init__ first; the importer's own packages
            # are already running, so they are no edge
            for module in (*_ancestors(candidate), candidate):
                if module in known and not (name + ".").startswith(module + "."):
                    targets.add(module)
    targets.discard(name)
    return targets


def part_of(name: str) -> str:
    """The part of the package a module belongs to: ``rnnkit.engines.fused.ops`` -> ``rnnkit.engines``."""
    return ".".join(name.split(".")[:2])


def layer_of(name: str) -> int:
    part = part_of(name)
    for rank, (_, parts) in enumerate(LAYERS):
        if part in parts:
            return rank
    raise AssertionError(f"{part} is in no layer: add it to LAYERS here and to ARCHITECTURE.md")


def is_private_to_another(importer: str, target: str) -> bool:
    """A module whose own name starts with "_" belongs to its package: importing it from outside that
    package reaches behind the package's public face."""
    if target.rpartition(".")[2].startswith("_"):
        owner = target.rpartition(".")[0]
        return not importer.startswith(owner + ".") and importer != owner
    return False


def violations(graph: dict) -> list:
    """``"importer -> target (why)"`` for every import that goes up a layer or into a private module."""
    found = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(importer):
                found.append(f"{importer} -> {target} (up from layer {LAYERS[layer_of(importer)][0]!r} "
                             f"to {LAYERS[layer_of(target)][0]!r})")
            elif is_private_to_another(importer, target):
                found.append(f"{importer} -> {target} (a private module of another package)")
    return found


def package_graph() -> dict:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict) -> list:
    """Every strongly connected group of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    assert cycles(package_graph()) == []


def test_imports_go_down_the_layers_only():
    assert violations(package_graph()) == []


def test_every_part_of_the_package_has_a_layer():
    assert {part_of(name) for name in modules()} <= set().union(*(parts for _, parts in LAYERS))


def test_an_injected_upward_import_fails_the_check():
    """The checks themselves can fail: one import written into a real module (inside a function, as a
    lazy import would be) is reported, and so is an import of another package's private module."""
    known = modules()
    graph = package_graph()
    name = "rnnkit.cells.lstm"
    source = known[name].read_text() + "\n\ndef _later():\n    from ..train import trainer\n"
    graph[name] = imports_of(name, known[name], known, source)
    assert "rnnkit.train.trainer" in graph[name] and "rnnkit.train" in graph[name]   # with the package's __init__
    assert violations(graph) == [
        "rnnkit.cells.lstm -> rnnkit.train (up from layer 'cells' to 'train')",
        "rnnkit.cells.lstm -> rnnkit.train.trainer (up from layer 'cells' to 'train')"]
    graph = package_graph()
    name = "rnnkit.models.sequence"
    graph[name] = imports_of(name, known[name], known,
                             known[name].read_text() + "\nfrom ..engines.fused import _cpu\n")
    assert violations(graph) == ["rnnkit.models.sequence -> rnnkit.engines.fused._cpu "
                                 "(a private module of another package)"]


def test_a_cycle_through_a_package_init_is_found():
    """``a`` importing ``pkg.low`` runs ``pkg/__init__``, which imports ``pkg.high``, which imports ``a``:
    a circle that only the package's ``__init__`` edge shows."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "rnnkit"
        (root / "pkg").mkdir(parents=True)
        files = {"__init__.py": "", "a.py": "from .pkg.low import x\n",
                 "pkg/__init__.py": "from .high import y\n", "pkg/low.py": "x = 1\n",
                 "pkg/high.py": "from ..a import z\n"}
        for relative, text in files.items():
            (root / relative).write_text(text)
        known = {"rnnkit": root / "__init__.py", "rnnkit.a": root / "a.py", "rnnkit.pkg": root / "pkg/__init__.py",
                 "rnnkit.pkg.low": root / "pkg/low.py", "rnnkit.pkg.high": root / "pkg/high.py"}
        graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert graph["rnnkit.a"] == {"rnnkit.pkg", "rnnkit.pkg.low"}
    assert cycles(graph) == [["rnnkit.a", "rnnkit.pkg", "rnnkit.pkg.high"]]


def test_no_source_file_is_longer_than_500_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _private_torch_uses(tree) -> list:
    """``torch.x._y`` attribute chains, ``from torch... import _y`` and ``torch._x`` modules."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "torch":
                if any(part.startswith("_") and not part.startswith("__") for part in chain) or "ops" in chain:
                    uses.append(".".join(["torch", *reversed(chain)]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            parts = node.module.split(".") + [alias.name for alias in node.names]
            if any(part.startswith("_") and not part.startswith("__") for part in parts):
                uses.append(node.module)
    return uses


def test_private_torch_apis_live_in_one_module():
    assert _private_torch_uses(ast.parse("import torch\nx = torch.ops.mkldnn._linear_pointwise")) != []
    users = {str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
             if _private_torch_uses(ast.parse(path.read_text()))}
    assert users == {"rnnkit/_torch_private.py"}


def test_with_private_torch_apis_turned_off_every_engine_still_gives_the_same_numbers():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import copy, torch, rnnkit
        from rnnkit._torch_private import can_swap_parameters, onednn_matmul
        from rnnkit.cells import GRUCell, LSTMCell
        from rnnkit.regularizers import WeightDrop
        assert onednn_matmul() is None and not can_swap_parameters()
        torch.manual_seed(0)
        x = torch.randn(3, 6, 4, dtype=torch.float64)
        cell = GRUCell(4, 5, dtype=torch.float64)
        for engine in ("auto", "fused", "loop"):
            layer = rnnkit.Recurrent(copy.deepcopy(cell), engine=engine)
            print(engine, layer.engine, float(layer(x)[0].sum()))
        dropped = rnnkit.Recurrent(WeightDrop(GRUCell(4, 5, dtype=torch.float64), 0.5))
        print("weight-drop", dropped.engine)
        try:
            rnnkit.Recurrent(WeightDrop(GRUCell(4, 5), 0.5), engine="fused")
        except ValueError as error:
            print(error)
    """)
    env = {**os.environ, "RNNKIT_TORCH_PRIVATE": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sums = [float(line.split()[-1]) for line in lines[:3]]
    assert lines[0].split()[1] == "fused" and abs(sums[0] - sums[2]) < 1e-12 and abs(sums[1] - sums[2]) < 1e-12
    assert lines[3] != "weight-drop fused"
    assert lines[4] == ("Recurrent(WeightDrop): engine 'fused' cannot run this cell: WeightDrop drops weights, which "
                        "fused runs through a private torch API that is unavailable or turned off "
                        "(RNNKIT_TORCH_PRIVATE=0). Use engine='auto' or engine='loop'.")
