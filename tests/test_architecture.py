"""Checks on the shape of the package that any reader can repeat: no import cycle inside rnnkit
(imports inside functions count too), no source file over 600 lines, and every private torch
API in one module (rnnkit/_torch_private.py)."""
import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnkit"
MAX_LINES = 600


def modules() -> dict:
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict) -> set:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
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
            if candidate and not (name + ".").startswith(candidate + "."):   # a parent is always imported first
                targets.add(candidate)
    return targets


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
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_no_source_file_is_longer_than_600_lines():
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
