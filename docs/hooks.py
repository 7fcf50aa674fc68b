"""MkDocs hooks: the command-line reference is generated from rnnkit's own argparse parser at build
time (``<!-- cli-reference -->`` in docs/cli.md), so it cannot drift from the code."""
from __future__ import annotations

import argparse


def _section(parser: argparse.ArgumentParser, title: str, level: int) -> list:
    lines = [f"{'#' * level} `{title}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        default = "" if action.default in (None, argparse.SUPPRESS, False) else f" (default: `{action.default}`)"
        text = (action.help or "").replace("|", "\\|").replace("\n", " ")
        if "%(default)" in text:
            text = text.replace("%(default)s", str(action.default)).replace("%(default)r", repr(action.default))
            default = ""
        rows.append(f"| {names} | {text}{default} |")
    if rows:
        lines += ["| option | meaning |", "|---|---|", *rows, ""]
    return lines


def _sections(parser: argparse.ArgumentParser, title: str, level: int) -> list:
    """The section of ``parser`` and, a level deeper, those of its sub-commands (``rnnkit forecast fit``)."""
    lines = _section(parser, title, level)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                lines += _sections(sub, f"{title} {name}", level + 1)
    return lines


def cli_reference() -> str:
    from rnnkit.commands import build_parser

    return "\n".join(_sections(build_parser(), "rnnkit", 2))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
