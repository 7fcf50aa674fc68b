"""The examples people read must run: every docstring example, the README's code and the site's."""
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import rnnkit

MODULES = sorted(m.name for m in pkgutil.walk_packages(rnnkit.__path__, "rnnkit."))
README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
                                        if "```python" in p.read_text()))
def test_the_sites_python_blocks_run(page):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    namespace = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)


def test_every_public_name_is_exported():
    for name in rnnkit.__all__:
        assert hasattr(rnnkit, name), name
