"""A griffe extension for the API reference: rnnkit's docstrings use a little reStructuredText
(``.. math::`` blocks, ``:math:`` and ``:class:`` roles, double-backtick literals), which the
site renders as Markdown; this rewrites those few constructs before mkdocstrings renders them."""
from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def to_markdown(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(".. math::"):
            indent = len(line) - len(line.lstrip())
            body = [stripped[len(".. math::"):].strip()] if stripped[len(".. math::"):].strip() else []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            out += [" " * indent + "$$", *[" " * indent + b for b in body if b], " " * indent + "$$", ""]
            continue
        if stripped.startswith(">>>"):            # a doctest: a code block
            indent = len(line) - len(line.lstrip())
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:])
                i += 1
            out += [" " * indent + "```python", *[" " * indent + b for b in block], " " * indent + "```"]
            continue
        line = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", line)
        line = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", line)
        line = line.replace("``", "`")
        out.append(line)
        i += 1
    return "\n".join(out)


class RstMarkup(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
